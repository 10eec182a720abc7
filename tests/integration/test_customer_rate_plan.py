"""CustomerRatePlanChange: DB only on any carrier (no carrier connection needed); a past or
missing EffectiveDate applies at once, a future one is queued for every device (legacy: only the
first 100) and applied by the scheduled run once its date has come; the bulk change becomes final
only when its last device settled."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bulkchange import processing
from bulkchange.changes import get_handler
from bulkchange.changes.customer_rate_plan import CustomerRatePlanChange, apply_due
from bulkchange.db import bulk_changes, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration, utcnow

SP = 7


def make_fleet(engine, n, *, integration=Integration.TEAL, start=91_000):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="crp", integration=integration, tenant_id=3)
        seed.add_test_references(conn, tenant_id=3)  # the ids these tests name
        seed.add_devices(conn, [{"ICCID": i, "Status": "ONLINE", "CustomerRatePlanId": 1, "CustomerPoolId": 2}
                                for i in iccids], sp_id=SP, tenant_id=3)
    return iccids


def add_bulk(engine, requests):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=3, change_type=ChangeType.CUSTOMER_RATE_PLAN_CHANGE,
                                    requests=requests)


def run(engine, bulk_id, batch_size=25):
    # the carrier connection is missing: a DB-only change type does not care
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size, credentials_problem="no carrier_sp_7")
    assert plan.preflight_error is None
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=None)
    return processing.finalize(engine, bulk_id)


def devices(engine):
    """Both inventories: Telegence lines are in MobilityDevice, the other carriers' SIMs in Device."""
    with engine.connect() as conn:
        return {r.ICCID: r for d in (t.device, t.mobility_device) for r in conn.execute(select(d))}


def changes(engine):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(t.m2m_device_change))}


def test_registered_for_every_carrier():
    for integ in Integration:
        assert get_handler(ChangeType.CUSTOMER_RATE_PLAN_CHANGE, integ) is CustomerRatePlanChange
        assert get_handler(ChangeType.CUSTOMER_RATE_PLAN_CHANGE, integ).needs_carrier is False
    assert get_handler(ChangeType.STATUS_UPDATE, Integration.JASPER).needs_carrier is True


def test_past_or_missing_date_applies_at_once(amop_engine):
    iccids = make_fleet(amop_engine, 30)
    past = (utcnow() - timedelta(days=2)).isoformat() + "Z"
    requests = (
        [{"ICCID": i, "ChangeRequest": {"CustomerRatePlanUpdate": {"customerRatePlanId": 456, "customerPoolId": 789,
                                                                   "customerDataAllocationMB": 1024,
                                                                   "effectiveDate": past}}} for i in iccids[:10]]
        + [{"ICCID": i, "ChangeRequest": {"CustomerRatePlanId": 55, "CustomerPoolId": 0}} for i in iccids[10:25]]
        + [{"ICCID": iccids[25], "ChangeRequest": {"EffectiveDate": past}},  # nothing to change
           {"ICCID": iccids[26], "ChangeRequest": {"CustomerRatePlanId": "abc"}},
           {"ICCID": iccids[27], "ChangeRequest": {"CustomerRatePlanId": -3}},
           {"ICCID": seed.make_iccid(99_999), "ChangeRequest": {"CustomerRatePlanId": 5}}]  # unknown device
    )
    bulk_id = add_bulk(amop_engine, requests)
    summary = run(amop_engine, bulk_id)
    assert summary["status"] == "PROCESSED_WITH_ERRORS"
    assert summary["counts"] == {"PROCESSED": 25, "ERROR": 4}
    dev, chg = devices(amop_engine), changes(amop_engine)
    for i in iccids[:10]:
        assert (dev[i].CustomerRatePlanId, dev[i].CustomerPoolId, float(dev[i].CustomerDataAllocationMB)) == (456, 789, 1024)
        assert chg[i].Status == "PROCESSED" and "CustomerRatePlanId=456" in chg[i].StatusDetails
    for i in iccids[10:25]:
        assert (dev[i].CustomerRatePlanId, dev[i].CustomerPoolId, dev[i].CustomerDataAllocationMB) == (55, None, None)
    for i in iccids[25:]:
        assert (dev[i].CustomerRatePlanId, dev[i].CustomerPoolId) == (1, 2)  # untouched
    assert "none was given" in chg[iccids[25]].StatusDetails
    assert "CustomerRatePlanId" in chg[iccids[26]].StatusDetails and "'abc'" in chg[iccids[26]].StatusDetails
    assert "CustomerRatePlanId must be a positive id" in chg[iccids[27]].StatusDetails
    assert "not found" in chg[seed.make_iccid(99_999)].StatusDetails
    with amop_engine.connect() as conn:
        logs = conn.execute(select(t.device_bulk_change_log.c.M2MDeviceChangeId, t.device_bulk_change_log.c.HasErrors)
                            ).all()
        assert conn.execute(select(func.count()).select_from(t.device_customer_rate_plan_queue)).scalar_one() == 0
    assert len(logs) == 29 and sum(1 for _, err in logs if err) == 4  # one row per device change
    # a re-run changes nothing
    with amop_engine.begin() as conn:
        conn.execute(update(t.device).values(CustomerRatePlanId=1))
    assert run(amop_engine, bulk_id)["counts"] == {"PROCESSED": 25, "ERROR": 4}
    assert {dev.CustomerRatePlanId for dev in devices(amop_engine).values()} == {1}


