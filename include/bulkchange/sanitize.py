"""The one scrubber: removes secrets and masks personal data in anything that leaves a task.

Everything written to a column (``DeviceBulkChangeLog`` texts, ``StatusDetails``, ``ErrorMessage``,
notification errors), sent in a mail or a webhook, pushed as XCom, or raised as an exception goes
through ``sanitize_text`` (text) or ``sanitize_value`` (JSON-like structures). Three layers:

1. **Known secrets**: every value a carrier client holds (API keys, passwords, tokens it fetched)
   is registered here (``register_secret``; ``HttpCarrierClient.add_secret`` does it) and removed
   wherever it appears, also URL-encoded, JSON-escaped and base64-encoded (at any alignment, so
   inside a ``Basic`` credential too). Secrets shorter than ``SHORT_SECRET`` are removed only as
   whole tokens, so a two-digit secret does not erase every "42" of an ICCID.
2. **Structure**: JSON (parsed, at any depth) and XML bodies have the values of secret-bearing keys
   removed: keys are matched by name pattern, case- and separator-insensitively (``accessToken``,
   ``access_token``, ``ACCESS-TOKEN``, ``clientSecret``, ``id_token``, ``subscription_key``,
   ``password`` whatever its value's type, ...). ``{"name": "password", "value": ...}`` pairs count
   as the key they name. Text that does not parse (truncated bodies, Python reprs, query strings,
   header lines, ``Bearer``/``Basic`` credentials in any case, ``https://user:pass@host``) is
   handled by patterns.
3. **Personal data**: subscriber names, addresses, contacts (``ContactName``, ``firstName``,
   Telegence ``relatedParty`` and the ``contactName`` characteristic, ThingSpace
   ``primaryPlaceOfUse`` and the ``PrimaryPlaceOfUse*`` extended attributes, Rev.io ``contacts`` and
   customer / contact fields, e-mail addresses, contact phones, street addresses, ...) are masked
   the same way by key (also as ``{"name"|"key"|"label"|"field": <key>, "value": ...}`` pairs and
   JSON Patch paths). Keys ending in a name or e-mail word (``subscriberEmail``,
   ``billingContactLastName``) count too. Fields that hold a person's name only by our own mapping
   are declared here as well (``PERSONAL_FIELD_NAMES``: the ThingSpace custom field the ContactName
   goes to, the Jasper username field), and a record's field that is personal only in that record
   (a Rev.io service's ``description``, which may hold the user's name) by ``PERSONAL_IN_RECORD``.
   The line's own identifiers (ICCID, MSISDN / subscriber number, IMEI, IP), plan codes, zip codes
   the carrier uses to pick a number, cost centers and statuses are not personal: they stay readable
   for the audit.

Scrub first, truncate after: ``sanitize_text(text, limit=n)`` cuts the *scrubbed* text, so a
secret straddling the cut cannot leave its prefix behind; text that was cut before it got here is
handled too (an unterminated secret value at the end is removed, and a known secret's prefix at
the very end or suffix at the very start).
"""
from __future__ import annotations

import base64
import json
import re
import threading
from functools import lru_cache
from typing import Any, Callable, Iterable
from urllib.parse import quote, quote_plus

REDACTED = "***"
SHORT_SECRET = 6  # shorter known secrets are only removed as whole tokens
_MIN_EDGE = 4  # shortest partial secret removed at the edges of cut text
_MAX_PARSE = 2_000_000  # larger texts are scrubbed by patterns only (no JSON parse)
_MAX_DEPTH = 64

# --- key patterns ------------------------------------------------------------------------------
# Matched against the key lower-cased with "_", "-", "." and spaces removed.
_SECRET_KEY = re.compile(
    r"(password|passwd|passphrase|pwd|secret|token|apikey|apisecret|appsecret|appkey|accesskey|"
    r"privatekey|clientkey|subscriptionkey|authorization|authentication|credential|cookie|sessionid|"
    r"signature|bearer|^otp|otp$|^pin$|^pincode|cvv|sharedkey|consumerkey|vzm2mtoken|ocpapimsubscriptionkey|xapikey)")
# Keys that look secret by pattern but are not (counts, flags, expiry, the token type name).
_NOT_SECRET_KEY = re.compile(r"^(tokentype|expiresin|tokenexpiry|tokenexpires|tokenexpiresin|"
                             r"haspassword|passwordexpired|passwordexpiry|secretname)$")
