"""The batch engine: rate limiter, retry policy, call policy and run_batch.

Fake clocks and sleeps wherever possible; the few real-time tests are short and assert that the
limiter *limits* (lower bounds on elapsed time, upper bounds on counts), never that it is fast.
"""
import random
import threading
import time

import pytest

from bulkchange.carriers.base import (AuthError, NextStep, OutcomeUnknown, PermanentError, TransientError,
                                     next_step)
from bulkchange.engine import (DEFAULT_MAX_PARALLEL, CallPolicy, Outcome, RateLimiter, RetryPolicy,
                               max_parallel_from_env, run_batch)


class FakeClock:
    """A clock whose sleep advances it; records every sleep."""

    def __init__(self, start=100.0):
        self.now = start
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def _limiter(rate, burst=1, clock=None):
    clock = clock or FakeClock()
    return RateLimiter(rate, burst, clock=clock, sleep=clock.sleep), clock


# --------------------------------------------------------------------------------------------
# RateLimiter
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate,n", [(5, 11), (20, 41), (0.5, 4)])
def test_rate_limiter_spaces_acquisitions_evenly(rate, n):
    limiter, clock = _limiter(rate)
    for _ in range(n):
        limiter.acquire()
    assert clock.now - 100.0 == pytest.approx((n - 1) / rate)
    assert len(clock.sleeps) == n - 1 and all(s == pytest.approx(1 / rate) for s in clock.sleeps)


def test_rate_limiter_returns_the_time_waited():
    limiter, _ = _limiter(4)
    assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(0.25)


def test_rate_limiter_burst_banks_at_most_burst_tokens():
    limiter, clock = _limiter(10, burst=3)
    for _ in range(3):  # the bucket starts full
        limiter.acquire()
    assert clock.sleeps == []
    limiter.acquire()
    assert clock.sleeps == [pytest.approx(0.1)]
    clock.now += 60  # idle for a long time: still only 3 tokens banked
    clock.sleeps.clear()
    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == []
    start = clock.now
    for _ in range(10):
        limiter.acquire()
    assert clock.now - start == pytest.approx(10 / 10)  # long-run rate is still 10/s


@pytest.mark.parametrize("rate", [None, 0, -5])
def test_unlimited_limiter_never_sleeps(rate):
    limiter, clock = _limiter(rate)
    assert limiter.unlimited
    for _ in range(1000):
        assert limiter.acquire() == 0.0
    assert clock.sleeps == []


def test_rate_limiter_rejects_a_zero_burst():
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(10, burst=0)


def test_penalize_delays_the_next_acquisition_then_the_steady_rate_resumes():
    limiter, clock = _limiter(10, burst=5)
    limiter.acquire()
    limiter.penalize(2.5)
    assert limiter.acquire() == pytest.approx(2.5)
    assert clock.now == pytest.approx(102.5)
    # no burst of banked tokens right after a penalty: evenly spaced again
    for _ in range(3):
        assert limiter.acquire() == pytest.approx(0.1)


def test_penalize_on_an_unlimited_limiter_and_penalties_do_not_add_up():
    limiter, clock = _limiter(None)
    limiter.penalize(2.0)
    limiter.penalize(1.0)  # shorter: the later end (2.0) wins, not 3.0
    limiter.penalize(0)
    limiter.penalize(-4)
    assert limiter.acquire() == pytest.approx(2.0)
    assert limiter.acquire() == 0.0
    assert clock.now == pytest.approx(102.0)


def test_penalty_arriving_while_a_caller_sleeps_makes_it_wait_for_the_penalty():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=lambda s: None)
    penalized = []

    def sleep(s):  # another thread gets a 429 while this caller waits for its slot
        if not penalized:
            other = threading.Thread(target=limiter.penalize, args=(5.0,), daemon=True)
            other.start()
            other.join(2)
            assert not other.is_alive(), "penalize blocked: acquire sleeps while holding the lock"
            penalized.append(True)
        clock.sleep(s)

    limiter._sleep = sleep
    limiter.acquire()
    waited = limiter.acquire()  # its slot was 100.1, but the carrier said "nobody until 105"
    assert clock.now == pytest.approx(105.0)
    assert waited == pytest.approx(5.0)


