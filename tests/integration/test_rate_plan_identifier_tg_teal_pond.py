"""CarrierRatePlanChange on Telegence, Teal and POND, and ChangeICCIDAndIMEI on Telegence, through
the core against the simulators over HTTP: carrier state, Device rows, log rows, rejections with
reasons and no second carrier call for a retried device."""
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from bulkchange import processing, reconcile
from bulkchange.carriers import CarrierSettings, build_client
from bulkchange.carriers.teal import TealClient
from bulkchange.carriers.telegence import TelegenceClient, characteristic
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration
from simulators.teal import make_eid

RATE = ChangeType.CARRIER_RATE_PLAN_CHANGE
IDENT = ChangeType.CHANGE_ICCID_AND_IMEI


def policy():
    return CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.02, max_delay=1))


def add_bulk(engine, sp_id, change_type, rows, portal_type=0):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=change_type, portal_type=portal_type,
                                    requests=rows)


def run(engine, bulk_id, client):
    plan = processing.prepare(engine, bulk_id, batch_size=25)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client)
    return processing.finalize(engine, bulk_id)


def rows_of(engine, table):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(table))}


def logs_of(engine, column, dc_id):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return [r.LogEntryDescription for r in conn.execute(select(lg).where(column == dc_id).order_by(lg.c.Id))]


# --- Telegence -----------------------------------------------------------------------------------
APP, SECRET = "tg-plan-app", "tg-plan-secret-5"


@pytest.fixture
def tg(simulator):
    control = simulator.control("telegence")
    control.reset()
    control.set_accounts({APP: SECRET})
    return control


@pytest.fixture
def tg_client(simulator, tg):
    client = TelegenceClient(simulator.url_for("telegence"), APP, SECRET, policy=policy(), timeout=10)
    yield client
    client.close()


def tg_fleet(engine, control, n, start):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    numbers = {i: f"1470{start + k:07d}" for k, i in enumerate(iccids)}
    control.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "A", "IMEI": "356938035643809"}
                          for i in iccids])
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": "A", "CarrierRatePlan": "IOTSOC1",
                                 "IMEI": "356938035643809"} for i in iccids], sp_id=6, tenant_id=1)
    return iccids, numbers


def test_telegence_rate_plan(amop_engine, tg, tg_client):
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")  # in effect at once (a later date is scheduled)
    iccids, numbers = tg_fleet(amop_engine, tg, 30, 61_000)
    with amop_engine.begin() as conn:  # a device without a line number is refused before any call
        conn.execute(update(t.mobility_device).where(t.mobility_device.c.ICCID == iccids[-1]).values(MSISDN=None))
    rows = [{"ICCID": i, "MSISDN": numbers[i] if n % 2 else None,
             "ChangeRequest": {"CarrierRatePlan": "IOTSOC9" if n % 3 else "IOTSOC7", "EffectiveDate": today}}
            for n, i in enumerate(iccids[:-1])]
    rows.append({"ICCID": iccids[-1], "ChangeRequest": {"CarrierRatePlan": "IOTSOC9"}})
    rows.append({"ICCID": seed.make_iccid(61_900), "ChangeRequest": {}})
    bulk_id = add_bulk(amop_engine, 6, RATE, rows, portal_type=2)
    out = run(amop_engine, bulk_id, tg_client)
    assert out["status"] == "PROCESSED_WITH_ERRORS"
    dcs, devices = rows_of(amop_engine, t.mobility_device_change), rows_of(amop_engine, t.mobility_device)
    for n, i in enumerate(iccids[:-1]):
        want = "IOTSOC9" if n % 3 else "IOTSOC7"
        assert dcs[i].Status == "PROCESSED", dcs[i].StatusDetails
        assert characteristic(tg_client.get_service(numbers[i]), "singleUserCode") == want
        assert devices[i].CarrierRatePlan == want and devices[i].Status == "A"
    assert dcs[iccids[-1]].Status == "ERROR" and "has no MSISDN" in dcs[iccids[-1]].StatusDetails
    assert devices[iccids[-1]].CarrierRatePlan == "IOTSOC1"
    assert "not found for service provider 6" in dcs[seed.make_iccid(61_900)].StatusDetails
    patch = tg.calls(method="PATCH", iccid=iccids[0])[0]
    assert patch["body"]["effectiveDate"] == today
    assert logs_of(amop_engine, t.device_bulk_change_log.c.MobilityDeviceChangeId, dcs[iccids[0]].Id) == [
        "Update Telegence Rate Plan: Telegence API"]
    # a retried device (left PROCESSING) whose line already has the plan is read, not patched again
    before = len(tg.calls(method="PATCH"))
    with amop_engine.begin() as conn:
        conn.execute(update(t.mobility_device_change).where(t.mobility_device_change.c.ICCID == iccids[1])
                     .values(Status="PROCESSING", IsProcessed=False))
    processing.process_batch(amop_engine, bulk_id, [dcs[iccids[1]].Id], client=tg_client)
    assert len(tg.calls(method="PATCH")) == before
    assert rows_of(amop_engine, t.mobility_device_change)[iccids[1]].Status == "PROCESSED"


