"""The shared (Redis) rate limiter, against a real Redis server.

Real time, short runs; assertions are limits (lower bounds on elapsed time, upper bounds on how
many acquisitions fall in any one second), never that something is fast. Outside CI the tests skip
when Redis is not reachable; under CI=true they fail (.ci/run starts Redis).
"""
import json
import logging
import multiprocessing
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.carriers.base import TransientError
from bulkchange.shared_limiter import KEY_PREFIX, RedisRateLimiter, make_rate_limiter
from simulators.core import max_per_second  # most events in any 1-second window

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("BULKCHANGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.redis


@pytest.fixture
def redis_url():
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        reason = f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: .ci/run must start Redis")
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def key(redis_url):
    import redis

    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    redis.Redis.from_url(redis_url).delete(KEY_PREFIX + name, KEY_PREFIX + name + ":window")


def test_two_limiters_on_one_key_share_the_rate(redis_url, key):
    rate, per_thread = 20, 10
    limiters = [RedisRateLimiter(key, rate, url=redis_url) for _ in range(2)]
    stamps, lock = [], threading.Lock()

    def worker(limiter):
        for _ in range(per_thread):
            limiter.acquire()
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters for _ in range(2)]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    n = len(stamps)
    assert n == 4 * per_thread
    # 40 acquisitions at 20/s: the first is free, the other 39 are 1/20 s apart
    assert time.monotonic() - started >= (n - 1) / rate * 0.95
    # slots are exactly 1/rate apart; a thread the OS wakes late can shift into the next second, so
    # allow a margin, far below the 2x that two unshared limiters would send
    assert max_per_second(stamps) <= rate * 1.25 + 1


def _child(url, key, rate, n, out_path):
    sys.path.insert(0, str(ROOT / "include"))
    from bulkchange.shared_limiter import RedisRateLimiter as Limiter

    limiter = Limiter(key, rate, url=url)
    stamps = []
    for _ in range(n):
        limiter.acquire()
        stamps.append(time.time())
    Path(out_path).write_text(json.dumps(stamps))


def test_several_processes_share_one_limit(redis_url, key, tmp_path):
    """Three processes, each with its own limiter object: together they stay at the account's rate.
    Three independent in-process limiters at this rate would send three times as fast."""
    rate, per_process, procs = 30, 20, 3
    ctx = multiprocessing.get_context("spawn")
    outs = [tmp_path / f"p{i}.json" for i in range(procs)]
    children = [ctx.Process(target=_child, args=(redis_url, key, rate, per_process, str(o))) for o in outs]
    for c in children:
        c.start()
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    stamps = [s for o in outs for s in json.loads(o.read_text())]
    assert len(stamps) == procs * per_process
    assert max(stamps) - min(stamps) >= (len(stamps) - 1) / rate * 0.9
    assert max_per_second(stamps) <= rate * 1.25 + 1  # unshared: 3x the rate


def test_penalty_from_one_holder_holds_back_the_other(redis_url, key):
    a = RedisRateLimiter(key, 100, url=redis_url)
    b = RedisRateLimiter(key, 100, url=redis_url)
    a.acquire()
    a.penalize(0.6)
    started = time.monotonic()
    waited = b.acquire()
    assert time.monotonic() - started >= 0.5
    assert waited >= 0.5


def test_a_penalty_arriving_while_waiting_requeues_the_sleeper(redis_url, key):
    slow = RedisRateLimiter(key, 2, url=redis_url)  # 0.5 s between slots
    slow.acquire()  # the next slot is 0.5 s away
    result = {}

    def sleeper():
        started = time.monotonic()
        slow.acquire()
        result["elapsed"] = time.monotonic() - started

    th = threading.Thread(target=sleeper)
    th.start()
    time.sleep(0.1)
    RedisRateLimiter(key, 2, url=redis_url).penalize(1.0)  # another worker got a 429 with Retry-After: 1
    th.join()
    assert result["elapsed"] >= 1.0  # not released at its 0.5 s slot, but after the penalty


