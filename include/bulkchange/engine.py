"""The batch engine: runs one carrier action over a batch of devices.

Knows nothing about Airflow or any particular carrier. Three parts:

* ``RateLimiter``  - a thread-safe token bucket shared by every call to one carrier account;
  a 429's Retry-After slows everyone sharing it down (``penalize``), not just the thread that
  got it.
* ``RetryPolicy`` / ``CallPolicy`` - retries transient failures (429, 5xx, timeouts, connection
  errors) with exponential backoff and full jitter, honouring Retry-After; never retries
  permanent 4xx; re-authenticates once on 401.
* ``run_batch``    - bounded parallelism over the devices of a batch, one Outcome per device in
  input order; one device's exception never loses another's result.
"""
from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Generic, Sequence, TypeVar

from bulkchange.carriers.base import AuthError, PermanentError, TransientError

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_PARALLEL = 10


def max_parallel_from_env(default: int = DEFAULT_MAX_PARALLEL) -> int:
    """``MAX_PARALLEL_REQUESTS`` as the legacy lambda read it: unset -> default, invalid or <= 0 -> 1."""
    raw = os.environ.get("MAX_PARALLEL_REQUESTS")
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return 1
    return value if value > 0 else 1


class RateLimiter:
    """Token bucket: long-run rate never above ``rate_per_s``; ``burst`` tokens may be used at once.

    Waiting threads reserve their slot under the lock and sleep outside it, so many threads can
    wait at once and are released evenly spaced.
    """

    def __init__(self, rate_per_s: float | None, burst: int = 1, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate = float(rate_per_s) if rate_per_s and rate_per_s > 0 else None
        self.burst = max(1, int(burst))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # The earliest time the next token is free; with burst b, up to b tokens may be "banked".
        self._next_free = clock()
        self._blocked_until = 0.0

    @property
    def unlimited(self) -> bool:
        return self.rate is None

    def acquire(self) -> float:
        """Block until this caller may send; returns the seconds waited."""
        if self.rate is None and self._blocked_until == 0.0:
            return 0.0
        with self._lock:
            now = self._clock()
            if self.rate is not None:
                interval = 1.0 / self.rate
                # idle time banks at most `burst` tokens: slots may lie up to burst-1 intervals back
                earliest = now - (self.burst - 1) * interval
                slot = max(self._next_free, earliest, self._blocked_until)
                self._next_free = slot + interval
            else:
                slot = max(now, self._blocked_until)
            wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(0.0, wait)

    def penalize(self, seconds: float) -> None:
        """Nobody sharing this limiter sends for ``seconds`` from now (a carrier's Retry-After)."""
        if seconds <= 0:
            return
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter (AWS's recommendation: spreads out retries of many
    parallel clients best); a carrier's Retry-After is a floor. Delays are capped at max_delay."""

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: bool = True
    rng: random.Random | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._rng = self.rng or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        delay = self._rng.uniform(0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


class CallPolicy:
    """Rate limit + retry + re-auth around one logical carrier call."""

    def __init__(self, rate_limiter: RateLimiter | None = None, retry: RetryPolicy | None = None, *,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate_limiter = rate_limiter
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def execute(self, fn: Callable[[], R], *, reauthenticate: Callable[[], None] | None = None) -> tuple[R, int]:
        attempts = 0
        reauthenticated = False
        while True:
            if self.rate_limiter is not None:
                self.rate_limiter.acquire()
            attempts += 1
            try:
                return fn(), attempts
            except TransientError as exc:
                exc.attempts = attempts
                if attempts >= self.retry.max_attempts:
                    raise
                if exc.retry_after and self.rate_limiter is not None:
                    self.rate_limiter.penalize(exc.retry_after)
                self._sleep(self.retry.delay(attempts, exc.retry_after))
            except AuthError as exc:
                exc.attempts = attempts
                if reauthenticated or reauthenticate is None:
                    raise
                reauthenticate()
                reauthenticated = True
                attempts -= 1  # the retry after re-authentication is not counted as a failure
            except PermanentError as exc:
                exc.attempts = attempts
                raise


@dataclass
class Outcome(Generic[T, R]):
    item: T
    value: R | None = None
    error: BaseException | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_batch(items: Sequence[T], action: Callable[[T], R], *, max_parallel: int = DEFAULT_MAX_PARALLEL,
              on_result: Callable[[T, Outcome], None] | None = None) -> list[Outcome]:
    """Run ``action`` over ``items`` with at most ``max_parallel`` at once; outcomes in input order.

    ``on_result`` is called from worker threads as each item finishes: it must be thread-safe.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, got {max_parallel}")

    def one(item: T) -> Outcome:
        started = time.monotonic()
        try:
            out = Outcome(item, value=action(item))
        except Exception as exc:  # noqa: BLE001 - captured per item, never lost
            out = Outcome(item, error=exc)
        out.duration_s = time.monotonic() - started
        if on_result is not None:
            on_result(item, out)
        return out

    if max_parallel == 1 or len(items) <= 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(max_parallel, len(items)),
                            thread_name_prefix="bulkchange-batch") as pool:
        return list(pool.map(one, items))

