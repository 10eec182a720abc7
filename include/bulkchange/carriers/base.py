"""What every carrier client shares: the error taxonomy, the call record and the HTTP plumbing.

A client turns one carrier API call into either a parsed response or one of three errors:

* ``TransientError``  - worth retrying (HTTP 429 with optional Retry-After, 5xx, timeouts,
  connection errors, malformed bodies from an overloaded gateway).
* ``PermanentError``  - the carrier refused the request (4xx validation, device not found);
  retrying cannot help.
* ``AuthError``       - credentials refused (401); the caller may re-authenticate once.

Every call, successful or not, produces a ``CallRecord`` with sanitized request and response
text; the processing layer writes these to ``DeviceBulkChangeLog``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

from bulkchange.carriers.http import DEFAULT_MAX_BYTES, bounded_session
from bulkchange.sanitize import register_secret, sanitize_text, sanitize_value

RESPONSE_LOG_LIMIT = 4000  # characters of a carrier answer kept in the log (after scrubbing)


class CarrierError(Exception):
    """Base class for errors raised by carrier clients."""

    def __init__(self, message: str, *, status_code: int | None = None, response_text: str = ""):
        super().__init__(message)
        self.status_code = status_code
        self.response_text = response_text


class TransientError(CarrierError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PermanentError(CarrierError):
    pass


class AuthError(CarrierError):
    pass


@dataclass
class CallRecord:
    """One carrier call as it goes to the audit log (already sanitized)."""

    description: str
    method: str
    url: str
    request_text: str
    status_code: int | None = None
    response_text: str = ""
    error: str | None = None
    duration_s: float = 0.0
    attempts: int = 1

    @property
    def has_errors(self) -> bool:
        return self.error is not None


@dataclass
class CallLog:
    """Collects the CallRecords of one device's work (several calls per device are normal)."""

    records: list[CallRecord] = field(default_factory=list)

    def add(self, record: CallRecord) -> None:
        self.records.append(record)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff


def classify_response(resp: requests.Response) -> None:
    """Raise the matching CarrierError for a non-2xx response; return None for 2xx."""
    code = resp.status_code
    if 200 <= code < 300:
        return
    # scrubbed before it is cut, and before any of it reaches an exception message (StatusDetails)
    text = sanitize_text(resp.text, limit=RESPONSE_LOG_LIMIT)
    if code == 429:
        raise TransientError(
            f"HTTP 429 rate limited", status_code=code, response_text=text,
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
        )
    if code in (408, 425) or code >= 500:
        raise TransientError(f"HTTP {code}", status_code=code, response_text=text,
                             retry_after=parse_retry_after(resp.headers.get("Retry-After")))
    if code == 401:
        raise AuthError(f"HTTP 401 authentication refused", status_code=code, response_text=text)
    raise PermanentError(f"HTTP {code}: {_error_message(text)}", status_code=code, response_text=text)


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(body, dict):
        body = sanitize_value(body)
        for key in ("errorMessage", "message", "error", "description"):
            if body.get(key):
                code = body.get("errorCode")
                return f"{body[key]} ({code})" if code else str(body[key])
    return text[:300]


class HttpCarrierClient:
    """Shared HTTP plumbing: one pooled ``requests.Session``, timeouts, classification, logging.

    Subclasses set auth headers in ``_auth_headers`` and call ``_call``.
    ``secrets`` lists literal values (API keys, passwords, tokens) that must never reach a log;
    the sanitizer also removes well-known secret fields and headers by name.
    """

    carrier_name = "carrier"

    def __init__(self, base_url: str, *, policy: Any = None, timeout: float = 30.0, pool_size: int = 32,
                 max_response_bytes: int = DEFAULT_MAX_BYTES):
        self.base_url = base_url.rstrip("/")
        self.policy = policy  # bulkchange.engine.CallPolicy: rate limit + retry, shared per account
        self.timeout = timeout
        # ``timeout`` is the overall deadline of one attempt (connect, headers and body), and the
        # answer is read under a size cap (carriers/http.py; connection extra max_response_mb)
        self.session = bounded_session(pool_size=pool_size, max_bytes=max_response_bytes)
        self._secrets: list[str] = []

    # -- hooks for subclasses -------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        return {}

    def _classify(self, resp: requests.Response) -> None:
        """Raise the CarrierError for a non-2xx answer; carriers with their own codes override."""
        classify_response(resp)

    def reauthenticate(self) -> None:
        """Drop cached tokens so the next call logs in again. Basic-auth clients do nothing."""

    def add_secret(self, value: str | None) -> None:
        if value and value not in self._secrets:
            self._secrets.append(value)
            register_secret(value)  # every scrub in this process removes it (columns, mails, XCom)

    def sanitize(self, text: str) -> str:
        return sanitize_text(text, self._secrets)

    # -- the one way to call the carrier ----------------------------------------------------
    def _call(self, method: str, path: str, *, description: str, json_body: Any = None,
              params: dict | None = None, log: CallLog | None = None,
              parse: Callable[[requests.Response], Any] | None = None,
              headers: dict[str, str] | None = None, policy: Any = None) -> Any:
        """Send one logical call: rate limit, retries and re-auth come from ``self.policy``.

        One CallRecord per logical call (with the number of attempts), appended to ``log``.
        ``headers`` are sent with the auth headers (e.g. a JSON Patch ``Content-Type``); ``policy``
        replaces the client's policy for this call (e.g. one that never replays a create).
        """
        url = f"{self.base_url}{path}"
        req_text = f"{method} {path}"
        if params:
            req_text += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        if json_body is not None:
            req_text += "\n" + json.dumps(json_body, sort_keys=True)
        record = CallRecord(description=description, method=method, url=url,
                            request_text=self.sanitize(req_text))

        def attempt() -> Any:
            try:
                resp = self.session.request(method, url, json=json_body, params=params,
                                            headers={"Accept": "application/json", **(headers or {}),
                                                     **self._auth_headers()},
                                            timeout=self.timeout)
            except requests.Timeout as exc:
                raise TransientError(f"timeout after {self.timeout}s calling {self.carrier_name}") from exc
            except requests.ConnectionError as exc:
                raise TransientError(f"connection error calling {self.carrier_name}: "
                                     f"{type(exc).__name__}") from exc
            record.status_code = resp.status_code
            record.response_text = self.sanitize(resp.text)[:RESPONSE_LOG_LIMIT]
            self._classify(resp)
            if parse is not None:
                return parse(resp)
            try:
                return resp.json() if resp.content else None
            except ValueError as exc:
                raise TransientError(f"malformed JSON from {self.carrier_name}",
                                     status_code=resp.status_code) from exc

        started = time.monotonic()
        try:
            active = policy if policy is not None else self.policy
            if active is not None:
                value, record.attempts = active.execute(attempt, reauthenticate=self.reauthenticate)
            else:
                value = attempt()
            return value
        except CarrierError as exc:
            record.error = self.sanitize(str(exc))
            record.attempts = getattr(exc, "attempts", record.attempts)
            raise
        finally:
            record.duration_s = time.monotonic() - started
            if log is not None:
                log.add(record)

    def close(self) -> None:
        self.session.close()
