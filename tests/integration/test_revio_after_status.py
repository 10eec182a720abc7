"""Rev.io after a status change, with Jasper as the carrier: the Rev.io service and its service
products are created once the carrier change succeeded, their ids are stored, a Rev.io failure is
REV_IO_FAILED without undoing the carrier change, and a task that dies midway and is retried never
creates a second service or product for the same device change."""
import pytest
from sqlalchemy import select

from bulkchange import processing
from bulkchange.carriers.revio import RevioClient
from bulkchange.db import device_changes
from bulkchange.db import schema as t
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from tests.integration.conftest import KEY as JASPER_KEY

REV_USER, REV_CLIENT, REV_PASSWORD, REV_KEY = "svc", "altaworx", "rev-pass-Secret-1", "apim-key-Secret-2"
REV_SERVICE = {"RevCustomerId": "4711", "ProviderId": 3, "ServiceTypeId": 8, "UsagePlanGroupId": 2}
PRODUCTS = {"RevCustomerId": "4711", "ProviderId": 3, "RevProductIdList": [501, 502], "RateList": ["9.99", "1.5"]}


class Crash(BaseException):
    """The worker process dying (not an Exception: nothing in the pipeline catches it)."""


@pytest.fixture
def revio(simulator):
    control = simulator.control("revio")
    control.reset()
    control.set_accounts({f"{REV_USER}@{REV_CLIENT}": REV_PASSWORD})
    control.request("PUT", "/subscription_keys", json={REV_CLIENT: REV_KEY})
    control.configure(calls_per_minute=0)
    yield control
    control.reset()


@pytest.fixture
def make_revio(simulator, revio):
    clients = []

    def make(cls=RevioClient):
        client = cls(simulator.url_for("revio"), REV_USER, REV_CLIENT, REV_PASSWORD, REV_KEY,
                     policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.02, max_delay=1)))
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


def run_all(engine, bulk_id, client, revio_client, **kw):
    plan = processing.prepare(engine, bulk_id, batch_size=50)
    for batch in plan.batches:
        processing.process_batch(engine, bulk_id, batch.device_change_ids, client=client, revio_client=revio_client,
                                 **kw)
    return processing.finalize(engine, bulk_id)


def stored(engine):
    with engine.connect() as conn:
        services = conn.execute(select(t.rev_service)).mappings().all()
        products = conn.execute(select(t.rev_service_product)).mappings().all()
        changes = {r.ICCID: r for r in conn.execute(select(t.m2m_device_change))}
        logs = conn.execute(select(t.device_bulk_change_log)).mappings().all()
    return services, products, changes, logs


def assert_exactly_once(revio, fleet, services, products):
    sim_services = revio.request("GET", "/services")
    sim_products = revio.request("GET", "/service_products")
    assert sorted(s["number2"] for s in sim_services) == sorted(fleet.iccids)  # one service per device
    assert len(sim_products) == 2 * len(fleet.iccids)
    assert {(p["service_id"], p["product_id"]) for p in sim_products} == {
        (s["service_id"], pid) for s in sim_services for pid in (501, 502)}
    assert sorted(r["ServiceId"] for r in services) == sorted(s["service_id"] for s in sim_services)
    assert sorted(r["ServiceProductId"] for r in products) == sorted(p["service_product_id"] for p in sim_products)


def test_services_and_products_created_and_stored(amop_engine, fleet_factory, make_client, make_revio, revio):
    fleet = fleet_factory(60)
    bulk_id = fleet.bulk("Suspend", RevService=REV_SERVICE, RevServiceProductCreateModel=PRODUCTS)
    summary = run_all(amop_engine, bulk_id, make_client(), make_revio())
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": 60}
    services, products, changes, logs = stored(amop_engine)
    assert_exactly_once(revio, fleet, services, products)
    one = revio.request("GET", "/services", params={"number2": fleet.iccids[0]})[0]
    assert (one["customer_id"], one["provider_id"], one["service_type_id"], one["usage_plan_group_id"]) == (
        4711, 3, 8, 2)
    by_iccid = {r["Number2"]: r for r in services}
    assert by_iccid[fleet.iccids[0]]["DeviceChangeId"] == changes[fleet.iccids[0]].Id
    assert {r["CustomerId"] for r in services} == {"4711"} and {r["BulkChangeId"] for r in services} == {bulk_id}
    assert {str(r["Rate"]) for r in products} == {"9.9900", "1.5000"} or {float(r["Rate"]) for r in products} == {
        9.99, 1.5}
    assert "Rev.io service" in changes[fleet.iccids[0]].StatusDetails
    descriptions = {lg["LogEntryDescription"] for lg in logs}
    assert {"Create Rev.io Service: Rev.io API", "Create Rev.io Service Product: Rev.io API",
            "Find Rev.io Services: Rev.io API", "Update Jasper Status: Jasper API"} <= descriptions
    for lg in logs:
        text = f"{lg['RequestText']} {lg['ResponseText']} {lg['ErrorText']}"
        for secret in (REV_PASSWORD, REV_KEY, JASPER_KEY, "Basic "):
            assert secret not in text


