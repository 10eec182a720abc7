"""The Jasper StatusUpdate flow through the core (prepare / process_batch / finalize) against
the Jasper simulator over real HTTP, on SQLite and PostgreSQL."""
import json

from sqlalchemy import func, select

from bulkchange import processing
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db import seed
from bulkchange.models import DeviceChangeStatus, Integration
from tests.integration.conftest import KEY


def run_all(engine, bulk_id, client, batch_size=25, max_parallel=10):
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size)
    for batch in plan.batches:
        processing.process_batch(engine, bulk_id, batch.device_change_ids, client=client, max_parallel=max_parallel)
    return plan, processing.finalize(engine, bulk_id)


def changes(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes.load_device_changes(conn, bulk)}


def test_suspend_fleet_processed_with_history_and_clean_logs(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(60)
    bulk_id = fleet.bulk("Suspend", PostUpdateStatusId=7)
    plan, summary = run_all(amop_engine, bulk_id, make_client())
    assert len(plan.batches) == 3 and summary["status"] == "PROCESSED"
    assert summary["counts"] == {"PROCESSED": 60}
    for iccid in fleet.iccids[:5]:
        assert jasper.device(iccid)["status"] == "DEACTIVATED"
    with amop_engine.connect() as conn:
        rows = conn.execute(select(t.device.c.Status, t.device.c.DeviceStatusId)).all()
        # the id is DEACTIVATED's in DeviceStatus, whatever the request's PostUpdateStatusId said
        assert set(rows) == {("DEACTIVATED", device_status_ids(conn, Integration.JASPER, ["DEACTIVATED"])["DEACTIVATED"])}
        hist = conn.execute(select(t.device_status_history.c.CurrentStatus, func.count())
                            .group_by(t.device_status_history.c.CurrentStatus)).all()
        assert hist == [("DEACTIVATED", 60)]
        logs = conn.execute(select(t.device_bulk_change_log)).mappings().all()
    assert len(logs) == 60
    assert all(lg["ResponseStatus"] == "200" and not lg["HasErrors"] for lg in logs)
    assert all('"status": "DEACTIVATED"' in lg["RequestText"] for lg in logs)
    assert not [lg for lg in logs if KEY in lg["RequestText"] + lg["ResponseText"] or "Basic " in lg["RequestText"]]
    puts = jasper.calls(method="PUT")
    assert len(puts) == 60 and len({c["iccid"] for c in puts}) == 60


def test_rejections_are_per_device_with_reasons(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(4)
    with amop_engine.begin() as conn:  # a device of another tenant must never be touched
        seed.add_service_provider(conn, sp_id=9, name="other", integration=seed.Integration.JASPER, tenant_id=2)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(99_001), "Status": "ACTIVATED"}], sp_id=9, tenant_id=2)
    bad_check = fleet.iccids[0][:-1] + str((int(fleet.iccids[0][-1]) + 1) % 10)
    extra = [
        {"ICCID": bad_check, "ChangeRequest": {"UpdateStatus": "Suspend"}},
        {"ICCID": seed.make_iccid(99_001), "ChangeRequest": {"UpdateStatus": "Suspend"}},
        {"ICCID": fleet.iccids[1], "ChangeRequest": {"UpdateStatus": "Suspend"}},      # duplicate
        {"ICCID": seed.make_iccid(99_002), "ChangeRequest": {"UpdateStatus": "Suspend"}},  # unknown
    ]
    bulk_id = fleet.bulk("Suspend", iccids=fleet.iccids[:3], extra=extra)
    with amop_engine.begin() as conn:  # one more: an illegal transition and a bad request
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        conn.execute(t.device.update().where(t.device.c.ICCID == fleet.iccids[3]).values(Status="RETIRED"))
    with amop_engine.begin() as conn:
        seed_rows = [{"BulkChangeId": bulk_id, "ICCID": fleet.iccids[3], "Status": "NEW", "IsProcessed": False,
                      "ChangeRequest": json.dumps({"UpdateStatus": "Active"})}]
        conn.execute(t.m2m_device_change.insert(), seed_rows)
    _, summary = run_all(amop_engine, bulk_id, make_client())
    assert summary["status"] == "PROCESSED_WITH_ERRORS"
    assert summary["counts"] == {"PROCESSED": 3, "ERROR": 5}
    with amop_engine.connect() as conn:
        rows = conn.execute(select(t.m2m_device_change.c.ICCID, t.m2m_device_change.c.Status,
                                   t.m2m_device_change.c.StatusDetails)
                            .where(t.m2m_device_change.c.Status == "ERROR")).all()
    reasons = {iccid: details for iccid, _, details in rows}
    assert "invalid check digit" in reasons[bad_check]
    assert "not found for service provider 1" in reasons[seed.make_iccid(99_001)]
    assert "not found" in reasons[seed.make_iccid(99_002)]
    assert "duplicate" in reasons[fleet.iccids[1]]
    assert "cannot change status from RETIRED to ACTIVATED" in reasons[fleet.iccids[3]]
    touched = {c["iccid"] for c in jasper.calls()}
    assert touched == set(fleet.iccids[:3])


