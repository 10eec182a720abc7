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
* the key expires after ``ttl_s`` of disuse, so old accounts leave nothing behind.

If Redis cannot be reached, the limiter logs a warning and falls back to the in-process
``fallback`` limiter (the account's rate divided by the batch tasks allowed at once, as before),
so a Redis outage slows nothing down to zero and loses no device result; it retries Redis after
``retry_redis_after_s``.

Airflow-free (needs the ``redis`` client only when a Redis URL is configured).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from bulkchange.engine import RateLimiter

log = logging.getLogger(__name__)

KEY_PREFIX = "bulkchange:ratelimit:"
DEFAULT_TTL_S = 3600

# KEYS[1] = bucket; ARGV = interval (0 = unlimited), burst, ttl. Returns {slot, now} as strings
# (Lua numbers would be truncated to integers on the way back).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local next_free = tonumber(redis.call('HGET', KEYS[1], 'next_free') or '-1e18')
local blocked = tonumber(redis.call('HGET', KEYS[1], 'blocked_until') or '-1e18')
local slot
if interval > 0 then
  slot = math.max(next_free, now - (burst - 1) * interval, blocked)
  redis.call('HSET', KEYS[1], 'next_free', string.format('%.6f', slot + interval))
else
  slot = math.max(now, blocked)
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return {string.format('%.6f', slot), string.format('%.6f', now)}
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
    unreachable; by default an in-process limiter at the full rate. ``sleep`` is injectable.
    """

    def __init__(self, key: str, rate_per_s: float | None, *, burst: int = 1, url: str | None = None,
                 client: Any = None, fallback: RateLimiter | None = None, ttl_s: int = DEFAULT_TTL_S,
                 retry_redis_after_s: float = 30.0, sleep: Callable[[float], None] = time.sleep):
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
        self.rate: float | None = float(rate_per_s) if rate_per_s and rate_per_s > 0 else None
        self.burst = int(burst)
        self.ttl_s = int(ttl_s)
        self.fallback = fallback if fallback is not None else RateLimiter(self.rate, burst)
        self._redis = client
        self._reserve = client.register_script(_RESERVE)
        self._penalize = client.register_script(_PENALIZE)
        self._sleep = sleep
        self._retry_after_s = retry_redis_after_s
        self._down_until = 0.0
        self._lock = threading.Lock()

    @property
    def unlimited(self) -> bool:
        return self.rate is None

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
        waited = 0.0
        while True:
            try:
                slot_s, now_s = self._reserve(keys=[self.key], args=[repr(interval), self.burst, self.ttl_s])
                slot, now = float(slot_s), float(now_s)
            except Exception as exc:  # noqa: BLE001
                if not self._is_redis_error(exc):
                    raise
                self._redis_failed(exc)
                return waited + self.fallback.acquire()
            wait = slot - now
            if wait <= 0:
                return waited
            self._sleep(wait)
            waited += wait
            try:
                blocked = self._redis.hget(self.key, "blocked_until")
            except Exception as exc:  # noqa: BLE001
                if not self._is_redis_error(exc):
                    raise
                self._redis_failed(exc)
                return waited
            if blocked is None or float(blocked) <= slot:
                return waited
            # A penalty arrived while we slept and covers our slot: that slot is void, queue again.

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
        self._redis.delete(self.key)


def make_rate_limiter(key: str, rate_per_s: float | None, *, share: int = 1,
                      redis_url: str | None = None, burst: int = 1, headroom: float = 0.0):
    """The limiter for one carrier account, pacing at ``rate_per_s * (1 - headroom)``: a carrier
    counts its limit on arrival, so requests spaced exactly ``1/rate`` apart are refused whenever
    the network or a busy host bunches two of them by a millisecond; with ``headroom`` h any
    ``rate`` consecutive requests span ``1 + h`` seconds.

    With ``redis_url``: a :class:`RedisRateLimiter` at the account's full rate, shared by every
    process that uses ``key``; its fallback (Redis down) is the in-process limiter below.
    Without: an in-process :class:`RateLimiter` at ``rate_per_s / share`` (``share`` = how many
    batch tasks may call the account at once), which holds only as long as no more than ``share``
    such tasks run at the same time.
    """
    if not 0 <= headroom < 1:
        raise ValueError(f"headroom must be at least 0 and below 1, got {headroom}")
    if rate_per_s:
        rate_per_s = rate_per_s * (1 - headroom)
    local = RateLimiter(rate_per_s / max(1, share) if rate_per_s else None, burst)
    if not redis_url:
        return local
    return RedisRateLimiter(key, rate_per_s, burst=burst, url=redis_url, fallback=local)
