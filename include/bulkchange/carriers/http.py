"""Bounded HTTP: every carrier request has an overall deadline and a response size cap.

``requests``' timeout is per socket read: a carrier (or a proxy in front of it) that drips its
answer one byte at a time never trips it, and an answer of any size is read into memory whole.
``BoundedSession`` (a drop-in ``requests.Session``) fixes both for every request sent through it:

* **Deadline**: one overall deadline per request (connect, headers and body together). A
  watchdog thread shuts the request's socket down when the deadline passes, whatever the request
  is blocked on; the caller gets ``DeadlineExceeded`` (a ``requests.Timeout``).
* **Size cap**: the body is streamed and counted (after decompression) while it is read; past
  ``max_bytes`` the connection is dropped and the caller gets ``ResponseTooLarge`` (a
  ``requests.ConnectionError``: the answer was lost, the request itself may have been applied).
  A ``Content-Length`` above the cap is refused before reading anything.

Both errors are the kinds the carrier clients already treat as "no usable answer", so a dripping
or oversized reply fails that call (and, after its retries, that device) within the deadline,
while the other devices of the batch go on.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import re
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.compat import json as complexjson
from requests.cookies import RequestsCookieJar
from requests.exceptions import InvalidJSONError
from requests.hooks import default_hooks
from requests.sessions import merge_hooks, merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import check_header_validity, get_netrc_auth
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
CHUNK = 64 * 1024


class DeadlineExceeded(requests.exceptions.ReadTimeout):
    """The whole request took longer than its deadline."""


class ResponseTooLarge(requests.exceptions.ConnectionError):
    """The answer was larger than the cap; it was not read."""


# --- the watchdog --------------------------------------------------------------------------------
class _Call:
    """One request in flight: its deadline and the connections it uses."""

    __slots__ = ("deadline", "connections", "expired", "done", "lock")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.connections: list[Any] = []
        self.expired = False
        self.done = False
        self.lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        with self.lock:
            self.connections.append(conn)
            expired = self.expired
        if expired:
            _shutdown(conn)

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
            conns = list(self.connections)
        for conn in conns:
            _shutdown(conn)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


def _shutdown(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a recv blocked in another thread
    except OSError:
        pass


class _Watchdog:
    """One daemon thread expiring calls at their deadline (a heap; no thread per request)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Call]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, call: _Call) -> None:
        with self._cv:
            heapq.heappush(self._heap, (call.deadline, next(self._seq), call))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="bulkchange-http-deadline", daemon=True)
                self._thread.start()
            # the thread sleeps until the earliest deadline: wake it only if this call's is now the
            # earliest (with one timeout for every call, almost never), not once per request
            if self._heap[0][2] is call:
                self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline, _, call = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            if not call.done:
                call.expire()


_WATCHDOG = _Watchdog()
_current = threading.local()


# --- the moment a request left ----------------------------------------------------------------------
@contextmanager
def when_sent(hook: Callable[[], None] | None) -> Iterator[None]:
    """Call ``hook`` (once) the moment the first request this thread sends inside the block has
    been written to its connection. The rate limiter's window counts an attempt from then
    (``engine.CallPolicy``): a carrier counts arrivals, not the moment a thread was let go. Nested
    blocks (a check at the carrier inside an attempt) each have their own hook."""
    hooks = _current.__dict__.setdefault("sent_hooks", [])
    hooks.append(hook)
    try:
        yield
    finally:
        hooks.pop()


def _request_sent() -> None:
    hooks = getattr(_current, "sent_hooks", None)
    if hooks and hooks[-1] is not None:
        hook, hooks[-1] = hooks[-1], None
        try:
            hook()
        except Exception:  # noqa: BLE001 - the request is on the wire: its call goes on regardless
            log.warning("could not note when a request left (the rate limit's window counts it from when "
                        "it was let go)", exc_info=True)


