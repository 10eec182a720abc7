"""The simulator framework: what every simulated carrier shares.

A :class:`SimulatedCarrier` owns

* an in-memory device inventory ``devices`` (dict keyed by ICCID, guarded by ``self.lock``),
* credentials ``accounts`` (username -> secret; the carrier decides how they are presented),
* a FastAPI ``router`` with the carrier's API under ``<prefix><api_root>`` and a ``control`` router
  under ``<prefix>/_control``,
* behaviour knobs (:class:`Knobs`; carriers may extend the model),
* a call log (:class:`CallLog`) and a scheduler for delayed state changes (``schedule``,
  ``schedule_at``, ``schedule_device_update``; applied lazily before the next request or control read).

Subclasses set ``name``/``prefix``/``api_root``, implement ``authenticate`` and ``add_routes`` (using
``self.route(method, path, auth=True)`` as a decorator) and may override ``error_body``,
``normalize_device``, ``on_devices_seeded``, ``control_view``, ``rate_limited_response``,
``add_control_routes``, ``reset_state`` and ``knobs_model`` (a subclass of :class:`Knobs`).

Every API request goes through one pipeline, in this order:

1. due scheduled state changes are applied (lazily, O(1) when nothing is due);
2. ``authenticate`` -> the account (username) or the carrier's 401;
3. admission per account: rate limit (at most ``rate_limit`` admitted requests in any sliding
   1-second window; below 1/s, one per ``1/rate_limit`` seconds) and concurrency limit (requests in
   flight); a refusal is answered at once (no latency) with HTTP 429, the carrier's error body and
   ``Retry-After``, and is not counted against the limits;
4. the request body is parsed (``content_type_error`` may refuse its Content-Type first; invalid
   JSON -> 400);
5. latency: ``latency_ms`` + uniform(0, ``jitter_ms``), with ``asyncio.sleep`` (the request is in flight);
6. faults: ``fail_iccids`` (that status for that device), then one roll decides between
   ``error_rate`` (one of ``error_statuses``, default 500/503; nothing applied), ``timeout_rate`` (hang ``timeout_s`` then 504, nothing
   applied), ``malformed_rate`` (the handler *runs*, so the change is applied, but the 2xx body is
   cut in half: a response lost in transit) and ``applied_error_rate`` (the handler *runs*, then a
   502 is answered: a gateway lost the carrier's answer); ``fault_methods`` limits these random
   faults to some HTTP methods (e.g. ``["PUT"]``: the reads stay clean);
7. the handler; its result is answered as JSON; 8. the call is logged.

**Retry-After** is in seconds, as a decimal string with up to two decimals, rounded up, at least 0.01
(``"0.2"``, ``"0.35"``, ``"1"``): for the rate limit, the time until the oldest admitted request leaves
the window (so a request sent after it is admitted);
for the concurrency limit, ``max(0.1, latency_ms/1000)``. Clients must accept fractional values. Set
the knob ``integer_retry_after`` to send whole seconds (rounded up, at least 1) as RFC 9110 prescribes.

**Determinism**: with ``seed`` set, the fault roll and jitter of a call depend only on
(seed, method, path, how many times that method+path was called since the seed was set or the
simulator reset), so the same workload gets the same faults whatever the interleaving of parallel
calls; a retry of the same call rolls again. Without a seed, rolls are random.

The control API is neither authenticated, rate limited, delayed nor logged.
"""
from __future__ import annotations

import asyncio
import hashlib
import heapq
import inspect
import itertools
import json
import math
import random
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, ClassVar, Union

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROLL_SCALE = float(2 ** 64)
ANONYMOUS = "(anonymous)"  # limiter key of calls to auth=False routes