def test_waiting_threads_sleep_outside_the_lock():
    """Several threads wait at once, on evenly spaced slots, and penalize is not blocked by them."""
    clock = FakeClock()
    release = threading.Event()
    sleeping = []
    lock = threading.Lock()

    def blocking_sleep(s):
        with lock:
            sleeping.append(s)
        release.wait(5)

    limiter = RateLimiter(10, clock=clock, sleep=blocking_sleep)
    limiter.acquire()
    threads = [threading.Thread(target=limiter.acquire, daemon=True) for _ in range(3)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 3
    while len(sleeping) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    try:
        assert sorted(sleeping) == [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)]
        penalizer = threading.Thread(target=limiter.penalize, args=(1.0,), daemon=True)
        penalizer.start()
        penalizer.join(2)
        assert not penalizer.is_alive(), "penalize blocked while other threads were sleeping"
    finally:
        release.set()
        for th in threads:
            th.join(5)
    assert not any(th.is_alive() for th in threads)


def test_rate_limiter_holds_across_threads_in_real_time():
    rate, n_threads, per_thread = 20, 6, 5
    n = n_threads * per_thread
    limiter = RateLimiter(rate)
    stamps, lock = [], threading.Lock()

    def worker():
        for _ in range(per_thread):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(10)
    elapsed = time.monotonic() - started
    assert len(stamps) == n
    # The n-th slot is (n-1)/rate after the first: no scheduling delay can make this shorter.
    assert elapsed >= (n - 1) / rate - 0.02
    # No 1-second window holds much more than `rate` acquisitions. Ideal is rate+1 = 21; the
    # slack tolerates threads that overslept on a loaded machine and then woke together.
    # Without a limiter all 30 land within milliseconds; at twice the rate, within 0.75 s.
    stamps.sort()
    busiest = max(sum(1 for s in stamps[i:] if s < t + 1.0) for i, t in enumerate(stamps))
    assert busiest <= rate + 6


# --------------------------------------------------------------------------------------------
# RetryPolicy
# --------------------------------------------------------------------------------------------
def test_retry_delays_grow_exponentially_and_are_capped():
    p = RetryPolicy(base_delay=1, max_delay=5, jitter=False)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5, 6)] == [1, 2, 4, 5, 5, 5]
    assert p.delay(10_000) == 5  # no overflow for absurd attempt numbers
    d = RetryPolicy(jitter=False)  # defaults: 0.5 s base, 30 s cap
    assert [d.delay(n) for n in (1, 2, 3, 4, 7, 8)] == [0.5, 1, 2, 4, 30, 30]


def test_retry_after_is_a_floor_capped_at_max_delay():
    p = RetryPolicy(base_delay=1, max_delay=5, jitter=False)
    assert p.delay(1, retry_after=3) == 3
    assert p.delay(3, retry_after=1) == 4    # backoff already longer than Retry-After
    assert p.delay(1, retry_after=99) == 5   # a huge Retry-After is capped
    assert p.delay(2, retry_after=0) == 2


def test_full_jitter_stays_within_bounds_and_spreads():
    p = RetryPolicy(base_delay=1, max_delay=10, rng=random.Random(3))
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)]:
        delays = [p.delay(attempt) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        # full jitter covers the whole [0, ceiling] range, not a fixed value
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling
        assert len(set(delays)) > 250


def test_jitter_is_reproducible_with_a_seeded_rng_and_respects_retry_after():
    a = RetryPolicy(rng=random.Random(42))
    b = RetryPolicy(rng=random.Random(42))
    assert [a.delay(3) for _ in range(20)] == [b.delay(3) for _ in range(20)]
    c = RetryPolicy(base_delay=1, max_delay=30, rng=random.Random(1))
    assert all(2.5 <= c.delay(2, retry_after=2.5) <= 2.5 for _ in range(100))  # ceiling 2 < 2.5


def test_retry_policy_validates():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=-1)


# --------------------------------------------------------------------------------------------
# CallPolicy
# --------------------------------------------------------------------------------------------
class RecordingLimiter:
    def __init__(self):
        self.acquired = 0
        self.penalized = []

    def acquire(self):
        self.acquired += 1
        return 0.0

    def penalize(self, s):
        self.penalized.append(s)


def _policy(attempts=3, **retry):
    sleeps = []
    limiter = RecordingLimiter()
    retry.setdefault("jitter", False)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=attempts, **retry), sleep=sleeps.append)
    return policy, sleeps, limiter


