"""A carrier account's rate limit that holds across processes, workers and concurrent runs.

The engine's :class:`~bulkchange.engine.RateLimiter` lives in one process: every batch task builds
its own, so N batch tasks running at once (on one Celery worker or several, in one run or in
concurrent runs) would send N times the account's requests/s. :class:`RedisRateLimiter` keeps the
same bucket in Redis instead, keyed by the carrier account (by default the Airflow connection id),
so every process that calls that account draws from one bucket.

Same algorithm and interface as the in-process limiter (``acquire()`` -> seconds waited,
``penalize(seconds)``), so the carrier clients and ``CallPolicy`` do not change:

* one Lua script reserves the next free slot atomically (``next_free`` advances by ``1/rate``;
  idle time banks at most ``burst`` tokens) and answers how long the caller must sleep; the caller
  sleeps *locally*, outside Redis, so any number of callers can wait at once;
* all times come from the Redis server's clock (``TIME``), so the workers' clocks do not matter;
* ``penalize(seconds)`` (a carrier's Retry-After) sets ``blocked_until`` for everyone sharing the
  key; a caller whose reserved slot falls inside a penalty that arrived while it slept queues
  again;
* ``window=(cap, span)`` (see :class:`~bulkchange.engine.RateLimiter`): at most ``cap`` callers let
  go in any ``span`` seconds, counted from when each is let go and, once its request has been
  written to the wire, from then (``sent``; a sorted set of the callers in Redis, beside the
  bucket): a caller that wakes late, or whose request leaves late, holds the next ones back instead
  of arriving bunched with them; the same round trip that checks for a penalty after the sleep
  does the counting;
* the keys expire after ``ttl_s`` of disuse, so old accounts leave nothing behind.

If Redis cannot be reached, the limiter logs a warning and falls back to the in-process
``fallback`` limiter (the account's rate divided by the batch tasks allowed at once, as before),
so a Redis outage slows nothing down to zero and loses no device result; it retries Redis after
``retry_redis_after_s``.

Airflow-free (needs the ``redis`` client only when a Redis URL is configured).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
from typing import Any, Callable

from bulkchange.engine import LAST_LET_GO, RateLimiter, carrier_window, check_window

log = logging.getLogger(__name__)

KEY_PREFIX = "bulkchange:ratelimit:"
DEFAULT_TTL_S = 3600

# The window's check, shared by both scripts: KEYS[2] = the window, a sorted set of the callers let
# go (member: the caller's id, ARGV[`id_arg`]; score: when it was let go, moved to when its request
# left by _SENT), cap and span as numbers; `now` the server's time. Sets `room` (true: counted now)
# and `room_at` (when the oldest counted leaves the window).
_WINDOW = """
local room, room_at, sent = true, now, ''
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - span)
  local n = redis.call('ZCARD', KEYS[2])
  if n >= cap then
    local oldest = tonumber(redis.call('ZRANGE', KEYS[2], n - cap, n - cap, 'WITHSCORES')[2])
    room, room_at = false, oldest + span
  end
  if room then
    sent = ARGV[id_arg]
    redis.call('ZADD', KEYS[2], now, sent)
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
"""

# KEYS[1] = bucket, KEYS[2] = window; ARGV = interval (0 = unlimited), burst, ttl, cap (0 = no
# window), span, the caller's id. Returns {slot, now, sent} as strings (Lua numbers would be
# truncated to integers on the way back); sent not '': the slot is now and the window had room,
# the caller sends at once (sent is its entry in the window: its id).
_RESERVE = """
local id_arg = 6
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local cap, span = tonumber(ARGV[4]), tonumber(ARGV[5])
local next_free = tonumber(redis.call('HGET', KEYS[1], 'next_free') or '-1e18')
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '-1e18')
local slot
if interval > 0 then
  slot = math.max(next_free, now - (burst - 1) * interval, blocked)
  redis.call('HSET', KEYS[1], 'next_free', string.format('%.6f', slot + interval))
else
  slot = math.max(now, blocked)
end
redis.call('EXPIRE', KEYS[1], ttl)
local let_go = ''
if slot <= now and cap > 0 then
""" + _WINDOW + """
  let_go = sent
end
return {string.format('%.6f', slot), string.format('%.6f', now), let_go}
"""

# After the sleep. KEYS as _RESERVE; ARGV = the reserved slot ('' for a retry in its place: no
# penalty check), cap, span, ttl, the caller's id. Returns {'requeue', 0} (a penalty that arrived
# meanwhile covers the slot), {'wait', seconds} (the window is full: ask again then) or {'go',
# sent} (sent: the caller's entry in the window, '' without one).
_LET_GO = """
local id_arg = 5
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] ~= '' then
  local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '-1e18')
  if blocked > tonumber(ARGV[1]) then return {'requeue', '0'} end
end
local cap, span, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
""" + _WINDOW + """
if room then return {'go', sent} end
return {'wait', string.format('%.6f', room_at - now)}
"""

# KEYS[1] = window; ARGV = a caller's entry. Its request just left: the window counts it from now (if
# it is still in the window, and only later, never earlier).
_SENT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) < now then redis.call('ZADD', KEYS[1], 'XX', now, ARGV[1]) end
return 1
"""