def test_telegence_future_dated_change_across_midnight_utc_lands_on_its_utc_day(amop_engine, tg, tg_client,
                                                                                monkeypatch):
    """A future-dated plan change written in a +05:00 and a -08:00 zone, its local date on the other side
    of midnight UTC: Telegence takes a date only, so the pipeline sends the UTC day of the instant (not the
    local one); the carrier keeps the line as it is until 00:00 UTC of that day and applies it then, and the
    device change settles once our clock passes it too (both clocks moved, no sleep)."""
    from bulkchange.changes.carrier_rate_plan import telegence as handlers

    iccids, numbers = tg_fleet(amop_engine, tg, 2, 61_500)
    base = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)
    cases = {iccids[0]: ((base + timedelta(days=2)).replace(hour=22), timezone(timedelta(hours=5))),  # local: next day
             iccids[1]: ((base + timedelta(days=4)).replace(hour=0), timezone(timedelta(hours=-8)))}  # local: day before
    rows = []
    for iccid, (when, zone) in cases.items():
        local = when.astimezone(zone)
        assert local.date() != when.date()
        rows.append({"ICCID": iccid, "ChangeRequest": {"CarrierRatePlan": "IOTSOC9", "EffectiveDate": local.isoformat()}})
    bulk_id = add_bulk(amop_engine, 6, RATE, rows, portal_type=2)
    out = run(amop_engine, bulk_id, tg_client)
    assert out["status"] == "WAITING_FOR_CARRIER" and out["counts"] == {"PENDING_CARRIER": 2}
    for iccid, (when, _) in cases.items():
        [patch] = tg.calls(method="PATCH", iccid=iccid)
        assert patch["body"]["effectiveDate"] == when.strftime("%Y-%m-%d")  # the UTC day, not the local one
        assert characteristic(tg_client.get_service(numbers[iccid]), "singleUserCode") == "IOTSOC1"
    assert len(tg.request("GET", "/pending_changes")) == 2
    for iccid, (when, _) in sorted(cases.items(), key=lambda kv: kv[1][0]):
        day_start = when.replace(hour=0, minute=0)
        ahead = (day_start - datetime.now(timezone.utc)).total_seconds()
        assert tg.run_scheduled(ahead - 600) == 0  # ten minutes before 00:00 UTC of its day: nothing lands
        assert characteristic(tg_client.get_service(numbers[iccid]), "singleUserCode") == "IOTSOC1"
        assert tg.run_scheduled(ahead + 600) == 1  # ten minutes after: this line's change (only) lands
        assert characteristic(tg_client.get_service(numbers[iccid]), "singleUserCode") == "IOTSOC9"
        naive = day_start.replace(tzinfo=None)
        monkeypatch.setattr(handlers, "utcnow", lambda: naive - timedelta(minutes=10))
        assert reconcile.settle_bulk(amop_engine, bulk_id, tg_client, max_checks=2).settled == {}
        monkeypatch.setattr(handlers, "utcnow", lambda: naive + timedelta(minutes=10))
        reconcile.settle_bulk(amop_engine, bulk_id, tg_client, max_checks=2)
        assert rows_of(amop_engine, t.mobility_device_change)[iccid].Status == "PROCESSED"
        assert rows_of(amop_engine, t.mobility_device)[iccid].CarrierRatePlan == "IOTSOC9"
    assert {r.Status for r in rows_of(amop_engine, t.mobility_device_change).values()} == {"PROCESSED"}