class Script:
    """fn for execute(): returns or raises the given outcomes in turn; counts calls."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self):
        o = self.outcomes[self.calls]
        self.calls += 1
        if isinstance(o, BaseException):
            raise o
        return o


def test_transient_then_success():
    policy, sleeps, limiter = _policy()
    fn = Script(TransientError("503"), "ok")
    assert policy.execute(fn) == ("ok", 2)
    assert fn.calls == 2 and sleeps == [0.5] and limiter.acquired == 2
    assert limiter.penalized == []  # no Retry-After, no penalty for the others


def test_transient_exhausted_raises_the_last_error_with_attempts():
    policy, sleeps, limiter = _policy(3)
    errors = [TransientError(f"503 #{i}") for i in range(3)]
    fn = Script(*errors, "never")
    with pytest.raises(TransientError) as err:
        policy.execute(fn)
    assert err.value is errors[-1]
    assert err.value.attempts == 3 and fn.calls == 3
    assert sleeps == [0.5, 1.0]          # no pointless sleep after the last attempt
    assert limiter.acquired == 3         # the limiter is asked before every attempt
    assert any("3 attempt" in note for note in err.value.__notes__)


def test_single_attempt_policy_does_not_retry():
    policy, sleeps, _ = _policy(1)
    fn = Script(TransientError("503"), "never")
    with pytest.raises(TransientError) as err:
        policy.execute(fn)
    assert err.value.attempts == 1 and fn.calls == 1 and sleeps == []


def test_permanent_is_never_retried():
    policy, sleeps, limiter = _policy()
    fn = Script(PermanentError("400"), "never")
    with pytest.raises(PermanentError) as err:
        policy.execute(fn)
    assert err.value.attempts == 1 and fn.calls == 1 and sleeps == [] and limiter.acquired == 1


def test_permanent_after_a_transient_reports_both_attempts():
    policy, sleeps, _ = _policy()
    with pytest.raises(PermanentError) as err:
        policy.execute(Script(TransientError("503"), PermanentError("404"), "never"))
    assert err.value.attempts == 2 and len(sleeps) == 1


def test_other_exceptions_propagate_without_retry():
    policy, sleeps, _ = _policy()
    fn = Script(KeyError("bug"), "never")
    with pytest.raises(KeyError) as err:
        policy.execute(fn)
    assert fn.calls == 1 and sleeps == [] and err.value.attempts == 1


def test_auth_reauthenticates_once_and_retries_immediately():
    policy, sleeps, limiter = _policy(1)  # the re-auth retry does not use up max_attempts
    reauth = []
    fn = Script(AuthError("401"), "ok")
    assert policy.execute(fn, reauthenticate=lambda: reauth.append(1)) == ("ok", 2)
    assert reauth == [1] and sleeps == [] and limiter.acquired == 2


def test_second_auth_error_is_raised():
    policy, _, _ = _policy(5)
    reauth = []
    fn = Script(AuthError("401"), AuthError("401 again"), "never")
    with pytest.raises(AuthError, match="again") as err:
        policy.execute(fn, reauthenticate=lambda: reauth.append(1))
    assert reauth == [1] and fn.calls == 2 and err.value.attempts == 2


def test_auth_error_without_reauthenticate_is_raised_at_once():
    policy, _, _ = _policy(5)
    fn = Script(AuthError("401"), "never")
    with pytest.raises(AuthError):
        policy.execute(fn)
    assert fn.calls == 1


def test_auth_retry_does_not_count_against_max_attempts():
    policy, sleeps, _ = _policy(2)
    assert policy.execute(Script(AuthError("401"), TransientError("503"), "ok"),
                          reauthenticate=lambda: None) == ("ok", 3)
    fn = Script(AuthError("401"), TransientError("503"), TransientError("503"), "never")
    with pytest.raises(TransientError) as err:
        policy.execute(fn, reauthenticate=lambda: None)
    assert fn.calls == 3 and err.value.attempts == 3


def test_retry_after_penalizes_the_shared_limiter_and_sets_the_wait():
    policy, sleeps, limiter = _policy()
    assert policy.execute(Script(TransientError("429", retry_after=4.0), "ok")) == ("ok", 2)
    assert limiter.penalized == [4.0] and sleeps == [4.0]


def test_rate_limit_refusals_are_waited_out_without_using_up_the_attempts():
    """A 429 applied nothing: a few in a row (a bunched arrival at the carrier's window) are waited
    out per Retry-After; only after ``rate_limited_waits`` of them do they count as attempts."""
    policy, sleeps, _ = _policy(3)
    limited = [TransientError("429", status_code=429, retry_after=0.2) for _ in range(5)]
    assert policy.execute(Script(*limited, "ok")) == ("ok", 6)
    assert len(sleeps) == 5 and min(sleeps) >= 0.2
    fn = Script(*[TransientError("429", status_code=429, retry_after=0.2) for _ in range(9)])
    with pytest.raises(TransientError) as err:
        policy.execute(fn)
    assert fn.calls == 5 + 3 and err.value.attempts == 8  # the waits used, then max_attempts


def test_huge_retry_after_is_capped_for_the_penalty_too():
    policy, sleeps, limiter = _policy(max_delay=10)
    policy.execute(Script(TransientError("429", retry_after=3600), "ok"))
    assert limiter.penalized == [10] and sleeps == [10]


def test_retry_after_on_the_last_attempt_still_slows_the_others_down():
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=1), sleep=clock.sleep)
    with pytest.raises(TransientError):
        policy.execute(Script(TransientError("429", retry_after=3.0)))
    # another thread sharing the limiter now waits for the carrier's Retry-After
    assert limiter.acquire() == pytest.approx(3.0)


def test_call_policy_with_a_real_limiter_spaces_every_attempt():
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3, base_delay=0.0, jitter=False), sleep=clock.sleep)
    assert policy.execute(Script(TransientError("503"), TransientError("503"), "ok")) == ("ok", 3)
    assert clock.now == pytest.approx(101.0)  # 3 attempts at 2/s: retries are rate limited too


def test_full_jitter_through_execute_stays_within_the_capped_backoff_and_spreads():
    sleeps = []
    policy = CallPolicy(RecordingLimiter(), RetryPolicy(max_attempts=5, base_delay=1, max_delay=4,
                                                        rng=random.Random(7)), sleep=sleeps.append)
    by_attempt = {n: [] for n in (1, 2, 3, 4)}
    for _ in range(200):
        sleeps.clear()
        assert policy.execute(Script(*[TransientError("503")] * 4, "ok")) == ("ok", 5)
        for n, s in zip((1, 2, 3, 4), sleeps, strict=True):
            by_attempt[n].append(s)
    for n, ceiling in ((1, 1), (2, 2), (3, 4), (4, 4)):  # 1, 2, 4, then capped at max_delay 4
        delays = by_attempt[n]
        assert all(0 <= d <= ceiling for d in delays)
        assert min(delays) < 0.1 * ceiling and max(delays) > 0.9 * ceiling  # spread over the range


def test_retry_after_is_a_floor_of_the_jittered_wait_and_capped():
    sleeps = []
    limiter = RecordingLimiter()
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=4, base_delay=1, max_delay=10, rng=random.Random(1)),
                        sleep=sleeps.append)
    for _ in range(50):
        policy.execute(Script(TransientError("429", retry_after=2.5), TransientError("503", retry_after=2.5), "ok"))
    assert len(sleeps) == 100 and all(2.5 <= s <= 2.5 for s in sleeps[::2])  # ceiling 1 < 2.5
    assert all(2.5 <= s <= 2.5 for s in sleeps[1::2])                        # ceiling 2 < 2.5
    sleeps.clear()
    policy.execute(Script(TransientError("429", retry_after=3600), "ok"))
    assert sleeps == [10] and limiter.penalized[-1] == 10


def test_the_penalty_is_in_place_before_the_wait_starts():
    events = []

    class Limiter(RecordingLimiter):
        def penalize(self, s):
            events.append(("penalize", s))

    policy = CallPolicy(Limiter(), RetryPolicy(max_attempts=2, jitter=False),
                        sleep=lambda s: events.append(("sleep", s)))
    policy.execute(Script(TransientError("429", retry_after=1.5), "ok"))
    assert events == [("penalize", 1.5), ("sleep", 1.5)]


def test_an_unknown_outcome_is_never_sent_again():
    policy, sleeps, limiter = _policy(5)
    fn = Script(OutcomeUnknown("HTTP 502 (not sent again)", status_code=502), "never")
    with pytest.raises(OutcomeUnknown) as err:
        policy.execute(fn, reauthenticate=lambda: None)
    assert fn.calls == 1 and sleeps == [] and limiter.acquired == 1 and err.value.attempts == 1


def test_a_refusal_after_a_reauthentication_is_not_retried():
    policy, sleeps, _ = _policy(5)
    reauth = []
    fn = Script(AuthError("401"), PermanentError("HTTP 404"), "never")
    with pytest.raises(PermanentError) as err:
        policy.execute(fn, reauthenticate=lambda: reauth.append(1))
    assert reauth == [1] and fn.calls == 2 and sleeps == [] and err.value.attempts == 2


def test_a_failing_reauthentication_is_raised_with_the_attempts():
    policy, _, _ = _policy(5)
    fn = Script(AuthError("401"), "never")

    def reauthenticate():
        raise TransientError("login endpoint down")

    with pytest.raises(TransientError, match="login endpoint") as err:
        policy.execute(fn, reauthenticate=reauthenticate)
    assert fn.calls == 1 and err.value.attempts == 1


@pytest.mark.parametrize("exc, step", [
    (TransientError("HTTP 429", status_code=429), NextStep.WAIT_OUT),
    (TransientError("HTTP 503", status_code=503), NextStep.RETRY),
    (TransientError("timeout"), NextStep.RETRY),
    (AuthError("HTTP 401", status_code=401), NextStep.REAUTHENTICATE),
    (PermanentError("HTTP 400", status_code=400), NextStep.GIVE_UP),
    (OutcomeUnknown("HTTP 502", status_code=502), NextStep.GIVE_UP),
    (KeyError("bug"), NextStep.GIVE_UP),
])
def test_next_step_is_the_one_classification_of_a_failed_attempt(exc, step):
    assert next_step(exc) is step


# --------------------------------------------------------------------------------------------
# run_batch
# --------------------------------------------------------------------------------------------
def test_run_batch_preserves_input_order_when_items_finish_out_of_order():
    n = 5
    done = [threading.Event() for _ in range(n)]
    finished = []

    def action(i):
        if i < n - 1:  # each item waits for the next one: completion order is reversed
            assert done[i + 1].wait(2)
        done[i].set()
        return f"v{i}"

    outcomes = run_batch(list(range(n)), action, max_parallel=n,
                         on_result=lambda item, o: finished.append(item))
    assert finished == [4, 3, 2, 1, 0]
    assert [o.item for o in outcomes] == [0, 1, 2, 3, 4]
    assert [o.value for o in outcomes] == ["v0", "v1", "v2", "v3", "v4"]
    assert all(o.ok for o in outcomes)


@pytest.mark.parametrize("max_parallel", [2, 4, 7])
def test_run_batch_concurrency_reaches_but_never_exceeds_max_parallel(max_parallel):
    inflight, peak, lock = [0], [0], threading.Lock()
    threads = set()
    first_wave = threading.Barrier(max_parallel, timeout=5)

    def action(i):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
            threads.add(threading.get_ident())
        try:
            if i < max_parallel:
                first_wave.wait()  # breaks (-> error outcome) unless max_parallel run at once
            time.sleep(0.005)
        finally:
            with lock:
                inflight[0] -= 1
        return i

    outcomes = run_batch(list(range(6 * max_parallel)), action, max_parallel=max_parallel)
    assert [o.error for o in outcomes] == [None] * len(outcomes)
    assert peak[0] == max_parallel
    assert len(threads) <= max_parallel


def test_run_batch_max_parallel_1_is_sequential_in_the_callers_thread():
    order, idents = [], set()

    def action(i):
        order.append(i)
        idents.add(threading.get_ident())
        return i

    outcomes = run_batch(list(range(10)), action, max_parallel=1)
    assert order == list(range(10)) and idents == {threading.get_ident()}
    assert [o.value for o in outcomes] == list(range(10))


def test_run_batch_captures_exceptions_per_item():
    def action(i):
        time.sleep(0.01)
        if i == 7:
            raise ValueError("boom")
        if i == 3:
            raise TransientError("503 after retries")
        return i * 10

    outcomes = run_batch(list(range(12)), action, max_parallel=4)
    assert len(outcomes) == 12
    assert isinstance(outcomes[7].error, ValueError) and str(outcomes[7].error) == "boom"
    assert isinstance(outcomes[3].error, TransientError)
    assert outcomes[7].value is None and not outcomes[7].ok
    assert [o.value for i, o in enumerate(outcomes) if i not in (3, 7)] == [i * 10 for i in range(12) if i not in (3, 7)]
    assert all(o.ok for i, o in enumerate(outcomes) if i not in (3, 7))
    assert all(o.duration_s >= 0.009 for o in outcomes)


def test_on_result_is_called_once_per_item_with_the_returned_outcome():
    seen, lock = {}, threading.Lock()
    names = set()

    def on_result(item, outcome):
        with lock:
            assert item not in seen
            seen[item] = outcome
            names.add(threading.current_thread().name)

    outcomes = run_batch(list(range(30)), lambda i: 1 / (i % 5), max_parallel=3, on_result=on_result)
    assert sorted(seen) == list(range(30))
    assert all(seen[o.item] is o for o in outcomes)
    assert all(isinstance(o, Outcome) for o in seen.values())
    assert sum(1 for o in seen.values() if isinstance(o.error, ZeroDivisionError)) == 6
    assert all(name.startswith("bulkchange-batch") for name in names)  # called from worker threads


def test_a_failing_on_result_loses_no_outcome():
    def on_result(item, outcome):
        if item % 2:
            raise RuntimeError("progress logging broke")

    outcomes = run_batch(list(range(8)), lambda i: i, max_parallel=3, on_result=on_result)
    assert [o.value for o in outcomes] == list(range(8)) and all(o.ok for o in outcomes)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", None, True])
def test_run_batch_rejects_an_invalid_max_parallel(bad):
    called = []
    with pytest.raises(ValueError, match="max_parallel"):
        run_batch([1, 2], called.append, max_parallel=bad)
    assert called == []


def test_run_batch_of_nothing():
    assert run_batch([], lambda i: i) == []


# --------------------------------------------------------------------------------------------
# MAX_PARALLEL_REQUESTS
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw,expected", [
    (None, DEFAULT_MAX_PARALLEL), ("", DEFAULT_MAX_PARALLEL), ("  ", DEFAULT_MAX_PARALLEL),
    ("25", 25), (" 7 ", 7), ("1", 1), ("0", 1), ("-3", 1), ("x", 1), ("2.5", 1),
])
def test_max_parallel_from_env(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("MAX_PARALLEL_REQUESTS", raising=False)
    else:
        monkeypatch.setenv("MAX_PARALLEL_REQUESTS", raw)
    assert max_parallel_from_env() == expected


def test_max_parallel_from_env_custom_default(monkeypatch):
    monkeypatch.delenv("MAX_PARALLEL_REQUESTS", raising=False)
    assert DEFAULT_MAX_PARALLEL == 10
    assert max_parallel_from_env(default=4) == 4


class PacedLimiter(RecordingLimiter):
    def __init__(self, rate):
        super().__init__()
        self.rate = rate


def test_a_429_with_room_before_the_next_slot_is_retried_in_its_place():
    """Even spacing at the account's rate can arrive a moment early at the carrier's window: the
    carrier refuses, counts nothing and says when there is room. When that is before our next slot
    (Retry-After < 1 / rate), the retry goes exactly then without taking a new slot: a new slot
    would leave one of the account's slots unused per refusal."""
    sleeps = []
    limiter = PacedLimiter(5)  # a slot every 0.2 s
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3, base_delay=1, rng=random.Random(3)),
                        sleep=sleeps.append)
    fn = Script(TransientError("429", status_code=429, retry_after=0.05),
                TransientError("429", status_code=429, retry_after=0.12), "ok")
    assert policy.execute(fn) == ("ok", 3)
    assert limiter.acquired == 1 and sleeps == [0.05, 0.12]  # exactly Retry-After: no jitter
    assert limiter.penalized == [0.05, 0.12]  # the other senders still hold back that long


