"""What every carrier client shares: the error taxonomy, the call record and the HTTP plumbing.

A client turns one carrier API call into either a parsed response or one of three errors:

* ``TransientError``  - worth retrying (HTTP 429 with optional Retry-After, 5xx, timeouts,
  connection errors, malformed bodies from an overloaded gateway).
* ``PermanentError``  - the carrier refused the request (4xx validation, device not found);
  retrying cannot help.
* ``AuthError``       - credentials refused (401); the caller may re-authenticate once.

Every **attempt** of a call, successful or not, produces its own ``CallRecord`` (attempt number,
HTTP status or error, duration, sanitized request and response text, outcome); the processing layer
writes one ``DeviceBulkChangeLog`` row per record.

**Outcome of an attempt** (``attempt_outcome``, the one place this is decided):

* ``applied``  - the carrier answered 2xx with a body we could read: the change is in;
* ``refused``  - the carrier said no: a 4xx with its error body (a 429 included: it was not
  processed), or the request never left (the connection could not be opened);
* ``unknown``  - the request may have reached the carrier but its answer is lost or unusable: a 5xx,
  a timeout, a dropped connection, a 2xx whose body cannot be parsed.

A call whose last attempt is ``unknown`` is never settled by guessing: ``_call`` takes a ``verify``
read (e.g. Jasper ``GET /devices/{iccid}``) that is asked *before any resend* and once more before
the call gives up; a call that must never be replayed (``once=True``: activations, creates) stops at
its first ``unknown`` attempt with ``OutcomeUnknown`` and the caller looks the result up instead.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import Enum
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


class AttemptOutcome(str, Enum):
    APPLIED = "applied"
    REFUSED = "refused"
    UNKNOWN = "unknown"


class OutcomeUnknown(CarrierError):
    """The request may have been applied by the carrier but its answer was lost (5xx, timeout,
    dropped connection, unreadable body) and no check settled it. Never retried by ``CallPolicy``
    (it is neither transient nor permanent): the caller looks the result up at the carrier."""

    outcome = AttemptOutcome.UNKNOWN


def attempt_outcome(exc: BaseException | None) -> AttemptOutcome:
    """Applied, refused or unknown: the classification of one attempt (module docstring).

    ``exc`` is what the attempt raised (None: it returned a usable answer). An exception may carry
    its own ``outcome`` (set where the transport knows better, e.g. a connection never opened)."""
    if exc is None:
        return AttemptOutcome.APPLIED
    explicit = getattr(exc, "outcome", None)
    if isinstance(explicit, AttemptOutcome):
        return explicit
    code = getattr(exc, "status_code", None)
    if isinstance(exc, CarrierError) and code is not None and 400 <= code < 500:
        return AttemptOutcome.REFUSED
    # 5xx (the carrier may have acted before failing), timeouts, dropped connections, a 2xx whose
    # body is unreadable, or anything unexpected: nobody knows whether the change is in
    return AttemptOutcome.UNKNOWN


class NextStep(str, Enum):
    RETRY = "retry"
    WAIT_OUT = "wait out"
    REAUTHENTICATE = "reauthenticate"
    GIVE_UP = "give up"


def next_step(exc: BaseException) -> NextStep:
    """What a retry policy does after an attempt that raised ``exc``; with ``attempt_outcome``, the one
    place a failed attempt is classified (``engine.CallPolicy`` and the webhook sender both ask it).

    * a refusal (``PermanentError``: the carrier said no) is never sent again;
    * an ``OutcomeUnknown`` is never sent again: the caller looks the result up;
    * an ``AuthError`` (401): re-authenticate, then send again (the policy allows it once);
    * a 429 (``TransientError``, refused for now: nothing was applied): wait it out and send again;
    * a ``TransientError``: send again after a wait. Its outcome is either *refused for now* (429,
      connection never opened: nothing was taken) or *unknown* (5xx, timeout, unreadable answer);
      ``_call`` settles an unknown one with its ``verify`` read before anything is resent, and a
      ``once`` call without one has already turned it into ``OutcomeUnknown``;
    * anything else (a bug, an interrupt) propagates unchanged.
    """
    if isinstance(exc, OutcomeUnknown) or not isinstance(exc, CarrierError):
        return NextStep.GIVE_UP
    if isinstance(exc, AuthError):
        return NextStep.REAUTHENTICATE
    if isinstance(exc, TransientError):
        return NextStep.WAIT_OUT if exc.status_code == 429 else NextStep.RETRY
    return NextStep.GIVE_UP  # PermanentError and any other refusal


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
    attempt: int = 1                  # 1-based number of this attempt within its logical call
    outcome: str | None = None        # AttemptOutcome value; "verify" rows are reads, classified too
    log_id: int | None = None         # its DeviceBulkChangeLog row, written before it was sent (journal)
    journaled: bool = False           # the call journal writes its row: the batch does not write it again

    @property
    def has_errors(self) -> bool:
        return self.error is not None


class Journal:
    """Where attempts are written as they happen (``bulkchange.journal.CallJournal``): ``begin``
    returns only once the attempt's row is durable, before its request leaves; ``end`` queues the
    answer for that row; ``write`` queues an attempt that was never begun."""

    def begin(self, device_change_id: int, record: CallRecord) -> None:
        raise NotImplementedError

    def end(self, record: CallRecord) -> None:
        raise NotImplementedError

    def write(self, device_change_id: int, record: CallRecord) -> None:
        raise NotImplementedError


@dataclass
class CallLog:
    """Collects the CallRecords of one device's work (several calls per device are normal).

    With a ``journal`` (the batch's call journal) every attempt also has its log row written as it
    happens: ``begin`` before the request is sent (an IN_FLIGHT row), ``add`` when it ends."""

    records: list[CallRecord] = field(default_factory=list)
    journal: Journal | None = None
    device_change_id: int | None = None

    def begin(self, record: CallRecord) -> None:
        """Called before the attempt's request leaves; with a journal, returns once its row is written."""
        if self.journal is not None and self.device_change_id is not None:
            self.journal.begin(self.device_change_id, record)

    def add(self, record: CallRecord) -> None:
        self.records.append(record)
        if self.journal is not None and self.device_change_id is not None:
            if record.log_id is not None:
                self.journal.end(record)
            else:
                self.journal.write(self.device_change_id, record)


def _never_connected(exc: BaseException) -> bool:
    """True when the connection could not be opened at all (refused, no route, DNS): nothing was sent."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, (NewConnectionError, NameResolutionError)):
            return True
        reason = getattr(cur, "reason", None)
        if isinstance(reason, BaseException):
            if isinstance(reason, (NewConnectionError, NameResolutionError)):
                return True
        nxt = cur.args[0] if cur.args and isinstance(cur.args[0], BaseException) else None
        cur = nxt or cur.__cause__ or cur.__context__
    return False


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
              params: dict | None = None, log: CallLog | None = None, log_body: Any = None,
              parse: Callable[[requests.Response], Any] | None = None,
              headers: dict[str, str] | None = None, policy: Any = None,
              verify: Callable[[], Any] | None = None, once: bool = False) -> Any:
        """Send one logical call: rate limit, retries and re-auth come from ``self.policy``.

        One CallRecord per **attempt**, appended to ``log`` as the attempt ends (attempt number,
        HTTP status or error, duration, outcome). ``headers`` are sent with the auth headers (e.g. a
        JSON Patch ``Content-Type``); ``policy`` replaces the client's policy for this call.

        ``verify``: for a change whose attempt may end ``unknown``. A read that returns the carrier's
        view when the change is already in, else None. It is asked before any resend that follows
        an ``unknown`` attempt (a confirmed change is returned as the call's value and not sent
        again), and once more when the attempts are used up after an ``unknown`` one: "not applied"
        then raises the last error with ``outcome = refused`` and the evidence in a note; a check
        that itself fails raises ``OutcomeUnknown``. Its own calls are logged like any other.

        ``once``: the call must never be replayed blindly after an ``unknown`` attempt (a create, an
        add, an operation that is not idempotent). Without ``verify`` the first such attempt raises
        ``OutcomeUnknown`` and the caller looks the result up. With ``verify`` (the read that finds
        the created thing: by ICCID, number, request id...) the result is looked up first: found, it
        is the call's value (nothing is sent again); not there, the request is sent **once** more; a
        second ``unknown`` attempt is looked up again and then ends the call (found: its value; not
        there: the last error, ``outcome = refused`` with the evidence). A refused attempt (a 429)
        is still retried by the policy.
        """
        url = f"{self.base_url}{path}"
        req_text = f"{method} {path}"
        if params:
            req_text += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        if json_body is not None:  # ``log_body``: what the log shows instead (same data, labelled for the scrubber)
            req_text += "\n" + json.dumps(log_body if log_body is not None else json_body, sort_keys=True)
        request_text = self.sanitize(req_text)
        state = {"n": 0, "unknown": None, "confirmed": False, "resent": False}

        def check() -> Any:
            """The verify read; None = not applied (raises if the carrier cannot be read)."""
            return verify() if verify is not None else None

        def begin() -> CallRecord:
            state["n"] += 1
            record = CallRecord(description=description, method=method, url=url, request_text=request_text,
                                attempt=state["n"])
            if log is not None:
                # the attempt's log row is written before the request leaves (the batch's call journal):
                # a task killed from here on leaves a row saying the outcome is unknown. If it cannot be
                # written, nothing is sent (the error propagates; it is no carrier error).
                log.begin(record)
            return record

        def before_slot() -> None:
            """The policy is about to wait for this attempt's slot: journal the attempt first, so the
            database's commit is not between the slot and the request (a request that leaves late
            leaves bunched with the next slot's, and the carrier counts them in one second). Not
            when a check at the carrier comes first (it may find the change in: nothing is sent)."""
            if log is not None and not (state["unknown"] is not None and verify is not None):
                state["begun"] = begin()

        def send() -> Any:
            record = state.pop("begun", None) or begin()
            started = time.monotonic()
            try:
                value = self._send_once(method, url, json_body, params, headers, parse, record)
            except BaseException as exc:
                outcome = attempt_outcome(exc)
                record.outcome = outcome.value
                record.error = self.sanitize(str(exc)) or type(exc).__name__
                if isinstance(exc, CarrierError):
                    exc.outcome = outcome  # type: ignore[attr-defined]
                state["unknown"] = exc if outcome == AttemptOutcome.UNKNOWN else None
                raise
            else:
                record.outcome = AttemptOutcome.APPLIED.value
                state["unknown"] = None
                return value
            finally:
                record.duration_s = time.monotonic() - started
                if log is not None:
                    log.add(record)

        def attempt() -> Any:
            if state["unknown"] is not None and verify is not None:
                # the last attempt may have been applied: ask before sending it again
                current = check()  # a CarrierError here counts as a failed attempt: nothing is resent
                if current is not None:
                    state["confirmed"] = True
                    return current
                state["unknown"] = None  # checked: not applied, safe to send
                if once:
                    state["resent"] = True  # the one resend a non-idempotent call gets
            try:
                return send()
            except CarrierError as exc:
                if once and attempt_outcome(exc) == AttemptOutcome.UNKNOWN and not isinstance(exc, OutcomeUnknown):
                    if verify is not None and not state["resent"]:
                        raise  # the policy's next attempt looks it up before sending again
                    unknown = OutcomeUnknown(f"{exc} (not sent again: the carrier may have applied it)",
                                             status_code=exc.status_code, response_text=exc.response_text)
                    unknown.original = exc  # type: ignore[attr-defined]
                    raise unknown from exc
                raise

        active = policy if policy is not None else self.policy
        try:
            if active is not None:
                value, _ = active.execute(attempt, reauthenticate=self.reauthenticate, before_slot=before_slot)
            else:
                value = attempt()
            return value
        except CarrierError as exc:
            exc.attempts = state["n"]  # type: ignore[attr-defined]  # times sent (checks not counted)
            last_unknown = state["unknown"] is not None or attempt_outcome(exc) == AttemptOutcome.UNKNOWN
            if verify is None or not last_unknown:
                raise
            # the last word was "unknown": settle it at the carrier before the call is recorded
            try:
                current = check()
            except CarrierError as check_exc:
                unknown = OutcomeUnknown(f"{exc}; the carrier could not be checked afterwards: "
                                         f"{self.sanitize(str(check_exc))}",
                                         status_code=exc.status_code, response_text=exc.response_text)
                unknown.attempts = state["n"]  # type: ignore[attr-defined]
                raise unknown from exc
            if current is not None:
                return current
            lost = getattr(exc, "original", None)  # once=True: the attempt's own error, now settled
            if lost is not None:
                lost.attempts = state["n"]  # type: ignore[attr-defined]
                exc = lost
            exc.outcome = AttemptOutcome.REFUSED  # type: ignore[attr-defined]
            exc.checked = "checked at the carrier afterwards: the change is not there"  # type: ignore[attr-defined]
            raise exc

    def _send_once(self, method: str, url: str, json_body: Any, params: dict | None,
                   headers: dict[str, str] | None, parse: Callable[[requests.Response], Any] | None,
                   record: CallRecord) -> Any:
        """One HTTP attempt: the answer parsed, or the matching CarrierError; fills ``record``."""
        try:
            resp = self.session.request(method, url, json=json_body, params=params,
                                        headers={"Accept": "application/json", **(headers or {}),
                                                 **self._auth_headers()},
                                        timeout=self.timeout)
        except requests.ConnectTimeout as exc:
            err = TransientError(f"could not connect to {self.carrier_name} (connect timeout): not sent")
            err.outcome = AttemptOutcome.REFUSED  # type: ignore[attr-defined]
            raise err from exc
        except requests.Timeout as exc:
            raise TransientError(f"timeout after {self.timeout}s calling {self.carrier_name}") from exc
        except requests.ConnectionError as exc:
            err = TransientError(f"connection error calling {self.carrier_name}: {type(exc).__name__}")
            if _never_connected(exc):
                err.outcome = AttemptOutcome.REFUSED  # type: ignore[attr-defined]
            raise err from exc
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

    def close(self) -> None:
        self.session.close()