class _TrackedConnectionMixin:
    """Registers the connection with the request in flight on this thread, so the watchdog can
    shut its socket down at the deadline (also while connecting or reading headers)."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        call = getattr(_current, "call", None)
        if call is not None:
            call.attach(self)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        call = getattr(_current, "call", None)
        if call is not None and getattr(self, "sock", None) is not None:
            call.attach(self)  # a pooled connection, already connected
        out = super().request(*args, **kwargs)  # type: ignore[misc]
        _request_sent()  # the request is on the wire (headers and body written)
        return out


class _HTTPConnection(_TrackedConnectionMixin, HTTPConnection):
    pass


class _HTTPSConnection(_TrackedConnectionMixin, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class BoundedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        self._pools: dict[tuple, Any] = {}

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: dict | None = None, cert: Any = None) -> Any:
        """requests' own choice of connection pool, remembered per scheme, host, TLS settings while
        that pool stays open: requests parses the URL, stats the CA bundle and builds the pool key
        again for every request (a visible part of a batch's CPU per device). Not through a proxy."""
        if proxies and any(proxies.values()):
            return super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
        origin = "/".join(request.url.split("/", 3)[:3])  # scheme://host:port
        key = (origin, verify, tuple(cert) if isinstance(cert, list) else cert)
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # not chosen yet, or closed (evicted by the pool manager)
            pool = super().get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            self._pools[key] = pool
        return pool

    def close(self) -> None:
        self._pools.clear()
        super().close()


# A URL that requests sends exactly as written: lower-case http(s) scheme and host name (no IPv6
# literal, no user info), a port without leading zero, a path of segments made only of characters
# allowed there (RFC 3986, what requests and urllib3 leave alone) and upper-case percent escapes, no
# segment starting with a dot (no dot segments to remove), an optional query of such characters and
# no fragment. Anything else goes through requests' own preparation.
_SEG = r"(?:[A-Za-z0-9\-_~!$&'()*+,;=:@]|%[0-9A-F]{2})(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-F]{2})*"
_PLAIN_URL = re.compile(
    r"https?://[a-z0-9](?:[a-z0-9\-.]*[a-z0-9])?(?::[1-9][0-9]{0,4})?"
    rf"/(?:{_SEG}(?:/{_SEG})*/?)?"
    r"(?:\?(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-F]{2})+)?")


# --- the session ---------------------------------------------------------------------------------
class BoundedSession(requests.Session):
    """A ``requests.Session`` whose every request has an overall deadline and a size cap.

    ``deadline_s`` None: the ``timeout`` given to the request (a number, or the sum of a
    (connect, read) pair) is the overall deadline."""

    def __init__(self, *, pool_size: int = 32, deadline_s: float | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__()
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        adapter = BoundedAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._per_host: dict[tuple, Any] = {}  # what the environment says, per scheme and host
        self._env_lock = threading.Lock()

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> dict:
        """requests' own merge, with what it reads from the environment (proxy variables, NO_PROXY,
        REQUESTS_CA_BUNDLE) read once per scheme and host for the session's life instead of on every
        request: requests walks the whole process environment (hundreds of variables in an Airflow task)
        twice per request for it, a measurable part of a batch's CPU per device. A session lives for
        one task, whose environment does not change."""
        if not self.trust_env or (proxies and any(proxies.values())):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        read = super().merge_environment_settings
        cached = self._once_per_host("env", url, verify, lambda: read(url, {}, None, verify, None))
        return {"proxies": dict(cached["proxies"]), "stream": merge_setting(stream, self.stream),
                "verify": cached["verify"], "cert": merge_setting(cert, self.cert)}

    def request(self, method: str, url: Any, params: Any = None, data: Any = None, headers: Any = None,
                cookies: Any = None, files: Any = None, auth: Any = None, timeout: Any = None,
                allow_redirects: bool = True, proxies: Any = None, hooks: Any = None, stream: Any = None,
                verify: Any = None, cert: Any = None, json: Any = None) -> requests.Response:
        """``requests.Session.request``; a carrier call (a URL requests would send as written, a JSON
        body or none, headers, no per-request extras) is prepared here directly into the same
        ``PreparedRequest`` requests would make (``prepare_plain``), then sent through the session's
        ``send`` as requests does (deadline, size cap, redirects, cookies, hooks all as before):
        requests' general preparation is a visible part of the HTTP client's CPU per request
        (docs/development.md, "Where R3's CPU goes")."""
        prepared = None
        if not (params or data or cookies or files or auth or proxies or hooks or stream or verify is not None
                or cert):
            prepared = self.prepare_plain(method, url, headers, json)
        if prepared is None:
            return super().request(method, url, params=params, data=data, headers=headers, cookies=cookies,
                                   files=files, auth=auth, timeout=timeout, allow_redirects=allow_redirects,
                                   proxies=proxies, hooks=hooks, stream=stream, verify=verify, cert=cert,
                                   json=json)
        settings = self.merge_environment_settings(prepared.url, {}, None, None, None)
        return self.send(prepared, timeout=timeout, allow_redirects=allow_redirects, **settings)

    def prepare_plain(self, method: str, url: Any, headers: Any, json: Any) -> requests.PreparedRequest | None:
        """The ``PreparedRequest`` requests makes of (method, url, headers, json) in this session, or
        None where that takes requests' own code: a URL it would rewrite (``_PLAIN_URL``), a session
        with cookies, params, auth or hooks, a ``~/.netrc`` entry for the host, headers not in a dict.
        tests/unit/test_http_environment.py compares the two on many requests and URLs."""
        if not isinstance(url, str) or not _PLAIN_URL.fullmatch(url) or len(self.cookies) or self.params \
                or self.auth is not None or any(self.hooks.values()) \
                or not isinstance(headers, (dict, type(None))):
            return None
        if self.trust_env and self._netrc_auth(url):
            return None
        method = method.upper()
        merged = self._merged_headers(headers or {})
        for header in merged.items():
            check_header_validity(header)  # no CR / LF smuggled into a header
        body = None
        if json is not None:
            try:
                body = complexjson.dumps(json, allow_nan=False)
            except ValueError as exc:
                raise InvalidJSONError(exc) from exc
            if not isinstance(body, bytes):
                body = body.encode("utf-8")
            merged["Content-Length"] = str(len(body))  # requests' order: the length, then the type
            if "content-type" not in merged:
                merged["Content-Type"] = "application/json"
        elif method not in ("GET", "HEAD") and merged.get("Content-Length") is None:
            merged["Content-Length"] = "0"
        prepared = requests.PreparedRequest()
        prepared.method, prepared.url, prepared.headers, prepared.body = method, url, merged, body
        prepared._cookies = RequestsCookieJar()
        prepared.hooks = default_hooks()
        return prepared

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        """requests' own preparation, minus what it costs on every request to merge settings these
        sessions never have: the session's headers, params and auth are merged through a runtime
        ``Protocol`` ``isinstance`` check (slow on Python 3.11), the cookie jars are merged although
        both are empty, and ``~/.netrc`` is looked up again (read once per scheme and host here): a
        visible part of the CPU per device in a profile of all the batch's threads. The result is the
        same prepared request (tests/unit/test_http_environment.py compares them); a session with
        cookies or params, or a request with cookies, goes through requests' own code."""
        if request.cookies or len(self.cookies) or self.params or not isinstance(request.headers, dict) \
                or not isinstance(request.params, dict):
            return super().prepare_request(request)
        headers = self._merged_headers(request.headers)
        auth = request.auth if request.auth is not None else self.auth
        if self.trust_env and not auth:
            auth = self._netrc_auth(request.url)
        prepared = requests.PreparedRequest()
        prepared.prepare(method=request.method.upper(), url=request.url, files=request.files, data=request.data,
                         json=request.json, headers=headers, auth=auth, cookies=RequestsCookieJar(),
                         params={k: v for k, v in request.params.items() if v is not None},
                         hooks=merge_hooks(request.hooks, self.hooks))
        return prepared

    def _merged_headers(self, headers: dict) -> CaseInsensitiveDict:
        """The session's headers with the request's over them; a request header set to None removes
        the session's (requests' ``merge_setting`` for headers)."""
        merged = CaseInsensitiveDict(self.headers)
        for key, value in headers.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return merged

    def _netrc_auth(self, url: str) -> Any:
        """``~/.netrc``'s credentials for this URL's host, read once per scheme and host."""
        return self._once_per_host("netrc", url, None, lambda: get_netrc_auth(url))

    def _once_per_host(self, what: str, url: Any, extra: Any, read: Callable[[], Any]) -> Any:
        """``read()`` the first time ``what`` is asked for this URL's scheme and host (and ``extra``),
        the same answer afterwards: a session lives for one task, whose environment does not change."""
        parts = urlsplit(url)
        key = (what, parts.scheme, parts.netloc, extra)
        with self._env_lock:
            if key in self._per_host:
                return self._per_host[key]
        value = read()
        with self._env_lock:
            self._per_host[key] = value
        return value

    def _deadline_for(self, timeout: Any) -> float:
        if self.deadline_s is not None:
            return float(self.deadline_s)
        if isinstance(timeout, (tuple, list)):
            return float(sum(t for t in timeout if t is not None)) or 30.0
        return float(timeout) if timeout is not None else 30.0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        stream = kwargs.pop("stream", False)
        total = self._deadline_for(kwargs.get("timeout"))
        call = _Call(time.monotonic() + total)
        timeout = kwargs.get("timeout")
        # no single wait may outlast the deadline either
        if isinstance(timeout, (tuple, list)):
            kwargs["timeout"] = tuple(min(t, total) if t is not None else total for t in timeout)
        else:
            kwargs["timeout"] = min(float(timeout), total) if timeout is not None else total
        outer = getattr(_current, "call", None)
        _current.call = call
        _WATCHDOG.watch(call)
        try:
            try:
                resp = super().send(request, stream=True, **kwargs)
            except requests.RequestException as exc:
                if call.expired:
                    raise DeadlineExceeded(f"no complete answer within the {total:g}s deadline") from exc
                raise
            if not stream:
                self._read_bounded(resp, call, total)
            return resp
        finally:
            with call.lock:
                call.done = True
            _current.call = outer

    def _read_bounded(self, resp: requests.Response, call: _Call, total: float) -> None:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            resp.close()
            raise ResponseTooLarge(f"answer of {int(declared)} bytes refused: larger than the "
                                   f"{self.max_bytes}-byte cap", response=resp)
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in resp.iter_content(CHUNK):
                size += len(chunk)
                if size > self.max_bytes:
                    resp.close()
                    raise ResponseTooLarge(f"answer larger than the {self.max_bytes}-byte cap: dropped after "
                                           f"{size} bytes", response=resp)
                chunks.append(chunk)
        except ResponseTooLarge:
            raise
        except requests.RequestException as exc:
            resp.close()
            if call.expired:
                raise DeadlineExceeded(f"answer not complete within the {total:g}s deadline "
                                       f"({size} bytes read)") from exc
            raise
        if call.expired:  # the last read raced the watchdog: whatever arrived may be cut
            resp.close()
            raise DeadlineExceeded(f"answer not complete within the {total:g}s deadline ({size} bytes read)")
        resp._content = b"".join(chunks)
        resp._content_consumed = True


def bounded_session(*, pool_size: int = 32, deadline_s: float | None = None,
                    max_bytes: int = DEFAULT_MAX_BYTES) -> BoundedSession:
    return BoundedSession(pool_size=pool_size, deadline_s=deadline_s, max_bytes=max_bytes)


def path_segment(value: object) -> str:
    """One URL path segment: every identifier put into a carrier URL path goes through this, so a
    value holding ``/``, ``?``, ``#`` or ``..`` can never address another resource."""
    from urllib.parse import quote

    return quote(str(value), safe="")
