"""The batch engine: runs one carrier action over a batch of devices.

Knows nothing about Airflow or any particular carrier (plain Python: stdlib and tenacity). Three parts:

* ``RateLimiter``  - a thread-safe token bucket shared by every call to one carrier account;
  a 429's Retry-After slows everyone sharing it down (``penalize``), not just the thread that
  got it.
* ``RetryPolicy`` / ``CallPolicy`` - retries (through tenacity) transient failures (429, 5xx,
  timeouts, connection errors) with exponential backoff and full jitter, honouring Retry-After;
  never retries a refusal (permanent 4xx) or an unknown outcome; re-authenticates once on 401.
  What follows a failed attempt is ``carriers.base.next_step``, the one classification.
* ``run_batch``    - bounded parallelism over the devices of a batch, one Outcome per device in
  input order; one device's exception never loses another's result.
"""
from __future__ import annotations

import bisect
import logging
import operator
import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

import tenacity

from bulkchange.carriers.base import NextStep, next_step
from bulkchange.carriers.http import when_sent
from bulkchange.settings import get_settings

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_PARALLEL = 10
_NEVER = float("-inf")
LAST_LET_GO: Any = object()  # refused(): the entry of this thread's last let-go


def max_parallel_from_env(default: int = DEFAULT_MAX_PARALLEL) -> int:
    """``MAX_PARALLEL_REQUESTS`` as the legacy lambda read it.

    Unset or blank -> ``default``; not an integer, zero or negative -> 1 (the legacy code fell
    back to sequential processing rather than failing the run on a bad setting).
    """
    value = get_settings().max_parallel_requests
    return default if value is None else value


