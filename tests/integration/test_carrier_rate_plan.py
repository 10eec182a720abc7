"""CarrierRatePlanChange on Jasper and ThingSpace through the core, against the simulators over
HTTP: the carrier's state, the Device rows and the log rows after each run."""
import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update

from bulkchange import processing, reconcile
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, DeviceChangeStatus
from tests.integration.conftest import KEY
from tests.integration.test_thingspace_status_update import (  # noqa: F401  (fixtures)
    SECRETS,
    make_fleet,
    settle_until_done,
    ts,
    ts_client,
)


def rate_plan_bulk(engine, iccids, sp_id=1, **request):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                    requests=[{"ICCID": i, "ChangeRequest": {"CarrierRatePlanUpdate": dict(request)}}
                                              for i in iccids])


def run(engine, bulk_id, client, batch_size=50):
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client)
    return processing.finalize(engine, bulk_id)


def changes(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes.load_device_changes(conn, bulk)}


def devices(engine):
    d = t.device
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(d.c.Id, d.c.ICCID, d.c.CarrierRatePlan, d.c.CommunicationPlan,
                                                        d.c.Status))}


def logs(engine, bulk_id):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return conn.execute(select(lg.c.M2MDeviceChangeId, lg.c.LogEntryDescription, lg.c.RequestText,
                                   lg.c.ResponseText, lg.c.HasErrors).where(lg.c.BulkChangeId == bulk_id)).all()


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ---------------------------------------------------------------- Jasper
def test_jasper_plan_change_updates_carrier_device_and_logs(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(20)
    with amop_engine.begin() as conn:
        conn.execute(update(t.jasper_carrier_rate_plan).where(t.jasper_carrier_rate_plan.c.RatePlanCode == "P-500")
                     .values(CommunicationPlan="CP-DATA"))
    jasper.add_communication_plans(["CP-DATA"])  # the carrier account has the plan our DB names
    unknown_plan = fleet.iccids[-1]  # asks for a plan the provider does not have
    requests = [{"ICCID": i, "ChangeRequest": {"CarrierRatePlan": "P-500"}} for i in fleet.iccids[:-1]]
    requests.append({"ICCID": unknown_plan, "ChangeRequest": {"carrierRatePlan": "NO-SUCH-PLAN"}})
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                       requests=requests)
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"PROCESSED": 19, "ERROR": 1} and summary["status"] == "PROCESSED_WITH_ERRORS"
    dcs = changes(amop_engine, bulk_id)
    assert "NO-SUCH-PLAN" in dcs[unknown_plan].status_details
    rows = devices(amop_engine)
    for iccid in fleet.iccids[:-1]:
        assert (rows[iccid].CarrierRatePlan, rows[iccid].CommunicationPlan) == ("P-500", "CP-DATA")
        carrier = jasper.device(iccid)
        assert (carrier["ratePlan"], carrier["communicationPlan"]) == ("P-500", "CP-DATA")
    assert rows[unknown_plan].CarrierRatePlan == "P-1G" and jasper.device(unknown_plan)["ratePlan"] == "P-1G"
    puts = jasper.calls(method="PUT")
    assert len(puts) == 19 and all(c["body"] == {"ratePlan": "P-500", "communicationPlan": "CP-DATA"} for c in puts)
    entries = logs(amop_engine, bulk_id)
    api = [e for e in entries if e.LogEntryDescription == "Update Jasper Rate Plan: Jasper API"]
    assert len(api) == 19 and not any(e.HasErrors for e in api)
    assert not any(KEY in (e.RequestText or "") + (e.ResponseText or "") for e in entries)


def test_jasper_plan_unknown_to_the_carrier_account_is_refused_before_any_change(amop_engine, fleet_factory,
                                                                                  make_client, jasper):
    """Our DB lists P-0 but the carrier account does not have it: the account's rate plans (paged
    ``GET /rateplans``) are read once and the change is refused with the valid names, nothing sent."""
    fleet = fleet_factory(3)
    jasper.set_rate_plans([{"name": f"CC-{i:02d}", "dataMB": i, "baseRate": 1} for i in range(60)] +
                          [{"name": "P-500", "dataMB": 500, "baseRate": 1.0}, {"name": "P-1G", "dataMB": 1024,
                                                                                 "baseRate": 4.0}])
    summary = run(amop_engine, rate_plan_bulk(amop_engine, fleet.iccids, CarrierRatePlan="P-0"), make_client())
    assert summary["counts"] == {"ERROR": 3} and summary["status"] == "ERROR"
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {"P-1G"}
    for dc in changes(amop_engine, summary["bulk_change_id"]).values():
        assert "'P-0' is not a rate plan of the carrier account" in dc.status_details
        assert "CC-59" in dc.status_details and "P-500" in dc.status_details  # from the second page too
    assert jasper.calls(method="PUT") == []
    listings = jasper.calls(path_contains="/rateplans")
    assert [c["query"] for c in listings] == ["pageNumber=1&pageSize=50", "pageNumber=2&pageSize=50"]


