"""A fault-injecting reverse HTTP proxy on loopback, between a client and a carrier (simulator).

The faults happen outside the simulator's code, the way a gateway or a flaky network loses
answers: the carrier applies what reaches it and knows nothing of the fault.

    with FaultProxy(simulator.base_url, seed=12, error_5xx=0.10, rate_429=0.05) as proxy:
        client = JasperClient(proxy.rewrite(simulator.url_for("jasper")), ...)
        ...
        proxy.requests(path_contains=iccid)   # what the proxy saw, fault by fault

Faults (fractions of the matching requests, drawn in this order; their sum is at most 1):

* ``error_5xx``   - 500 or 503 answered by the proxy, the request is NOT forwarded (nothing applied);
* ``rate_429``    - 429 with ``Retry-After`` (``retry_after``), NOT forwarded;
* ``drop_before`` - the connection is closed without an answer, NOT forwarded;
* ``applied_502`` - forwarded (the carrier applies it), its answer discarded, 502 answered;
* ``garbage``     - forwarded, answered 200 with the carrier's body cut in half (unparseable);
* ``drop_after``  - forwarded, then the connection is closed without an answer.

**Which requests**: ``fault_paths`` (regular expressions searched in the path; None: every path),
``fault_methods`` (None: every method); paths matching ``never_fault`` (default ``/_control`` and
``/health``) and, unless ``fault_auth`` is set, login endpoints (``auth_paths``: OAuth token, session
login) are always forwarded untouched.

**Determinism**: with ``seed``, the roll of a request depends only on (seed, method, path, how many
times this method+path was seen since the seed was set), as in the simulators (core.py): the same
workload gets the same faults whatever the interleaving of parallel requests.

Every request is recorded (``requests()``): method, path, query, request body text, fault (None:
passed through), ``forwarded`` (whether the carrier saw it), ``upstream_status`` (the carrier's
answer, None if not forwarded) and ``status`` (what the client got; None for a dropped connection).
``fault_counts()`` sums them up: requests per fault drawn.
Stdlib only (``http.server``, ``http.client``); one thread per client connection, keep-alive kept.
"""
from __future__ import annotations

import hashlib
import http.client
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit, urlunsplit

FAULTS = ("error_5xx", "rate_429", "drop_before", "applied_502", "garbage", "drop_after")
FORWARDED_FAULTS = {"applied_502", "garbage", "drop_after"}
AUTH_PATHS = (r"/oauth2/token", r"/session/login")
NEVER_FAULT = (r"/_control(/|$)", r"^/health$")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "host"}
ROLL_SCALE = float(2 ** 64)
UPSTREAM_IDLE_S = 10.0  # an upstream connection idle longer than this is opened anew


