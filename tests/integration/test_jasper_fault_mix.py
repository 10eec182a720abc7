"""Issue 12: every final status is true to the carrier. A few hundred Jasper deactivations (rate plan
first, then status) through the core against the Jasper simulator over real HTTP, under a fault mix:
5xx that applied nothing, 502 after the change was applied, truncated 2xx bodies (applied), timeouts
and concurrency 429s. Afterwards, from the simulator's own state: no device whose device change or
Device row disagrees with the carrier, and one log row per attempt the simulator saw."""
import time
from collections import Counter

from bulkchange import processing
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.carriers.jasper import JasperClient
from tests.integration.conftest import KEY, jasper_outcome

N = 300


def test_fault_mix_leaves_no_device_disagreeing_with_the_carrier(amop_engine, fleet_factory, simulator, jasper):
    fleet = fleet_factory(N, comm_plan="COMM-1", start=74_000)
    bulk_id = fleet.bulk("Deactivated")
    jasper.configure(seed=12, error_rate=0.10, applied_error_rate=0.05, malformed_rate=0.02,
                     timeout_rate=0.02, timeout_s=1.5, max_concurrency=8)
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.02, max_delay=0.5))
    client = JasperClient(simulator.url_for("jasper"), "acct", KEY, policy=policy, timeout=1.0)
    try:
        plan = processing.prepare(amop_engine, bulk_id, batch_size=100)
        for batch in plan.batches:
            processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=client, max_parallel=10)
        processing.finalize(amop_engine, bulk_id)
    finally:
        client.close()
    for _ in range(100):  # the timed-out requests are logged by the simulator when they end
        if jasper.stats()["in_flight"] == 0:
            break
        time.sleep(0.1)
    jasper.configure(error_rate=0, applied_error_rate=0, malformed_rate=0, timeout_rate=0, max_concurrency=0)
    faults = Counter(c["fault"] for c in jasper.calls())
    assert all(faults[f] for f in ("error", "applied_error", "malformed", "timeout")), faults

    outcome = jasper_outcome(amop_engine, jasper, bulk_id, fleet.iccids)
    dcs, rows, mismatches = outcome.device_changes, outcome.log_rows, outcome.mismatches
    log_gaps = []
    for iccid in fleet.iccids:
        dc = dcs[iccid]
        seen = len(jasper.calls(iccid=iccid))
        if rows[dc.Id] != seen:
            log_gaps.append((iccid, seen, rows[dc.Id]))
    assert mismatches == []
    assert log_gaps == []
    assert sum(rows.values()) == len(jasper.calls())