# KEYS[1] = bucket; ARGV = seconds, ttl. The later end of overlapping penalties wins.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '-1e18')
local until_ = math.max(blocked, now + tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], 'blocked_until', string.format('%.6f', until_))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return string.format('%.6f', until_)
"""


class RedisRateLimiter:
    """Token bucket shared through Redis by every process using the same ``key``.

    ``rate_per_s`` None or <= 0 means unlimited (only ``penalize`` then makes callers wait).
    ``client`` is a ``redis.Redis`` (or pass ``url``). ``fallback`` is used while Redis is
    unreachable; by default an in-process limiter at the full rate (and the same ``window``).
    ``sleep`` is injectable.
    """

    def __init__(self, key: str, rate_per_s: float | None, *, burst: int = 1, url: str | None = None,
                 client: Any = None, fallback: RateLimiter | None = None, ttl_s: int = DEFAULT_TTL_S,
                 retry_redis_after_s: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 window: tuple[int, float] | None = None):
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        if not key:
            raise ValueError("a shared rate limit needs a key (the carrier account)")
        if client is None:
            if not url:
                raise ValueError("RedisRateLimiter needs a Redis url or client")
            import redis

            client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.key = KEY_PREFIX + key
        # a sorted set (ids of the callers let go, by when their requests left); named apart from the
        # list an earlier version kept, which a running deployment may still hold for an hour
        self.window_key = self.key + ":window"
        self.window = check_window(window)
        self.rate: float | None = float(rate_per_s) if rate_per_s and rate_per_s > 0 else None
        self.burst = int(burst)
        self.ttl_s = int(ttl_s)
        self.fallback = fallback if fallback is not None else RateLimiter(self.rate, burst, window=self.window)
        self._redis = client
        self._reserve = client.register_script(_RESERVE)
        self._let_go = client.register_script(_LET_GO)
        self._penalize = client.register_script(_PENALIZE)
        self._sent = client.register_script(_SENT)
        self._ids = itertools.count()
        self._id_prefix = f"{uuid.uuid4().hex[:12]}:"  # ids unique across every holder of the key
        self._sleep = sleep
        self._retry_after_s = retry_redis_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._mine = threading.local()  # .sent: this thread's caller's entry in the window

    @property
    def unlimited(self) -> bool:
        return self.rate is None

    def _new_id(self) -> str:
        """A caller's id in the shared window (unique across every holder of the key)."""
        return f"{self._id_prefix}{next(self._ids)}"

    # -- Redis availability -------------------------------------------------------------------
    def _redis_usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def _redis_failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._redis_usable()
            self._down_until = time.monotonic() + self._retry_after_s
        if first:
            log.warning("shared rate limit %s: Redis unreachable (%s: %s); using the in-process limit "
                        "for %.0fs", self.key, type(exc).__name__, exc, self._retry_after_s)

    @staticmethod
    def _is_redis_error(exc: BaseException) -> bool:
        try:
            import redis
        except ImportError:  # pragma: no cover - a client object was passed in
            return False
        return isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError))

    # -- the RateLimiter interface ------------------------------------------------------------
    def acquire(self) -> float:
        """Block until this caller may send; returns the seconds waited."""
        if not self._redis_usable():
            return self.fallback.acquire()
        interval = 1.0 / self.rate if self.rate else 0.0
        cap, span = self.window or (0, 0.0)
        waited = 0.0
        while True:
            try:
                slot_s, now_s, let_go = self._reserve(keys=[self.key, self.window_key],
                                                      args=[repr(interval), self.burst, self.ttl_s, cap, repr(span),
                                                            self._new_id()])
                slot, now = float(slot_s), float(now_s)
            except Exception as exc:  # noqa: BLE001
                if not self._is_redis_error(exc):
                    raise
                self._redis_failed(exc)
                return waited + self.fallback.acquire()
            if let_go:
                self._mine.sent = let_go
                return waited
            if slot <= now and not cap:
                return waited
            if slot > now:
                self._sleep(slot - now)
                waited += slot - now
            outcome = self._wait_for_window(repr(slot))
            if outcome is None:  # Redis went away: the in-process limiter decides from here
                return waited + self.fallback.acquire()
            if outcome >= 0:
                return waited + outcome
            # A penalty arrived while we slept and covers our slot: that slot is void, queue again.

    def admit(self) -> float:
        """Let this caller go as soon as the window has room (a retry that keeps its place);
        returns the seconds waited."""
        if not self.window or not self._redis_usable():
            return self.fallback.admit()
        waited = self._wait_for_window("")
        return self.fallback.admit() if waited is None else waited

    def _wait_for_window(self, slot: str) -> float | None:
        """After the sleep: seconds waited for the window (-1: the slot was voided by a penalty,
        queue again; None: Redis is unreachable)."""
        cap, span = self.window or (0, 0.0)
        waited = 0.0
        while True:
            try:
                verdict, seconds = self._let_go(keys=[self.key, self.window_key],
                                                args=[slot, cap, repr(span), self.ttl_s, self._new_id()])
            except Exception as exc:  # noqa: BLE001
                if not self._is_redis_error(exc):
                    raise
                self._redis_failed(exc)
                return None
            verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
            if verdict == "go":
                self._mine.sent = seconds or None  # the entry this caller holds in the window
                return waited
            if verdict == "requeue":
                return -1.0
            self._sleep(float(seconds))
            waited += float(seconds)

    def taken(self) -> Any:
        """This thread's entry in the shared window from its last ``acquire``/``admit`` (None: not
        in the window); the caller hands it to ``refused``."""
        return getattr(self._mine, "sent", None) if self._redis_usable() else self.fallback.taken()

    def sent(self, entry: Any) -> Any:
        """The request let go as ``entry`` has just been written to the wire: the shared window counts
        it from now (the server's clock), not from when it was let go (``RateLimiter.sent``). One
        round trip per request; a Redis error loses only this correction. Returns the entry (the
        same id: only its time moves)."""
        if entry is None:
            return None
        if isinstance(entry, float):  # let go by the in-process fallback while Redis was away
            return self.fallback.sent(entry)
        if not self._redis_usable():
            return entry
        try:
            self._sent(keys=[self.window_key], args=[entry])
        except Exception as exc:  # noqa: BLE001
            if not self._is_redis_error(exc):
                raise
            self._redis_failed(exc)
        return entry

    def refused(self, entry: Any = LAST_LET_GO) -> None:
        """The carrier refused (429) a request: out of the window again (it counted nothing).
        ``entry``: the request's ``taken()``; by default this thread's last let-go (see
        ``RateLimiter.refused``)."""
        if not self._redis_usable():
            return self.fallback.refused(entry)
        mine = getattr(self._mine, "sent", None)
        sent = mine if entry is LAST_LET_GO else entry
        if mine == sent:
            self._mine.sent = None
        if sent is None:
            return
        try:
            self._redis.zrem(self.window_key, sent)
        except Exception as exc:  # noqa: BLE001
            if not self._is_redis_error(exc):
                raise
            self._redis_failed(exc)

    def penalize(self, seconds: float) -> None:
        """Nobody sharing this key sends for ``seconds`` from now (a carrier's Retry-After)."""
        if seconds is None or seconds <= 0:
            return
        self.fallback.penalize(seconds)  # also holds this process back if Redis goes away
        if not self._redis_usable():
            return
        try:
            self._penalize(keys=[self.key], args=[repr(float(seconds)), self.ttl_s])
        except Exception as exc:  # noqa: BLE001
            if not self._is_redis_error(exc):
                raise
            self._redis_failed(exc)

    def reset(self) -> None:
        """Forget the bucket (tests, or after changing an account's limit by hand)."""
        self._redis.delete(self.key, self.window_key)