def test_deactivation_moves_plan_first_for_devices_with_a_communication_plan(amop_engine, fleet_factory,
                                                                              make_client, jasper):
    fleet = fleet_factory(3, comm_plan="COMM-1")
    bulk_id = fleet.bulk("DEACTIVATED")
    _, summary = run_all(amop_engine, bulk_id, make_client())
    assert summary["status"] == "PROCESSED"
    iccid = fleet.iccids[0]
    assert [c["body"] for c in jasper.calls(iccid=iccid, method="PUT")] == \
        [{"ratePlan": "P-500"}, {"status": "DEACTIVATED"}]  # cheapest plan covering 200 MB, then status
    assert jasper.device(iccid)["ratePlan"] == "P-500"
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(t.device.c.CarrierRatePlan)).scalars()) == {"P-500"}


def test_failed_plan_change_skips_the_status_call(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(2, comm_plan="COMM-1")
    jasper.configure(fail_iccids={fleet.iccids[0]: 400})
    bulk_id = fleet.bulk("Deactivated")
    _, summary = run_all(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"API_FAILED": 1, "PROCESSED": 1}
    failed = changes(amop_engine, bulk_id)[fleet.iccids[0]]
    assert failed.status_details.startswith("Error Updating Rate Plan for Deactivation refused by carrier")
    assert len(jasper.calls(iccid=fleet.iccids[0])) == 1  # no status call after the failed plan change


def test_already_in_target_status_needs_no_call(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(3, status="DEACTIVATED")
    _, summary = run_all(amop_engine, fleet.bulk("Suspend"), make_client())
    assert summary["counts"] == {"PROCESSED": 3}
    assert jasper.calls() == []


def test_transient_faults_are_retried_and_permanent_ones_are_not(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(30)
    jasper.configure(error_rate=0.3, seed=11, fail_iccids={fleet.iccids[0]: 404})
    _, summary = run_all(amop_engine, fleet.bulk("Suspend"), make_client(attempts=8))
    assert summary["counts"] == {"PROCESSED": 29, "API_FAILED": 1}
    assert len(jasper.calls(iccid=fleet.iccids[0])) == 1  # a 404 is not retried
    stats = jasper.stats()
    assert stats["by_status"].get("500", 0) + stats["by_status"].get("503", 0) > 0
    with amop_engine.connect() as conn:
        described = conn.execute(select(t.device_bulk_change_log.c.LogEntryDescription)).scalars().all()
    assert any("(attempt 2)" in d for d in described)  # one log row per attempt


def test_retries_exhausted_fail_the_device_with_the_evidence(amop_engine, fleet_factory, make_client, jasper):
    """Every PUT answered 503 (not applied), the reads clean: each resend follows a GET that shows the
    device unchanged, and the device fails with that evidence; one log row per attempt."""
    fleet = fleet_factory(2)
    jasper.configure(error_rate=1.0, fault_methods=["PUT"])
    _, summary = run_all(amop_engine, fleet.bulk("Deactivated"), make_client(attempts=3))
    assert summary["status"] == "ERROR" and summary["counts"] == {"API_FAILED": 2}
    dc = changes(amop_engine, summary["bulk_change_id"])[fleet.iccids[0]]
    assert "failed after 3 attempt(s)" in dc.status_details
    assert "checked at the carrier afterwards: the change is not there" in dc.status_details
    calls = jasper.calls(iccid=fleet.iccids[0])
    assert [c["method"] for c in calls] == ["PUT", "GET", "PUT", "GET", "PUT", "GET"]
    with amop_engine.connect() as conn:
        rows = conn.execute(select(t.device_bulk_change_log.c.RequestText, t.device_bulk_change_log.c.AttemptNumber,
                                   t.device_bulk_change_log.c.Outcome)
                            .where(t.device_bulk_change_log.c.M2MDeviceChangeId == dc.id)
                            .order_by(t.device_bulk_change_log.c.Id)).all()
    assert [(r[0].split()[0], r[1], r[2]) for r in rows] == [
        ("PUT", 1, "unknown"), ("GET", 1, "applied"), ("PUT", 2, "unknown"), ("GET", 1, "applied"),
        ("PUT", 3, "unknown"), ("GET", 1, "applied")]


def test_an_outcome_that_cannot_be_checked_is_never_resent(amop_engine, fleet_factory, make_client, jasper):
    """Every call answered 5xx: the PUT is sent once; the checks before a resend fail, so it is never
    sent again, and the device says the outcome is unknown."""
    fleet = fleet_factory(2)
    jasper.configure(error_rate=1.0)
    _, summary = run_all(amop_engine, fleet.bulk("Deactivated"), make_client(attempts=3))
    assert summary["counts"] == {"API_FAILED": 2}
    dc = changes(amop_engine, summary["bulk_change_id"])[fleet.iccids[0]]
    assert dc.status_details.startswith("OUTCOME UNKNOWN:")
    assert len(jasper.calls(iccid=fleet.iccids[0], method="PUT")) == 1


def test_applied_but_answered_502_is_processed_from_the_carrier(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(3, comm_plan="COMM-1")
    jasper.configure(applied_error_rate=1.0, fault_methods=["PUT"])
    _, summary = run_all(amop_engine, fleet.bulk("Deactivated"), make_client(attempts=3))
    assert summary["counts"] == {"PROCESSED": 3}
    for iccid in fleet.iccids:
        assert [c["method"] for c in jasper.calls(iccid=iccid)] == ["PUT", "GET", "PUT", "GET"]  # plan, status
        assert jasper.device(iccid)["status"] == "DEACTIVATED"
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(t.device.c.Status, t.device.c.CarrierRatePlan)).all()) == \
            {("DEACTIVATED", "P-500")}


def test_malformed_and_timeouts_are_transient(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(12)
    jasper.configure(malformed_rate=0.25, timeout_rate=0.15, timeout_s=1.5, seed=5)
    _, summary = run_all(amop_engine, fleet.bulk("Suspend"), make_client(attempts=10, timeout=0.8))
    assert summary["counts"] == {"PROCESSED": 12}


def test_rate_limit_holds_and_429s_do_not_fail_devices(amop_engine, fleet_factory, make_client, jasper):
    """Simulator at 5 req/s, 10 requests in flight: the client's limiter keeps the rate at 5."""
    fleet = fleet_factory(20)
    jasper.configure(rate_limit=5)
    _, summary = run_all(amop_engine, fleet.bulk("Suspend"), make_client(rate=5, attempts=5), batch_size=20,
                         max_parallel=10)
    assert summary["counts"] == {"PROCESSED": 20}
    stats = jasper.stats()
    assert stats["max_rps_admitted"] <= 5
    assert stats["by_status"]["200"] == 20  # one accepted change per device; any 429 was retried


def test_429_storm_without_client_limit_is_retried_not_failed(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(15)
    jasper.configure(rate_limit=5)
    _, summary = run_all(amop_engine, fleet.bulk("Suspend"), make_client(rate=None, attempts=10), batch_size=15,
                         max_parallel=10)
    assert summary["counts"] == {"PROCESSED": 15}
    stats = jasper.stats()
    assert stats["by_status"].get("429", 0) > 0  # the carrier did push back ...
    assert stats["max_rps_admitted"] <= 5        # ... and never admitted more than its limit


def test_retry_after_a_crash_never_sends_twice(amop_engine, fleet_factory, make_client, jasper):
    """A batch attempt died after sending some changes and before recording them."""
    fleet = fleet_factory(10)
    bulk_id = fleet.bulk("Suspend")
    plan = processing.prepare(amop_engine, bulk_id, batch_size=10)
    ids = plan.batches[0].device_change_ids
    with amop_engine.begin() as conn:  # what the dead attempt left: all PROCESSING, 4 already sent
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, ids, DeviceChangeStatus.PROCESSING, processed_by="dead attempt")
    client = make_client()
    for iccid in fleet.iccids[:4]:
        client.update_status(iccid, "DEACTIVATED")
    processing.process_batch(amop_engine, bulk_id, ids, client=client)  # the Airflow retry
    summary = processing.finalize(amop_engine, bulk_id)
    assert summary["counts"] == {"PROCESSED": 10}
    for iccid in fleet.iccids:
        puts = jasper.calls(iccid=iccid, method="PUT")
        assert len(puts) == 1, iccid  # exactly one status change per device
    details = changes(amop_engine, bulk_id)[fleet.iccids[0]].status_details
    assert "confirmed at the carrier" in details
    # and a third run changes nothing
    processing.process_batch(amop_engine, bulk_id, ids, client=client)
    assert len(jasper.calls(method="PUT")) == 10


def test_preflight_failures_mark_every_device(amop_engine, fleet_factory, jasper):
    fleet = fleet_factory(5, write_enabled=False)
    bulk_id = fleet.bulk("Suspend")
    plan = processing.prepare(amop_engine, bulk_id)
    assert plan.batches == [] and "WriteIsEnabled is off" in plan.preflight_error
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "ERROR"
        assert {dc.status for dc in device_changes.load_device_changes(conn, bulk)} == {DeviceChangeStatus.ERROR}
        n_logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log)).scalar_one()
    assert n_logs == 5
    assert jasper.calls() == []


def test_finalize_sweeps_devices_no_batch_settled(amop_engine, fleet_factory):
    """The sweep says what really happened: a device of a batch task that took it and died may have
    reached the carrier; a device of a batch that never started was sent nothing."""
    fleet = fleet_factory(6)
    bulk_id = fleet.bulk("Suspend")
    plan = processing.prepare(amop_engine, bulk_id, batch_size=3)
    with amop_engine.begin() as conn:  # the first batch task took its devices, then died; the second never ran
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, plan.batches[0].device_change_ids,
                                           DeviceChangeStatus.PROCESSING, processed_by="test")
    summary = processing.finalize(amop_engine, bulk_id)
    assert summary["status"] == "ERROR" and summary["swept"] == 6
    assert summary["swept_by_reason"] == {processing.SWEPT_REASON: 3, processing.NOT_STARTED_REASON: 3}
    by_id = {dc.id: dc.status_details for dc in changes(amop_engine, bulk_id).values()}
    took, never = plan.batches[0].device_change_ids, plan.batches[1].device_change_ids
    assert all("a carrier call may have been sent" in by_id[i] for i in took)
    assert all("no batch task took this device" in by_id[i] and "no carrier call was sent" in by_id[i]
               and "may have been sent" not in by_id[i] for i in never)