_PERSONAL_KEY = re.compile(
    r"^(contactname|username|contact|contacts|contactperson|firstname|lastname|middlename|fullname|givenname|"
    r"familyname|surname|subscribername|subscriberfirstname|subscriberlastname|endusername|personname|"
    r"customername|relatedparty|primaryplaceofuse|placeofuse|ppu|billingaddress|serviceaddress|"
    r"shippingaddress|mailingaddress|"
    r"address|addresses|streetaddress|street|street1|street2|addressline|addressline1|addressline2|"
    r"addressline3|address1|address2|address3|email|emailaddress|emails|mail|dateofbirth|birthdate|dob|ssn|"
    r"socialsecuritynumber|taxid|nationalid|passportnumber|driverslicense|phone|phones|telephone|homephone|"
    r"workphone|mobilephone|cellphone|contactphone|fax|faxnumber|contactemail|contactnumber)$"
    # a name or e-mail word at the end (subscriberEmail, billingContactLastName), any ThingSpace
    # place-of-use attribute (PrimaryPlaceOfUseFirstName, PrimaryPlaceOfUseAddressLine1, ...)
    r"|^.*(firstname|lastname|middlename|fullname|surname|emailaddress|email)$|^primaryplaceofuse")
# Fields that hold a person's name by our own mapping, not by their name: the ThingSpace custom field
# an EditUsernameCostCenter ContactName is written to (changes/edit_username/thingspace.py) and the default
# Jasper field the username goes to (JASPER_DEVICE_USERNAME_FIELD registers another one).
THINGSPACE_CONTACT_NAME_FIELD = "CustomField1"
JASPER_USERNAME_FIELD = "accountCustom1"
PERSONAL_FIELD_NAMES = (THINGSPACE_CONTACT_NAME_FIELD, JASPER_USERNAME_FIELD)
# (keys a record has, all of them) -> its keys that are personal in such a record: a Rev.io service
# (customer_id and service_type_id) has its ``description`` set to the user's name when the service
# provider pushes usernames to the service description (PushUsernameUpdate SERVICE_DESCRIPTION / BOTH).
PERSONAL_IN_RECORD: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (frozenset({"customerid", "servicetypeid"}), frozenset({"description"})),
)
_PAIR_NAME_KEYS = frozenset(("name", "label", "key", "field", "fieldname", "characteristic"))
_PAIR_VALUE_KEYS = frozenset(("value", "values", "val", "fieldvalue"))

_lock = threading.Lock()
_secrets: set[str] = set()
_registered: frozenset[str] = frozenset()  # _secrets as of the last registration (read without the lock)
_personal_keys: set[str] = set()  # filled below with PERSONAL_FIELD_NAMES, then by register_personal_key
_listeners: list[Callable[[str], None]] = []
_forms_cache: dict[str, tuple[str, ...]] = {}


_NORM_TABLE = str.maketrans("", "", " \t\n_.-:")


def _norm(key: Any) -> str:
    return str(key).translate(_NORM_TABLE).lower()


_personal_keys.update(_norm(k) for k in PERSONAL_FIELD_NAMES)


@lru_cache(maxsize=4096)
def _secret_norm(k: str) -> bool:
    return bool(k) and _SECRET_KEY.search(k) is not None and _NOT_SECRET_KEY.match(k) is None


def is_secret_key(key: Any) -> bool:
    return _secret_norm(_norm(key))


def is_personal_key(key: Any) -> bool:
    k = _norm(key)
    return bool(k) and (_PERSONAL_KEY.match(k) is not None or k in _personal_keys)


# --- registries --------------------------------------------------------------------------------
def register_secret(value: Any) -> None:
    """Remember a secret value (process-wide) so every later scrub removes it wherever it appears."""
    if value is None:
        return
    text = str(value)
    if not text.strip():
        return
    with _lock:
        if text in _secrets:
            return
        _secrets.add(text)
        global _registered
        _registered = frozenset(_secrets)
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(text)
        except Exception:  # noqa: BLE001  a masker that cannot take it must not break the caller
            pass


def register_personal_key(key: str) -> None:
    """A field name whose values are personal data in this deployment (e.g. the Jasper field the
    username is written to)."""
    if key:
        with _lock:
            _personal_keys.add(_norm(key))
        _keyed_norm.cache_clear()
        _scrub_cached.cache_clear()


def add_secret_listener(listener: Callable[[str], None]) -> None:
    """Called with every registered secret (e.g. Airflow's log masker), including earlier ones."""
    with _lock:
        _listeners.append(listener)
        known = list(_secrets)
    for value in known:
        try:
            listener(value)
        except Exception:  # noqa: BLE001
            pass


def known_secrets() -> list[str]:
    with _lock:
        return list(_secrets)