def test_telegence_imei_and_sim_change(amop_engine, tg, tg_client):
    iccids, numbers = tg_fleet(amop_engine, tg, 6, 62_000)
    with amop_engine.begin() as conn:
        seed.add_test_references(conn, tenant_id=1)  # the customer rate plan / pool the follow-up names
    new_sim = seed.make_iccid(62_500)
    rows = [{"ICCID": iccids[0], "ChangeRequest": {"NewIMEI": "490154203237518"}},
            {"ICCID": iccids[1], "ChangeRequest": {"NewIMEI": "352099001761481", "AddCustomerRatePlan": True,
                                                   "CustomerRatePlan": "12", "CustomerRatePool": "7"}},
            {"ICCID": iccids[2], "ChangeRequest": {"NewICCID": new_sim}},
            {"ICCID": iccids[3], "ChangeRequest": {"NewIMEI": "490154203237519"}},  # bad Luhn
            {"ICCID": iccids[4], "ChangeRequest": {"NewICCID": iccids[5]}}]  # belongs to another device
    bulk_id = add_bulk(amop_engine, 6, IDENT, rows, portal_type=2)
    out = run(amop_engine, bulk_id, tg_client)
    assert out["status"] == "PROCESSED_WITH_ERRORS"
    dcs = rows_of(amop_engine, t.mobility_device_change)
    with amop_engine.connect() as conn:
        devices = {r.MSISDN: r for r in conn.execute(select(t.mobility_device))}
    line0 = tg_client.get_service(numbers[iccids[0]])
    assert characteristic(line0, "IMEI") == "490154203237518"
    assert tg.calls(method="PATCH", iccid=iccids[0])[0]["body"]["serviceCharacteristic"] == [
        {"name": "IMEI", "value": "490154203237518"}, {"name": "reasonCode", "value": "CUST_OWN_EQU"},
        {"name": "technologyType", "value": "LTE"}]
    assert devices[numbers[iccids[0]]].IMEI == "490154203237518"
    assert devices[numbers[iccids[1]]].IMEI == "352099001761481"
    # the legacy follow-up step after the change: the customer rate plan / pool asked with it
    assert (devices[numbers[iccids[1]]].CustomerRatePlanId, devices[numbers[iccids[1]]].CustomerPoolId) == (12, 7)
    assert (devices[numbers[iccids[0]]].CustomerRatePlanId, devices[numbers[iccids[0]]].CustomerPoolId) == (None, None)
    # the SIM moved on the same Device row; the device change keeps the ICCID it was asked for
    assert characteristic(tg_client.get_service(numbers[iccids[2]]), "sim") == new_sim
    assert devices[numbers[iccids[2]]].ICCID == new_sim and dcs[iccids[2]].Status == "PROCESSED"
    assert dcs[iccids[3]].Status == "ERROR" and "Luhn" in dcs[iccids[3]].StatusDetails
    assert dcs[iccids[4]].Status == "ERROR" and "already exists." in dcs[iccids[4]].StatusDetails
    assert tg.calls(method="PATCH", iccid=iccids[3]) == [] and tg.calls(method="PATCH", iccid=iccids[4]) == []


# --- Teal ----------------------------------------------------------------------------------------
KEY, TEAL_SECRET = "teal-plan-key", "teal-plan-secret-3"


@pytest.fixture
def teal(simulator):
    control = simulator.control("teal")
    control.reset()
    control.set_accounts({KEY: TEAL_SECRET})
    control.configure(operation_delay_s=0.2, known_plans=["plan-0001", "plan-0002"])
    yield control
    control.configure(known_plans=[])