def test_jasper_plan_refused_by_the_carrier_is_api_failed_and_device_keeps_its_plan(amop_engine, fleet_factory,
                                                                                   make_client, jasper):
    """When the listing cannot be read, the carrier's own check still refuses the unknown plan."""
    fleet = fleet_factory(3)
    jasper.set_rate_plans([{"name": "P-1G", "dataMB": 1024, "baseRate": 4.0}])
    jasper.configure(fail_iccids={}, error_rate=0.0)
    client = make_client(attempts=1)
    client.rate_plan_names = lambda **kw: (_ for _ in ()).throw(processing_error())
    summary = run(amop_engine, rate_plan_bulk(amop_engine, fleet.iccids, CarrierRatePlan="P-0"), client)
    assert summary["counts"] == {"API_FAILED": 3} and summary["status"] == "ERROR"
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {"P-1G"}
    for dc in changes(amop_engine, summary["bulk_change_id"]).values():
        assert "Invalid rate plan" in dc.status_details and "10000013" in dc.status_details


def processing_error():
    from bulkchange.carriers.base import TransientError

    return TransientError("listing unavailable (test)")


def test_jasper_future_dated_change_waits_for_its_date_then_settles(amop_engine, fleet_factory, make_client, jasper,
                                                                    monkeypatch):
    fleet = fleet_factory(4)
    jasper.add_communication_plans(["CP-SUSP"])
    when = datetime.now(timezone.utc) + timedelta(hours=1)  # far enough that no busy machine reaches it
    bulk_id = rate_plan_bulk(amop_engine, fleet.iccids, CarrierRatePlan="P-0", CommPlan="CP-SUSP",
                             EffectiveDate=iso(when))
    client = make_client()
    summary = run(amop_engine, bulk_id, client)
    assert summary["counts"] == {"PENDING_CARRIER": 4} and summary["status"] == "WAITING_FOR_CARRIER"
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {"P-1G"}  # not before the carrier has it
    puts = jasper.calls(method="PUT")
    assert len(puts) == 4 and all(c["body"]["effectiveDate"].startswith(when.strftime("%Y-%m-%dT%H:%M:%S"))
                                  for c in puts)
    assert {e["status"] for e in jasper.request("GET", "/scheduled_edits")} == {"Pending"}
    # before the date: nothing to ask the carrier, and the polls are not counted against max_checks
    for _ in range(3):
        s = reconcile.settle_bulk(amop_engine, bulk_id, client, max_checks=2)
        assert s.still_waiting == 4 and s.not_due == 4 and s.settled == {}
    # (the only read so far is the batch's rate plan listing, before the edits)
    assert [c["path"] for c in jasper.calls(method="GET")] == ["/jasper/rws/api/v1/rateplans"]
    assert {dc.carrier_check_count for dc in changes(amop_engine, bulk_id).values()} == {0}
    # the date comes: the carrier applies its scheduled edits and our clock reads a time after it
    assert jasper.run_scheduled(2 * 3600) == 4
    from bulkchange.changes.carrier_rate_plan import jasper as carrier_rate_plan

    real_now = carrier_rate_plan.utcnow
    monkeypatch.setattr(carrier_rate_plan, "utcnow", lambda: real_now() + timedelta(hours=2))
    s = reconcile.settle_bulk(amop_engine, bulk_id, client, max_checks=2)
    assert s.settled == {"PROCESSED": 4} and s.bulk_status == "PROCESSED"
    for iccid, row in devices(amop_engine).items():
        assert (row.CarrierRatePlan, row.CommunicationPlan) == ("P-0", "CP-SUSP")
        assert jasper.device(iccid)["ratePlan"] == "P-0"
    assert {c["body"].get("ratePlan") for c in jasper.calls(method="PUT")} == {"P-0"}  # nothing sent again