class Knobs(BaseModel):
    """Behaviour knobs of one carrier. ``GET /_control/config`` answers this model as JSON;
    ``PUT /_control/config`` merges a partial object into it (top-level keys; ``fail_iccids`` is
    replaced as a whole) and validates the result."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0, description="fixed latency added to every admitted request")
    jitter_ms: float = Field(0.0, ge=0, description="plus uniform(0, jitter_ms)")
    rate_limit: float | None = Field(None, gt=0, description="admitted requests/second per account; 0/None = off")
    max_concurrency: int | None = Field(None, ge=1, description="requests in flight per account; 0/None = off")
    error_rate: float = Field(0.0, ge=0, le=1, description="fraction answered with one of error_statuses")
    error_statuses: list[int] = Field(default_factory=lambda: [500, 503])
    timeout_rate: float = Field(0.0, ge=0, le=1, description="fraction that hang timeout_s, then 504")
    timeout_s: float = Field(30.0, ge=0)
    malformed_rate: float = Field(0.0, ge=0, le=1, description="fraction whose 2xx body is truncated")
    applied_error_rate: float = Field(0.0, ge=0, le=1, description="fraction applied, then answered 502 "
                                      "(a gateway lost the carrier's answer)")
    fault_methods: list[str] | None = Field(None, description="HTTP methods the random faults apply to "
                                            "(None: all)")
    seed: int | None = Field(None, description="makes faults and jitter deterministic")
    fail_iccids: dict[str, int] = Field(default_factory=dict, description="iccid -> HTTP status to answer")
    integer_retry_after: bool = Field(False, description="Retry-After in whole seconds instead of '0.2'")
    call_log_limit: int = Field(500_000, ge=100, description="entries kept; beyond, the oldest half is dropped")

    @field_validator("rate_limit", "max_concurrency", mode="before")
    @classmethod
    def _zero_is_off(cls, v: Any) -> Any:
        return None if v in (0, 0.0, "0", "") else v

    @field_validator("error_statuses")
    @classmethod
    def _error_statuses(cls, v: list[int]) -> list[int]:
        if not v or any(not 400 <= s <= 599 for s in v):
            raise ValueError("error_statuses must be a non-empty list of 4xx/5xx codes")
        return v

    @field_validator("fail_iccids")
    @classmethod
    def _fail_statuses(cls, v: dict[str, int]) -> dict[str, int]:
        if any(not 400 <= s <= 599 for s in v.values()):
            raise ValueError("fail_iccids statuses must be 4xx/5xx")
        return v

    @model_validator(mode="after")
    def _rates_sum(self) -> "Knobs":
        if self.error_rate + self.timeout_rate + self.malformed_rate + self.applied_error_rate > 1.0 + 1e-9:
            raise ValueError("error_rate + timeout_rate + malformed_rate + applied_error_rate must not exceed 1")
        return self


class SimError(Exception):
    """Raise inside a handler (or ``authenticate``) to answer with ``response``."""

    def __init__(self, response: Response):
        super().__init__(response.status_code)
        self.response = response


@dataclass
class Call:
    """What a route handler gets. Handlers may set ``iccid`` / ``iccids`` for the call log (a
    ``{iccid}`` path parameter is filled in already)."""

    request: Request
    method: str
    path: str
    path_params: dict[str, Any]
    arrived: float
    account: str | None = None
    body: Any = None
    iccid: str | None = None
    iccids: list[str] | None = None

    @property
    def query(self):
        return self.request.query_params

    def q(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)


HandlerResult = Union[Response, tuple, dict, list, None]
Handler = Callable[[Call], Union[HandlerResult, Awaitable[HandlerResult]]]


class CallLog:
    """Append-only log of API calls with running counters; amortized O(1) per call.

    An entry: ``{"ts": arrival time.time(), "method", "path", "query", "iccid", "iccids"?, "account",
    "body": request JSON or None, "status", "duration_ms", "fault": None | "rate_limit" | "concurrency" |
    "error" | "timeout" | "malformed" | "applied_error" | "fail_iccid" | "simulator_bug"}``. Beyond ``max_entries`` the
    oldest half of the entries is dropped (the counters in ``stats`` keep counting every call; the
    busiest-second figures only see kept entries)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self.total = 0
            self.dropped = 0
            self.entries: list[dict] = []
            self.by_iccid: dict[str, list[dict]] = defaultdict(list)
            self.by_status: Counter = Counter()
            self.by_method: Counter = Counter()
            self.by_account: Counter = Counter()
            self.by_fault: Counter = Counter()

    def add(self, entry: dict, max_entries: int | None = None) -> None:
        with self._lock:
            self.total += 1
            self.entries.append(entry)
            for k in _entry_iccids(entry):
                self.by_iccid[k].append(entry)
            if max_entries and len(self.entries) > max_entries:  # amortized O(1): drop the oldest half
                drop = len(self.entries) - max_entries // 2
                self.dropped += drop
                self.entries = self.entries[drop:]
                self.by_iccid = defaultdict(list)
                for e in self.entries:
                    for k in _entry_iccids(e):
                        self.by_iccid[k].append(e)
            self.by_status[str(entry["status"])] += 1
            self.by_method[entry["method"]] += 1
            self.by_account[str(entry["account"])] += 1
            if entry["fault"]:
                self.by_fault[entry["fault"]] += 1

    def query(self, *, iccid: str | None = None, method: str | None = None, path_contains: str | None = None,
              since: float | None = None, until: float | None = None, status: int | None = None,
              account: str | None = None, fault: str | None = None, limit: int | None = None) -> list[dict]:
        with self._lock:
            rows = list(self.by_iccid.get(iccid, ())) if iccid else list(self.entries)
        if method:
            m = method.upper()
            rows = [c for c in rows if c["method"] == m]
        if path_contains:
            rows = [c for c in rows if path_contains in c["path"]]
        if since is not None:
            rows = [c for c in rows if c["ts"] >= since]
        if until is not None:
            rows = [c for c in rows if c["ts"] < until]
        if status is not None:
            rows = [c for c in rows if c["status"] == status]
        if account is not None:
            rows = [c for c in rows if c["account"] == account]
        if fault is not None:
            rows = [c for c in rows if c["fault"] == fault]
        rows.sort(key=lambda c: c["ts"])  # entries are appended at completion; order by arrival
        if limit is not None and limit >= 0:
            rows = rows[-limit:] if limit else []
        return rows

    def stats(self) -> dict[str, Any]:
        with self._lock:
            ts_all = [c["ts"] for c in self.entries]
            ts_admitted = [c["ts"] for c in self.entries if c["status"] != 429]
            out = {"calls": self.total, "calls_kept": len(self.entries), "calls_dropped": self.dropped,
                   "by_status": dict(self.by_status), "by_method": dict(self.by_method),
                   "by_account": dict(self.by_account), "by_fault": dict(self.by_fault)}
        out["max_rps_all"] = max_per_second(ts_all)
        out["max_rps_admitted"] = max_per_second(ts_admitted)
        out["first_ts"] = min(ts_all) if ts_all else None
        out["last_ts"] = max(ts_all) if ts_all else None
        return out