def test_teal_assign_plan_settles_through_reconciliation(amop_engine, teal, simulator):
    iccids = [seed.make_iccid(63_000 + i) for i in range(12)]
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "ONLINE"} for i in iccids])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=12, name="teal", integration=Integration.TEAL, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "EID": make_eid(i) if n != 11 else None, "Status": "ONLINE",
                                 "CarrierRatePlan": "plan-0001"} for n, i in enumerate(iccids)], sp_id=12, tenant_id=1)
    client = TealClient(simulator.url_for("teal"), KEY, TEAL_SECRET, policy=policy(), timeout=10)
    rows = [{"ICCID": i, "EID": make_eid(i) if n % 2 and n != 11 else None,
             "ChangeRequest": {"PlanUuid": "plan-0002" if n != 10 else "plan-9999", "CarrierRatePlan": "Global 2GB"}}
            for n, i in enumerate(iccids)]
    bulk_id = add_bulk(amop_engine, 12, RATE, rows)
    out = run(amop_engine, bulk_id, client)
    assert out["status"] == "WAITING_FOR_CARRIER"
    for _ in range(50):
        summary = reconcile.settle_bulk(amop_engine, bulk_id, client)
        if summary.still_waiting == 0:
            break
        time.sleep(0.1)
    assert summary.bulk_status == "PROCESSED_WITH_ERRORS"
    dcs, devices = rows_of(amop_engine, t.m2m_device_change), rows_of(amop_engine, t.device)
    for i in iccids[:10]:
        assert dcs[i].Status == "PROCESSED", dcs[i].StatusDetails
        assert teal.device(i)["planUuid"] == "plan-0002"
        assert devices[i].CarrierRatePlan == "Global 2GB" and devices[i].Status == "ONLINE"
    # a plan the account does not have (GET /plans) is refused before any call, with the valid uuids
    assert dcs[iccids[10]].Status == "ERROR", dcs[iccids[10]].StatusDetails
    assert "PlanUuid 'plan-9999' is not a rate plan of the carrier account (valid: plan-0001, plan-0002, plan-0003)" \
        in dcs[iccids[10]].StatusDetails
    sent = [e["eid"] for c in teal.calls(method="POST", path_contains="assign-plan") for e in c["body"]["entries"]]
    assert make_eid(iccids[10]) not in sent and len(sent) == 10
    assert len(teal.calls(method="GET", path_contains="/plans")) == 1  # read once for the batch
    assert devices[iccids[10]].CarrierRatePlan == "plan-0001" and teal.device(iccids[10])["planUuid"] == "plan-0001"
    assert dcs[iccids[11]].Status == "ERROR" and "EID" in dcs[iccids[11]].StatusDetails
    assert logs_of(amop_engine, t.device_bulk_change_log.c.M2MDeviceChangeId, dcs[iccids[0]].Id) == [
        "Teal Assign Plan: Teal API", "Teal Operation Result: Teal API"]
    client.close()


# --- POND ----------------------------------------------------------------------------------------
POND_USER, POND_SECRET = "pond-plan", "pond-plan-secret-1"


def test_pond_rate_plan_package_flow_without_touching_services(amop_engine, simulator):
    pond = simulator.control("pond")
    pond.reset()
    simulator.set_account("pond", POND_USER, POND_SECRET)
    iccids = [seed.make_iccid(64_000 + i) for i in range(20)]
    # half suspended (services off): a plan change must not switch them on
    pond.seed_devices([{"iccid": i, "serviceStatus": "DISABLED" if n % 2 else "ENABLED",
                        "packages": [{"packageTypeId": "101", "status": "ACTIVE"}]} for n, i in enumerate(iccids)])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=13, name="pond", integration=Integration.POND, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "SUSPENDED" if n % 2 else "ACTIVE", "CarrierRatePlan": "101"}
                                for n, i in enumerate(iccids)], sp_id=13, tenant_id=1)
    client = build_client(Integration.POND, CarrierSettings(simulator.url_for("pond"), POND_USER, POND_SECRET,
                                                            {"distributor_id": "1001"}), policy=policy())
    bulk_id = add_bulk(amop_engine, 13, RATE, [{"ICCID": i, "ChangeRequest": {"RatePlanId": 102}} for i in iccids])
    out = run(amop_engine, bulk_id, client)
    assert out["status"] == "PROCESSED"
    devices = rows_of(amop_engine, t.device)
    for n, i in enumerate(iccids):
        sim = pond.device(i)
        live = [p for p in sim["packages"] if p["status"] == "ACTIVE"]
        assert [p["packageTypeId"] for p in live] == ["102"]
        assert sim["serviceStatus"] == ("DISABLED" if n % 2 else "ENABLED")
        assert devices[i].CarrierRatePlan == "102" and devices[i].Status == ("SUSPENDED" if n % 2 else "ACTIVE")
    with amop_engine.connect() as conn:
        saved = conn.execute(select(t.pond_device_carrier_rate_plan.c.ICCID, t.pond_device_carrier_rate_plan.c.Status,
                                    t.pond_device_carrier_rate_plan.c.PackageTypeId)).all()
    assert sorted((s.PackageTypeId, s.Status) for s in saved if s.ICCID == iccids[0]) == [
        ("101", "TERMINATED"), ("102", "ACTIVE")]
    assert pond.calls(path_contains="/services/status") == []
    # run again as if the task died before recording: nothing is added twice
    adds = len(pond.calls(method="POST"))
    with amop_engine.begin() as conn:
        conn.execute(update(t.m2m_device_change).values(Status="PROCESSING", IsProcessed=False))
    ids = [r.Id for r in rows_of(amop_engine, t.m2m_device_change).values()]
    processing.process_batch(amop_engine, bulk_id, ids, client=client)
    assert len(pond.calls(method="POST")) == adds
    assert all(len([p for p in pond.device(i)["packages"] if p["status"] == "ACTIVE"]) == 1 for i in iccids)
    client.close()


