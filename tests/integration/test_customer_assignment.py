"""CustomerAssignment and CreateRevService: no carrier call, on any carrier. With a Rev.io customer
the Rev.io service and products are created once (found again on a retry), their ids stored with
the device; then the customer and the customer rate plan/pool go to Device. Without a Rev.io
customer: DB only. A Rev.io failure leaves Device untouched."""
from datetime import timedelta

from sqlalchemy import select, update

from bulkchange import processing
from bulkchange.changes.customer_rate_plan import apply_due
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration, utcnow
from tests.integration.test_revio_after_status import REV_PASSWORD, make_revio, revio  # noqa: F401 (fixtures)

SP = 9


def fleet(engine, n, start=95_000):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="assign", integration=Integration.POND, tenant_id=4)
        seed.add_test_references(conn, tenant_id=4)  # the ids these tests name
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE", "MSISDN": f"1555{start + k:07d}"}
                                for k, i in enumerate(iccids)], sp_id=SP, tenant_id=4)
    return iccids


def bulk(engine, change_type, requests):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=4, change_type=change_type, requests=requests)


def run(engine, bulk_id, revio_client=None, revio_problem=None):
    plan = processing.prepare(engine, bulk_id, batch_size=10, credentials_problem="no carrier_sp_9")
    assert plan.preflight_error is None
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=None, revio_client=revio_client,
                                 revio_problem=revio_problem)
    return processing.finalize(engine, bulk_id)


def rows(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(table)).mappings().all()


def by_iccid(engine):
    return {r["ICCID"]: r for r in rows(engine, t.device)}, {r["ICCID"]: r for r in rows(engine, t.m2m_device_change)}


ASSIGN = {"RevCustomerId": "4711", "CreateRevService": True, "ProviderId": 3, "ServiceTypeId": 8,
          "RevProductIdList": [501, 502], "RateList": ["9.99", "1.5"], "CustomerRatePlanId": 12, "CustomerRatePoolId": 34}


def test_assignment_with_rev_customer_creates_service_once(amop_engine, revio, make_revio):
    iccids = fleet(amop_engine, 25)
    requests = ([{"ICCID": i, "ChangeRequest": ASSIGN} for i in iccids[:20]]
                + [{"ICCID": i, "ChangeRequest": {"RevCustomerId": 4712, "CustomerRatePlanId": 5}} for i in iccids[20:23]]
                + [{"ICCID": iccids[23], "ChangeRequest": {**ASSIGN, "RateList": ["1"]}},  # 2 products, 1 rate
                   {"ICCID": iccids[24], "ChangeRequest": {"CreateRevService": True, "ProviderId": 3}}])  # no customer
    bulk_id = bulk(amop_engine, ChangeType.CUSTOMER_ASSIGNMENT, requests)
    client = make_revio()
    summary = run(amop_engine, bulk_id, client)
    assert summary["counts"] == {"PROCESSED": 23, "ERROR": 2}
    dev, chg = by_iccid(amop_engine)
    for i in iccids[:20]:
        assert (dev[i]["RevCustomerId"], dev[i]["CustomerRatePlanId"], dev[i]["CustomerPoolId"]) == ("4711", 12, 34)
        assert "Rev.io service" in chg[i]["StatusDetails"] and "2 service product(s)" in chg[i]["StatusDetails"]
    for i in iccids[20:23]:  # customer without a service
        assert (dev[i]["RevCustomerId"], dev[i]["CustomerRatePlanId"]) == ("4712", 5)
    assert "RateList" in chg[iccids[23]]["StatusDetails"]
    assert "RevCustomerId is missing" in chg[iccids[24]]["StatusDetails"]
    assert dev[iccids[23]]["RevCustomerId"] is None
    sim_services = revio.request("GET", "/services")
    assert sorted(s["number2"] for s in sim_services) == sorted(iccids[:20])
    assert len(revio.request("GET", "/service_products")) == 40
    stored = rows(amop_engine, t.rev_service)
    assert sorted((r["Number2"], r["DeviceId"]) for r in stored) == sorted((i, dev[i]["Id"]) for i in iccids[:20])
    assert len(rows(amop_engine, t.rev_service_product)) == 40
    logs = rows(amop_engine, t.device_bulk_change_log)
    assert not [r for r in logs if REV_PASSWORD in (r["RequestText"] or "") + (r["ResponseText"] or "")]
    assert {r["M2MDeviceChangeId"] for r in logs} >= {chg[i]["Id"] for i in iccids[:20]}

    # a task that died after Rev.io answered: the device changes are PROCESSING again; nothing is created twice
    with amop_engine.begin() as conn:
        conn.execute(update(t.m2m_device_change).where(t.m2m_device_change.c.ICCID.in_(iccids[:20]))
                     .values(Status="PROCESSING"))
        b = bulk_changes.load_bulk_change(conn, bulk_id)
        ids = [c.id for c in device_changes.load_device_changes(conn, b, statuses=["PROCESSING"])]
    processing.process_batch(amop_engine, bulk_id, ids, client=None, revio_client=client)
    assert len(revio.request("GET", "/services")) == 20 and len(revio.request("GET", "/service_products")) == 40
    assert len(rows(amop_engine, t.rev_service)) == 20
    assert all("found" in by_iccid(amop_engine)[1][i]["StatusDetails"] for i in iccids[:20])