def test_retry_after_through_call_policy_slows_every_holder(redis_url, key):
    """A 429 with Retry-After seen by one worker's CallPolicy holds back another worker's calls."""
    worker_a = CallPolicy(RedisRateLimiter(key, None, url=redis_url),
                          RetryPolicy(max_attempts=1), sleep=lambda s: None)

    def refused():
        raise TransientError("429 Too Many Requests", retry_after=0.6)

    with pytest.raises(TransientError):
        worker_a.execute(refused)
    worker_b = RedisRateLimiter(key, None, url=redis_url)
    started = time.monotonic()
    worker_b.acquire()
    assert time.monotonic() - started >= 0.5


def test_unlimited_without_penalty_does_not_wait(redis_url, key):
    limiter = RedisRateLimiter(key, None, url=redis_url)
    assert limiter.unlimited
    assert all(limiter.acquire() == 0.0 for _ in range(20))


def test_the_bucket_expires_when_unused(redis_url, key):
    import redis

    limiter = RedisRateLimiter(key, 5, url=redis_url, ttl_s=120)
    limiter.acquire()
    ttl = redis.Redis.from_url(redis_url).ttl(KEY_PREFIX + key)
    assert 0 < ttl <= 120


def test_unreachable_redis_falls_back_to_the_in_process_limit(caplog):
    limiter = RedisRateLimiter("down", 10, url="redis://127.0.0.1:1/0", fallback=RateLimiter(10))
    with caplog.at_level(logging.WARNING, logger="bulkchange.shared_limiter"):
        started = time.monotonic()
        for _ in range(6):
            limiter.acquire()
        elapsed = time.monotonic() - started
        limiter.penalize(0.2)  # does not raise either
    assert elapsed >= 0.45  # the fallback still limits: 5 intervals of 0.1 s
    warnings = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per request


def test_make_rate_limiter_without_redis_divides_the_rate_per_task():
    local = make_rate_limiter("carrier_sp_1", 50, share=2)
    assert isinstance(local, RateLimiter) and local.rate == 25
    assert make_rate_limiter("carrier_sp_1", None, share=2).unlimited


def test_make_rate_limiter_with_redis_uses_the_full_account_rate(redis_url, key):
    shared = make_rate_limiter(key, 50, share=4, redis_url=redis_url)
    assert isinstance(shared, RedisRateLimiter)
    assert shared.rate == 50 and shared.key == KEY_PREFIX + key
    assert shared.fallback.rate == 12.5  # Redis down: back to the per-task share


def test_the_headroom_paces_below_the_account_rate_with_or_without_redis(redis_url, key):
    assert make_rate_limiter("carrier_sp_1", 50, share=2, headroom=0.02).rate == pytest.approx(24.5)
    shared = make_rate_limiter(key, 50, share=2, redis_url=redis_url, headroom=0.02)
    assert shared.rate == pytest.approx(49) and shared.fallback.rate == pytest.approx(24.5)
    assert make_rate_limiter("carrier_sp_1", None, headroom=0.02).unlimited
    # where one limiter sees all the account's calls it also keeps the carrier's window
    assert shared.window == (50, pytest.approx(1.01))
    assert make_rate_limiter("carrier_sp_1", 50, share=1, headroom=0.02).window == (50, pytest.approx(1.01))
    assert make_rate_limiter("carrier_sp_1", 50, share=2, headroom=0.02).window is None
    with pytest.raises(ValueError, match="headroom"):
        make_rate_limiter("carrier_sp_1", 50, headroom=1.0)


def test_a_connection_paces_two_percent_below_its_limit_unless_it_says_otherwise():
    from bulkchange.carriers import CarrierSettings

    assert CarrierSettings("http://c", extra={}).rate_limit_headroom == 0.02
    assert CarrierSettings("http://c", extra={"rate_limit_headroom": "0"}).rate_limit_headroom == 0
    with pytest.raises(ValueError, match="rate_limit_headroom must be at least 0 and below 0.5"):
        CarrierSettings("http://c", extra={"rate_limit_headroom": 0.7}).rate_limit_headroom


