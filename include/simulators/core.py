"""The simulator framework: what every simulated carrier shares.

A ``SimulatedCarrier`` owns an in-memory device inventory, a FastAPI router mounted under its
prefix (``/jasper``, later ``/thingspace`` ...), behaviour knobs and a call log. Every carrier
endpoint goes through ``await self.handle(request, iccid, fn)``, which applies, in order:
authentication (the carrier's 401),
rate limit per account (HTTP 429 + ``Retry-After`` in seconds, fractional, e.g. ``"0.2"``),
concurrency limit per account (429), latency, and fault injection (5xx, hang, malformed body,
per-device failures). A control API under ``/<prefix>/_control/`` seeds devices, changes knobs
and reads the call log and stats; it is not rate limited, authenticated or logged.
"""
from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response


@dataclass
class Knobs:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rate_limit: float | None = None        # admitted requests per second per account (sliding 1 s window)
    max_concurrency: int | None = None     # requests in flight per account
    error_rate: float = 0.0                # fraction answered 500/503
    timeout_rate: float = 0.0              # fraction that hang for timeout_s before answering 504
    timeout_s: float = 30.0
    malformed_rate: float = 0.0            # fraction answered 200 with a truncated body
    seed: int | None = None
    fail_iccids: dict[str, int] = field(default_factory=dict)  # iccid -> HTTP status to answer

    def update(self, data: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}")
        for k, v in data.items():
            setattr(self, k, v)


class SimError(Exception):
    """Raised inside an endpoint to answer with this response (the carrier's error shape)."""

    def __init__(self, response: Response):
        self.response = response