def test_without_rev_customer_db_only_and_rev_failure_leaves_device(amop_engine, revio):
    iccids = fleet(amop_engine, 12)
    requests = ([{"ICCID": i, "ChangeRequest": {"SiteId": 42, "CustomerPoolId": 7}} for i in iccids[:8]]
                + [{"ICCID": i, "ChangeRequest": ASSIGN} for i in iccids[8:11]]
                + [{"ICCID": iccids[11], "ChangeRequest": {}}])
    bulk_id = bulk(amop_engine, ChangeType.CUSTOMER_ASSIGNMENT, requests)
    summary = run(amop_engine, bulk_id, None, "no usable Rev.io connection 'revio_sp_9'")
    assert summary["counts"] == {"PROCESSED": 8, "API_FAILED": 3, "ERROR": 1}
    dev, chg = by_iccid(amop_engine)
    assert all((dev[i]["SiteId"], dev[i]["CustomerPoolId"], dev[i]["RevCustomerId"]) == (42, 7, None) for i in iccids[:8])
    for i in iccids[8:11]:
        assert (dev[i]["RevCustomerId"], dev[i]["CustomerRatePlanId"]) == (None, None)
        assert "revio_sp_9" in chg[i]["StatusDetails"] and "customer not assigned" in chg[i]["StatusDetails"]
    assert "nothing to assign" in chg[iccids[11]]["StatusDetails"]
    assert revio.request("GET", "/services") == [] and rows(amop_engine, t.rev_service) == []


def test_create_rev_service_and_future_dated_plan(amop_engine, revio, make_revio):
    iccids = fleet(amop_engine, 7)
    taken = iccids.pop()  # already has a service line of another customer
    with amop_engine.begin() as conn:
        dev_id = conn.execute(select(t.device.c.Id).where(t.device.c.ICCID == taken)).scalar_one()
        conn.execute(t.rev_service.insert().values(ServiceId=5, CustomerId="12", DeviceId=dev_id, IsActive=True,
                                                   CreatedDate=utcnow()))
    when = utcnow() + timedelta(days=2)
    model = {"RevCustomerId": "900", "ProviderId": 4, "RevProductId": 61, "Rate": "2.5",
             "CustomerRatePlanId": 3, "EffectiveDate": when.isoformat()}
    bulk_id = bulk(amop_engine, ChangeType.CREATE_REV_SERVICE, [{"ICCID": i, "ChangeRequest": model}
                                                                for i in iccids + [taken]])
    summary = run(amop_engine, bulk_id, make_revio())
    assert summary["status"] == "WAITING_FOR_CARRIER" and summary["counts"] == {"SCHEDULED": 6, "ERROR": 1}
    assert "already has active Rev.io service 5 of customer 12" in by_iccid(amop_engine)[1][taken]["StatusDetails"]
    dev, _ = by_iccid(amop_engine)
    # service and customer now, rate plan on its date
    assert all((dev[i]["RevCustomerId"], dev[i]["CustomerRatePlanId"]) == ("900", None) for i in iccids)
    assert len(revio.request("GET", "/services")) == 6 and len(revio.request("GET", "/service_products")) == 6
    assert apply_due(amop_engine, now=when + timedelta(seconds=1)).bulk_changes == {bulk_id: "PROCESSED_WITH_ERRORS"}
    dev, chg = by_iccid(amop_engine)
    assert all(dev[i]["CustomerRatePlanId"] == 3 and chg[i]["Status"] == "PROCESSED" for i in iccids)