def test_the_window_holds_across_limiters_on_one_key(redis_url, key):
    """At most cap let go in any span, whoever holds the limiter: the fourth of two holders' callers
    waits for the first to leave the window (no rate: only the window limits)."""
    a, b = (RedisRateLimiter(key, None, url=redis_url, window=(3, 0.5)) for _ in range(2))
    stamps = []
    for limiter in (a, b, a, b, a, b, a):
        limiter.acquire()
        stamps.append(time.monotonic())
    assert stamps[3] - stamps[0] >= 0.45 and stamps[6] - stamps[3] >= 0.45
    assert max(sum(1 for t in stamps if s <= t < s + 0.45) for s in stamps) <= 3


def test_a_refused_request_leaves_the_shared_window(redis_url, key):
    limiter = RedisRateLimiter(key, None, url=redis_url, window=(2, 5.0))
    limiter.acquire()
    limiter.acquire()
    limiter.refused()  # the carrier counted nothing: the second is out of the window again
    t0 = time.monotonic()
    limiter.acquire()
    assert time.monotonic() - t0 < 2.0  # counted, it would have waited 5 s


def test_a_refusal_named_by_its_entry_leaves_the_shared_window_not_a_later_one(redis_url, key):
    """A check at the carrier let go after the refused request, on the same thread: the refused
    request's own entry leaves the window, the check's stays (the carrier counted it)."""
    limiter = RedisRateLimiter(key, None, url=redis_url, window=(2, 5.0))
    limiter.acquire()
    refused = limiter.taken()
    time.sleep(0.05)
    limiter.acquire()  # the check
    check = limiter.taken()
    assert refused is not None and check is not None and refused != check
    limiter.refused(refused)
    assert limiter._redis.zrange(limiter.window_key, 0, -1) == [check]


def test_a_request_that_left_late_is_counted_in_the_shared_window_from_when_it_left(redis_url, key):
    """Let go, then its request leaves 0.3 s later (the thread waited for a CPU): another holder's
    next caller (1 per 0.5 s) waits until 0.5 s after the request left, not after the let-go."""
    a, b = (RedisRateLimiter(key, None, url=redis_url, window=(1, 0.5)) for _ in range(2))
    a.acquire()
    entry = a.taken()
    time.sleep(0.3)
    assert a.sent(entry) == entry  # the same entry; only its time moved
    left = time.monotonic()
    b.acquire()
    assert time.monotonic() - left >= 0.45  # from the let-go it would have waited 0.2 s
    assert a.sent(None) is None
    a.refused(entry)  # a moved entry can still leave the window
    assert a._redis.zscore(a.window_key, entry) is None


def test_a_late_sleeper_holds_the_next_caller_back(redis_url, key):
    """Slots are reserved ahead (every 0.1 s): the caller of the second slot sleeps 0.15 s too long
    and goes out at +0.25, the fourth slot is +0.3; without the window they leave 0.05 s apart,
    with it (1 per 0.1 s) the fourth waits until the late one has left the window."""
    let_go, lock = [], threading.Lock()

    def late_sleep(s):
        time.sleep(s + 0.15)

    def caller(limiter):
        limiter.acquire()
        with lock:
            let_go.append(time.monotonic())

    on_time = RedisRateLimiter(key, 10, url=redis_url, window=(1, 0.1))
    late = RedisRateLimiter(key, 10, url=redis_url, window=(1, 0.1), sleep=late_sleep)
    threads = [threading.Thread(target=caller, args=(lim,)) for lim in (on_time, late, on_time, on_time)]
    for t in threads:  # reserved in this order: +0, +0.1 (late), +0.2, +0.3
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(5)
    let_go.sort()
    assert len(let_go) == 4
    assert min(b - a for a, b in zip(let_go, let_go[1:])) >= 0.08


def test_bad_arguments_are_refused(redis_url):
    with pytest.raises(ValueError):
        RedisRateLimiter("", 5, url=redis_url)
    with pytest.raises(ValueError):
        RedisRateLimiter("k", 5, url=redis_url, burst=0)
    with pytest.raises(ValueError):
        RedisRateLimiter("k", 5)