# --------------------------------------------------------------------------------------------
# Rate limiting
# --------------------------------------------------------------------------------------------
class RateLimiter:
    """Token bucket: the long-run rate never exceeds ``rate_per_s``; up to ``burst`` tokens may be
    spent at once after an idle period (``burst=1``: requests are evenly spaced ``1/rate`` apart).
    ``rate_per_s`` None or <= 0 means unlimited (only ``penalize`` can then make callers wait).

    Implementation: a "virtual scheduling" bucket. Under the lock each caller reserves the next
    free slot and advances it by ``1/rate``; it then sleeps *outside* the lock until its slot,
    so any number of threads can wait at once and are released evenly spaced. The bucket starts
    full.

    ``penalize(seconds)``: nobody sharing the limiter is let through until ``now + seconds``.
    Callers already asleep on a slot that falls inside the penalty window re-queue when they
    wake, so a carrier's "slow down" holds for every thread, including those already waiting.
    After the penalty, sending resumes at the steady rate (no banked burst).

    ``window=(cap, span)``: besides the spacing, at most ``cap`` callers are let go in any ``span``
    seconds, counted from the moment each one is let go (``admit``) and, once its request is on the
    wire, from then (``sent``: ``CallPolicy`` reports it). Slots are reserved ahead, so a
    caller that wakes late (a busy host: its thread, or Redis's reply, waited for a CPU) sends
    closer to the next caller than the spacing says, and a carrier that counts "N per second" on
    arrival refuses whichever request completes N + 1 inside one second; the window holds the
    later callers back instead, so lateness costs time, not refusals (and their retries).

    ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, rate_per_s: float | None, burst: int = 1,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, window: tuple[int, float] | None = None):
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate: float | None = float(rate_per_s) if rate_per_s and rate_per_s > 0 else None
        self.burst = int(burst)
        self.window = check_window(window)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = _NEVER       # earliest start of the next slot (bucket starts full)
        self._blocked_until = _NEVER   # penalty: no slot before this time
        # when the last `cap` callers were let go (the window's log)
        self._sent: deque[float] = deque(maxlen=self.window[0] if self.window else 1)
        self._mine = threading.local()  # .sent: when this thread's caller was last let go

    @property
    def unlimited(self) -> bool:
        return self.rate is None

    def _reserve(self) -> tuple[float, float]:
        """Reserve a slot; returns (slot time, now). Caller holds the lock."""
        now = self._clock()
        if self.rate is None:
            return max(now, self._blocked_until), now
        interval = 1.0 / self.rate
        # Idle time banks at most `burst` tokens: a slot may lie up to burst-1 intervals back.
        earliest = now - (self.burst - 1) * interval
        slot = max(self._next_free, earliest, self._blocked_until)
        self._next_free = slot + interval
        return slot, now

    def acquire(self) -> float:
        """Block until this caller may send; returns the seconds waited."""
        if self.rate is None and self.window is None and self._blocked_until <= self._clock():
            return 0.0  # unlimited and not penalized: no lock, no wait
        waited = 0.0
        while True:
            with self._lock:
                slot, now = self._reserve()
            wait = slot - now
            if wait <= 0:
                return waited + self.admit()
            self._sleep(wait)  # never under the lock
            waited += wait
            with self._lock:
                if self._blocked_until <= slot:
                    break
            # A penalty arrived while we slept and covers our slot: that slot is void, queue again.
        return waited + self.admit()

    def admit(self) -> float:
        """Let this caller go now, or as soon as ``window`` has room; count it there. Returns the
        seconds waited. ``acquire`` ends with it; a retry that keeps its place (``CallPolicy``)
        calls it alone."""
        if self.window is None:
            return 0.0
        cap, span = self.window
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                if len(self._sent) < cap or self._sent[0] <= now - span:
                    self._sent.append(now)  # the oldest falls out (maxlen = cap)
                    self._mine.sent = now
                    return waited
                wait = self._sent[0] + span - now
            self._sleep(wait)
            waited += wait

    def taken(self) -> float | None:
        """This thread's entry in the window from its last ``acquire``/``admit`` (None: no window);
        the caller hands it to ``refused`` if the carrier refuses that request."""
        return getattr(self._mine, "sent", None)

    def sent(self, entry: Any) -> Any:
        """The request let go as ``entry`` (its ``taken()``) has just been written to the wire: the
        window counts it from now instead of from when it was let go, and returns its entry from
        here on. A carrier counts arrivals: a thread that was let go and then waited for a CPU (or
        the GIL) before its request left arrives later than the window thought, and the request
        ``cap`` places after it would arrive less than ``span`` after it and be refused; counted
        when it left, it holds that one back instead."""
        if self.window is None or entry is None:
            return entry
        with self._lock:
            now = self._clock()
            if now <= entry:
                return entry
            try:
                self._sent.remove(entry)
            except ValueError:  # out of the window already (refused, or pushed out by later ones)
                return entry
            bisect.insort(self._sent, now)  # the window stays in time order (its oldest first)
            if getattr(self._mine, "sent", None) == entry:
                self._mine.sent = now
            return now

    def refused(self, entry: Any = LAST_LET_GO) -> None:
        """The carrier refused (429) a request: it counted nothing, so the window does not count it
        either. ``entry``: the request's ``taken()``; by default the one this thread was last let go
        for, which is another request's when a call was made in between (a check at the carrier
        before a resend takes its own slot after the resend's)."""
        mine = getattr(self._mine, "sent", None)
        sent = mine if entry is LAST_LET_GO else entry
        if sent is None:
            return
        if mine == sent:
            self._mine.sent = None
        with self._lock:
            try:
                self._sent.remove(sent)
            except ValueError:  # already out of the window
                pass

    def penalize(self, seconds: float) -> None:
        """Nobody sharing this limiter sends for ``seconds`` from now (a carrier's Retry-After).
        Penalties do not add up: the later end wins."""
        if seconds is None or seconds <= 0:
            return
        with self._lock:
            self._blocked_until = max(self._blocked_until, self._clock() + seconds)