def make_rate_limiter(key: str, rate_per_s: float | None, *, share: int = 1,
                      redis_url: str | None = None, burst: int = 1, headroom: float = 0.0):
    """The limiter for one carrier account, pacing at ``rate_per_s * (1 - headroom)``: a carrier
    counts its limit on arrival, so requests spaced exactly ``1/rate`` apart are refused whenever
    the network or a busy host bunches two of them by a millisecond; with ``headroom`` h any
    ``rate`` consecutive requests span ``1 + h`` seconds. Where the limiter sees every call of
    the account (Redis, or one batch task at a time) it also keeps the carrier's window on the
    moments callers are let go (``engine.carrier_window``: at most ``floor(rate)`` in any
    ``1 + h/2`` seconds), so a caller that wakes late delays the next ones instead of bunching
    with them.

    With ``redis_url``: a :class:`RedisRateLimiter` at the account's full rate, shared by every
    process that uses ``key``; its fallback (Redis down) is the in-process limiter below.
    Without: an in-process :class:`RateLimiter` at ``rate_per_s / share`` (``share`` = how many
    batch tasks may call the account at once), which holds only as long as no more than ``share``
    such tasks run at the same time (and keeps no window when ``share`` > 1: no one task sees the
    account's calls).
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be at least 0 and below 1, got {headroom}")
    # the window keeps half the headroom: were it as tight as the spacing (cap x 1/rate = its span),
    # a late caller would delay the one cap places later by as much, that one the next, for good,
    # until every slot lay in the past and callers went in bursts; with half, a delay shrinks by
    # headroom/2 of a second per window and the slots keep the pace
    window = carrier_window(rate_per_s, headroom / 2)
    if rate_per_s:
        rate_per_s = rate_per_s * (1 - headroom)
    share = max(1, share)
    local = RateLimiter(rate_per_s / share if rate_per_s else None, burst,
                        window=window if share == 1 else None)
    if not redis_url:
        return local
    return RedisRateLimiter(key, rate_per_s, burst=burst, url=redis_url, fallback=local, window=window)