def test_no_rev_block_means_no_rev_call(amop_engine, fleet_factory, make_client, make_revio, revio):
    fleet = fleet_factory(5)
    bulk_id = fleet.bulk("Suspend", RevService={**REV_SERVICE, "CreateRevService": False})
    assert run_all(amop_engine, bulk_id, make_client(), make_revio())["counts"] == {"PROCESSED": 5}
    assert revio.calls() == []


def test_crash_after_rev_work_then_retry_creates_nothing_twice(amop_engine, fleet_factory, make_client,
                                                               make_revio, revio, monkeypatch):
    """The task dies after every Rev.io call but before recording anything; the retry finds the
    devices in flight, confirms the carrier status and finds the Rev.io services and products."""
    fleet = fleet_factory(40)
    bulk_id = fleet.bulk("Suspend", RevService=REV_SERVICE, RevServiceProductCreateModel=PRODUCTS)
    plan = processing.prepare(amop_engine, bulk_id, batch_size=100)
    ids = plan.batches[0].device_change_ids
    real = device_changes.record_results

    def die(*a, **kw):
        raise Crash()

    monkeypatch.setattr(device_changes, "record_results", die)
    with pytest.raises(Crash):
        processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), revio_client=make_revio())
    monkeypatch.setattr(device_changes, "record_results", real)
    assert len(revio.request("GET", "/services")) == 40
    services, _, changes, _ = stored(amop_engine)
    assert services == [] and {c.Status for c in changes.values()} == {"PROCESSING"}

    processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), revio_client=make_revio())
    assert processing.finalize(amop_engine, bulk_id)["counts"] == {"PROCESSED": 40}
    services, products, changes, _ = stored(amop_engine)
    assert_exactly_once(revio, fleet, services, products)
    assert len(revio.calls(method="POST", path_contains="/Services")) == 40
    assert len(revio.calls(method="POST", path_contains="/ServiceProduct")) == 80
    assert all("Rev.io service" in c.StatusDetails and "found" in c.StatusDetails for c in changes.values())


def test_crash_midway_through_rev_io_then_retry(amop_engine, fleet_factory, make_client, make_revio, revio):
    """The task dies in the middle of the Rev.io work, twice: first before the 12th service product
    (the 6th device has one of its two products), then, on the retry, right after Rev.io created the
    3rd new service (its id never reached us). The last retry completes every device with exactly
    one service and one product per product id."""
    fleet = fleet_factory(20)
    bulk_id = fleet.bulk("Suspend", RevService=REV_SERVICE, RevServiceProductCreateModel=PRODUCTS)
    plan = processing.prepare(amop_engine, bulk_id, batch_size=100)
    ids = plan.batches[0].device_change_ids

    def dying(service_at=None, product_at=None):
        counts = {"service": 0, "product": 0}

        class Dying(RevioClient):
            def create_service(self, body, *, log=None):
                sid = super().create_service(body, log=log)
                counts["service"] += 1
                if counts["service"] == service_at:
                    raise Crash()
                return sid

            def create_service_product(self, body, *, log=None):
                counts["product"] += 1
                if counts["product"] == product_at:
                    raise Crash()
                return super().create_service_product(body, log=log)

        return make_revio(Dying)

    with pytest.raises(Crash):
        processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), revio_client=dying(product_at=12),
                                 max_parallel=1)
    assert len(revio.request("GET", "/services")) == 6
    assert len(revio.request("GET", "/service_products")) == 11
    with pytest.raises(Crash):
        processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), revio_client=dying(service_at=3),
                                 max_parallel=1)
    assert len(revio.request("GET", "/services")) == 9
    assert len(revio.request("GET", "/service_products")) == 12 + 4  # device 6 completed, devices 7 and 8
    processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), revio_client=make_revio())
    assert processing.finalize(amop_engine, bulk_id)["counts"] == {"PROCESSED": 20}
    services, products, _, _ = stored(amop_engine)
    assert_exactly_once(revio, fleet, services, products)
    assert len(revio.calls(method="POST", path_contains="/Services", status=201)) == 20