def test_jasper_effective_date_beyond_180_days_is_refused(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(2)
    far = datetime.now(timezone.utc) + timedelta(days=200)
    summary = run(amop_engine, rate_plan_bulk(amop_engine, fleet.iccids, CarrierRatePlan="P-0",
                                              EffectiveDate=iso(far)), make_client())
    assert summary["counts"] == {"ERROR": 2}
    assert all("180 days" in dc.status_details for dc in changes(amop_engine, summary["bulk_change_id"]).values())
    assert jasper.calls() == []


def test_jasper_retry_after_a_crash_never_sends_twice(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(6)
    bulk_id = rate_plan_bulk(amop_engine, fleet.iccids, CarrierRatePlan="P-500")
    plan = processing.prepare(amop_engine, bulk_id, batch_size=10)
    ids = plan.batches[0].device_change_ids
    with amop_engine.begin() as conn:  # the dead attempt sent 3 of them before it could record anything
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, ids, DeviceChangeStatus.PROCESSING, processed_by="dead attempt")
    client = make_client()
    for iccid in fleet.iccids[:3]:
        client.update_rate_plan(iccid, "P-500")
    processing.process_batch(amop_engine, bulk_id, ids, client=client)
    processing.process_batch(amop_engine, bulk_id, ids, client=client)  # and once more: nothing left to do
    assert processing.finalize(amop_engine, bulk_id)["counts"] == {"PROCESSED": 6}
    for iccid in fleet.iccids:
        assert len(jasper.calls(iccid=iccid, method="PUT")) == 1, iccid
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {"P-500"}


# ---------------------------------------------------------------- ThingSpace
def test_thingspace_plan_change_waits_then_updates_device(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 30, "active")
    ts.add_service_plans(["M2M-10GB"])  # the account has the plan (else REQUEST_FAILED._servicePlan_.NotFound)
    bulk_id = rate_plan_bulk(amop_engine, iccids, sp_id=4, CarrierRatePlan="M2M-10GB")
    summary = run(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"PENDING_CARRIER": 30} and summary["status"] == "WAITING_FOR_CARRIER"
    plan_calls = ts.calls(method="PUT", path_contains="/actions/plan")
    assert len(plan_calls) == 1 and plan_calls[0]["body"]["servicePlan"] == "M2M-10GB"
    assert sorted(d["deviceIds"][0]["id"] for d in plan_calls[0]["body"]["devices"]) == sorted(iccids)
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {None}
    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 30} and s.bulk_status == "PROCESSED"
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {"M2M-10GB"}
    assert ts.device(iccids[0])["servicePlan"] == "M2M-10GB"
    texts = " ".join((e.RequestText or "") + (e.ResponseText or "") for e in logs(amop_engine, bulk_id))
    assert "Update ThingSpace Rate Plan: ThingSpace API" in {e.LogEntryDescription for e in logs(amop_engine, bulk_id)}
    assert not any(x in texts for x in SECRETS)


def test_thingspace_plan_the_account_does_not_have_is_refused_before_any_call(amop_engine, ts, ts_client):
    """The account's service plans (``GET /m2m/v1/plans/{aname}``) are read once; a change to a plan
    not among them is refused with the valid names and nothing is sent."""
    iccids = make_fleet(amop_engine, ts, 3, "active")
    ts.add_service_plans(["M2M-10GB"])
    bulk_id = rate_plan_bulk(amop_engine, iccids, sp_id=4, CarrierRatePlan="M2M-99GB")
    summary = run(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"ERROR": 3} and summary["status"] == "ERROR"
    for dc in changes(amop_engine, bulk_id).values():
        assert "'M2M-99GB' is not a rate plan of the carrier account" in dc.status_details
        assert "M2M-10GB" in dc.status_details and "M2M-1GB" in dc.status_details
    assert ts.calls(method="PUT") == []
    assert len(ts.calls(method="GET", path_contains="/m2m/v1/plans/")) == 1


