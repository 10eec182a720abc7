"""eBonding, decided out of scope (docs/change-types.md, "eBonding"): a bulk change for an eBonding
service provider that would reach the carrier (the legacy handed status updates on to the eBonding
service's own queue and sent rate plan changes over its SOAP router) is refused at pre-flight with
the reason on every device change and in the log; a DB-only change type still runs."""
import pytest
from sqlalchemy import select

from bulkchange import processing, submit
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration

SP = 31
REASON = "eBonding bulk changes that reach the carrier are not processed by this pipeline"


def _fleet(engine, n=3):
    iccids = [seed.make_iccid(310_000 + i) for i in range(n)]
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="ebonding", integration=Integration.EBONDING, tenant_id=1)
        seed.add_test_references(conn, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE"} for i in iccids], sp_id=SP, tenant_id=1)
    return iccids


def _bulk(engine, change_type, iccids, request):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=change_type,
                                    requests=[{"ICCID": i, "ChangeRequest": request} for i in iccids])


def _outcome(engine, bulk_id):
    dc, lg, bc = t.m2m_device_change, t.device_bulk_change_log, t.device_bulk_change
    with engine.connect() as conn:
        rows = conn.execute(select(dc.c.Status, dc.c.StatusDetails).where(dc.c.BulkChangeId == bulk_id)).all()
        logged = conn.execute(select(lg.c.M2MDeviceChangeId, lg.c.ErrorText, lg.c.ResponseText)
                              .where(lg.c.BulkChangeId == bulk_id)).all()
        bulk = conn.execute(select(bc.c.Status, bc.c.ErrorMessage).where(bc.c.Id == bulk_id)).one()
    return rows, logged, bulk


@pytest.mark.parametrize("change_type,request_", [
    (ChangeType.STATUS_UPDATE, {"UpdateStatus": "Suspend"}),
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, {"CarrierRatePlan": "EB-1GB"}),
], ids=["status update (legacy: eBonding queue)", "rate plan (legacy: eBonding SOAP)"])
def test_ebonding_carrier_change_is_refused_at_preflight_with_the_reason(amop_engine, change_type, request_):
    iccids = _fleet(amop_engine)
    bulk_id = _bulk(amop_engine, change_type, iccids, request_)
    plan = processing.prepare(amop_engine, bulk_id, credentials_problem="no carrier connection for eBonding")
    assert plan.batches == [] and REASON in plan.preflight_error  # not the generic missing-connection reason
    assert "eBondingDeviceStatusChangeQueueUrl" in plan.preflight_error
    rows, logged, bulk = _outcome(amop_engine, bulk_id)
    assert len(rows) == 3 and all(r.Status == "ERROR" and REASON in r.StatusDetails for r in rows)
    assert len(logged) == 3 and all(REASON in (e.ErrorText or e.ResponseText or "") for e in logged)
    assert bulk.Status == "ERROR" and REASON in (bulk.ErrorMessage or "")


def test_ebonding_submission_is_refused_with_the_same_reason(amop_engine):
    _fleet(amop_engine, 1)
    sub = submit.parse_submission({"service_provider_id": SP, "change_type": "CarrierRatePlanChange",
                                   "change_request": {"CarrierRatePlan": "EB-1GB"},
                                   "devices": seed.make_iccid(310_000)})
    with pytest.raises(submit.SubmitError, match=REASON):
        submit.check_against_db(amop_engine, sub)


def test_ebonding_db_only_change_still_runs(amop_engine):
    iccids = _fleet(amop_engine, 2)
    bulk_id = _bulk(amop_engine, ChangeType.CUSTOMER_RATE_PLAN_CHANGE, iccids, {"CustomerRatePlanId": 21})
    plan = processing.prepare(amop_engine, bulk_id)
    assert plan.preflight_error is None
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=None)
    assert processing.finalize(amop_engine, bulk_id)["status"] == "PROCESSED"