def test_a_429_whose_room_comes_after_the_next_slot_queues_for_a_new_slot():
    sleeps = []
    limiter = PacedLimiter(5)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3, jitter=False), sleep=sleeps.append)
    assert policy.execute(Script(TransientError("429", status_code=429, retry_after=0.5), "ok")) == ("ok", 2)
    assert limiter.acquired == 2 and sleeps == [0.5]
    # a 503 with a short Retry-After is a failure, not a refused slot: it queues again too
    limiter.acquired = 0
    assert policy.execute(Script(TransientError("503", status_code=503, retry_after=0.05), "ok")) == ("ok", 2)
    assert limiter.acquired == 2


def test_in_place_retries_end_with_the_rate_limited_waits():
    limiter = PacedLimiter(5)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3, rate_limited_waits=2, jitter=False),
                        sleep=lambda s: None)
    refusals = [TransientError("429", status_code=429, retry_after=0.05) for _ in range(3)]
    assert policy.execute(Script(*refusals, "ok")) == ("ok", 4)
    assert limiter.acquired == 2  # the first, then the third refusal counted as an attempt: a new slot


def test_an_in_place_retry_leaves_the_account_schedule_as_if_nothing_was_refused():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3), sleep=clock.sleep)
    start = clock.now
    policy.execute(Script(TransientError("429", status_code=429, retry_after=0.05), "ok"))
    assert clock.now == pytest.approx(start + 0.05)
    # the next sender gets the very next slot: the refusal cost no slot
    assert limiter.acquire() == pytest.approx(0.15)