def _entry_iccids(entry: dict) -> list[str]:
    return entry.get("iccids") or ([entry["iccid"]] if entry["iccid"] else [])


def max_per_second(timestamps: list[float]) -> int:
    """The most events inside any 1-second window ``(t-1, t]`` (the limiter's window)."""
    ts = sorted(timestamps)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def format_retry_after(seconds: float, integer: bool = False) -> str:
    if integer:
        return str(max(1, math.ceil(seconds - 1e-9)))
    hundredths = max(1, math.ceil(seconds * 100 - 1e-6))
    whole, frac = divmod(hundredths, 100)
    return str(whole) if not frac else f"{whole}.{frac:02d}".rstrip("0")


class SimulatedCarrier:
    name: ClassVar[str] = "carrier"
    prefix: ClassVar[str] = "/carrier"
    api_root: ClassVar[str] = ""          # e.g. "/rws/api/v1"; url_for() = base + prefix + api_root
    knobs_model: ClassVar[type[Knobs]] = Knobs
    rate_limit_message: ClassVar[tuple[str, str | None]] = ("Rate limit exceeded", None)
    concurrency_message: ClassVar[tuple[str, str | None]] = ("Too many concurrent requests", None)

    def __init__(self, accounts: dict[str, str] | None = None, **knobs: Any):
        self.lock = threading.RLock()
        self.accounts: dict[str, str] = dict(accounts or {})
        try:
            self._base_knobs = self.knobs_model(**knobs)
        except ValidationError as exc:
            raise ValueError(f"{self.name}: invalid knobs: {exc}") from None
        self.knobs = self._base_knobs
        self.devices: dict[str, dict] = {}
        self.log = CallLog()
        self._windows: dict[str, deque] = defaultdict(deque)
        self._inflight: Counter = Counter()
        self._inflight_total = 0
        self._peak_inflight = 0
        self._peak_inflight_total = 0
        self._rng = random.Random()
        self._occurrences: dict[tuple[str, str], int] = {}
        self._scheduled: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._generation = 0
        self.router = APIRouter(prefix=self.prefix)
        self.control = APIRouter(prefix=f"{self.prefix}/_control")
        self._add_common_control_routes()
        self.add_control_routes(self.control)
        self.add_routes()

    # ---------------------------------------------------------------- for subclasses
    def add_routes(self) -> None:
        raise NotImplementedError

    def add_control_routes(self, router: APIRouter) -> None:
        """Carrier-specific control endpoints (under ``<prefix>/_control``)."""

    def authenticate(self, request: Request) -> str:
        """Return the account (username) or raise ``self.error(401, ...)``."""
        raise NotImplementedError

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        """The carrier's JSON error shape (default: Cisco's ``{"errorMessage", "errorCode"?}``)."""
        body: dict[str, Any] = {"errorMessage": message}
        if code is not None:
            body["errorCode"] = code
        return body

    def error(self, status: int, message: str, code: str | None = None,
              headers: dict[str, str] | None = None) -> SimError:
        return SimError(JSONResponse(self.error_body(status, message, code), status_code=status, headers=headers))

    def rate_limited_response(self, retry_after: float, reason: str) -> Response:
        message, code = self.rate_limit_message if reason == "rate_limit" else self.concurrency_message
        header = format_retry_after(retry_after, self.knobs.integer_retry_after)
        return self.error(429, message, code, headers={"Retry-After": header}).response

    def normalize_device(self, device: dict) -> dict:
        """Fill defaults / validate one seeded device (raise ValueError to refuse the seed)."""
        if not isinstance(device, dict) or not device.get("iccid"):
            raise ValueError("every device needs an 'iccid'")
        device["iccid"] = str(device["iccid"])
        return device

    def identify(self, call: Call) -> None:
        """Hook after the JSON body is parsed, before faults are rolled: set ``call.iccid`` /
        ``call.iccids`` for devices named in the body, so ``fail_iccids`` and the call log see them."""

    def on_devices_seeded(self, devices: list[dict]) -> None:
        """Hook after a seed (e.g. to index the new devices); called under ``self.lock``."""

    def reset_state(self) -> None:
        """Clear carrier-specific state; called under ``self.lock`` by ``reset``."""

    def control_view(self, device: dict) -> dict:
        """What ``GET /_control/devices/{iccid}`` answers for a device."""
        return dict(device)

    # ---------------------------------------------------------------- routes
    def route(self, method: str, path: str, *, auth: bool = True, json_body: bool = True,
              name: str | None = None) -> Callable[[Handler], Handler]:
        """Register ``fn(call) -> result`` for ``<prefix><api_root><path>``; ``result`` is a Response,
        ``(status, json)``, or JSON for a 200. ``fn`` may be sync (runs under ``self.lock``) or async.
        ``auth=False`` (e.g. a token endpoint) skips ``authenticate``; such calls are limited and
        logged under the account ``None`` (limiter key ``ANONYMOUS``). ``json_body=False`` leaves the
        body unparsed (e.g. a form-encoded token request: the handler reads ``call.request``)."""

        def register(fn: Handler) -> Handler:
            is_async = inspect.iscoroutinefunction(fn)

            async def endpoint(request: Request) -> Response:
                return await self._dispatch(request, fn, is_async, auth, json_body)

            self.router.add_api_route(self.api_root + path, endpoint, methods=[method.upper()],
                                      name=name or f"{self.name}:{fn.__name__}")
            return fn

        return register

    def int_param(self, call: Call, name: str, default: int, lo: int, hi: int, message: str,
                  code: str | None = None) -> int:
        """A bounded integer query parameter, or the carrier's 400."""
        raw = call.q(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.error(400, message, code) from None
        if not lo <= value <= hi:
            raise self.error(400, message, code)
        return value

    # ---------------------------------------------------------------- delayed state changes
    def schedule_at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` (under ``self.lock``) at epoch ``when``: lazily, before the next API or control
        read at or after that time. Cleared by ``reset``."""
        with self.lock:
            heapq.heappush(self._scheduled, (when, next(self._seq), fn))

    def schedule(self, delay_s: float, fn: Callable[[], None]) -> None:
        """Run ``fn()`` ``delay_s`` seconds from now (e.g. "device becomes active N s after the request")."""
        self.schedule_at(time.time() + delay_s, fn)

    def schedule_device_update(self, iccid: str, delay_s: float, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into device ``iccid`` after ``delay_s`` seconds (no-op if it is gone)."""

        def apply() -> None:
            dev = self.devices.get(iccid)
            if dev is not None:
                dev.update(changes)
                self.on_device_changed(dev)

        self.schedule(delay_s, apply)

    def on_device_changed(self, device: dict) -> None:
        """Hook after a scheduled update changed ``device`` (e.g. re-index); under ``self.lock``."""

    def run_due(self) -> int:
        if not self._scheduled or self._scheduled[0][0] > time.time():
            return 0
        ran = 0
        with self.lock:
            now = time.time()
            while self._scheduled and self._scheduled[0][0] <= now:
                _, _, fn = heapq.heappop(self._scheduled)
                fn()
                ran += 1
        return ran

    def run_scheduled(self, within_s: float) -> int:
        """Run now every scheduled event due within the next ``within_s`` seconds, in order, as if its
        time had come (a test's clock jump: no waiting on wall-clock time under a busy machine)."""
        ran = 0
        with self.lock:
            horizon = time.time() + within_s
            while self._scheduled and self._scheduled[0][0] <= horizon:
                _, _, fn = heapq.heappop(self._scheduled)
                fn()
                ran += 1
        return ran

    # ---------------------------------------------------------------- the request pipeline
    async def _dispatch(self, request: Request, fn: Handler, is_async: bool, auth: bool = True,
                        json_body: bool = True) -> Response:
        arrived = time.time()
        t0 = time.perf_counter()
        generation = self._generation
        self.run_due()
        call = Call(request=request, method=request.method, path=request.url.path,
                    path_params=request.path_params, arrived=arrived)
        call.iccid = request.path_params.get("iccid")
        fault: str | None = None
        if auth:
            try:
                call.account = self.authenticate(request)
            except SimError as exc:
                self._log(call, exc.response.status_code, None, t0, generation)
                return exc.response
        limiter_key = call.account if call.account is not None else ANONYMOUS
        knobs = self.knobs
        refusal = self._admit(limiter_key, arrived, knobs)
        if refusal is not None:
            retry_after, fault = refusal
            response = self.rate_limited_response(retry_after, fault)
            self._log(call, 429, fault, t0, generation)
            return response
        try:
            if json_body and request.method in ("POST", "PUT", "PATCH", "DELETE"):
                raw = await request.body()
                if raw:
                    refusal = self.content_type_error(request)
                    if refusal is not None:
                        call.body = raw[:200].decode(errors="replace")
                        raise refusal
                    try:
                        call.body = json.loads(raw)
                    except ValueError:
                        call.body = raw[:200].decode(errors="replace")
                        raise self.bad_json() from None
                self.identify(call)
            roll, jitter_roll, pick_roll = self._draw(knobs, call.method, call.path)
            if knobs.fault_methods is not None and call.method.upper() not in {m.upper() for m in knobs.fault_methods}:
                roll = 2.0  # no random fault for this method (the draw still counts, for determinism)
            delay = knobs.latency_ms + (jitter_roll * knobs.jitter_ms if knobs.jitter_ms else 0.0)
            if delay > 0:
                await asyncio.sleep(delay / 1000.0)
            failing = knobs.fail_iccids and self._failing_status(knobs, call)
            if failing:
                fault = "fail_iccid"
                raise self.error(failing, f"Injected failure for {call.iccid}", None)
            if roll < knobs.error_rate:
                fault = "error"
                status = knobs.error_statuses[int(pick_roll * len(knobs.error_statuses))]
                raise self.error(status, "Internal server error (injected)" if status == 500
                                 else "Service temporarily unavailable (injected)", None)
            roll -= knobs.error_rate
            if roll < knobs.timeout_rate:
                fault = "timeout"
                await asyncio.sleep(knobs.timeout_s)
                raise self.error(504, "Gateway timeout (injected)", None)
            roll -= knobs.timeout_rate
            malformed = roll < knobs.malformed_rate
            roll -= knobs.malformed_rate
            applied_error = not malformed and roll < knobs.applied_error_rate
            response = await self._run_handler(fn, is_async, call)
            if malformed and 200 <= response.status_code < 300:
                fault = "malformed"
                response = _truncated(response)
            elif applied_error and 200 <= response.status_code < 300:
                fault = "applied_error"
                response = self.error(502, "Bad gateway (injected; the request was applied)", None).response
        except SimError as exc:
            response = exc.response
        except Exception as exc:  # noqa: BLE001 - a simulator bug: answer and log it, don't hide it
            fault = "simulator_bug"
            response = self.error(500, f"Simulator bug: {exc!r}", None).response
        finally:
            self._release(limiter_key, generation)
        self._log(call, response.status_code, fault, t0, generation)
        return response

    def bad_json(self) -> SimError:
        return self.error(400, "Request body is not valid JSON", None)

    def content_type_error(self, request: Request) -> SimError | None:
        """Hook before a non-empty JSON body is parsed: the carrier's refusal of the request's
        Content-Type, or None to accept it (the default: any content type)."""
        return None

    def media_type_refusal(self, request: Request, wanted: str = "application/json", code: str | None = None,
                           message: str = "Unsupported content type {shown!r}; send {wanted}") -> SimError | None:
        """The carrier's 415 when the body's media type is not ``wanted`` (parameters such as charset
        ignored), else None: what every strict ``content_type_error`` says, in its own words and code."""
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media == wanted:
            return None
        return self.error(415, message.format(shown=media or "(none)", wanted=wanted), code)

    async def _run_handler(self, fn: Handler, is_async: bool, call: Call) -> Response:
        if is_async:
            result = await fn(call)
        else:
            with self.lock:
                result = fn(call)
        if isinstance(result, Response):
            return result
        if isinstance(result, tuple):
            status, payload = result
            return JSONResponse(payload, status_code=status)
        return JSONResponse(result)

    def _failing_status(self, knobs: Knobs, call: Call) -> int | None:
        for iccid in ([call.iccid] if call.iccid else []) + (call.iccids or []):
            status = knobs.fail_iccids.get(iccid)
            if status:
                return int(status)
        return None

    def _draw(self, knobs: Knobs, method: str, path: str) -> tuple[float, float, float]:
        if knobs.seed is None:
            r = self._rng.random
            return r(), r(), r()
        key = (method, path)
        with self.lock:
            n = self._occurrences[key] = self._occurrences.get(key, 0) + 1
        digest = hashlib.blake2b(f"{knobs.seed}|{method}|{path}|{n}".encode(), digest_size=24).digest()
        return tuple(int.from_bytes(digest[i:i + 8], "big") / ROLL_SCALE for i in (0, 8, 16))  # type: ignore

    def _admit(self, account: str, now: float, knobs: Knobs) -> tuple[float, str] | None:
        """Admit (count in flight, record in the window) or return (Retry-After seconds, reason)."""
        with self.lock:
            if knobs.rate_limit:
                # at most `cap` admissions in any window of `span` seconds: rate 5 -> 5 per 1 s,
                # rate 2.5 -> 2 per 1 s, rate 0.5 -> 1 per 2 s
                cap = max(1, int(knobs.rate_limit))
                span = 1.0 if knobs.rate_limit >= 1 else 1.0 / knobs.rate_limit
                window = self._windows[account]
                while window and window[0] <= now - span:
                    window.popleft()
                if len(window) >= cap:
                    # room for one more once window[len - cap] has left the window
                    return max(0.01, window[len(window) - cap] + span - now), "rate_limit"
            if knobs.max_concurrency and self._inflight[account] >= knobs.max_concurrency:
                return max(0.1, knobs.latency_ms / 1000.0), "concurrency"
            if knobs.rate_limit:
                self._windows[account].append(now)
            self._inflight[account] += 1
            self._inflight_total += 1
            self._peak_inflight = max(self._peak_inflight, self._inflight[account])
            self._peak_inflight_total = max(self._peak_inflight_total, self._inflight_total)
        return None

    def _release(self, account: str, generation: int) -> None:
        with self.lock:
            if generation == self._generation:
                self._inflight[account] -= 1
                self._inflight_total -= 1

    def _log(self, call: Call, status: int, fault: str | None, t0: float, generation: int) -> None:
        if generation != self._generation:  # a request from before a reset
            return
        entry = {"ts": call.arrived, "method": call.method, "path": call.path,
                 "query": call.request.url.query, "iccid": call.iccid, "account": call.account,
                 "body": call.body, "status": status, "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
                 "fault": fault}
        if call.iccids:
            entry["iccids"] = list(call.iccids)
        self.log.add(entry, self.knobs.call_log_limit)

    # ---------------------------------------------------------------- control operations (in-process too)
    def configure(self, **changes: Any) -> Knobs:
        """Merge ``changes`` into the knobs (validated; raises ValueError)."""
        with self.lock:
            merged = {**self.knobs.model_dump(), **changes}
            try:
                new = self.knobs_model(**merged)
            except ValidationError as exc:
                raise ValueError(str(exc)) from None
            if "seed" in changes:
                self._occurrences.clear()
                self._rng = random.Random(new.seed)
            self.knobs = new
            return new

    def seed(self, devices: list[dict]) -> dict[str, int]:
        """Add or replace devices (all validated first: nothing is seeded if one is refused)."""
        normalized = [self.normalize_device(dict(d)) if isinstance(d, dict) else self.normalize_device(d)
                      for d in devices]
        with self.lock:
            for dev in normalized:
                self.devices[dev["iccid"]] = dev
            self.on_devices_seeded(normalized)
            return {"seeded": len(normalized), "total": len(self.devices)}

    def set_accounts(self, accounts: dict[str, str]) -> None:
        with self.lock:
            self.accounts.update(accounts)

    def reset(self) -> None:
        """Forget devices, calls, scheduled changes and limiter state; knobs go back to the ones given
        at construction (the CLI/constructor baseline; all defaults unless some were given). Accounts
        are kept."""
        with self.lock:
            self._generation += 1
            self.devices.clear()
            self.log.clear()
            self._windows.clear()
            self._inflight.clear()
            self._inflight_total = 0
            self._peak_inflight = 0
            self._peak_inflight_total = 0
            self._scheduled.clear()
            self._occurrences.clear()
            self.knobs = self._base_knobs
            self._rng = random.Random(self.knobs.seed)
            self.reset_state()

    def stats(self) -> dict[str, Any]:
        out = self.log.stats()
        with self.lock:
            out.update({"peak_in_flight": self._peak_inflight, "peak_in_flight_total": self._peak_inflight_total,
                        "in_flight": self._inflight_total, "devices": len(self.devices),
                        "scheduled_pending": len(self._scheduled)})
        return out

    def _add_common_control_routes(self) -> None:
        r = self.control

        def bad(message: str, status: int = 400) -> JSONResponse:
            return JSONResponse({"error": message}, status_code=status)

        @r.post("/reset")
        async def reset():
            self.reset()
            return {"ok": True}

        @r.post("/devices")
        async def seed_devices(request: Request):
            try:
                data = json.loads(await request.body() or b"[]")
            except ValueError:
                return bad("body must be a JSON list of devices (or {\"devices\": [...]})")
            if isinstance(data, dict):
                data = data.get("devices")
            if not isinstance(data, list):
                return bad("body must be a JSON list of devices (or {\"devices\": [...]})")
            try:
                return self.seed(data)
            except (ValueError, TypeError, KeyError) as exc:
                return bad(f"device refused: {exc}")

        @r.get("/devices")
        async def list_devices(limit: int = 100):
            self.run_due()
            with self.lock:
                sample = [self.control_view(d) for d in itertools.islice(self.devices.values(), max(0, limit))]
                return {"total": len(self.devices), "devices": sample}

        @r.get("/devices/{iccid}")
        async def device(iccid: str):
            self.run_due()
            with self.lock:
                dev = self.devices.get(iccid)
                if dev is None:
                    return bad(f"no device {iccid}", 404)
                return self.control_view(dev)

        @r.get("/config")
        async def get_config():
            return self.knobs.model_dump()

        @r.put("/config")
        async def put_config(request: Request):
            try:
                data = json.loads(await request.body() or b"{}")
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object of knobs")
                return self.configure(**data).model_dump()
            except ValueError as exc:
                return bad(str(exc))

        @r.get("/accounts")
        async def get_accounts():
            with self.lock:
                return {"accounts": sorted(self.accounts)}

        @r.put("/accounts")
        async def put_accounts(request: Request):
            try:
                data = json.loads(await request.body() or b"{}")
            except ValueError:
                data = None
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                return bad('body must be {"username": "secret", ...}')
            self.set_accounts(data)
            return {"accounts": sorted(self.accounts)}

        @r.get("/calls")
        async def calls(iccid: str | None = None, method: str | None = None, path_contains: str | None = None,
                        since: float | None = None, until: float | None = None, status: int | None = None,
                        account: str | None = None, fault: str | None = None, limit: int | None = None):
            return self.log.query(iccid=iccid, method=method, path_contains=path_contains, since=since,
                                  until=until, status=status, account=account, fault=fault, limit=limit)

        @r.post("/scheduled/run")
        async def run_scheduled(within_s: float = 0):
            return {"ran": self.run_scheduled(max(0.0, within_s))}

        @r.get("/stats")
        async def stats():
            self.run_due()
            return self.stats()


def _truncated(response: Response) -> Response:
    body = bytes(response.body)
    cut = body[: max(1, len(body) // 2)]
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(cut, status_code=response.status_code, headers=headers, media_type="application/json")
