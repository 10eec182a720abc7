"""One run owns a bulk change (the lease on DeviceBulkChange) and results are recorded
compare-and-set, on SQLite and PostgreSQL."""
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bulkchange.carriers.base import CallRecord
from bulkchange.db import bulk_changes, claims, device_changes, inventory, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.db.connect import make_engine
from bulkchange.models import ChangeType, DeviceChangeStatus, DeviceResult, utcnow
from tests.db.test_repository import make_bulk

A, B = "bulk_change_process:run_a", "bulk_change_process:run_b"


def test_lease_one_owner_renewed_by_the_same_run_taken_over_when_expired(amop_engine):
    bulk_id = make_bulk(amop_engine, n=1)
    now = utcnow()
    with amop_engine.begin() as conn:
        assert claims.acquire_lease(conn, bulk_id, A, now + timedelta(minutes=15)).owner == A
    with amop_engine.begin() as conn:  # a second run is refused and told who holds it until when
        held = claims.acquire_lease(conn, bulk_id, B, now + timedelta(minutes=15))
        assert held.owner == A and held.expires is not None
        assert not claims.release_lease(conn, bulk_id, B)  # only the owner releases
    with amop_engine.begin() as conn:  # a retry of the same run (same run id) renews it
        assert claims.acquire_lease(conn, bulk_id, A, now + timedelta(minutes=30)).owner == A
    with amop_engine.begin() as conn:  # A died: once its lease has expired, B takes over
        conn.execute(update(t.device_bulk_change).values(LeaseExpiresDate=now - timedelta(seconds=1)))
        assert claims.acquire_lease(conn, bulk_id, B, now + timedelta(minutes=15)).owner == B
        assert claims.acquire_lease(conn, bulk_id, A, now + timedelta(minutes=15)).owner == B
    with amop_engine.begin() as conn:
        assert claims.release_lease(conn, bulk_id, B)
        assert claims.load_lease(conn, bulk_id) == claims.Lease(None, None)


def _results(engine, bulk_id):
    with engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        changes = device_changes.load_device_changes(conn, bulk)
        device_changes.mark_device_changes(conn, bulk, [dc.id for dc in changes], DeviceChangeStatus.PROCESSING,
                                           processed_by="test")
        devices = inventory.load_devices_by_iccid(conn, bulk, [dc.iccid for dc in changes])
    results = [DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details="suspended",
                            iccid=dc.iccid, device_id=devices[dc.iccid].id, previous_device_status="ACTIVATED",
                            new_device_status="DEACTIVATED") for dc in changes]
    calls = {dc.id: [CallRecord("Jasper: PUT /devices", "PUT", "/devices", "{}", 200, "{}")] for dc in changes}
    return bulk, results, calls


def _rows(engine):
    with engine.connect() as conn:
        history = conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one()
        logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log)).scalar_one()
    return history, logs


def test_second_recorder_of_the_same_outcome_writes_nothing(amop_engine):
    bulk_id = make_bulk(amop_engine, n=4)
    bulk, results, calls = _results(amop_engine, bulk_id)
    only = [DeviceChangeStatus.PROCESSING.value]
    with amop_engine.begin() as conn:
        assert len(device_changes.record_results(conn, bulk, results, calls, processed_by="a", only_from=only)) == 4
    with amop_engine.begin() as conn:  # a second recorder saw PROCESSING too, but it is PROCESSED now
        assert device_changes.record_results(conn, bulk, results, calls, processed_by="b", only_from=only) == []
    assert _rows(amop_engine) == (4, 4)  # one history row and one log row per real status change


def test_racing_recorders_write_each_status_change_once(amop_engine):
    """Two recorders with their own connections record the same outcomes at the same moment."""
    n = 20
    bulk_id = make_bulk(amop_engine, n=n)
    bulk, results, calls = _results(amop_engine, bulk_id)
    url = amop_engine.url.render_as_string(hide_password=False)
    barrier, recorded, errors = threading.Barrier(2), [], []

    def recorder(name):
        engine = make_engine(url)
        try:
            barrier.wait(timeout=30)
            with engine.begin() as conn:
                recorded.append(len(device_changes.record_results(conn, bulk, results, calls, processed_by=name,
                                                                  only_from=[DeviceChangeStatus.PROCESSING.value])))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=recorder, args=(name,)) for name in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert errors == []
    assert sorted(recorded) == [0, n]  # one recorder wrote every outcome, the other none
    assert _rows(amop_engine) == (n, n)
    with amop_engine.connect() as conn:
        assert progress.status_counts(conn, bulk) == {"PROCESSED": n}


def test_without_compare_and_set_both_recorders_write(amop_engine):
    """What the condition prevents (and what main did): recorded twice, two history rows per device."""
    bulk_id = make_bulk(amop_engine, n=2)
    bulk, results, calls = _results(amop_engine, bulk_id)
    for name in ("a", "b"):
        with amop_engine.begin() as conn:
            device_changes.record_results(conn, bulk, results, calls, processed_by=name)
    assert _rows(amop_engine) == (4, 4)


@pytest.mark.parametrize("statuses", [["PENDING"], ["PROCESSING"], ["PENDING_CARRIER"]])
def test_busy_devices_are_the_in_flight_ones_of_other_bulk_changes(sqlite_engine, statuses):
    first = make_bulk(sqlite_engine, n=2)
    with sqlite_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, first)
        changes = device_changes.load_device_changes(conn, bulk)
        device_changes.mark_device_changes(conn, bulk, [changes[0].id], DeviceChangeStatus(statuses[0]),
                                           processed_by="t")
        iccids = [dc.iccid for dc in changes]
        assert device_changes.busy_devices(conn, bulk, iccids) == {}  # never busy with itself
        other = bulk_changes.load_bulk_change(conn, seed.add_bulk_change(
            conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, requests=[]))
        busy = device_changes.busy_devices(conn, other, iccids)
    assert list(busy) == [changes[0].iccid]
    assert (busy[changes[0].iccid].bulk_change_id, busy[changes[0].iccid].status) == (first, statuses[0])