def test_thingspace_suspended_lines_are_refused(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 4, "active")
    with amop_engine.begin() as conn:  # our inventory knows the first one is suspended
        conn.execute(update(t.device).where(t.device.c.ICCID == iccids[0]).values(Status="suspend"))
    ts.seed_devices([{"iccid": iccids[1], "state": "suspend", "accountName": "0000000000-00001"}])  # we do not
    bulk_id = rate_plan_bulk(amop_engine, iccids, sp_id=4, CarrierRatePlan="M2M-1GB")
    summary = run(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"ERROR": 1, "PENDING_CARRIER": 3}
    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 2, "API_FAILED": 1} and s.bulk_status == "PROCESSED_WITH_ERRORS"
    dcs = changes(amop_engine, bulk_id)
    assert "suspended" in dcs[iccids[0]].status_details
    assert "DeviceState.Invalid" in dcs[iccids[1]].status_details
    rows = devices(amop_engine)
    assert rows[iccids[1]].CarrierRatePlan is None and rows[iccids[2]].CarrierRatePlan == "M2M-1GB"
    assert ts.device(iccids[1])["servicePlan"] != "M2M-1GB"


def test_thingspace_refuses_effective_date_and_missing_plan(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 2, "active")
    later = iso(datetime.now(timezone.utc) + timedelta(days=3))
    b1 = rate_plan_bulk(amop_engine, iccids, sp_id=4, CarrierRatePlan="M2M-1GB", EffectiveDate=later)
    assert run(amop_engine, b1, ts_client)["counts"] == {"ERROR": 2}
    assert all("EffectiveDate" in dc.status_details for dc in changes(amop_engine, b1).values())
    b2 = rate_plan_bulk(amop_engine, iccids, sp_id=4, CommPlan="x")
    assert run(amop_engine, b2, ts_client)["counts"] == {"ERROR": 2}
    assert all("CarrierRatePlan is required" in dc.status_details for dc in changes(amop_engine, b2).values())
    assert ts.calls(method="PUT") == []


def test_thingspace_plan_changes_are_limited_to_four_a_month(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 1, "active")
    ts.add_service_plans(["A", "B", "C", "D", "E"])  # the account has every plan named
    outcomes = []
    for plan in ("A", "B", "C", "D", "E"):
        bulk_id = rate_plan_bulk(amop_engine, iccids, sp_id=4, CarrierRatePlan=plan)
        run(amop_engine, bulk_id, ts_client)
        outcomes.append(settle_until_done(amop_engine, bulk_id, ts_client).bulk_status)
    assert outcomes == ["PROCESSED"] * 4 + ["ERROR"]
    assert devices(amop_engine)[iccids[0]].CarrierRatePlan == "D"


def test_two_checkers_settling_the_same_devices_record_them_once(amop_engine, fleet_factory, make_client, jasper,
                                                                 monkeypatch):
    """wait_for_carrier and device_status_reconcile may check the same waiting devices at once: the
    one that records second finds them settled (compare-and-set) and writes nothing for them."""
    fleet = fleet_factory(3)
    when = datetime.now(timezone.utc) + timedelta(hours=1)
    bulk_id = rate_plan_bulk(amop_engine, fleet.iccids, CarrierRatePlan="P-0", EffectiveDate=iso(when))
    client = make_client()
    assert run(amop_engine, bulk_id, client)["counts"] == {"PENDING_CARRIER": 3}
    jasper.run_scheduled(2 * 3600)
    from bulkchange.changes.carrier_rate_plan import jasper as carrier_rate_plan

    real_now = carrier_rate_plan.utcnow
    monkeypatch.setattr(carrier_rate_plan, "utcnow", lambda: real_now() + timedelta(hours=2))
    other = make_client()
    inner: list = []
    real_get = client.get_device
    first = threading.Lock()  # this checker's reads run in parallel: the other checker runs once

    def get_device(iccid, **kw):  # the other checker runs whole while this one is between read and record
        with first:
            if not inner:
                inner.append(reconcile.settle_bulk(amop_engine, bulk_id, other, max_checks=2))
                inner.append(len(logs(amop_engine, bulk_id)))
        return real_get(iccid, **kw)

    monkeypatch.setattr(client, "get_device", get_device)
    outer = reconcile.settle_bulk(amop_engine, bulk_id, client, max_checks=2)
    assert inner[0].settled == {"PROCESSED": 3}
    assert outer.settled == {}  # found them settled: recorded nothing ...
    assert len(logs(amop_engine, bulk_id)) == inner[1]  # ... not even its reads' log rows
    assert {dc.status for dc in changes(amop_engine, bulk_id).values()} == {DeviceChangeStatus.PROCESSED}


