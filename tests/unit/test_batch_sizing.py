"""The batch size rule (bulkchange.batch_sizing): a batch task holds about a minute of carrier work."""
import pytest

from bulkchange.batch_sizing import (
    MAX_BATCH_SIZE,
    MIN_BATCH_SIZE,
    calls_per_device,
    choose_batch_size,
    override_from_conf,
)


def test_sixty_seconds_of_carrier_work_at_the_accounts_rate():
    choice = choose_batch_size(30_000, rate_limit_per_s=50)
    assert choice.size == 3000  # 60 s x 50 requests/s
    assert "60 s of carrier work" in choice.reason and "50 requests/s" in choice.reason


def test_calls_per_device_shrink_the_batch_and_slow_accounts_get_the_minimum():
    assert choose_batch_size(100_000, rate_limit_per_s=50, calls_per_device=2).size == 1500
    slow = choose_batch_size(100_000, rate_limit_per_s=1)  # 60 devices of work: raised to the minimum
    assert slow.size == MIN_BATCH_SIZE and "bounded" in slow.reason


def test_fast_or_unlimited_accounts_are_capped_to_keep_memory_flat():
    assert choose_batch_size(1_000_000, rate_limit_per_s=500).size == MAX_BATCH_SIZE
    unlimited = choose_batch_size(1_000_000, rate_limit_per_s=None)
    assert unlimited.size == MAX_BATCH_SIZE and "no rate limit" in unlimited.reason
    db_only = choose_batch_size(1_000_000, rate_limit_per_s=50, calls_per_device=0)
    assert db_only.size == MAX_BATCH_SIZE and "no carrier call" in db_only.reason


def test_every_task_slot_gets_work_and_waves_are_balanced():
    # 1,000 devices at 50/s would fit one batch of 3,000: with 3 tasks at once, three batches
    small = choose_batch_size(1000, rate_limit_per_s=50, batch_concurrency=3)
    assert small.size == 334 and "3 tasks at once" in small.reason
    # 10,000 at 3,000 would be 3,000 x 3 + a lone 1,000: 1.1 waves' worth, so one wave of three
    # somewhat longer tasks (a second wave would cost its task starts while the account idles)
    assert choose_batch_size(10_000, rate_limit_per_s=50, batch_concurrency=3).size == 3334
    # 1,000 at 5/s (300 a batch): one wave of three, not two
    assert choose_batch_size(1000, rate_limit_per_s=5, batch_concurrency=3).size == 334
    # 1.6 waves' worth: two balanced waves; 100,000 at 200/s: the memory cap sets the waves
    assert choose_batch_size(14_400, rate_limit_per_s=50, batch_concurrency=3).size == 2400
    assert choose_batch_size(100_000, rate_limit_per_s=200, batch_concurrency=3).size == 4762
    # 6.4 waves' worth of the cap: rounding down would overfill the tasks, so 7 waves
    assert choose_batch_size(96_000, rate_limit_per_s=200, batch_concurrency=3).size == 4572
    # a task holds at most 1.5 times the target, and from 1.5 waves' worth on at least 0.75 times
    for devices in range(1000, 60_000, 997):
        size = choose_batch_size(devices, rate_limit_per_s=50, batch_concurrency=3).size
        assert size <= 1.5 * 3000 and (devices < 13_500 or size >= 0.75 * 3000), devices
    # never below the minimum for the sake of slots
    assert choose_batch_size(150, rate_limit_per_s=50, batch_concurrency=3).size == MIN_BATCH_SIZE


def test_max_map_length_wins_over_the_cap_and_the_override():
    huge = choose_batch_size(10_000_000, rate_limit_per_s=50, max_batches=1024)
    assert huge.size == 9766 and "max_map_length = 1024" in huge.reason
    assert 10_000_000 <= 1024 * huge.size
    forced = choose_batch_size(10, rate_limit_per_s=50, override=1, max_batches=3)
    assert forced.size == 4 and "as the run's conf asks" in forced.reason


def test_the_conf_override_is_kept_as_given():
    choice = choose_batch_size(30_000, rate_limit_per_s=50, override=250, batch_concurrency=3)
    assert choice.size == 250 and "conf" in choice.reason
    assert override_from_conf(None) is None and override_from_conf("") is None
    assert override_from_conf(500) == 500 and override_from_conf("40") == 40
    with pytest.raises(ValueError):
        choose_batch_size(10, rate_limit_per_s=50, override=0)


def test_calls_per_device_of_a_handler_class():
    class Plain:
        needs_carrier, group_size = True, 1

    class Lists:
        needs_carrier, group_size = True, 20

    class DbOnly:
        needs_carrier, group_size = False, 1

    assert calls_per_device(Plain) == 1 and calls_per_device(Lists) == 0.05 and calls_per_device(DbOnly) == 0
    assert choose_batch_size(1_000_000, rate_limit_per_s=5, calls_per_device=calls_per_device(Lists)).size == 5000