# --------------------------------------------------------------------------------------------
# The window: a late caller holds the next ones back instead of bunching with them
# --------------------------------------------------------------------------------------------
def _let_go_times(limiter, clock, n):
    times = []
    for _ in range(n):
        limiter.acquire()
        times.append(clock.now)
    return times


def _late_once(clock, late_call, lateness):
    """A sleep that wakes ``lateness`` seconds late on the ``late_call``-th sleep (a busy host)."""
    count = [0]

    def sleep(s):
        count[0] += 1
        clock.sleep(s + (lateness if count[0] == late_call else 0.0))
    return sleep


@pytest.mark.parametrize("window,most_in_a_second", [(None, 6), ((5, 1.0), 5)])
def test_a_caller_that_wakes_late_holds_the_next_ones_back_with_a_window(window, most_in_a_second):
    """Slots are reserved ahead at 1/rate: the caller of slot 100.2 wakes 0.15 s late and the next
    ones keep their slots, so without a window six requests leave inside one second (a carrier
    counting 5 per second refuses one). With the window, the caller after them waits instead."""
    from simulators.core import max_per_second

    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=_late_once(clock, 1, 0.15), window=window)
    times = _let_go_times(limiter, clock, 12)
    assert max_per_second([t - 100.0 + 1e-9 * i for i, t in enumerate(times)]) == most_in_a_second
    if window:
        assert times[6] == pytest.approx(101.35)  # the late one (100.35) left the window first
        assert times[7] == pytest.approx(101.4)  # then the schedule again