def cross_midnight_bulk(engine, iccids):
    """A rate plan change to P-0 of two devices, two days ahead, each EffectiveDate written in a zone
    where its local date is on the other side of midnight UTC: ``(bulk_id, {iccid: (instant in UTC,
    zone written in)})``."""
    base = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0) + timedelta(days=2)
    cases = {iccids[0]: (base.replace(hour=22), timezone(timedelta(hours=5))),   # local 03:30 the next day
             iccids[1]: (base.replace(hour=0), timezone(timedelta(hours=-8)))}   # local 16:30 the day before
    requests = []
    for iccid, (when, zone) in cases.items():
        local = when.astimezone(zone)
        assert local.date() != when.date()
        requests.append({"ICCID": iccid, "ChangeRequest": {"CarrierRatePlan": "P-0",
                                                           "EffectiveDate": local.isoformat()}})
    with engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                       requests=requests)
    return bulk_id, cases


def test_jasper_effective_date_with_an_offset_is_sent_as_the_same_instant(amop_engine, fleet_factory, make_client,
                                                                          jasper):
    """EffectiveDate written in +05:00 and -08:00 zones, on the other side of midnight UTC from its
    local date: the carrier gets the same instant (in UTC) and schedules it there, not hours off."""
    fleet = fleet_factory(2)
    bulk_id, cases = cross_midnight_bulk(amop_engine, fleet.iccids)
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"PENDING_CARRIER": 2}
    for iccid, (when, _) in cases.items():
        [put] = jasper.calls(iccid=iccid, method="PUT")
        assert put["body"]["effectiveDate"] == when.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
        [edit] = jasper.scheduled_edits(iccid)
        assert edit["effectiveDate"] == when.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_jasper_future_dated_change_across_midnight_utc_lands_at_its_instant(amop_engine, fleet_factory, make_client,
                                                                           jasper, monkeypatch):
    """A future-dated plan change written in a +05:00 and a -08:00 zone, its local date on the other
    side of midnight UTC: sent with its offset (+00:00, Control Center's published form), nothing runs
    at the carrier before the instant, it lands when the carrier's clock passes it, and it settles
    once our clock does too (both clocks moved, no sleep)."""
    from bulkchange.changes.carrier_rate_plan import jasper as carrier_rate_plan

    fleet = fleet_factory(2)
    bulk_id, cases = cross_midnight_bulk(amop_engine, fleet.iccids)
    client = make_client()
    assert run(amop_engine, bulk_id, client)["counts"] == {"PENDING_CARRIER": 2}
    for iccid, (when, _) in cases.items():
        [put] = jasper.calls(iccid=iccid, method="PUT")
        assert put["body"]["effectiveDate"] == when.strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
    real_now = carrier_rate_plan.utcnow
    for iccid, (when, _) in sorted(cases.items(), key=lambda kv: kv[1][0]):
        ahead = (when - datetime.now(timezone.utc)).total_seconds()
        # ten minutes before the instant: nothing is due at the carrier
        assert jasper.run_scheduled(ahead - 600) == 0
        assert jasper.device(iccid)["ratePlan"] == "P-1G"
        # ten minutes after: this device's edit (only) lands
        assert jasper.run_scheduled(ahead + 600) == 1
        assert jasper.device(iccid)["ratePlan"] == "P-0"
        # our clock: before the instant the change is not due; after it, it settles
        naive = when.replace(tzinfo=None)
        monkeypatch.setattr(carrier_rate_plan, "utcnow", lambda: naive - timedelta(minutes=10))
        assert reconcile.settle_bulk(amop_engine, bulk_id, client, max_checks=2).settled == {}
        monkeypatch.setattr(carrier_rate_plan, "utcnow", lambda: naive + timedelta(minutes=10))
        reconcile.settle_bulk(amop_engine, bulk_id, client, max_checks=2)
        assert changes(amop_engine, bulk_id)[iccid].status == DeviceChangeStatus.PROCESSED
        assert devices(amop_engine)[iccid].CarrierRatePlan == "P-0"
    monkeypatch.setattr(carrier_rate_plan, "utcnow", real_now)
    assert {dc.status for dc in changes(amop_engine, bulk_id).values()} == {DeviceChangeStatus.PROCESSED}