def test_a_rate_plan_applied_before_a_failed_status_call_is_written(amop_engine, fleet_factory, simulator, jasper):
    """Deactivation moves the plan first; the status call after it is refused by the carrier: the device
    change fails, but Device has the plan the carrier applied (and keeps its status)."""
    from bulkchange.carriers.jasper import JasperClient

    class StatusRefused(JasperClient):
        def update_status(self, iccid, status, *, log=None):
            return super().update_status(iccid, "NOT-A-STATUS", log=log)  # the carrier answers 400

    fleet = fleet_factory(2, comm_plan="COMM-1")
    client = StatusRefused(simulator.url_for("jasper"), "acct", KEY, timeout=10)
    try:
        _, summary = run_all(amop_engine, fleet.bulk("Deactivated"), client)
    finally:
        client.close()
    assert summary["counts"] == {"API_FAILED": 2}
    assert {jasper.device(i)["ratePlan"] for i in fleet.iccids} == {"P-500"}
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(t.device.c.Status, t.device.c.CarrierRatePlan)).all()) == \
            {("ACTIVATED", "P-500")}


def test_the_journal_writes_on_one_connection_not_a_checkout_per_attempt(amop_engine, fleet_factory, make_client,
                                                                         jasper):
    """One attempt at a time (max_parallel 1): every attempt is its own journal transaction. They
    share the journal's held connection (db.connect.HeldConnection): on a server database each
    checkout costs a ping round trip. The batch's other transactions (loading, recording) still
    check out their own, and every connection is back in the pool when the batch ends."""
    from sqlalchemy import event

    fleet = fleet_factory(30)
    bulk_id = fleet.bulk("Suspend", PostUpdateStatusId=7)
    plan = processing.prepare(amop_engine, bulk_id, batch_size=30)
    checkouts = []
    listener = lambda *a: checkouts.append(1)  # noqa: E731
    event.listen(amop_engine, "checkout", listener)
    try:
        [batch] = plan.batches
        processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=make_client(), max_parallel=1)
    finally:
        event.remove(amop_engine, "checkout", listener)
    with amop_engine.connect() as conn:
        logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log)
                            .where(t.device_bulk_change_log.c.BulkChangeId == bulk_id)).scalar_one()
    assert logs == 30 and len(jasper.calls()) == 30
    assert len(checkouts) < 10, f"{len(checkouts)} checkouts for 30 journaled attempts"
    assert amop_engine.pool.checkedout() == 0