def test_rev_io_failure_keeps_the_carrier_change(amop_engine, fleet_factory, make_client, make_revio, revio):
    fleet = fleet_factory(10)
    bad = fleet.iccids[:3]
    revio.configure(fail_iccids={i: 400 for i in bad})
    bulk_id = fleet.bulk("Suspend", RevService=REV_SERVICE)
    summary = run_all(amop_engine, bulk_id, make_client(), make_revio())
    assert summary["status"] == "PROCESSED_WITH_ERRORS"
    assert summary["counts"] == {"PROCESSED": 7, "REV_IO_FAILED": 3}
    services, products, changes, logs = stored(amop_engine)
    assert len(services) == 7 and products == []
    with amop_engine.connect() as conn:
        devices = dict(conn.execute(select(t.device.c.ICCID, t.device.c.Status)).all())
        history = {r[0] for r in conn.execute(select(t.device_status_history.c.ICCID))}
    for iccid in bad:
        assert devices[iccid] == "DEACTIVATED" and iccid in history  # the carrier change stays recorded
        assert changes[iccid].Status == "REV_IO_FAILED"
        assert "carrier change applied" in changes[iccid].StatusDetails
        assert "Create Rev.io Service refused by carrier" not in changes[iccid].StatusDetails
        assert "Create Rev.io Service failed" in changes[iccid].StatusDetails
    assert any(lg["HasErrors"] and lg["LogEntryDescription"].startswith("Create Rev.io Service") for lg in logs)


def test_every_device_rev_io_failed_is_not_a_failed_bulk_change(amop_engine, fleet_factory, make_client):
    fleet = fleet_factory(4)
    bulk_id = fleet.bulk("Suspend", RevService=REV_SERVICE)
    summary = run_all(amop_engine, bulk_id, make_client(), None, revio_problem="no connection revio_sp_1")
    assert summary["status"] == "PROCESSED_WITH_ERRORS" and summary["counts"] == {"REV_IO_FAILED": 4}
    _, _, changes, _ = stored(amop_engine)
    assert all("no connection revio_sp_1" in c.StatusDetails for c in changes.values())


def test_unusable_rev_block_is_rejected_before_the_carrier_call(amop_engine, fleet_factory, make_client,
                                                                make_revio, jasper, revio):
    fleet = fleet_factory(3)
    bulk_id = fleet.bulk("Suspend", iccids=fleet.iccids[:1], RevService={"ProviderId": 3})
    extra_rows = [(fleet.iccids[1], {"RevCustomerId": 1, "ProviderId": 3, "RevProductIdList": [1, 2],
                                     "RateList": [1]}),
                  (fleet.iccids[2], {"RevCustomerId": "abc", "ProviderId": 3})]
    import json

    with amop_engine.begin() as conn:
        conn.execute(t.m2m_device_change.insert(), [
            {"BulkChangeId": bulk_id, "ICCID": i, "Status": "NEW", "IsProcessed": False, "ServiceProviderId": 1,
             "TenantId": 1, "ChangeRequest": json.dumps({"UpdateStatus": "Suspend", "RevService": block})}
            for i, block in extra_rows])
    summary = run_all(amop_engine, bulk_id, make_client(), make_revio())
    assert summary["counts"] == {"ERROR": 3}
    _, _, changes, _ = stored(amop_engine)
    assert "RevCustomerId is missing" in changes[fleet.iccids[0]].StatusDetails
    assert "2 products but RateList 1 rates" in changes[fleet.iccids[1]].StatusDetails
    assert "customer id must be a whole number" in changes[fleet.iccids[2]].StatusDetails
    assert jasper.calls(method="PUT") == [] and revio.calls() == []


