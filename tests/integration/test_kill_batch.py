"""Issue 12: a batch task killed with SIGKILL mid-batch loses no log row of a call that reached the
carrier, and its retry sends nothing twice (neither the status nor the rate plan of a deactivation).

A child process runs ``process_batch`` over Jasper deactivations (rate plan first, then status)
against the simulator with latency, and is killed with SIGKILL while a rate-plan PUT of it is at
the carrier. The retry (what Airflow does with the task: ``process_batch`` on the same ids, then
``finalize``) runs in this process. Afterwards, from the simulator's own state and call log: every
device final, none disagreeing with the carrier (device change, Device status and rate plan), at
most one status PUT and one rate-plan PUT per device, and a log row for every call the simulator
saw (the killed task's unanswered attempts as rows the retry closed as NO_ANSWER).

The same under the real scheduler (LocalExecutor): tests/scheduler/test_scheduler_kill.py.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

from sqlalchemy import select

from bulkchange import processing
from bulkchange.carriers.jasper import JasperClient
from bulkchange.db import device_changes
from bulkchange.db import schema as t
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange_demo.demo import wait_for
from tests.integration.conftest import KEY

N = 48
PARALLEL = 8
DC = t.m2m_device_change
LOG = t.device_bulk_change_log

CHILD = textwrap.dedent("""
    import json, sys
    from bulkchange import processing
    from bulkchange.carriers.jasper import JasperClient
    from bulkchange.db.connect import make_engine
    from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
    args = json.loads(sys.argv[1])
    engine = make_engine(args["url"])
    client = JasperClient(args["sim"], "acct", args["key"], timeout=10.0,
                          policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.05)))
    processing.process_batch(engine, args["bulk_id"], args["ids"], client=client, max_parallel=args["parallel"])
    print("BATCH FINISHED", flush=True)