def _b64_forms(raw: bytes) -> list[str]:
    """Base64 text that appears whenever ``raw`` is encoded inside a longer value, at each of the
    three alignments (the groups fully made of ``raw``'s bytes), plus the plain encodings."""
    out = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
           base64.b64encode(raw).decode().rstrip("=")}
    for k in range(3):
        data = b"\0" * k + raw
        enc = base64.b64encode(data).decode()
        first = 1 if k else 0  # the first group holds padding bytes of ours
        full = len(data) // 3
        core = enc[first * 4: full * 4]
        if len(core) >= 8:
            out.add(core)
            out.add(core.replace("+", "-").replace("/", "_"))
    return [f for f in out if f]


def _forms(secret: str) -> tuple[str, ...]:
    cached = _forms_cache.get(secret)
    if cached is not None:
        return cached
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret),
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
             json.dumps(secret)[1:-1].replace("/", "\\/"),
             secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")}
    if len(secret) >= SHORT_SECRET:
        forms.update(_b64_forms(secret.encode()))
    result = tuple(sorted((f for f in forms if f), key=len, reverse=True))
    if len(_forms_cache) < 10_000:
        _forms_cache[secret] = result
    return result


_pattern_cache: dict[frozenset, re.Pattern | None] = {}


def _known_pattern(values: frozenset) -> re.Pattern | None:
    """One alternation of every form of every secret (longest first), compiled once per set."""
    cached = _pattern_cache.get(values, False)
    if cached is not False:
        return cached  # type: ignore[return-value]
    parts = []
    for secret in sorted(values, key=len, reverse=True):
        for form in _forms(secret):
            body = re.escape(form)
            parts.append((len(form), body if len(secret) >= SHORT_SECRET
                          else r"(?<![A-Za-z0-9])" + body + r"(?![A-Za-z0-9])"))
    parts.sort(key=lambda p: p[0], reverse=True)
    pattern = re.compile("|".join(p for _, p in parts)) if parts else None
    if len(_pattern_cache) > 256:
        _pattern_cache.clear()
    _pattern_cache[values] = pattern
    return pattern


def _remove_known(text: str, secrets: Iterable[str]) -> str:
    values = frozenset(s for s in secrets if s and s.strip())
    if not values:
        return text
    pattern = _known_pattern(values)
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    # text cut by someone else: a secret's beginning at the very end, its end at the very start.
    # A prefix of n >= _MIN_EDGE characters at the end means the text's last _MIN_EDGE characters
    # occur in the secret (minus its last character): checked first, so the loops over every prefix
    # length run only for a text that may end (or start) with a piece of this secret.
    for secret in values:
        if len(secret) <= _MIN_EDGE:
            continue
        if text[-_MIN_EDGE:] in secret[:-1]:
            for n in range(len(secret) - 1, _MIN_EDGE - 1, -1):
                if text.endswith(secret[:n]):
                    text = text[: len(text) - n] + REDACTED
                    break
        if text[:_MIN_EDGE] in secret[1:]:
            for n in range(len(secret) - 1, _MIN_EDGE - 1, -1):
                if text.startswith(secret[-n:]):
                    text = REDACTED + text[n:]
                    break
    return text


