"""Removes credentials and tokens from text before it is logged or stored.

Used for every RequestText/ResponseText written to DeviceBulkChangeLog and for error messages.
Two layers: literal secret values the caller knows (API keys, passwords, tokens it holds), and
well-known secret-bearing field and header names, whatever their value.
"""
from __future__ import annotations

import re

REDACTED = "***"

_SECRET_KEYS = (
    "password", "passwd", "pwd", "apikey", "api_key", "api-key", "apisecret", "api_secret",
    "app-secret", "app_secret", "appsecret", "secret", "client_secret", "access_token",
    "refresh_token", "sessiontoken", "session_token", "token", "authorization",
    "vz-m2m-token", "ocp-apim-subscription-key", "x-api-key",
)
_KEY_ALT = "|".join(re.escape(k) for k in sorted(_SECRET_KEYS, key=len, reverse=True))

# "key": "value"  /  'key': 'value'   (JSON and Python reprs)
_JSON_PAIR = re.compile(r'''(["'])(%s)\1(\s*:\s*)(["'])(.*?)(?<!\\)\4''' % _KEY_ALT, re.IGNORECASE)
# key=value in query strings and form bodies
_QUERY_PAIR = re.compile(r'''(?<![\w-])(%s)=([^&\s"']+)''' % _KEY_ALT, re.IGNORECASE)
# "Header: value" lines (Authorization: Basic xxx, VZ-M2M-Token: xxx)
_HEADER_LINE = re.compile(r'''(?im)^(\s*(?:%s)\s*:\s*)(.+)$''' % _KEY_ALT)
# Bare bearer / basic credentials anywhere
_AUTH_SCHEME = re.compile(r'''\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}''')


def sanitize_text(text: str | None, secrets: list[str] | tuple[str, ...] = ()) -> str:
    if not text:
        return text or ""
    out = text
    for value in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        out = out.replace(value, REDACTED)
    out = _JSON_PAIR.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{m[4]}{REDACTED}{m[4]}", out)
    out = _QUERY_PAIR.sub(lambda m: f"{m[1]}={REDACTED}", out)
    out = _HEADER_LINE.sub(lambda m: f"{m[1]}{REDACTED}", out)
    out = _AUTH_SCHEME.sub(lambda m: f"{m[1]} {REDACTED}", out)
    return out