class FaultProxy:
    def __init__(self, target: str, *, host: str = "127.0.0.1", port: int = 0, seed: int | None = None,
                 fault_paths: list[str] | None = None, fault_methods: list[str] | None = None,
                 fault_auth: bool = False, auth_paths: tuple[str, ...] = AUTH_PATHS,
                 never_fault: tuple[str, ...] = NEVER_FAULT, retry_after: str = "1",
                 upstream_timeout: float = 60.0, **rates: float):
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the proxy forwards to an http:// base URL, not {target!r}")
        self.target_host, self.target_port = parts.hostname, parts.port or 80
        self.target_prefix = parts.path.rstrip("/")
        self.upstream_timeout = upstream_timeout
        self._lock = threading.Lock()
        self._records: list[dict] = []
        self._occurrences: dict[tuple[str, str], int] = {}
        self._conns: set[socket.socket] = set()
        self.seed = seed
        self.fault_paths = fault_paths
        self.fault_methods = fault_methods
        self.fault_auth = fault_auth
        self.auth_paths = auth_paths
        self.never_fault = never_fault
        self.retry_after = retry_after
        self.rates = dict.fromkeys(FAULTS, 0.0)
        self.configure(**rates)
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer((host, port), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.request_queue_size = 256
        self._server.allow_reuse_address = True
        self._server.server_bind()
        self._server.server_activate()
        self.host, self.port = self._server.server_address[:2]
        self._thread: threading.Thread | None = None

    # -- settings ----------------------------------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Change fault rates (``error_5xx=0.1`` ...) or settings (``seed``, ``fault_paths``,
        ``fault_methods``, ``fault_auth``, ``retry_after``) while running. A new ``seed`` restarts the
        per-path counts."""
        with self._lock:
            rates = dict(self.rates)
            for key, value in changes.items():
                if key in FAULTS:
                    if not 0.0 <= float(value) <= 1.0:
                        raise ValueError(f"{key} must be a fraction between 0 and 1")
                    rates[key] = float(value)
                elif key in ("seed", "fault_paths", "fault_methods", "fault_auth", "retry_after"):
                    setattr(self, key, value)
                    if key == "seed":
                        self._occurrences.clear()
                else:
                    raise ValueError(f"unknown fault proxy setting {key!r}")
            if sum(rates.values()) > 1.0 + 1e-9:
                raise ValueError("the fault rates add up to more than 1")
            self.rates = rates

    def off(self) -> None:
        """No more faults (every request passes through)."""
        self.configure(**dict.fromkeys(FAULTS, 0.0))

    # -- addresses ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rewrite(self, upstream_url: str) -> str:
        """``upstream_url`` (under the target) with the proxy's address: a client's base URL."""
        parts = urlsplit(upstream_url)
        path = parts.path
        if self.target_prefix and path.startswith(self.target_prefix):
            path = path[len(self.target_prefix):]
        return urlunsplit(("http", f"{self.host}:{self.port}", path, parts.query, ""))

    # -- what was seen -----------------------------------------------------------------------------
    def requests(self, *, method: str | None = None, path_contains: str | None = None,
                 fault: str | None = None, forwarded: bool | None = None) -> list[dict]:
        with self._lock:
            records = list(self._records)
        return [r for r in records
                if (method is None or r["method"] == method.upper())
                and (path_contains is None or path_contains in r["path"])
                and (fault is None or r["fault"] == fault)
                and (forwarded is None or r["forwarded"] == forwarded)]

    def fault_counts(self) -> Counter:
        """How many recorded requests got each fault (``{"error_5xx": 12, ...}``; requests passed
        through untouched are not counted, a fault never drawn counts 0)."""
        with self._lock:
            return Counter(r["fault"] for r in self._records if r["fault"])

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    # -- the draw ----------------------------------------------------------------------------------
    def _faultable(self, method: str, path: str) -> bool:
        if any(re.search(p, path) for p in self.never_fault):
            return False
        if not self.fault_auth and any(re.search(p, path) for p in self.auth_paths):
            return False
        if self.fault_methods is not None and method.upper() not in {m.upper() for m in self.fault_methods}:
            return False
        return self.fault_paths is None or any(re.search(p, path) for p in self.fault_paths)

    def _draw(self, method: str, path: str) -> tuple[str | None, float]:
        """(fault or None, a second roll for the fault's details)."""
        with self._lock:
            if not self._faultable(method, path):
                return None, 0.0
            key = (method, path)
            n = self._occurrences[key] = self._occurrences.get(key, 0) + 1
            seed, rates = self.seed, dict(self.rates)
        if seed is None:
            import random

            roll, detail = random.random(), random.random()
        else:
            digest = hashlib.blake2b(f"{seed}|{method}|{path}|{n}".encode(), digest_size=16).digest()
            roll, detail = (int.from_bytes(digest[i:i + 8], "big") / ROLL_SCALE for i in (0, 8))
        for fault in FAULTS:
            if roll < rates[fault]:
                return fault, detail
            roll -= rates[fault]
        return None, detail

    def _record(self, entry: dict) -> None:
        with self._lock:
            self._records.append(entry)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                            name=f"fault-proxy:{self.port}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            conns = list(self._conns)
        for sock in conns:  # idle keep-alive connections: their handler threads end with them
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as a gateway would
    _upstream: http.client.HTTPConnection | None = None
    _upstream_used = 0.0
    _published: dict | None = None  # the request of this connection last recorded

    def setup(self) -> None:
        super().setup()
        with self.owner._lock:
            self.owner._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.owner._lock:
                self.owner._conns.discard(self.connection)
            if self._upstream is not None:
                self._upstream.close()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    # -- one request -------------------------------------------------------------------------------
    def _proxy(self) -> None:
        proxy = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        fault, detail = proxy._draw(self.command, path)
        entry = {"ts": time.time(), "method": self.command, "path": path, "query": query,
                 "body": body.decode("utf-8", errors="replace"), "fault": fault, "forwarded": False,
                 "upstream_status": None, "status": None}
        try:
            if fault == "error_5xx":
                self._answer(entry, 500 if detail < 0.5 else 503, b'{"error": "injected by the fault proxy"}')
                return
            if fault == "rate_429":
                self._answer(entry, 429, b'{"error": "rate limited by the fault proxy"}',
                             {"Retry-After": str(proxy.retry_after)})
                return
            if fault == "drop_before":
                self._drop(entry)
                return
            try:
                status, headers, payload = self._forward(body)
            except (OSError, http.client.HTTPException) as exc:
                # the carrier itself is unreachable: said so, it is no injected fault
                entry["fault"] = "upstream_unreachable"
                self._answer(entry, 502, f'{{"error": "upstream unreachable: {type(exc).__name__}"}}'.encode())
                return
            entry["forwarded"], entry["upstream_status"] = True, status
            if fault == "applied_502":
                self._answer(entry, 502, b'{"error": "bad gateway (injected by the fault proxy)"}')
            elif fault == "garbage":
                self._answer(entry, 200, payload[: len(payload) // 2] or b"{", {"Content-Type": "application/json"})
            elif fault == "drop_after":
                self._drop(entry)
            else:
                self._answer(entry, status, payload, headers)
        finally:
            self._publish(entry)  # paths that ended without an answer (an exception) are recorded too

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        proxy = self.owner
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Host"] = f"{proxy.target_host}:{proxy.target_port}"
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        # a kept upstream connection is reused only while surely alive (uvicorn keeps idle ones 30 s):
        # a request is never sent to the carrier twice, so a failure here is reported, not retried
        now = time.monotonic()
        if self._upstream is None or now - self._upstream_used > UPSTREAM_IDLE_S:
            if self._upstream is not None:
                self._upstream.close()
            self._upstream = http.client.HTTPConnection(proxy.target_host, proxy.target_port,
                                                        timeout=proxy.upstream_timeout)
        try:
            self._upstream.request(self.command, proxy.target_prefix + self.path, body=body or None, headers=headers)
            resp = self._upstream.getresponse()
            payload = resp.read()
        except BaseException:
            self._upstream.close()
            self._upstream = None
            raise
        self._upstream_used = time.monotonic()
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        return resp.status, kept, payload

    def _publish(self, entry: dict) -> None:
        """Record the request once. It is recorded before the client sees any answer (or the drop), so a
        client that asks ``requests()`` right after its reply always finds its own request there."""
        if self._published is not entry:
            self._published = entry
            self.owner._record(entry)

    def _answer(self, entry: dict, status: int, payload: bytes,
                headers: list[tuple[str, str]] | dict[str, str] | None = None) -> None:
        entry["status"] = status
        self._publish(entry)
        self.send_response(status)
        items = headers.items() if isinstance(headers, dict) else (headers or [])
        names = set()
        for k, v in items:
            names.add(k.lower())
            self.send_header(k, v)
        if "content-type" not in names:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _drop(self, entry: dict) -> None:
        """Close the client's connection without a byte of answer."""
        self._publish(entry)
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
