"""``DeviceStatusId`` agrees with ``Status`` after every kind of status write (bulkchange.db.device_status).

Each case writes through the function the pipeline uses for it (processing's record_results,
reconciliation's drift writer, the ThingSpace settlement of a lost answer, archival's device
updates, a Mobility line and its TelegenceDevice row) with a request whose ``PostUpdateStatusId``
is deliberately wrong, then checks every inventory row against the DeviceStatus lookup.
"""

import pytest
from sqlalchemy import select, update

from bulkchange import reconcile
from bulkchange.db import bulk_changes, device_changes, inventory
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.db.device_status import device_status_ids, status_id_mismatches
from bulkchange.models import ChangeType, DeviceChangeStatus, DeviceResult, Integration

WRONG_ID = 999  # what a request may say; never what is written


def _fleet(engine, sp_id, integration, rows, *, portal_type=0, change_type=ChangeType.STATUS_UPDATE,
           request=None):
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=sp_id, name=f"sp{sp_id}", integration=integration, tenant_id=1)
        ids = seed.add_devices(conn, rows, sp_id=sp_id, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=change_type,
                                       portal_type=portal_type, requests=[
                                           {"ICCID": r.get("ICCID"), "MSISDN": r.get("MSISDN"),
                                            "ChangeRequest": request or {"UpdateStatus": "Suspend",
                                                                         "PostUpdateStatusId": WRONG_ID}}
                                           for r in rows])
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        changes = device_changes.load_device_changes(conn, bulk)
    return bulk, changes, ids


def _settle(engine, bulk, results, **kw):
    with engine.begin() as conn:
        device_changes.mark_device_changes(conn, bulk, [r.device_change_id for r in results],
                                           DeviceChangeStatus.PROCESSING, processed_by="test", details="sent")
        device_changes.record_results(conn, bulk, results, {}, processed_by="test", **kw)


def _agree(engine):
    with engine.connect() as conn:
        return {name: status_id_mismatches(conn, table) for name, table in (
            ("Device", t.device), ("MobilityDevice", t.mobility_device), ("TelegenceDevice", t.telegence_device))}


def _row(engine, table, dev_id):
    with engine.connect() as conn:
        return conn.execute(select(table.c.Status, table.c.DeviceStatusId).where(table.c.Id == dev_id)).one()


def _id(engine, integration, status):
    with engine.connect() as conn:
        found = device_status_ids(conn, integration, [status])[status]
    assert found is not None and found != WRONG_ID
    return found


NO_MISMATCH = {"Device": [], "MobilityDevice": [], "TelegenceDevice": []}