def check_window(window: tuple[int, float] | None) -> tuple[int, float] | None:
    """A limiter's ``window`` (cap, span) validated, or None."""
    if window is None:
        return None
    cap, span = int(window[0]), float(window[1])
    if cap < 1 or not span > 0:
        raise ValueError(f"a window needs at least 1 call in a span above 0 s, got {window!r}")
    return cap, span


def carrier_window(rate_per_s: float | None, headroom: float = 0.0) -> tuple[int, float] | None:
    """The window that keeps a client within a carrier limit of ``rate_per_s`` counted as the
    simulators count it (and no carrier publishes a looser rule): at most ``floor(rate)`` requests
    in any 1 s (below 1/s: one per ``1/rate`` s), the span stretched by ``headroom``."""
    if not rate_per_s or rate_per_s <= 0:
        return None
    cap, span = (int(rate_per_s), 1.0) if rate_per_s >= 1 else (1, 1.0 / rate_per_s)
    return cap, span * (1 + headroom)


# --------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------
@dataclass
class RetryPolicy:
    """How often and how long to wait between attempts of one call.

    ``delay(n)`` after failed attempt ``n`` (1-based): exponential ``base_delay * 2**(n-1)``
    capped at ``max_delay``. With ``jitter`` it is "full jitter", uniform in ``[0, that]``:
    a batch runs up to MAX_PARALLEL_REQUESTS threads (and several batch tasks) against one carrier
    account, and when a gateway hiccups they all fail at once; full jitter de-synchronises those
    retries best and does the least total work (AWS "Exponential Backoff and Jitter"). The
    occasional near-zero wait is harmless because every retry still goes through the shared
    RateLimiter. A carrier's Retry-After is a floor (itself capped at ``max_delay``, so a
    hostile or buggy header cannot stall a task for hours).

    ``rate_limited_waits``: a carrier's rate-limit refusal (HTTP 429) applied nothing; up to this
    many per call are waited out (Retry-After, at least the backoff) without using up
    ``max_attempts``. A carrier counts its window on arrival, so requests we spaced evenly can
    still arrive bunched (a stalled network or host) and be refused; three such refusals within a
    second or two are no reason to fail a device.

    ``rng`` defaults to a fresh ``random.Random()`` per policy; pass a seeded one in tests.
    """

    max_attempts: int = 3
    rate_limited_waits: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: bool = True
    rng: random.Random | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must not be negative")
        if self.rng is None:
            self.rng = random.Random()

    def backoff(self, attempt: int) -> float:
        """The un-jittered backoff after failed attempt ``attempt`` (1-based), capped."""
        exponent = min(max(attempt, 1) - 1, 62)  # 2**62 already dwarfs any max_delay
        return min(self.max_delay, self.base_delay * (2 ** exponent))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = self.backoff(attempt)
        delay = self.rng.uniform(0.0, ceiling) if self.jitter else ceiling
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


def _set_attempts(exc: BaseException, attempts: int) -> None:
    try:
        exc.attempts = attempts  # type: ignore[attr-defined]
    except (AttributeError, TypeError):  # exotic exception types with __slots__
        pass