class SimulatedCarrier:
    name = "carrier"
    prefix = "/carrier"

    def __init__(self, **knobs: Any):
        self.knobs = Knobs()
        self.knobs.update(knobs)
        self.devices: dict[str, dict] = {}
        self.calls: list[dict] = []
        self._lock = threading.Lock()
        self._windows: dict[str, deque] = defaultdict(deque)
        self._inflight: dict[str, int] = defaultdict(int)
        self._peak_inflight = 0
        self._rng = random.Random(self.knobs.seed)
        self._scheduled: list[tuple[float, Callable[[], None]]] = []
        self._generation = 0
        self.router = APIRouter(prefix=self.prefix)
        self.control = APIRouter(prefix=f"{self.prefix}/_control")
        self._add_control_routes()
        self.add_routes()

    # -- for subclasses ----------------------------------------------------------------------
    def add_routes(self) -> None:
        raise NotImplementedError

    def error(self, status: int, message: str, code: str | None = None) -> SimError:
        body: dict[str, Any] = {"errorMessage": message}
        if code:
            body["errorCode"] = code
        return SimError(JSONResponse(body, status_code=status))

    def normalize_device(self, device: dict) -> dict:
        return device

    def reset_state(self) -> None:
        """Subclass hook for carrier-specific state."""

    # -- delayed state changes (asynchronous carriers) -------------------------------------------
    def schedule(self, delay_s: float, fn: Callable[[], None]) -> None:
        with self._lock:
            self._scheduled.append((time.monotonic() + delay_s, fn))

    def run_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [f for t, f in self._scheduled if t <= now]
            self._scheduled = [(t, f) for t, f in self._scheduled if t > now]
        for fn in due:
            fn()

    # -- the gate every carrier endpoint goes through --------------------------------------------
    def authenticate(self, request: Request) -> str:
        """Return the account name or raise SimError (the carrier's 401)."""
        raise NotImplementedError

    def log_call(self, request: Request, account: str | None, iccid: str | None, body: Any, status: int,
                 arrived: float | None = None) -> None:
        """``ts`` is the arrival time, so rates in the stats match what the limiter admitted."""
        entry = {"ts": arrived if arrived is not None else time.time(), "method": request.method, "path": request.url.path, "iccid": iccid,
                 "account": account, "body": body, "status": status}
        with self._lock:
            self.calls.append(entry)

    async def handle(self, request: Request, iccid: str | None,
                     fn: Callable[[str, Any], tuple[int, Any]]) -> Response:
        """Authenticate, admit (limits, latency, faults), run ``fn(account, body)``, log, answer."""
        arrived = time.time()
        generation = self._generation
        body = None
        if request.method in ("POST", "PUT", "PATCH"):
            raw = await request.body()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    self.log_call(request, None, iccid, raw[:200].decode(errors="replace"), 400)
                    return self.error(400, "Request body is not valid JSON", "10000002").response
        try:
            account = self.authenticate(request)
        except SimError as exc:
            self.log_call(request, None, iccid, body, exc.response.status_code)
            return exc.response
        limited = self._limit(account, arrived)
        if limited is not None:
            self.log_call(request, account, iccid, body, 429, arrived)
            return JSONResponse({"errorMessage": "license has exceeded the rate limit", "errorCode": "400101"},
                                status_code=429, headers={"Retry-After": f"{limited:.2f}"})
        try:
            await self._delay_and_faults(iccid)
            status, payload = fn(account, body)
            response: Response = JSONResponse(payload, status_code=status)
        except SimError as exc:
            response = exc.response
        finally:
            with self._lock:
                self._inflight[account] = max(0, self._inflight[account] - 1)
        if generation == self._generation:  # not a request from before a reset
            self.log_call(request, account, iccid, body, response.status_code, arrived)
        return response

    def _limit(self, account: str, now: float) -> float | None:
        """Admit (counting the request in flight) or return the Retry-After seconds for a 429.

        ``now`` is the arrival time the call log records, so the stats see the same windows."""
        k = self.knobs
        self.run_due()
        with self._lock:
            if k.rate_limit:
                window = self._windows[account]
                while window and window[0] <= now - 1.0:
                    window.popleft()
                if len(window) >= k.rate_limit:
                    return max(0.01, window[0] + 1.0 - now)
            if k.max_concurrency and self._inflight[account] >= k.max_concurrency:
                return 0.1
            if k.rate_limit:
                self._windows[account].append(now)
            self._inflight[account] += 1
            self._peak_inflight = max(self._peak_inflight, self._inflight[account])
        return None

    async def _delay_and_faults(self, iccid: str | None) -> None:
        k = self.knobs
        with self._lock:
            roll = self._rng.random()
            jitter = self._rng.uniform(0, k.jitter_ms) if k.jitter_ms else 0.0
            coin = self._rng.random()
        delay = k.latency_ms + jitter
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)
        if iccid and iccid in k.fail_iccids:
            raise self.error(int(k.fail_iccids[iccid]), f"injected failure for {iccid}", "99999999")
        if roll < k.error_rate:
            raise self.error(503 if coin < 0.5 else 500, "injected server error", "50000000")
        roll -= k.error_rate
        if roll < k.timeout_rate:
            await asyncio.sleep(k.timeout_s)
            raise self.error(504, "injected gateway timeout", "50400000")
        roll -= k.timeout_rate
        if roll < k.malformed_rate:
            raise SimError(PlainTextResponse('{"iccid": "', status_code=200, media_type="application/json"))

    # -- control API ------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self.devices.clear()
            self.calls.clear()
            self._windows.clear()
            self._inflight.clear()
            self._peak_inflight = 0
            self._scheduled.clear()
            self.knobs = Knobs()
            self._rng = random.Random()
            self._generation += 1
        self.reset_state()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            calls = list(self.calls)
            peak = self._peak_inflight
        by_status: dict[str, int] = defaultdict(int)
        by_method: dict[str, int] = defaultdict(int)
        for c in calls:
            by_status[str(c["status"])] += 1
            by_method[c["method"]] += 1
        return {"calls": len(calls), "by_status": dict(by_status), "by_method": dict(by_method),
                "peak_in_flight": peak,
                "max_rps_all": _max_per_second([c["ts"] for c in calls]),
                "max_rps_admitted": _max_per_second([c["ts"] for c in calls if c["status"] != 429])}

    def _add_control_routes(self) -> None:
        r = self.control

        @r.post("/reset")
        async def reset():
            self.reset()
            return {"ok": True}

        @r.post("/devices")
        async def seed(devices: list[dict]):
            with self._lock:
                for d in devices:
                    dev = self.normalize_device(dict(d))
                    self.devices[dev["iccid"]] = dev
            return {"seeded": len(devices), "total": len(self.devices)}

        @r.get("/devices/{iccid}")
        async def device(iccid: str):
            self.run_due()
            dev = self.devices.get(iccid)
            if dev is None:
                return JSONResponse({"error": "no such device"}, status_code=404)
            return dev

        @r.get("/config")
        async def get_config():
            return asdict(self.knobs)

        @r.put("/config")
        async def put_config(data: dict):
            try:
                self.knobs.update(data)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if "seed" in data:
                self._rng = random.Random(self.knobs.seed)
            return asdict(self.knobs)

        @r.get("/calls")
        async def calls(iccid: str | None = None, method: str | None = None, path_contains: str | None = None,
                        since: float | None = None, status: int | None = None):
            with self._lock:
                out = list(self.calls)
            if iccid:
                out = [c for c in out if c["iccid"] == iccid]
            if method:
                out = [c for c in out if c["method"] == method.upper()]
            if path_contains:
                out = [c for c in out if path_contains in c["path"]]
            if since is not None:
                out = [c for c in out if c["ts"] >= since]
            if status is not None:
                out = [c for c in out if c["status"] == status]
            return out

        @r.get("/stats")
        async def stats():
            return self.stats()


def _max_per_second(timestamps: list[float]) -> int:
    """The most events inside any sliding 1-second window."""
    ts = sorted(timestamps)
    best, lo = 0, 0
    for hi, t in enumerate(ts):
        while ts[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