# --- structures --------------------------------------------------------------------------------
def sanitize_value(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a JSON-like value with secret keys removed, personal keys masked and every
    string scrubbed as text (registered secrets included). Non-JSON leaves are kept as they are."""
    return _clean_value(value, tuple(secrets) + tuple(known_secrets()))


def _clean_value(value: Any, extra: tuple[str, ...], _depth: int = 0) -> Any:
    if _depth > _MAX_DEPTH:
        return REDACTED
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        normed = [(k, v, _norm(k) if isinstance(k, str) else str(k)) for k, v in value.items()]
        pair_name = next((v for _, v, nk in normed if nk in _PAIR_NAME_KEYS and isinstance(v, str)), None)
        if pair_name is None:  # a JSON Patch operation (RFC 6902): {"op", "path": "/ContactName", "value"}
            pointer = next((v for _, v, nk in normed if nk in ("path", "from") and isinstance(v, str)), None)
            if pointer is not None and pointer.startswith("/"):
                pair_name = pointer.rstrip("/").rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        masked_pair = pair_name is not None and _keyed(pair_name)
        present = {nk for _, _, nk in normed}
        in_record = frozenset().union(*(personal for keys, personal in PERSONAL_IN_RECORD if keys <= present))
        for k, v, nk in normed:
            if _keyed_norm(nk) or nk in in_record or (masked_pair and nk in _PAIR_VALUE_KEYS):
                out[k] = _mask(v)
            else:
                out[k] = _clean_value(v, extra, _depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = [_clean_value(v, extra, _depth + 1) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, str):
        return _scrub_leaf(value, extra)
    return value


# a string inside parsed JSON needs the pattern layers only when it could hold a credential
_LEAF_TRIGGER = re.compile(r"[=:@<]|eyJ|(?i:bearer|basic|digest|negotiate|signature)")


def _scrub_leaf(value: str, secrets: tuple[str, ...]) -> str:
    if secrets:
        value = _remove_known(value, secrets)
    if len(value) < 8 or _LEAF_TRIGGER.search(value) is None:
        return value
    data = _try_json(value)  # JSON inside a JSON string (a quoted body)
    if isinstance(data, (dict, list)):
        clean = _clean_value(data, ())
        return json.dumps(clean, ensure_ascii=False) if clean != data else value
    return _patterns(value)


def _mask(value: Any) -> Any:
    if value is None or value == "" or isinstance(value, bool):
        return value
    return REDACTED


# --- text --------------------------------------------------------------------------------------
_Q = r"""["']"""
_KEYNAME = r"""[A-Za-z0-9_.\-:$@ ]{1,80}"""
# "key": "value" / 'key': 'value' / "key": 123 / "key": true ; value may be cut (no closing quote)
_JSON_STR_PAIR = re.compile(r"""(?P<q>["'])(?P<key>%s)(?P=q)(?P<sep>\s*:\s*)(?P<vq>["'])(?P<val>(?:\\.|(?!(?P=vq)).)*)(?P<end>(?P=vq)|$)"""
                            % _KEYNAME, re.DOTALL)
_JSON_SCALAR_PAIR = re.compile(r"""(?P<q>["'])(?P<key>%s)(?P=q)(?P<sep>\s*:\s*)(?P<val>-?[0-9][0-9.eE+\-]*|true|false)"""
                               % _KEYNAME)
# key=value in query strings, form bodies and "key=value" prose
_QUERY_PAIR = re.compile(r"""(?P<key>(?<![\w\-.])[A-Za-z][\w\-.]{0,60})(?P<sep>=)(?P<val>[^&\s"'<>,;]+)""")
# "Header: value" lines
_HEADER_LINE = re.compile(r"""(?m)^(?P<key>[ \t]*[A-Za-z][\w\-]{0,60})(?P<sep>[ \t]*:[ \t]*)(?P<val>.+)$""")
# Bearer / Basic / Token credentials anywhere, any case
_AUTH_SCHEME = re.compile(r"""(?i)\b(bearer|basic|digest|negotiate|sharedaccesssignature)(\s+)([A-Za-z0-9._~+/=\-]{8,})""")
# user:password@ in URLs
_URL_USERINFO = re.compile(r"""(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s:@]+):([^/\s@]+)@""")
# XML <key>value</key> (any prefix), <key attr>value</key>, and key="value" attributes
_XML_ELEMENT = re.compile(r"""<(?P<tag>(?:[\w\-]+:)?(?P<name>[\w\-.]+))(?P<attrs>(?:\s[^<>]*)?)>(?P<val>[^<]*)</(?P=tag)\s*>""")
_XML_ATTR = re.compile(r"""(?P<key>[\w\-:.]+)(?P<sep>\s*=\s*)(?P<vq>["'])(?P<val>.*?)(?P=vq)""")
# prose: "invalid app-secret tg-probe-42", "password hunter2x" (a value with a digit, or long)
_PROSE_SECRET = re.compile(r"""(?i)\b(app[-_ ]?secret|api[-_ ]?key|api[-_ ]?secret|client[-_ ]?secret|password|passwd|"""
                           r"""access[-_ ]?token|refresh[-_ ]?token|session[-_ ]?token|secret)(\s+(?:is\s+|was\s+)?)"""
                           r"""((?=[^\s"',;]*\d)[^\s"',;]{4,}|[^\s"',;]{16,})""")
# a bare JWT anywhere
_JWT = re.compile(r"""\beyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]*""")


@lru_cache(maxsize=4096)
def _keyed_norm(k: str) -> bool:
    return bool(k) and (_secret_norm(k) or _PERSONAL_KEY.match(k) is not None or k in _personal_keys)


def _keyed(key: str) -> bool:
    return _keyed_norm(_norm(key))


def _sub_pairs(text: str) -> str:
    def str_pair(m: re.Match) -> str:
        if not _keyed(m["key"]):
            return m[0]
        return f"{m['q']}{m['key']}{m['q']}{m['sep']}{m['vq']}{REDACTED}{m['end']}"

    # each pattern needs its separator in the text: one scan in C skips a regex pass that cannot match
    if ":" in text and ('"' in text or "'" in text):
        text = _JSON_STR_PAIR.sub(str_pair, text)
        text = _JSON_SCALAR_PAIR.sub(lambda m: f"{m['q']}{m['key']}{m['q']}{m['sep']}\"{REDACTED}\""
                                     if _keyed(m["key"]) and m["val"] not in ("true", "false") else m[0], text)
    if "=" in text:
        text = _QUERY_PAIR.sub(lambda m: f"{m['key']}={REDACTED}" if _keyed(m["key"]) else m[0], text)
    if ":" in text:
        text = _HEADER_LINE.sub(lambda m: f"{m['key']}{m['sep']}{REDACTED}" if _keyed(m["key"]) else m[0], text)
    return text


def _sub_xml(text: str) -> str:
    def element(m: re.Match) -> str:
        if _keyed(m["name"]) and m["val"].strip():
            return f"<{m['tag']}{m['attrs']}>{REDACTED}</{m['tag']}>"
        return m[0]

    def attr(m: re.Match) -> str:
        return f"{m['key']}{m['sep']}{m['vq']}{REDACTED}{m['vq']}" if _keyed(m["key"].split(":")[-1]) else m[0]

    text = _XML_ELEMENT.sub(element, text)
    # attributes only inside tags
    return re.sub(r"<[^<>]+>", lambda t: _XML_ATTR.sub(attr, t[0]), text)


def _try_json(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[" or len(stripped) > _MAX_PARSE:
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):
        return None


def _scrub_string(text: str, secrets: Iterable[str], *, parse: bool = True) -> str:
    out = _remove_known(text, list(secrets) + known_secrets())
    if parse:
        data = _try_json(out)
        if data is not None and isinstance(data, (dict, list)):
            clean = _clean_value(data, ())
            if clean != data:
                out = json.dumps(clean, ensure_ascii=False)
        else:
            # "METHOD path\n{json}" (our request texts) and other line-wise JSON
            lines = out.split("\n")
            changed = False
            for i, line in enumerate(lines):
                data = _try_json(line)
                if data is not None and isinstance(data, (dict, list)):
                    clean = _clean_value(data, ())
                    if clean != data:
                        lines[i] = json.dumps(clean, ensure_ascii=False)
                        changed = True
            if changed:
                out = "\n".join(lines)
    return _patterns(out)


def _patterns(out: str) -> str:
    if "<" in out and ">" in out:
        out = _sub_xml(out)
    out = _sub_pairs(out)
    if "@" in out:
        out = _URL_USERINFO.sub(lambda m: f"{m[1]}{REDACTED}@", out)
    out = _AUTH_SCHEME.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", out)
    out = _PROSE_SECRET.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", out)
    if "eyJ" in out:
        out = _JWT.sub(REDACTED, out)
    return out


# The same text is scrubbed several times on its way (a request text when the call is made, again
# in its log row; every row's constant description): results for texts up to _CACHE_TEXT characters
# are kept per set of secrets in force. A new secret changes the set (a new key); a new personal
# key clears the cache.
_CACHE_TEXT = 2048


@lru_cache(maxsize=4096)
def _scrub_cached(text: str, secrets: frozenset) -> str:
    return _scrub_string(text, secrets)


def sanitize_text(text: Any, secrets: Iterable[str] | None = (), *, limit: int | None = None) -> str:
    """``text`` with secrets removed and personal data masked, then cut to ``limit`` characters."""
    if text is None:
        return ""
    if not isinstance(text, str):
        text = str(text)
    if not text:
        return text
    extra = tuple(secrets or ())
    if len(text) <= _CACHE_TEXT:
        known = _registered
        out = _scrub_cached(text, known if known.issuperset(extra) else known | frozenset(extra))
    else:
        out = _scrub_string(text, extra)
    if limit is not None and len(out) > limit:
        out = out[:limit]
    return out


def sanitize_exception(exc: BaseException, secrets: Iterable[str] = ()) -> BaseException:
    """Scrub an exception's string arguments in place (its message, as logged and stored)."""
    try:
        exc.args = tuple(sanitize_text(a, secrets) if isinstance(a, str) else a for a in exc.args)
    except Exception:  # noqa: BLE001  some exception types refuse new args
        pass
    for attr in ("response_text",):
        value = getattr(exc, attr, None)
        if isinstance(value, str):
            try:
                setattr(exc, attr, sanitize_text(value, secrets))
            except Exception:  # noqa: BLE001
                pass
    return exc


def mask_name(value: str | None) -> str:
    """A person's name for a report a human reads: initials only (``J*** D***``)."""
    if not value:
        return value or ""
    return " ".join(f"{part[0]}***" for part in str(value).split() if part)