class CallPolicy:
    """Rate limit + retry + re-auth around one logical call, through tenacity. Share one instance
    (and so one RateLimiter) between all threads calling the same carrier account.

    ``execute(fn)`` returns ``(value, attempts)`` where ``attempts`` is the number of times ``fn``
    was called. Before every attempt the limiter is acquired (tenacity ``before``). What follows a
    failed attempt is ``carriers.base.next_step`` (the one classification):

    * ``RETRY`` (``TransientError``): again until ``retry.max_attempts`` attempts were made,
      waiting ``retry.delay(n, retry_after)`` (tenacity ``wait``: full jitter over the capped
      backoff, the carrier's Retry-After as a floor). A Retry-After (429, or 503 with the header) also
      ``penalize``s the shared limiter by ``min(retry_after, retry.max_delay)`` (tenacity
      ``after``: it runs for the last attempt too, since the other threads must still slow down).
      When the attempts are used up the last error is re-raised with a note.
    * ``WAIT_OUT`` (a 429: refused, nothing applied): as ``RETRY``, but up to
      ``retry.rate_limited_waits`` of them per call are waited out without using up ``max_attempts``.
      When such a 429's Retry-After is shorter than the limiter's spacing (``1 / rate``), the retry
      keeps the refused request's place: it goes Retry-After later, without taking a new slot
      (but within the limiter's ``window``, if it has one: ``admit``). The carrier counted nothing
      and says there is room before our next slot is due (a request our even spacing sent arrived
      a moment early at the carrier's window), so a new slot would leave one of the account's
      slots unused for every such refusal.
    * ``REAUTHENTICATE`` (``AuthError``): ``reauthenticate()`` is called once (if given; tenacity
      ``before_sleep``) and the call is retried at once; that retry does not use up
      ``max_attempts`` (it is still counted in ``attempts``). A second AuthError, or one without
      ``reauthenticate``, is raised.
    * ``GIVE_UP`` (``PermanentError``, ``OutcomeUnknown``, anything else): raised at once.

    ``before_slot``: called before every attempt waits for its slot (tenacity ``before``), for work
    that must precede the attempt but should not sit between its slot and its request (the call
    journal's write: a slot taken, then a database commit, sends late and bunched with the next
    slot's request). An exception from it ends the call.

    Every exception that leaves ``execute`` carries ``exc.attempts``.
    """

    def __init__(self, rate_limiter: RateLimiter | None = None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate_limiter = rate_limiter
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    def execute(self, fn: Callable[[], R], *, reauthenticate: Callable[[], None] | None = None,
                before_slot: Callable[[], None] | None = None) -> tuple[R, int]:
        limiter, max_attempts = self.rate_limiter, self.retry.max_attempts
        # free: the failed attempt just seen is retried without using up max_attempts ("reauth": the
        # retry after the one re-authentication; "wait": a 429 waited out, rate_limited_waits at most)
        state: dict = {"calls": 0, "reauthenticated": 0, "waited": 0, "free": None, "in_place": None}
        rate = getattr(limiter, "rate", None)
        spacing = 1.0 / rate if rate else 0.0

        def counted(rs: tenacity.RetryCallState) -> int:  # attempts that count against max_attempts
            return rs.attempt_number - state["reauthenticated"] - state["waited"]

        def should_retry(exc: BaseException) -> bool:
            step = next_step(exc)
            if step is NextStep.REAUTHENTICATE:
                return reauthenticate is not None and not state["reauthenticated"]
            return step in (NextStep.RETRY, NextStep.WAIT_OUT)

        def after(rs: tenacity.RetryCallState) -> None:
            """Every failed attempt about to be retried, the last one included: penalize the shared
            limiter by the carrier's Retry-After; note whether the retry is free."""
            exc = rs.outcome.exception()
            retry_after = getattr(exc, "retry_after", None)
            if retry_after and retry_after > 0 and limiter is not None:
                limiter.penalize(min(retry_after, self.retry.max_delay))
            step, state["free"] = next_step(exc), None
            if step is NextStep.WAIT_OUT and hasattr(limiter, "refused"):
                # not counted by the carrier: not in the limiter's window either (this attempt's own
                # entry: a check made during the attempt took a later one on this thread)
                limiter.refused(state["entry"]) if "entry" in state else limiter.refused()
            if step is NextStep.REAUTHENTICATE:
                state["reauthenticated"], state["free"] = 1, "reauth"
            elif step is NextStep.WAIT_OUT and state["waited"] < self.retry.rate_limited_waits:
                state["waited"] += 1
                state["free"] = "wait"
            # a 429 with room before our next slot: the retry goes then, in the refused one's place
            state["in_place"] = (retry_after if state["free"] == "wait" and retry_after
                                 and retry_after < spacing else None)

        def stop(rs: tenacity.RetryCallState) -> bool:
            return state["free"] is None and counted(rs) >= max_attempts

        def wait(rs: tenacity.RetryCallState) -> float:
            if state["free"] == "reauth":
                return 0.0
            if state["in_place"]:
                return state["in_place"]
            n = state["waited"] if state["free"] == "wait" else counted(rs)
            return self.retry.delay(n, getattr(rs.outcome.exception(), "retry_after", None))

        def before(rs: tenacity.RetryCallState) -> None:
            if before_slot is not None:
                before_slot()  # work that must precede the attempt, done before its slot, not after
            if limiter is None:
                return
            if not state["in_place"]:
                limiter.acquire()
            elif hasattr(limiter, "admit"):  # in its place: no new slot, but within the window
                limiter.admit()
            if hasattr(limiter, "taken"):
                state["entry"] = limiter.taken()
                if state["entry"] is not None and hasattr(limiter, "sent"):
                    state["on_sent"] = on_sent

        def on_sent() -> None:  # the attempt's request left (carriers.http): the window counts it from now
            state["entry"] = limiter.sent(state["entry"])

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            if state["free"] == "reauth":
                try:
                    reauthenticate()
                except BaseException as exc:
                    _set_attempts(exc, state["calls"])
                    raise

        def give_up(rs: tenacity.RetryCallState) -> R:
            rs.outcome.exception().add_note(f"gave up after {rs.attempt_number} attempt(s)")
            return rs.outcome.result()  # re-raises the last error

        def attempt() -> R:
            state["calls"] += 1
            try:
                with when_sent(state.pop("on_sent", None)):
                    return fn()
            except BaseException as exc:
                _set_attempts(exc, state["calls"])
                raise

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry), stop=stop,
            wait=wait, before=before, after=after, before_sleep=before_sleep, retry_error_callback=give_up,
            sleep=lambda seconds: self._sleep(seconds) if seconds > 0 else None)
        value = retrying(attempt)
        return value, state["calls"]


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------
@dataclass
class Outcome(Generic[T, R]):
    """The result of one item: ``value`` on success, else ``error`` (the exception)."""

    item: T
    value: R | None = None
    error: BaseException | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def run_batch(items: Sequence[T], action: Callable[[T], R], *, max_parallel: int = DEFAULT_MAX_PARALLEL,
              on_result: Callable[[T, Outcome], None] | None = None) -> list[Outcome]:
    """Run ``action`` over ``items`` with at most ``max_parallel`` running at once.

    Returns one ``Outcome`` per item, in input order. An ``Exception`` raised by ``action`` is
    captured in that item's Outcome and never affects the others (``BaseException`` such as
    KeyboardInterrupt still propagates). ``max_parallel=1`` (or a single item) runs sequentially
    in the caller's thread; otherwise a ThreadPoolExecutor is used.

    ``on_result(item, outcome)`` is called once per item as it finishes, **from worker
    threads**, possibly concurrently: it must be thread-safe. If it raises, the error is logged
    and the batch carries on (progress reporting must not lose device results).
    """
    try:
        limit = operator.index(max_parallel)  # ints (and numpy ints); not floats or strings
    except TypeError:
        limit = 0
    if isinstance(max_parallel, bool) or limit < 1:
        raise ValueError(f"max_parallel must be an integer >= 1, got {max_parallel!r}")

    def one(item: T) -> Outcome:
        started = time.monotonic()
        try:
            out: Outcome = Outcome(item, value=action(item))
        except Exception as exc:  # noqa: BLE001 - captured per item, never lost
            out = Outcome(item, error=exc)
        out.duration_s = time.monotonic() - started
        if on_result is not None:
            try:
                on_result(item, out)
            except Exception:  # noqa: BLE001
                log.exception("on_result callback failed for %r; continuing", item)
        return out

    items = list(items)
    if limit == 1 or len(items) <= 1:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(limit, len(items)),
                            thread_name_prefix="bulkchange-batch") as pool:
        return list(pool.map(one, items))