def test_a_window_without_a_rate_lets_at_most_cap_go_per_span():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep, window=(3, 0.5))
    assert _let_go_times(limiter, clock, 7) == pytest.approx([100, 100, 100, 100.5, 100.5, 100.5, 101])


def test_a_refused_request_leaves_the_window_and_its_retry_keeps_its_place():
    """The carrier counted nothing for a 429: the window forgets that request, so the retry in its
    place goes when Retry-After says and the next caller keeps its slot."""
    clock = FakeClock()
    limiter = RateLimiter(4, clock=clock, sleep=clock.sleep, window=(5, 1.02))
    assert _let_go_times(limiter, clock, 5) == pytest.approx([100, 100.25, 100.5, 100.75, 101.0])
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3), sleep=clock.sleep)
    sent = []

    def fn():
        sent.append(clock.now)
        if len(sent) == 1:
            raise TransientError("429", status_code=429, retry_after=0.01)
        return "ok"

    assert policy.execute(fn) == ("ok", 2)
    assert sent == pytest.approx([101.25, 101.26])
    limiter.acquire()
    assert clock.now == pytest.approx(101.5)  # counted, the refusal would have pushed this to 101.52


def test_a_request_that_leaves_late_is_counted_from_when_it_left():
    """A caller let go at 100.0 whose request leaves at 100.3 (its thread waited for a CPU): the
    carrier counts it at 100.3, so the next caller but one (cap 2 per second) waits until 101.3;
    counted from 100.0 it would go at 101.1 and arrive 0.8 s after it: refused."""
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep, window=(2, 1.0))
    limiter.acquire()
    entry = limiter.taken()
    clock.sleep(0.3)
    assert limiter.sent(entry) == pytest.approx(100.3) == limiter.taken()
    clock.sleep(0.2)
    limiter.acquire()
    clock.sleep(0.6)  # 101.1
    limiter.acquire()
    assert clock.now == pytest.approx(101.3)
    assert limiter.sent(None) is None and limiter.sent(50.0) == 50.0  # not in the window: nothing moves


