"""Eight batch writers of one bulk change, the sensor's claims and the status reconciliation
write the AMOP database at the same time (PostgreSQL, READ COMMITTED as SQL Server's default):
no error reaches a task, and the counts are right, the progress counts included, after every
batch has closed (not only after finalize's roll-up)."""
from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from bulkchange import processing
from bulkchange.db import bulk_changes, claims, progress as progress_db
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from bulkchange.reconcile import reconcile_provider_statuses

pytestmark = pytest.mark.postgres

DEVICES = 200
OTHERS = 60  # devices of the account in no bulk change: the reconciliation corrects them
BATCHES = 8


class _StubJasper:
    """In-memory carrier: the test is about the database."""

    def update_status(self, iccid, status, log=None):
        return {"iccid": iccid}

    def get_device(self, iccid, log=None):
        return {"iccid": iccid, "status": "ACTIVATED"}

    def iter_devices(self):
        return [{"iccid": seed.make_iccid(i), "status": "DEACTIVATED"} for i in range(DEVICES + OTHERS)]


def _run_all(fns: dict) -> dict[str, BaseException]:
    errors: dict[str, BaseException] = {}
    start = threading.Barrier(len(fns), timeout=60)

    def runner(name, fn):
        try:
            start.wait()
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors[name] = exc

    threads = [threading.Thread(target=runner, args=item, name=item[0]) for item in fns.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not any(th.is_alive() for th in threads), "a writer is still running"
    return errors


@pytest.mark.parametrize("round_", range(2))
def test_eight_batches_sensor_and_reconciliation_at_once(pg_engine, round_):
    engine = pg_engine
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED"}
                                for i in range(DEVICES + OTHERS)], sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": seed.make_iccid(i),
                                                  "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                 for i in range(DEVICES)])
        others = [seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": seed.make_iccid(DEVICES),
                                                  "ChangeRequest": {"UpdateStatus": "Suspend"}}])
                  for _ in range(10)]
    assert claims.claim_new_bulk_changes(engine, limit=1) == [bulk_id]
    plan = processing.prepare(engine, bulk_id, batch_size=DEVICES // BATCHES)
    assert len(plan.batches) == BATCHES

    client = _StubJasper()
    claimed: list[int] = []

    def sensor():
        for _ in range(5):
            claimed.extend(claims.claim_new_bulk_changes(engine, limit=3))

    def reconciliation():
        for _ in range(3):
            reconcile_provider_statuses(engine, 1, Integration.JASPER, client)

    work = {f"batch{i}": (lambda b=b: processing.process_batch(engine, bulk_id, b.device_change_ids,
                                                               client=client, max_parallel=4))
            for i, b in enumerate(plan.batches)}
    work.update(sensor=sensor, reconciliation=reconciliation)
    errors = _run_all(work)
    assert errors == {}

    with engine.connect() as conn:
        progress = progress_db.load_progress(conn, bulk_id)
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        counts = progress_db.status_counts(conn, bulk)
        history = conn.execute(sa.select(sa.func.count()).select_from(t.device_status_history)
                               .where(t.device_status_history.c.BulkChangeId == bulk_id)).scalar()
        logs = conn.execute(sa.select(sa.func.count()).select_from(t.device_bulk_change_log)
                            .where(t.device_bulk_change_log.c.BulkChangeId == bulk_id,
                                   t.device_bulk_change_log.c.LogEntryDescription == "Update AMOP")).scalar()
        suspended = conn.execute(sa.select(sa.func.count()).select_from(t.device).where(
            t.device.c.ICCID.in_([seed.make_iccid(i) for i in range(DEVICES)]),
            t.device.c.Status == "DEACTIVATED")).scalar()
    assert counts == {"PROCESSED": DEVICES}
    # the last batch to close wrote the progress: it must have counted every other batch's rows
    assert progress["ProcessedCount"] == DEVICES and progress["PendingCount"] == 0, progress
    assert history == DEVICES and logs == DEVICES
    assert sorted(claimed) == sorted(others)  # each claimed once
    assert suspended == 0 or suspended <= DEVICES  # reconciliation skipped in-flight devices
    assert processing.finalize(engine, bulk_id)["status"] == "PROCESSED"


def _waiting_on_a_lock(engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())


def test_two_batches_closing_at_once_leave_the_right_progress(pg_engine, monkeypatch):
    """Batch 1 has counted its bulk change's device changes and not yet written the progress when
    batch 2 closes. Batch 2 must wait for batch 1 (the bulk change row lock is taken before
    counting), so the progress written last counts both batches."""
    engine = pg_engine
    n = 20
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED"} for i in range(n)],
                         sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": seed.make_iccid(i),
                                                  "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in range(n)])
    plan = processing.prepare(engine, bulk_id, batch_size=n // 2)
    first_counted, second_done = threading.Event(), threading.Event()
    real = progress_db.status_counts

    def counts(conn, bulk):
        result = real(conn, bulk)
        if threading.current_thread().name == "batch1" and not first_counted.is_set():
            first_counted.set()
            # hold on until batch 2 has closed, or is waiting for our lock (bounded)
            for _ in range(600):
                if second_done.wait(0.05) or _waiting_on_a_lock(engine):
                    break
            else:
                raise AssertionError("batch 2 neither closed nor waited")
        return result

    monkeypatch.setattr(progress_db, "status_counts", counts)
    client = _StubJasper()

    def batch1():
        processing.process_batch(engine, bulk_id, plan.batches[0].device_change_ids, client=client)

    def batch2():
        assert first_counted.wait(60)
        try:
            processing.process_batch(engine, bulk_id, plan.batches[1].device_change_ids, client=client)
        finally:
            second_done.set()

    errors = {}
    threads = [threading.Thread(target=lambda f=f, k=k: _record(errors, k, f), name=k)
               for k, f in (("batch1", batch1), ("batch2", batch2))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == {}
    with engine.connect() as conn:
        progress = progress_db.load_progress(conn, bulk_id)
    assert progress["ProcessedCount"] == n and progress["PendingCount"] == 0, progress


def _record(errors, name, fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        errors[name] = exc