def test_rev_io_dates_are_the_utc_day_of_their_instant_across_midnight_utc(amop_engine, fleet_factory, make_client,
                                                                          make_revio, jasper, revio):
    """EffectiveDate / ActivatedDate written in a +05:00 and a -08:00 zone, their local date on the other side
    of midnight UTC: Rev.io gets the UTC day in AMOP's form (``yyyy-MM-ddZ``), not the local date and not
    the text as typed; a date that does not exist is refused before the carrier call."""
    import json
    from datetime import datetime, timedelta, timezone

    fleet = fleet_factory(3)
    base = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0) + timedelta(days=2)
    cases = {fleet.iccids[0]: (base.replace(hour=22), timezone(timedelta(hours=5))),   # local: the next day
             fleet.iccids[1]: (base.replace(hour=0), timezone(timedelta(hours=-8)))}   # local: the day before
    bulk_id = fleet.bulk("Suspend", iccids=[])
    rows = []
    for iccid, (when, zone) in cases.items():
        local = when.astimezone(zone)
        assert local.date() != when.date()
        rows.append((iccid, {**REV_SERVICE, "Prorate": True, "EffectiveDate": local.isoformat(),
                             "ActivatedDate": local.isoformat()}))
    rows.append((fleet.iccids[2], {**REV_SERVICE, "Prorate": True, "EffectiveDate": "2026-02-30"}))
    with amop_engine.begin() as conn:
        conn.execute(t.m2m_device_change.insert(), [
            {"BulkChangeId": bulk_id, "ICCID": i, "Status": "NEW", "IsProcessed": False, "ServiceProviderId": 1,
             "TenantId": 1, "ChangeRequest": json.dumps({"UpdateStatus": "Suspend", "RevService": block})}
            for i, block in rows])
    summary = run_all(amop_engine, bulk_id, make_client(), make_revio())
    assert summary["counts"] == {"PROCESSED": 2, "ERROR": 1}
    _, _, changes, _ = stored(amop_engine)
    assert "EffectiveDate '2026-02-30' is not a date" in changes[fleet.iccids[2]].StatusDetails
    assert jasper.calls(method="PUT", iccid=fleet.iccids[2]) == []
    by_iccid = {s["number2"]: s for s in revio.request("GET", "/services")}
    assert set(by_iccid) == set(cases)
    for iccid, (when, _) in cases.items():
        day = when.strftime("%Y-%m-%dZ")
        assert (by_iccid[iccid]["effective_date"], by_iccid[iccid]["activated_date"]) == (day, day)


# --- asynchronous carriers: the Rev.io step runs when reconciliation settles the device ---------------
from tests.integration.test_thingspace_status_update import (  # noqa: E402  (fixtures ts, ts_client)
    bulk as ts_bulk,
    make_fleet as ts_fleet,
    settle_until_done,
    ts,
    ts_client,
)


def test_asynchronous_carrier_gets_its_rev_service_when_settled(amop_engine, ts, ts_client, make_revio, revio,
                                                                monkeypatch):
    """ThingSpace suspends wait as PENDING_CARRIER: no Rev.io call then. When reconciliation settles
    them, the services are created; a settle round that dies before recording is repeated without
    creating anything twice."""
    from bulkchange import reconcile

    iccids = ts_fleet(amop_engine, ts, 12, "active")
    bulk_id = ts_bulk(amop_engine, iccids, "Suspend", RevService=REV_SERVICE)
    plan = processing.prepare(amop_engine, bulk_id, batch_size=50)
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=ts_client,
                                 revio_client=make_revio())
    processing.finalize(amop_engine, bulk_id)
    assert revio.calls() == []  # nothing settled yet: the carrier change has not happened

    import time

    time.sleep(0.5)  # the simulator completes the request after action_delay_s
    real = device_changes.record_results

    def die(*a, **kw):
        raise Crash()

    monkeypatch.setattr(device_changes, "record_results", die)
    with pytest.raises(Crash):
        reconcile.settle_bulk(amop_engine, bulk_id, ts_client, revio_client=make_revio())
    monkeypatch.setattr(device_changes, "record_results", real)
    assert len(revio.request("GET", "/services")) == 12

    summary = settle_until_done(amop_engine, bulk_id, ts_client, revio_client=make_revio())
    assert summary.settled == {"PROCESSED": 12} and summary.bulk_status == "PROCESSED"
    assert sorted(s["number2"] for s in revio.request("GET", "/services")) == sorted(iccids)
    assert len(revio.calls(method="POST", path_contains="/Services")) == 12
    services, _, changes, _ = stored(amop_engine)
    assert sorted(r["Number2"] for r in services) == sorted(iccids)
    assert all("Rev.io service" in c.StatusDetails for c in changes.values())