def test_the_call_policy_reports_when_each_attempt_left_and_a_check_inside_it_its_own():
    """``carriers.http`` calls the hook of the innermost attempt once its request is written: the
    attempt's own window entry moves, and a call made inside the attempt (a check at the carrier)
    moves its own entry, not the attempt's."""
    from bulkchange.carriers import http

    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep, window=(5, 1.0))
    moved = []
    real_sent = limiter.sent
    limiter.sent = lambda entry: moved.append((entry, clock.now)) or real_sent(entry)
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=1), sleep=clock.sleep)

    def check():
        clock.sleep(0.1)
        http._request_sent()
        return "checked"

    def fn():
        clock.sleep(0.2)
        inner = policy.execute(check)  # let go at 100.2, its request leaves at 100.3
        clock.sleep(0.05)
        http._request_sent()  # the attempt's own request leaves at 100.35
        http._request_sent()  # a second write of the same attempt: counted once
        return inner

    assert policy.execute(fn) == (("checked", 1), 1)
    assert moved == [(pytest.approx(100.2), pytest.approx(100.3)), (pytest.approx(100.0), pytest.approx(100.35))]
    http._request_sent()  # outside any attempt: nothing
    assert len(moved) == 2


def test_the_carrier_window_is_the_simulators_rule_stretched_by_the_headroom():
    from bulkchange.engine import carrier_window

    assert carrier_window(5, 0.02) == (5, pytest.approx(1.02))
    assert carrier_window(2.5) == (2, 1.0)  # "2.5 per second" admits 2 in a second
    assert carrier_window(0.5, 0.02) == (1, pytest.approx(2.04))
    assert carrier_window(None) is None and carrier_window(0) is None
    with pytest.raises(ValueError):
        RateLimiter(5, window=(0, 1.0))


