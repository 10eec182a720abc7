"""process_batch takes its device changes as runs of consecutive ids (what prepare returns), and
still as a plain id list (what prepare returned before), so a run planned before an upgrade can be
retried after it."""
import pytest

from bulkchange_plugins.operators import CarrierBatchOperator


def test_runs_of_ids_are_expanded_in_order():
    op = CarrierBatchOperator(task_id="b1", bulk_change_id=1, device_change_id_runs=[[10, 12], [20, 20], [5, 6]])
    assert op.device_change_ids == [10, 11, 12, 20, 5, 6]


def test_a_plain_id_list_from_an_older_plan_is_accepted():
    op = CarrierBatchOperator(task_id="b2", bulk_change_id=1, device_change_ids=[3, 1, 2])
    assert op.device_change_ids == [3, 1, 2]


@pytest.mark.parametrize("kwargs", [{}, {"device_change_ids": [1], "device_change_id_runs": [[1, 1]]}])
def test_exactly_one_form_is_required(kwargs):
    with pytest.raises(ValueError, match="device_change_id_runs or device_change_ids"):
        CarrierBatchOperator(task_id="b3", bulk_change_id=1, **kwargs)


def test_peak_rss_is_this_process_high_water_mark():
    """What the batch task reports as its memory (XCom ``peak_rss_mb``, read by the R6 benchmark):
    its process's peak, which a large allocation raises. Measured in a fresh process: this test
    process's peak is whatever the tests before it needed."""
    import subprocess
    import sys

    probe = ("from bulkchange_plugins.operators import peak_rss_mb\n"
             "before = peak_rss_mb()\n"
             "block = bytearray(64 * 1024 * 1024)\n"
             "for i in range(0, len(block), 4096):\n"
             "    block[i] = 1\n"
             "print(before, peak_rss_mb())\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    before, after = (float(x) for x in out.stdout.split()[-2:])
    assert before > 10 and after >= before + 50