def test_pond_package_type_the_distributor_cannot_add_is_refused_before_any_call(amop_engine, simulator):
    """A package type POND does not list as ACTIVE for the distributor is refused at validation,
    with the valid ids in the reason, and nothing is sent for that device."""
    pond = simulator.control("pond")
    pond.reset()
    simulator.set_account("pond", POND_USER, POND_SECRET)
    iccids = [seed.make_iccid(64_100 + i) for i in range(2)]
    pond.seed_devices([{"iccid": i, "serviceStatus": "ENABLED",
                        "packages": [{"packageTypeId": "101", "status": "ACTIVE"}]} for i in iccids])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=13, name="pond", integration=Integration.POND, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE", "CarrierRatePlan": "101"} for i in iccids],
                         sp_id=13, tenant_id=1)
    client = build_client(Integration.POND, CarrierSettings(simulator.url_for("pond"), POND_USER, POND_SECRET,
                                                            {"distributor_id": "1001"}), policy=policy())
    bulk_id = add_bulk(amop_engine, 13, RATE, [{"ICCID": iccids[0], "ChangeRequest": {"RatePlanId": 999}},
                                               {"ICCID": iccids[1], "ChangeRequest": {"RatePlanId": 103}}])
    out = run(amop_engine, bulk_id, client)
    client.close()
    changes = {r.ICCID: r for r in rows_of(amop_engine, t.m2m_device_change).values()}
    assert changes[iccids[0]].Status == "ERROR"
    assert "'999'" in changes[iccids[0]].StatusDetails and "101, 102, 103" in changes[iccids[0]].StatusDetails
    assert changes[iccids[1]].Status == "PROCESSED" and out["status"] == "PROCESSED_WITH_ERRORS"
    assert pond.calls(path_contains=iccids[0]) == []  # nothing sent for the refused device
    assert [p["packageTypeId"] for p in pond.device(iccids[1])["packages"] if p["status"] == "ACTIVE"] == ["103"]


def test_a_plan_change_keeps_the_last_status_change(amop_engine, tg, tg_client):
    """A result that changes the plan but not the status leaves Device.LastStatusChange as it was."""
    from datetime import datetime

    from bulkchange.db import bulk_changes, device_changes
    from bulkchange.models import DeviceChangeStatus, DeviceResult

    iccids, _ = tg_fleet(amop_engine, tg, 1, 65_000)
    when = datetime(2026, 1, 2, 3, 4, 5)
    with amop_engine.begin() as conn:
        conn.execute(update(t.mobility_device).values(LastStatusChange=when))
        device_id = conn.execute(select(t.mobility_device.c.Id)).scalar()
        bulk_id = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=RATE, portal_type=2,
                                       requests=[{"ICCID": iccids[0], "ChangeRequest": {"CarrierRatePlan": "X"}}])
    with amop_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dc = device_changes.load_device_changes(conn, bulk)[0]
        device_changes.record_results(conn, bulk, [DeviceResult(
            device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details="plan", device_id=device_id,
            carrier_rate_plan="X")], {}, processed_by="test")
    with amop_engine.connect() as conn:
        row = conn.execute(select(t.mobility_device)).one()
    assert row.CarrierRatePlan == "X" and row.LastStatusChange == when