def test_future_date_is_queued_for_every_device_and_applied_on_its_date(amop_engine):
    iccids = make_fleet(amop_engine, 150)
    now = utcnow()
    soon, later = now + timedelta(days=3), now + timedelta(days=10)
    requests = ([{"ICCID": i, "ChangeRequest": {"CustomerRatePlanId": 77, "EffectiveDate": soon.isoformat()}}
                 for i in iccids[:120]]
                + [{"ICCID": i, "ChangeRequest": {"CustomerPoolId": 88, "CustomerDataAllocationMB": 512,
                                                  "EffectiveDate": later.strftime("%Y-%m-%dT%H:%M:%S+02:00")}}
                   for i in iccids[120:]])
    bulk_id = add_bulk(amop_engine, requests)
    summary = run(amop_engine, bulk_id, batch_size=40)
    # the run ended, nothing swept: every device waits for its date
    assert summary["status"] == "WAITING_FOR_CARRIER" and summary["swept"] == 0
    assert summary["counts"] == {"SCHEDULED": 150}
    assert {d.CustomerRatePlanId for d in devices(amop_engine).values()} == {1}  # nothing applied yet
    q = t.device_customer_rate_plan_queue
    with amop_engine.connect() as conn:
        rows = conn.execute(select(q)).mappings().all()
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert "wait for their effective date" in conn.execute(
            select(t.device_bulk_change.c.ErrorMessage).where(t.device_bulk_change.c.Id == bulk_id)).scalar_one()
    assert len(rows) == 150 and all(r["IsActive"] and r["BulkChangeId"] == bulk_id for r in rows)
    assert {r["EffectiveDate"].replace(microsecond=0) for r in rows} == {
        soon.replace(microsecond=0), (later - timedelta(hours=2)).replace(microsecond=0)}

    # a retried batch queues nothing twice
    with amop_engine.begin() as conn:
        ids = [c.id for c in device_changes.load_device_changes(conn, bulk)]
    processing.process_batch(amop_engine, bulk_id, ids, client=None)
    with amop_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(q)).scalar_one() == 150

    # one device is archived before its date
    with amop_engine.begin() as conn:
        conn.execute(update(t.device).where(t.device.c.ICCID == iccids[0]).values(IsDeleted=True))

    assert apply_due(amop_engine, now=now + timedelta(days=1)).as_dict() == {
        "applied": 0, "failed": 0, "bulk_changes": {}}
    first = apply_due(amop_engine, now=soon + timedelta(minutes=1), chunk_size=50)
    assert (first.applied, first.failed) == (119, 1)
    assert first.bulk_changes == {bulk_id: "WAITING_FOR_CARRIER"}
    dev, chg = devices(amop_engine), changes(amop_engine)
    assert all(dev[i].CustomerRatePlanId == 77 for i in iccids[1:120])
    assert all(dev[i].CustomerPoolId == 2 for i in iccids[120:])
    assert chg[iccids[0]].Status == "ERROR" and "archived" in chg[iccids[0]].StatusDetails
    assert chg[iccids[5]].Status == "PROCESSED" and "effective date" in chg[iccids[5]].StatusDetails
    assert all(chg[i].Status == "SCHEDULED" for i in iccids[120:])

    last = apply_due(amop_engine, now=later)
    assert (last.applied, last.failed, last.bulk_changes) == (30, 0, {bulk_id: "PROCESSED_WITH_ERRORS"})
    dev = devices(amop_engine)
    assert all((dev[i].CustomerPoolId, float(dev[i].CustomerDataAllocationMB), dev[i].CustomerRatePlanId) == (88, 512, 1)
               for i in iccids[120:])
    with amop_engine.connect() as conn:
        assert progress.status_counts(conn, bulk) == {"PROCESSED": 149, "ERROR": 1}
        assert conn.execute(select(func.count()).select_from(q).where(q.c.IsActive == True)).scalar_one() == 0  # noqa: E712
        notes = conn.execute(select(t.device_bulk_change_notification.c.ToStatus)
                             .where(t.device_bulk_change_notification.c.BulkChangeId == bulk_id)).scalars().all()
        logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log).where(
            t.device_bulk_change_log.c.LogEntryDescription == "Change Customer Rate Plan: Update AMOP")).scalar_one()
    assert "PROCESSED_WITH_ERRORS" in notes
    assert logs == 150  # one per device when it was applied (or refused)
    # nothing left: a second run applies nothing
    assert apply_due(amop_engine, now=later + timedelta(days=1)).applied == 0


def test_mobility_bulk_change_scheduled_and_applied(amop_engine):
    iccids = make_fleet(amop_engine, 8, integration=Integration.TELEGENCE, start=92_000)
    when = utcnow() + timedelta(days=1)
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=3, change_type=ChangeType.CUSTOMER_RATE_PLAN_CHANGE,
                                       portal_type=2, requests=[{"ICCID": i, "ChangeRequest": {
                                           "CustomerRatePlanId": 9, "EffectiveDate": when.strftime("%Y-%m-%d")}}
                                           for i in iccids])
    # a date without a time is midnight UTC of that day: tomorrow, so scheduled
    assert run(amop_engine, bulk_id)["counts"] == {"SCHEDULED": 8}
    assert apply_due(amop_engine, now=when).bulk_changes == {bulk_id: "PROCESSED"}
    mc = t.mobility_device_change
    log = t.device_bulk_change_log
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(mc.c.Status).where(mc.c.BulkChangeId == bulk_id)).scalars()) == {"PROCESSED"}
        assert conn.execute(select(func.count()).select_from(log).where(
            log.c.BulkChangeId == bulk_id, log.c.MobilityDeviceChangeId.is_not(None),
            log.c.LogEntryDescription == "Change Customer Rate Plan: Update AMOP")).scalar_one() == 8
    assert {devices(amop_engine)[i].CustomerRatePlanId for i in iccids} == {9}
