"""Dry run, retry of failed devices and progress counts through the core, against the Jasper
simulator over real HTTP, on SQLite and PostgreSQL."""
from sqlalchemy import func, select, text

from bulkchange import dryrun, processing
from bulkchange.db import bulk_changes, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import DeviceChangeStatus

import pytest


def _snapshot(engine):
    """Every row of every table, except the dry-run reports. Plain SQL text: a test's own reads are
    kept out of the SQL Server compile check, which looks at the pipeline's statements."""
    names = [name for name in t.metadata.tables if name != "DeviceBulkChangeDryRun"]
    with engine.connect() as conn:
        return {name: sorted(tuple(map(str, r)) for r in conn.execute(text(f'SELECT * FROM "{name}"')))
                for name in names}


def _changes(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes.load_device_changes(conn, bulk)}


def _log_rows(engine, bulk_id):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return conn.execute(select(lg.c.Id, lg.c.M2MDeviceChangeId, lg.c.LogEntryDescription)
                            .where(lg.c.BulkChangeId == bulk_id).order_by(lg.c.Id)).all()


def test_dry_run_changes_nothing_and_calls_no_carrier(amop_engine, fleet_factory, jasper):
    fleet = fleet_factory(10, comm_plan="COMM-1")
    unknown = seed.make_iccid(99_123)
    bulk_id = fleet.bulk("DEACTIVATED", extra=[{"ICCID": unknown, "ChangeRequest": {"UpdateStatus": "Suspend"}},
                                               {"ICCID": fleet.iccids[0], "ChangeRequest": {"UpdateStatus": "Suspend"}}])
    before = _snapshot(amop_engine)
    report = dryrun.dry_run_bulk_change(amop_engine, bulk_id, batch_size=4, max_parallel=5, batch_concurrency=2,
                                        rate_limit_per_s=4, requested_by="ops")
    assert _snapshot(amop_engine) == before  # not one status, log or count moved
    assert jasper.calls() == []  # and the carrier saw nothing
    d = report.as_dict()
    assert d["devices"] == 12 and d["would_process"] == 10 and d["rejected_count"] == 2
    reasons = {r["device"]: r["reason"] for r in d["rejected"]}
    assert "not found" in reasons[unknown] and "duplicate" in reasons[fleet.iccids[0]]
    assert [b["devices"] for b in d["batches"]] == [4, 4, 2]
    assert d["carrier_calls"] == {"Jasper": 20}  # rate plan first, then the status, for each device
    assert d["estimated_seconds"] == 5.0 and "rate limit of 4/s" in d["estimate_basis"]
    assert "DRY RUN bulk change" in report.text() and "Jasper devices 1-4 of 10" in report.text()
    with amop_engine.connect() as conn:
        stored = progress.load_dry_run_reports(conn, bulk_change_id=bulk_id)
        assert len(stored) == 1 and stored[0]["report"]["would_process"] == 10
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "NEW"


def test_dry_run_without_rate_limit_estimates_from_parallelism(sqlite_engine, jasper):
    from tests.integration.conftest import Fleet

    fleet = Fleet(sqlite_engine, jasper, 8)
    bulk_id = fleet.bulk("Suspend")
    d = dryrun.dry_run_bulk_change(sqlite_engine, bulk_id, batch_size=100, max_parallel=2, batch_concurrency=2).as_dict()
    assert d["carrier_calls"] == {"Jasper": 8} and d["rate_limit_per_s"] is None
    assert d["estimated_seconds"] == 0.5 and "no rate limit configured" in d["estimate_basis"]


def test_dry_run_preflight_problem_is_reported_not_recorded(sqlite_engine, jasper):
    from tests.integration.conftest import Fleet

    fleet = Fleet(sqlite_engine, jasper, 3)
    bulk_id = fleet.bulk("Suspend")
    before = _snapshot(sqlite_engine)
    d = dryrun.dry_run_bulk_change(sqlite_engine, bulk_id, credentials_problem="no usable carrier connection").as_dict()
    assert d["preflight_error"] == "no usable carrier connection" and d["rejected_count"] == 3
    assert d["batch_count"] == 0 and d["carrier_calls"] == {}
    assert _snapshot(sqlite_engine) == before


def test_progress_counts_follow_each_batch(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(9)
    jasper.configure(fail_iccids={fleet.iccids[8]: 400})
    bulk_id = fleet.bulk("Suspend", extra=[{"ICCID": "123", "ChangeRequest": {"UpdateStatus": "Suspend"}}])
    plan = processing.prepare(amop_engine, bulk_id, batch_size=3)
    with amop_engine.connect() as conn:
        assert progress.load_progress(conn, bulk_id) == {"TotalCount": 10, "ProcessedCount": 0, "ErrorCount": 1,
                                                         "PendingCount": 9}
    client = make_client()
    seen = []
    for batch in plan.batches:
        summary = processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=client)
        with amop_engine.connect() as conn:
            seen.append(progress.load_progress(conn, bulk_id))
        assert summary.as_dict()["progress"] == seen[-1]
    assert [(p["ProcessedCount"], p["ErrorCount"], p["PendingCount"]) for p in seen] == \
        [(3, 1, 6), (6, 1, 3), (8, 2, 0)]
    processing.finalize(amop_engine, bulk_id)
    with amop_engine.connect() as conn:
        assert progress.load_progress(conn, bulk_id) == {"TotalCount": 10, "ProcessedCount": 8, "ErrorCount": 2,
                                                         "PendingCount": 0}