""")


def _engine_url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _in_flight_plan_rows(engine, bulk_id) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(LOG.c.Id).where(
            LOG.c.BulkChangeId == bulk_id, LOG.c.ResponseStatus == device_changes.LOG_IN_FLIGHT,
            LOG.c.LogEntryDescription.like("Update Jasper Rate Plan%"))).all())


def test_sigkill_mid_batch_then_retry_sends_nothing_twice_and_logs_every_call(amop_engine, fleet_factory,
                                                                              simulator, jasper):
    fleet = fleet_factory(N, comm_plan="COMM-1", start=76_000)  # DataUsageMB 200: plan P-1G -> P-500 first
    bulk_id = fleet.bulk("Deactivated")
    plan = processing.prepare(amop_engine, bulk_id, batch_size=N)
    ids = plan.batches[0].device_change_ids
    jasper.configure(latency_ms=400)

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps({"url": _engine_url(amop_engine), "sim": simulator.url_for("jasper"),
                                                  "key": KEY, "bulk_id": bulk_id, "ids": ids,
                                                  "parallel": PARALLEL})],
        env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # kill while every thread of the child has a request at the carrier and one is a rate-plan
        # PUT (its row already IN_FLIGHT), after the first devices are done; at the latest half-way
        def kill_now():
            if child.poll() is not None:
                return True
            puts = len(jasper.calls(method="PUT"))
            return puts >= N or (puts >= PARALLEL * 2 and jasper.stats()["in_flight"] >= PARALLEL
                                 and _in_flight_plan_rows(amop_engine, bulk_id))
        wait_for(kill_now, 60, 0.02, "the child to have a rate-plan PUT in flight at the carrier")
        assert child.poll() is None, f"the batch ended before it could be killed: {child.communicate()}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    wait_for(lambda: jasper.stats()["in_flight"] == 0, 30, 0.05, "the killed child's requests to end at the carrier")
    jasper.configure(latency_ms=0)

    # the scenario of the issue: a rate plan in at the carrier, the status call after it not sent
    half_done = [i for i in fleet.iccids if jasper.device(i)["ratePlan"] == "P-500"
                 and jasper.device(i)["status"] == "ACTIVATED"]

    # the task's retry (Airflow runs the same batch again), then the run's finalize
    client = JasperClient(simulator.url_for("jasper"), "acct", KEY, timeout=10.0,
                          policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.05)))
    try:
        processing.process_batch(amop_engine, bulk_id, ids, client=client, max_parallel=PARALLEL)
    finally:
        client.close()
    summary = processing.finalize(amop_engine, bulk_id)
    assert summary["status"] == "PROCESSED", summary

    with amop_engine.connect() as conn:
        dcs = {r.ICCID: r for r in conn.execute(select(DC.c.Id, DC.c.ICCID, DC.c.Status, DC.c.StatusDetails)
                                                .where(DC.c.BulkChangeId == bulk_id))}
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.Status,
                                                           t.device.c.CarrierRatePlan))}
        log_rows = conn.execute(select(LOG.c.M2MDeviceChangeId, LOG.c.ResponseStatus).where(
            LOG.c.BulkChangeId == bulk_id, LOG.c.AttemptNumber.is_not(None))).all()
    rows = Counter(r[0] for r in log_rows)
    # the killed task's unanswered attempts: closed by the retry (NO_ANSWER), none left IN_FLIGHT
    in_flight = Counter(r[0] for r in log_rows if r[1] == device_changes.LOG_NO_ANSWER)
    assert not [r for r in log_rows if r[1] == device_changes.LOG_IN_FLIGHT]

    mismatches, duplicates, log_gaps = [], [], []
    for iccid in fleet.iccids:
        carrier = jasper.device(iccid)
        dc, dev = dcs[iccid], devices[iccid]
        if dc.Status != "PROCESSED" or carrier["status"] != "DEACTIVATED" or dev.Status != carrier["status"] \
                or dev.CarrierRatePlan != carrier["ratePlan"]:
            mismatches.append((iccid, carrier["status"], carrier["ratePlan"], dc.Status, dev.Status,
                               dev.CarrierRatePlan, dc.StatusDetails))
        calls = jasper.calls(iccid=iccid)
        puts = Counter(key for c in calls if c["method"] == "PUT" and isinstance(c["body"], dict)
                       for key in ("status", "ratePlan") if key in c["body"])
        if any(n > 1 for n in puts.values()):
            duplicates.append((iccid, dict(puts)))
        # every call the carrier saw has its row; a row more only for an attempt left IN_FLIGHT by
        # the kill (written before it was sent; the kill may have come before it left)
        if not len(calls) <= rows[dc.Id] <= len(calls) + in_flight[dc.Id]:
            log_gaps.append((iccid, len(calls), rows[dc.Id], in_flight[dc.Id]))
    assert mismatches == []
    assert duplicates == []
    assert log_gaps == []
    # the kill did interrupt calls (their rows, closed by the retry) and the case was there
    assert sum(in_flight.values()) > 0, "the kill left no call in flight: no interrupted call was exercised"
    assert half_done, "no device had its rate plan applied and its status not: the kill came too late"


def test_retry_of_a_device_whose_last_attempt_is_unknown_checks_the_carrier_first(amop_engine, fleet_factory,
                                                                                 simulator, jasper):
    """The answer of a status PUT and of the check after it are lost (the carrier applied the PUT):
    the device ends API_FAILED with the outcome unknown. Retrying the failed devices queues it again
    as NEW; the next batch sees its last attempt on record is ``unknown`` and asks the carrier before
    sending: PROCESSED, one status PUT in all."""
    fleet = fleet_factory(1, start=77_000)
    iccid = fleet.iccids[0]
    bulk_id = fleet.bulk("Suspend")
    client = JasperClient(simulator.url_for("jasper"), "acct", KEY, timeout=10.0,
                          policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=1, base_delay=0.01)))
    try:
        jasper.configure(applied_error_rate=1.0)  # every call runs at the carrier, then answers 502
        plan = processing.prepare(amop_engine, bulk_id)
        processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=client)
        processing.finalize(amop_engine, bulk_id)
        jasper.configure(applied_error_rate=0)
        assert jasper.device(iccid)["status"] == "DEACTIVATED"
        with amop_engine.connect() as conn:
            status, details = conn.execute(select(DC.c.Status, DC.c.StatusDetails)
                                           .where(DC.c.BulkChangeId == bulk_id)).one()
        assert status == "API_FAILED" and details.startswith("OUTCOME UNKNOWN"), (status, details)

        assert processing.reset_failed(amop_engine, bulk_id)
        plan = processing.prepare(amop_engine, bulk_id)
        processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=client)
        processing.finalize(amop_engine, bulk_id)
    finally:
        client.close()
    with amop_engine.connect() as conn:
        status = conn.execute(select(DC.c.Status).where(DC.c.BulkChangeId == bulk_id)).scalar_one()
        device_status = conn.execute(select(t.device.c.Status).where(t.device.c.ICCID == iccid)).scalar_one()
    status_puts = [c for c in jasper.calls(iccid=iccid, method="PUT") if "status" in (c["body"] or {})]
    assert len(status_puts) == 1
    assert (status, device_status) == ("PROCESSED", "DEACTIVATED")
