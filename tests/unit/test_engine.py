import random
import threading
import time

import pytest

from bulkchange.carriers.base import AuthError, PermanentError, TransientError
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy, max_parallel_from_env, run_batch


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.sleeps.append(s)
        self.now += s


def test_rate_limiter_spaces_acquisitions_evenly():
    clock = FakeClock()
    limiter = RateLimiter(5, clock=clock, sleep=clock.sleep)
    for _ in range(11):
        limiter.acquire()
    assert clock.now - 100.0 == pytest.approx(10 / 5)


def test_rate_limiter_burst_allows_banked_tokens_only():
    clock = FakeClock()
    limiter = RateLimiter(10, burst=3, clock=clock, sleep=clock.sleep)
    clock.now += 5  # idle for a long time: at most 3 tokens banked
    for _ in range(3):
        limiter.acquire()
    assert clock.sleeps == []
    limiter.acquire()
    assert clock.sleeps and clock.sleeps[-1] > 0


def test_unlimited_never_sleeps_and_penalize_blocks_everyone():
    clock = FakeClock()
    limiter = RateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        limiter.acquire()
    assert clock.sleeps == []
    limiter.penalize(2.5)
    assert limiter.acquire() == pytest.approx(2.5)


def test_rate_limiter_holds_across_threads_in_real_time():
    limiter = RateLimiter(20)
    stamps, lock = [], threading.Lock()

    def worker():
        for _ in range(5):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stamps.sort()
    # 30 acquisitions at 20/s: no 1-second window may hold more than 20 (+1 for the edge)
    for i, t in enumerate(stamps):
        assert sum(1 for s in stamps[i:] if s < t + 1.0) <= 21
    assert stamps[-1] - stamps[0] >= (30 - 1) / 20 * 0.9


def test_retry_delays_grow_are_capped_and_honour_retry_after():
    p = RetryPolicy(base_delay=1, max_delay=5, jitter=False)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]
    assert p.delay(1, retry_after=3) == 3
    assert p.delay(1, retry_after=99) == 5
    j = RetryPolicy(base_delay=1, max_delay=30, rng=random.Random(3))
    delays = [j.delay(4) for _ in range(200)]
    assert all(0 <= d <= 8 for d in delays) and len(set(delays)) > 100


def _policy(attempts=3):
    sleeps = []
    limiter_calls = []

    class Limiter:
        def acquire(self):
            limiter_calls.append(1)

        penalized = []

        def penalize(self, s):
            self.penalized.append(s)

    limiter = Limiter()
    return CallPolicy(limiter, RetryPolicy(max_attempts=attempts, jitter=False), sleep=sleeps.append), sleeps, \
        limiter_calls, limiter


def _sequence(*outcomes):
    it = iter(outcomes)

    def fn():
        o = next(it)
        if isinstance(o, Exception):
            raise o
        return o
    return fn


def test_transient_then_success():
    policy, sleeps, acquired, _ = _policy()
    assert policy.execute(_sequence(TransientError("503"), "ok")) == ("ok", 2)
    assert len(sleeps) == 1 and len(acquired) == 2  # the limiter is asked before every attempt


def test_transient_exhausted_raises_with_attempts():
    policy, sleeps, _, _ = _policy(3)
    with pytest.raises(TransientError) as err:
        policy.execute(_sequence(*[TransientError("x")] * 3))
    assert err.value.attempts == 3 and len(sleeps) == 2


def test_permanent_is_never_retried():
    policy, sleeps, _, _ = _policy()
    with pytest.raises(PermanentError) as err:
        policy.execute(_sequence(PermanentError("400"), "never"))
    assert err.value.attempts == 1 and sleeps == []


def test_auth_reauthenticates_once():
    policy, _, _, _ = _policy(1)
    reauth = []
    assert policy.execute(_sequence(AuthError("401"), "ok"), reauthenticate=lambda: reauth.append(1)) == ("ok", 1)
    assert reauth == [1]
    with pytest.raises(AuthError):
        policy.execute(_sequence(AuthError("401"), AuthError("401")), reauthenticate=lambda: reauth.append(1))


def test_retry_after_penalizes_the_shared_limiter_and_sets_the_wait():
    policy, sleeps, _, limiter = _policy()
    policy.execute(_sequence(TransientError("429", retry_after=4.0), "ok"))
    assert limiter.penalized == [4.0] and sleeps == [4.0]


def test_run_batch_order_concurrency_and_errors():
    inflight, peak, lock = [0], [0], threading.Lock()
    seen = []

    def action(i):
        with lock:
            inflight[0] += 1
            peak[0] = max(peak[0], inflight[0])
        time.sleep(0.02)
        with lock:
            inflight[0] -= 1
        if i == 7:
            raise ValueError("boom")
        return i * 10

    outcomes = run_batch(list(range(40)), action, max_parallel=4, on_result=lambda item, o: seen.append(item))
    assert [o.item for o in outcomes] == list(range(40))
    assert outcomes[3].value == 30 and isinstance(outcomes[7].error, ValueError) and outcomes[8].ok
    assert peak[0] == 4
    assert sorted(seen) == list(range(40))
    with pytest.raises(ValueError):
        run_batch([1], action, max_parallel=0)


@pytest.mark.parametrize("raw,expected", [(None, 10), ("", 10), ("25", 25), ("0", 1), ("-3", 1), ("x", 1)])
def test_max_parallel_from_env(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("MAX_PARALLEL_REQUESTS", raising=False)
    else:
        monkeypatch.setenv("MAX_PARALLEL_REQUESTS", raw)
    assert max_parallel_from_env() == expected