def test_processing_writes_the_status_with_its_own_id(amop_engine):
    bulk, changes, ids = _fleet(amop_engine, 1, Integration.JASPER,
                                [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED"} for i in range(3)])
    _settle(amop_engine, bulk, [DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details="ok",
                                             device_id=dev, iccid=dc.iccid, previous_device_status="ACTIVATED",
                                             new_device_status="DEACTIVATED")
                                for dc, dev in zip(changes, ids)])
    assert _row(amop_engine, t.device, ids[0]) == ("DEACTIVATED", _id(amop_engine, Integration.JASPER, "DEACTIVATED"))
    assert _agree(amop_engine) == NO_MISMATCH


def test_reconciliation_writes_the_status_with_its_own_id(amop_engine):
    bulk, changes, ids = _fleet(amop_engine, 1, Integration.JASPER,
                                [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED"} for i in range(2)])
    with amop_engine.begin() as conn:
        inventory.record_reconciled_statuses(conn, [(ids[0], changes[0].iccid, "ACTIVATED", "DEACTIVATED")],
                                             changed_by="test", integration=Integration.JASPER, service_provider_id=1)
    assert _row(amop_engine, t.device, ids[0]) == ("DEACTIVATED", _id(amop_engine, Integration.JASPER, "DEACTIVATED"))
    assert _agree(amop_engine) == NO_MISMATCH


def test_reconciliation_of_a_mobility_line_writes_both_inventory_tables(amop_engine):
    _, _, ids = _fleet(amop_engine, 6, Integration.TELEGENCE, [{"MSISDN": "14045550101", "Status": "A"}],
                       portal_type=2)
    with amop_engine.begin() as conn:
        inventory.record_reconciled_statuses(conn, [(ids[0], "14045550101", "A", "S")], changed_by="test",
                                             integration=Integration.TELEGENCE, service_provider_id=6)
        line = conn.execute(select(t.telegence_device.c.SubscriberNumberStatus, t.telegence_device.c.DeviceStatusId,
                                   t.telegence_device.c.OldDeviceStatusId)).one()
    suspended, active = _id(amop_engine, Integration.TELEGENCE, "S"), _id(amop_engine, Integration.TELEGENCE, "A")
    assert _row(amop_engine, t.mobility_device, ids[0]) == ("S", suspended)
    assert tuple(line) == ("S", suspended, active)
    assert _agree(amop_engine) == NO_MISMATCH


def test_thingspace_settlement_of_a_lost_answer_writes_the_status_with_its_own_id(amop_engine):
    bulk, changes, ids = _fleet(amop_engine, 4, Integration.THINGSPACE,
                                [{"ICCID": seed.make_iccid(7), "Status": "suspend"}],
                                request={"UpdateStatus": "Active", "PostUpdateStatusId": WRONG_ID})
    mc = t.m2m_device_change
    with amop_engine.begin() as conn:
        conn.execute(update(mc).where(mc.c.Id == changes[0].id).values(
            Status=DeviceChangeStatus.API_FAILED.value, StatusDetails="ThingSpace restore failed after 3 attempt(s)"))
    settled = reconcile.settle_lost_answers(amop_engine, 4, Integration.THINGSPACE, {changes[0].iccid: "active"})
    assert [s["device_change_id"] for s in settled] == [changes[0].id]
    assert _row(amop_engine, t.device, ids[0]) == ("active", 8)  # ThingSpace Active is DeviceStatus 8 (legacy)
    assert _agree(amop_engine) == NO_MISMATCH


def test_archival_keeps_them_together_and_device_updates_cannot_write_a_status(amop_engine):
    bulk, changes, ids = _fleet(amop_engine, 1, Integration.JASPER,
                                [{"ICCID": seed.make_iccid(9), "Status": "DEACTIVATED"}],
                                change_type=ChangeType.ARCHIVAL, request={})
    _settle(amop_engine, bulk, [DeviceResult(device_change_id=changes[0].id, status=DeviceChangeStatus.PROCESSED,
                                             details="archived", device_id=ids[0], iccid=changes[0].iccid,
                                             device_updates={"IsActive": False, "IsDeleted": True})])
    assert _agree(amop_engine) == NO_MISMATCH
    for bypass in ({"Status": "ACTIVATED"}, {"DeviceStatusId": WRONG_ID}):
        with pytest.raises(ValueError, match="no updatable column"):
            with amop_engine.begin() as conn:
                device_changes.record_results(conn, bulk, [DeviceResult(
                    device_change_id=changes[0].id, status=DeviceChangeStatus.PROCESSED, details="x",
                    device_id=ids[0], device_updates=bypass)], {}, processed_by="test")


def test_mobility_processing_writes_mobility_device_and_telegence_device(amop_engine):
    bulk, changes, ids = _fleet(amop_engine, 6, Integration.TELEGENCE,
                                [{"ICCID": seed.make_iccid(20), "MSISDN": "14045550120", "Status": "A"},
                                 {"MSISDN": "14045550121", "Status": "A"}], portal_type=2)
    _settle(amop_engine, bulk, [DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details="ok",
                                             device_id=dev, iccid=dc.iccid, previous_device_status="A",
                                             new_device_status="S")
                                for dc, dev in zip(changes, ids)])
    suspended = _id(amop_engine, Integration.TELEGENCE, "S")
    assert [_row(amop_engine, t.mobility_device, i) for i in ids] == [("S", suspended)] * 2
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(t.telegence_device.c.SubscriberNumberStatus,
                                       t.telegence_device.c.DeviceStatusId)).all()) == {("S", suspended)}
        assert conn.execute(select(t.device.c.Id)).all() == []  # M2M inventory untouched
    assert _agree(amop_engine) == NO_MISMATCH


def test_a_status_unknown_to_the_lookup_gets_no_stale_id(amop_engine):
    bulk, changes, ids = _fleet(amop_engine, 1, Integration.JASPER,
                                [{"ICCID": seed.make_iccid(30), "Status": "ACTIVATED"}])
    assert _row(amop_engine, t.device, ids[0])[1] is not None
    _settle(amop_engine, bulk, [DeviceResult(device_change_id=changes[0].id, status=DeviceChangeStatus.PROCESSED,
                                             details="ok", device_id=ids[0], iccid=changes[0].iccid,
                                             previous_device_status="ACTIVATED", new_device_status="SOMETHING_NEW")])
    assert _row(amop_engine, t.device, ids[0]) == ("SOMETHING_NEW", None)
    assert _agree(amop_engine) == NO_MISMATCH