def test_assignment_writes_device_history_and_refuses_a_site_of_another_tenant(amop_engine):
    """Legacy ``usp_DeviceBulkChange_UpdateDeviceHistory``: every device the assignment changed gets
    its history row (customer, customer rate plan/pool, effective date: now, or the future date of a
    scheduled plan); a SiteId of another tenant is refused with the reason, in the log too, and
    leaves neither a Device change nor a history row."""
    from bulkchange.db.assignment_history import load_assignment_history

    iccids = fleet(amop_engine, 4, start=96_000)
    with amop_engine.begin() as conn:
        seed.add_tenant_references(conn, tenant_id=99, sites=[5001])  # another tenant's site
    later = (utcnow() + timedelta(days=2)).replace(microsecond=0)
    before = utcnow()
    bulk_id = bulk(amop_engine, ChangeType.CUSTOMER_ASSIGNMENT, [
        {"ICCID": iccids[0], "ChangeRequest": {"SiteId": 42, "CustomerRatePlanId": 12}},
        {"ICCID": iccids[1], "ChangeRequest": {"RevCustomerId": "4711", "SiteId": 43, "CustomerPoolId": 7,
                                               "EffectiveDate": later.isoformat() + "Z"}},
        {"ICCID": iccids[2], "ChangeRequest": {"SiteId": 5001}},
        {"ICCID": iccids[3], "ChangeRequest": {"SiteId": 44, "CustomerRatePlanId": 0}},
    ])
    out = run(amop_engine, bulk_id)
    assert out["counts"] == {"PROCESSED": 2, "SCHEDULED": 1, "ERROR": 1}
    devices, changes_ = by_iccid(amop_engine)
    refused = changes_[iccids[2]]
    assert refused["Status"] == "ERROR" and "SiteId 5001 belongs to another tenant" in refused["StatusDetails"]
    with amop_engine.connect() as conn:
        history = load_assignment_history(conn, bulk_id)
        logged = conn.execute(select(t.device_bulk_change_log.c.ErrorText).where(
            t.device_bulk_change_log.c.M2MDeviceChangeId == refused["Id"])).scalars().all()
    assert any("SiteId 5001 belongs to another tenant" in (e or "") for e in logged)
    assert devices[iccids[2]]["SiteId"] is None
    got = {h["ICCID"]: h for h in history}
    assert sorted(got) == sorted([iccids[0], iccids[1], iccids[3]])  # the refused device has none
    h0, h1, h3 = got[iccids[0]], got[iccids[1]], got[iccids[3]]
    assert (h0["SiteId"], h0["RevCustomerId"], h0["CustomerRatePlanId"], h0["CustomerPoolId"]) == (42, None, 12, None)
    assert h0["EffectiveDate"] >= before.replace(microsecond=0) and h0["DeviceId"] == devices[iccids[0]]["Id"]
    assert (h1["SiteId"], h1["RevCustomerId"], h1["CustomerPoolId"], h1["EffectiveDate"]) == (43, "4711", 7, later)
    assert (h3["SiteId"], h3["CustomerRatePlanId"]) == (44, None)  # 0 = none
    assert {h["BulkChangeId"] for h in history} == {bulk_id} and {h["TenantId"] for h in history} == {4}
    assert {h["DeviceChangeId"] for h in history} == {changes_[i]["Id"] for i in got}