def test_retry_failed_reprocesses_only_failed_devices_and_keeps_earlier_logs(amop_engine, fleet_factory,
                                                                             make_client, jasper):
    fleet = fleet_factory(6)
    bad = fleet.iccids[:2]
    jasper.configure(fail_iccids={bad[0]: 400, bad[1]: 404})
    bulk_id = fleet.bulk("Suspend", extra=[{"ICCID": "123", "ChangeRequest": {"UpdateStatus": "Suspend"}}])
    client = make_client()
    plan = processing.prepare(amop_engine, bulk_id, batch_size=4)
    for batch in plan.batches:
        processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=client)
    assert processing.finalize(amop_engine, bulk_id)["status"] == "PROCESSED_WITH_ERRORS"
    first = _changes(amop_engine, bulk_id)
    assert {first[i].status.value for i in bad} == {"API_FAILED"}
    logs_before = _log_rows(amop_engine, bulk_id)
    puts_before = len(jasper.calls(method="PUT"))

    jasper.configure(fail_iccids={})  # the carrier problem is fixed
    again = processing.reset_failed(amop_engine, bulk_id)
    assert sorted(again) == sorted([first[i].id for i in bad] + [first["123"].id])
    with amop_engine.connect() as conn:
        assert progress.load_progress(conn, bulk_id)["PendingCount"] == 3
    plan = processing.prepare(amop_engine, bulk_id, batch_size=4)
    assert plan.queued == 2 and plan.rejected == 1  # the bad ICCID is rejected again, with its reason
    assert sorted(i for b in plan.batches for i in b.device_change_ids) == sorted(first[i].id for i in bad)
    for batch in plan.batches:
        processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=client)
    summary = processing.finalize(amop_engine, bulk_id)
    assert summary["status"] == "PROCESSED_WITH_ERRORS" and summary["counts"] == {"PROCESSED": 6, "ERROR": 1}
    # only the two failed devices were sent again
    assert sorted(c["iccid"] for c in jasper.calls(method="PUT")[puts_before:]) == sorted(bad)
    logs_after = _log_rows(amop_engine, bulk_id)
    assert logs_after[:len(logs_before)] == logs_before  # earlier attempts kept
    retry_rows = [r for r in logs_after if r[2].startswith("Retry:")]
    assert len(retry_rows) == 3
    with amop_engine.connect() as conn:
        assert progress.load_progress(conn, bulk_id) == {"TotalCount": 7, "ProcessedCount": 6, "ErrorCount": 1,
                                                         "PendingCount": 0}
        n = conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one()
    assert n == 6


def test_retry_is_refused_while_the_bulk_change_is_running(sqlite_engine, jasper):
    from tests.integration.conftest import Fleet

    fleet = Fleet(sqlite_engine, jasper, 2)
    bulk_id = fleet.bulk("Suspend")
    processing.prepare(sqlite_engine, bulk_id)
    with pytest.raises(processing.RetryRefused, match="is PROCESSING"):
        processing.reset_failed(sqlite_engine, bulk_id)


def test_dry_run_of_a_retry_counts_the_failed_devices(sqlite_engine, jasper, make_client):
    from tests.integration.conftest import Fleet

    fleet = Fleet(sqlite_engine, jasper, 4)
    jasper.configure(fail_iccids={fleet.iccids[0]: 400})
    bulk_id = fleet.bulk("Suspend")
    plan = processing.prepare(sqlite_engine, bulk_id)
    processing.process_batch(sqlite_engine, bulk_id, plan.batches[0].device_change_ids, client=make_client())
    processing.finalize(sqlite_engine, bulk_id)
    before = _snapshot(sqlite_engine)
    d = dryrun.dry_run_bulk_change(sqlite_engine, bulk_id, retry_failed=True).as_dict()
    assert d["would_retry"] == 1 and d["would_process"] == 1 and d["already_settled"] == 3
    assert d["carrier_calls"] == {"Jasper": 1}
    assert _snapshot(sqlite_engine) == before


def test_retry_of_swept_devices_asks_the_carrier_before_sending_again(amop_engine, fleet_factory, make_client,
                                                                      jasper):
    """A device swept to ERROR after its batch task died may have reached the carrier: the retry
    checks it there and sends nothing when the change is already applied."""
    fleet = fleet_factory(3)
    bulk_id = fleet.bulk("Suspend")
    plan = processing.prepare(amop_engine, bulk_id)
    with amop_engine.begin() as conn:  # the batch task took them (PROCESSING), then died
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, plan.batches[0].device_change_ids,
                                           DeviceChangeStatus.PROCESSING, processed_by="test")
    processing.finalize(amop_engine, bulk_id)  # every batch task died: all three swept
    with amop_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "ERROR"
    # the dead task had reached the carrier for the first device
    jasper.seed_devices([{"iccid": fleet.iccids[0], "status": "DEACTIVATED", "ratePlan": "P-1G"}])

    processing.reset_failed(amop_engine, bulk_id)
    assert {dc.status.value for dc in _changes(amop_engine, bulk_id).values()} == {"PROCESSING"}
    plan = processing.prepare(amop_engine, bulk_id)
    for batch in plan.batches:
        processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=make_client())
    assert processing.finalize(amop_engine, bulk_id)["status"] == "PROCESSED"
    puts = sorted(c["iccid"] for c in jasper.calls(method="PUT"))
    assert puts == sorted(fleet.iccids[1:])  # the first was confirmed at the carrier, not sent again
    assert len(jasper.calls(method="GET", iccid=fleet.iccids[0])) == 1
    assert "confirmed at the carrier" in _changes(amop_engine, bulk_id)[fleet.iccids[0]].status_details