@pytest.mark.parametrize("span,recovered", [(1.01, True), (1.02, False)])
def test_a_window_looser_than_the_spacing_absorbs_a_late_caller(span, recovered):
    """Paced at 4.9/s (a slot every 0.204 s) with 5 per ``span``: one caller wakes 0.15 s late.
    With the window as tight as the spacing (5 x 0.204 = 1.02) the delay passes to the caller
    five places later, and on, for good: the slots fall behind and two requests go 0.05 s apart
    in every window from then on. With half the headroom left in the window (1.01) the delay
    shrinks by 0.01 s a window and the callers are back on their even slots."""
    from simulators.core import max_per_second

    clock = FakeClock()
    limiter = RateLimiter(4.9, clock=clock, sleep=_late_once(clock, 1, 0.15), window=(5, span))
    times = _let_go_times(limiter, clock, 200)
    assert max_per_second([t - 100.0 + 1e-9 * i for i, t in enumerate(times)]) <= 5
    late_gaps = [b - a for a, b in zip(times[-30:], times[-29:])]
    assert (min(late_gaps) > 0.2) is recovered
    assert times[-1] - (100.0 + 199 / 4.9) == pytest.approx(0.0, abs=0.01)  # no time lost either way


def test_a_refusal_takes_its_own_request_out_of_the_window_not_a_check_made_in_between():
    """After an unknown outcome the resend's slot is taken first, then the check at the carrier
    takes its own (same thread, same limiter). If the carrier then refuses the resend, the entry
    that leaves the window is the resend's: the check reached the carrier and counts."""
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep, window=(2, 1.0))
    policy = CallPolicy(limiter, RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01), sleep=clock.sleep)
    sent = []

    def resend():
        sent.append(clock.now)  # let go at 100.0
        if len(sent) == 1:
            clock.sleep(0.1)
            policy.execute(lambda: "not there")  # the check: let go at 100.1, counted by the carrier
            raise TransientError("429", status_code=429, retry_after=0.01)
        return "ok"

    assert policy.execute(resend) == ("ok", 2)
    assert sent[1] == pytest.approx(100.11)
    limiter.acquire()  # the window now holds the check (100.1) and the retry (100.11)
    assert clock.now == pytest.approx(101.1)  # had the check's entry left instead: 101.0
