"""The batch plan's XCom carries device change ids as runs of consecutive ids (bulkchange.id_runs):
lossless for any ids, and a few bytes for the consecutive ids a portal inserts."""
import json

import pytest

from bulkchange.id_runs import id_runs, ids_of_runs


@pytest.mark.parametrize("ids", [
    [], [7], [1, 2, 3], [1, 3, 5], [5, 6, 7, 10, 11, 40], [9, 8, 7], [3, 4, 1, 2], [2, 2, 3],
])
def test_round_trip_keeps_every_id_in_order(ids):
    assert ids_of_runs(id_runs(ids)) == ids


def test_consecutive_ids_are_one_run_and_gaps_make_more():
    assert id_runs(range(1000, 6000)) == [[1000, 5999]]
    assert id_runs([1, 2, 3, 7, 8, 20]) == [[1, 3], [7, 8], [20, 20]]


def test_a_100000_device_plan_stays_small_in_xcom():
    # 100,000 device changes in batches of 5,000: the XCom of every batch together stays tiny,
    # where the id lists would be about 1 MB of JSON
    ids = list(range(2_000_001, 2_100_001))
    batches = [{"device_change_id_runs": id_runs(ids[i:i + 5000])} for i in range(0, len(ids), 5000)]
    assert len(json.dumps(batches)) < 2_000 < len(json.dumps([ids[i:i + 5000] for i in range(0, len(ids), 5000)]))
    assert [i for b in batches for i in ids_of_runs(b["device_change_id_runs"])] == ids


def test_a_run_that_ends_before_it_starts_is_refused():
    with pytest.raises(ValueError, match="ends before it starts"):
        ids_of_runs([[10, 9]])
