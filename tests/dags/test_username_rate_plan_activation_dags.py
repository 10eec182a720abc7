"""EditUsernameCostCenter, ActivateNewService, and the Telegence / Teal / POND carrier rate plan and
Telegence IMEI changes through bulk_change_process (and device_status_reconcile) under dag.test():
the carrier_sp_<N> and revio_sp_<N> connections reach the handlers; carrier state, DB rows and log
rows are checked."""
import json

import pytest
from sqlalchemy import func, select

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from simulators.teal import make_eid
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
N = 40
MOBILITY = 2
TG = ("dag-e3-tg-app", "dag-e3-tg-secret")
REV_PASSWORD, REV_KEY = "dag-e3-rev-pass", "dag-e3-rev-key"


def run_dag(dagbag, dag_id, conf):
    from airflow.sdk import DagRunState

    run = dagbag.dags[dag_id].test(run_conf=conf)
    assert run.state == DagRunState.SUCCESS
    return run


def run_process(dagbag, bulk_id):
    run = run_dag(dagbag, "bulk_change_process", {"bulk_change_id": bulk_id, "batch_size": 25})
    return run.get_task_instance("finalize").xcom_pull(task_ids="finalize")


def changes(engine, table, bulk_id):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(table).where(table.c.BulkChangeId == bulk_id))}


def devices(engine):
    with engine.connect() as conn:
        # both inventories: Telegence lines are in MobilityDevice, the other carriers' SIMs in Device
        return {r.ICCID: r for tbl in (t.device, t.mobility_device) for r in conn.execute(select(tbl))}


def log_rows(engine, bulk_id):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return conn.execute(select(lg.c.LogEntryDescription, lg.c.RequestText, lg.c.ResponseText)
                            .where(lg.c.BulkChangeId == bulk_id)).all()


def telegence(simulator, monkeypatch, engine):
    tg = simulator.control("telegence")
    tg.reset()
    tg.set_accounts({TG[0]: TG[1]})
    tg.configure(activation_delay_s=0.2)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_6", json.dumps({
        "conn_type": "http", "host": simulator.url_for("telegence"), "login": TG[0], "password": TG[1],
        "extra": {"billing_account_number": "287000000042"}}))
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_test_references(conn, tenant_id=1)  # the ids these tests name
    return tg


def test_jasper_edit_username_with_revio(dagbag, amop_engine, simulator, monkeypatch):
    jasper, revio = simulator.control("jasper"), simulator.control("revio")
    jasper.reset()
    revio.reset()
    simulator.set_account("jasper", "dag-e3-jasper", "dag-e3-jasper-key")
    revio.set_accounts({"dag@e3": REV_PASSWORD})
    revio.request("PUT", "/subscription_keys", json={"e3": REV_KEY})
    revio.configure(calls_per_minute=0)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "dag-e3-jasper",
        "password": "dag-e3-jasper-key"}))
    monkeypatch.setenv("AIRFLOW_CONN_REVIO_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("revio"), "login": "dag@e3", "password": REV_PASSWORD,
        "extra": {"subscription_key": REV_KEY}}))
    iccids = [seed.make_iccid(410_000 + i) for i in range(N)]
    jasper.seed_devices([{"iccid": i, "status": "ACTIVATED"} for i in iccids])
    from bulkchange.carriers.revio import RevioClient

    rev = RevioClient(simulator.url_for("revio"), "dag", "e3", REV_PASSWORD, REV_KEY)
    services = {i: rev.create_service({"customer_id": 7, "provider_id": 3, "number2": i}) for i in iccids}
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="jasper", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.EDIT_USERNAME_COST_CENTER,
                                       requests=[{"ICCID": i, "ChangeRequest": {"ContactName": f"fleet {n}",
                                                                                "CostCenter2": f"ops-{n % 3}"}}
                                                 for n, i in enumerate(iccids)])
    summary = run_process(dagbag, bulk_id)
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    dev = devices(amop_engine)
    for n, i in enumerate(iccids):
        assert jasper.device(i)["accountCustom1"] == f"fleet {n}"
        fields = {f["label"]: f["value"] for f in rev.get_service(services[i])["fields"]}
        assert fields["Username"] == f"fleet {n}" and fields["Cost Center 2"] == f"ops-{n % 3}"
        assert (dev[i].Username, dev[i].CostCenter2, dev[i].CostCenter1) == (f"fleet {n}", f"ops-{n % 3}", None)
    logs = log_rows(amop_engine, bulk_id)
    assert len(logs) == 4 * N  # username, audit trail, Rev.io read, Rev.io patch per device
    assert not any(REV_PASSWORD in (r or "") or REV_KEY in (r or "") for row in logs for r in row)
    rev.close()


def test_telegence_rate_plan_and_imei_change(dagbag, amop_engine, simulator, monkeypatch):
    tg = telegence(simulator, monkeypatch, amop_engine)
    iccids = [seed.make_iccid(420_000 + i) for i in range(N)]
    numbers = {i: f"1404{420_000 + n:07d}" for n, i in enumerate(iccids)}
    tg.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "A"} for i in iccids])
    imeis = ["490154203237518", "352099001761481"]
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": "A", "CarrierRatePlan": "IOTSOC1"}
                                for i in iccids], sp_id=6, tenant_id=1)
        plan_bulk = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                         portal_type=MOBILITY, requests=[
                                             {"ICCID": i, "ChangeRequest": {"CarrierRatePlan": "IOTSOC3"}} for i in iccids])
        imei_bulk = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.CHANGE_ICCID_AND_IMEI,
                                         portal_type=MOBILITY, requests=[
                                             {"ICCID": i, "ChangeRequest": {"NewIMEI": imeis[n]}}
                                             for n, i in enumerate(iccids[:2])])
    summary = run_process(dagbag, plan_bulk)
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    assert {devices(amop_engine)[i].CarrierRatePlan for i in iccids} == {"IOTSOC3"}
    assert tg.request("GET", f"/lines/{numbers[iccids[7]]}")["singleUserCode"] == "IOTSOC3"
    assert len(log_rows(amop_engine, plan_bulk)) == N
    summary = run_process(dagbag, imei_bulk)
    assert summary["status"] == "PROCESSED", summary
    assert [devices(amop_engine)[i].IMEI for i in iccids[:2]] == imeis
    assert tg.request("GET", f"/lines/{numbers[iccids[1]]}")["IMEI"] == imeis[1]


def test_teal_and_pond_rate_plans(dagbag, amop_engine, simulator, monkeypatch):
    teal, pond = simulator.control("teal"), simulator.control("pond")
    teal.reset()
    pond.reset()
    teal.set_accounts({"dag-e3-teal": "dag-e3-teal-secret"})
    teal.configure(operation_delay_s=0.2)
    simulator.set_account("pond", "dag-e3-pond", "dag-e3-pond-secret")
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_12", json.dumps({
        "conn_type": "http", "host": simulator.url_for("teal"), "login": "dag-e3-teal",
        "password": "dag-e3-teal-secret"}))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_13", json.dumps({
        "conn_type": "http", "host": simulator.url_for("pond"), "login": "dag-e3-pond",
        "password": "dag-e3-pond-secret", "extra": {"distributor_id": "1001"}}))
    teal_ids = [seed.make_iccid(430_000 + i) for i in range(N)]
    pond_ids = [seed.make_iccid(440_000 + i) for i in range(N)]
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "ONLINE"} for i in teal_ids])
    pond.seed_devices([{"iccid": i, "packages": [{"packageTypeId": "101"}]} for i in pond_ids])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=12, name="teal", integration=Integration.TEAL, tenant_id=1)
        seed.add_service_provider(conn, sp_id=13, name="pond", integration=Integration.POND, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "EID": make_eid(i), "Status": "ONLINE"} for i in teal_ids],
                         sp_id=12, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE", "CarrierRatePlan": "101"} for i in pond_ids],
                         sp_id=13, tenant_id=1)
        teal_bulk = seed.add_bulk_change(conn, sp_id=12, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                         requests=[{"ICCID": i, "ChangeRequest": {"PlanUuid": "plan-0003"}}
                                                   for i in teal_ids])
        pond_bulk = seed.add_bulk_change(conn, sp_id=13, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                         requests=[{"ICCID": i, "ChangeRequest": {"RatePlanId": 103}} for i in pond_ids])
    summary = run_process(dagbag, teal_bulk)  # settled by the run's own wait_for_carrier
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    assert {devices(amop_engine)[i].CarrierRatePlan for i in teal_ids} == {"plan-0003"}
    assert {teal.device(i)["planUuid"] for i in teal_ids[::7]} == {"plan-0003"}
    summary = run_process(dagbag, pond_bulk)
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    assert {devices(amop_engine)[i].CarrierRatePlan for i in pond_ids} == {"103"}
    for i in pond_ids[::9]:
        assert [p["packageTypeId"] for p in pond.device(i)["packages"] if p["status"] == "ACTIVE"] == ["103"]
    with amop_engine.connect() as conn:
        saved = conn.execute(select(func.count()).select_from(t.pond_device_carrier_rate_plan)).scalar()
    assert saved == 2 * N  # the new ACTIVE package and the terminated old one per SIM


def test_telegence_activate_new_service_settled_by_reconciliation(dagbag, amop_engine, simulator, monkeypatch):
    tg = telegence(simulator, monkeypatch, amop_engine)
    iccids = [seed.make_iccid(450_000 + i) for i in range(N)]
    tg.seed_devices([{"iccid": i} for i in iccids])
    tg.configure(plan_offerings={"IOTSOC8": ["VMAIL"]})  # the plan brings a SOC the request takes off
    request = {"TelegenceActivationRequest": {"service": {"serviceCharacteristic": [
        {"name": "singleUserCode", "value": "IOTSOC8"}, {"name": "serviceZipCode", "value": "30004"},
        {"name": "offeringCode1", "value": "NOROAM"}, {"name": "removeOfferingCode", "value": "VMAIL"}]}},
        "CarrierRatePool": "POOL-9", "CarrierDataGroup": "DG-9"}
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": "inventory"} for i in iccids], sp_id=6, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=[{"ICCID": i, "ChangeRequest": request}
                                                                       for i in iccids])
    summary = run_process(dagbag, bulk_id)
    assert summary["status"] == "WAITING_FOR_CARRIER", summary
    posts = tg.calls(method="POST")
    assert sorted(len(p["body"]) for p in posts) == [15, 25]  # one activation request per batch of 25
    assert posts[0]["body"][0]["billingAccount"] == {"id": "287000000042"}
    import time

    time.sleep(0.5)
    run_dag(dagbag, "device_status_reconcile", {"service_provider_ids": [6], "dry_run": False})
    dcs = changes(amop_engine, t.mobility_device_change, bulk_id)
    dev = devices(amop_engine)
    assert {r.Status for r in dcs.values()} == {"PROCESSED"}
    for i in iccids[::5]:
        line = tg.request("GET", f"/lines/{dcs[i].MSISDN}")
        assert line["iccid"] == i and line["offeringCode1"] == "NOROAM"
        assert "VMAIL" not in line.values()  # removed after the activation (legacy remove-SOC PATCH)
        assert (dev[i].MSISDN, dev[i].Status, dev[i].CarrierRatePlan) == (dcs[i].MSISDN, "A", "IOTSOC8")
    with amop_engine.connect() as conn:
        bulk_status = conn.execute(select(t.device_bulk_change.c.Status)
                                   .where(t.device_bulk_change.c.Id == bulk_id)).scalar()
        features = conn.execute(select(func.count()).select_from(t.telegence_device_mobility_feature)).scalar()
        pools = set(conn.execute(select(t.telegence_device.c.CarrierRatePool, t.telegence_device.c.CarrierDataGroup)
                                 .where(t.telegence_device.c.ServiceProviderId == 6)).all())
    assert bulk_status == "PROCESSED" and features == N  # NOROAM only: VMAIL was taken off
    assert pools == {("POOL-9", "DG-9")}


def test_telegence_and_thingspace_edit_username(dagbag, amop_engine, simulator, monkeypatch):
    tg = telegence(simulator, monkeypatch, amop_engine)
    revio = simulator.control("revio")
    revio.reset()
    revio.set_accounts({"dag@e3": REV_PASSWORD})
    revio.request("PUT", "/subscription_keys", json={"e3": REV_KEY})
    revio.configure(calls_per_minute=0)
    monkeypatch.setenv("AIRFLOW_CONN_REVIO_SP_6", json.dumps({
        "conn_type": "http", "host": simulator.url_for("revio"), "login": "dag@e3", "password": REV_PASSWORD,
        "extra": {"subscription_key": REV_KEY}}))
    ts = simulator.control("thingspace")
    ts.reset()
    ts.configure(action_delay_s=0.2)
    carrier = simulator.carrier("thingspace")
    carrier.clients["dag-e3-ts"] = "dag-e3-ts-secret"
    carrier.users["dag-e3-uws"] = "dag-e3-uws-secret"
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_4", json.dumps({
        "conn_type": "http", "host": simulator.url_for("thingspace"), "login": "dag-e3-ts",
        "password": "dag-e3-ts-secret", "extra": {"uws_username": "dag-e3-uws", "uws_password": "dag-e3-uws-secret",
                                                  "account_name": "0000000000-00001"}}))
    tg_ids = [seed.make_iccid(460_000 + i) for i in range(N)]
    numbers = {i: f"1404{460_000 + n:07d}" for n, i in enumerate(tg_ids)}
    tg.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "A"} for i in tg_ids])
    ts_ids = [seed.make_iccid(470_000 + i) for i in range(N)]
    ts.seed_devices([{"iccid": i, "state": "active", "accountName": "0000000000-00001"} for i in ts_ids])
    from bulkchange.carriers.revio import RevioClient

    rev = RevioClient(simulator.url_for("revio"), "dag", "e3", REV_PASSWORD, REV_KEY)
    services = {i: rev.create_service({"customer_id": 7, "provider_id": 3, "number": numbers[i], "number2": i})
                for i in tg_ids}
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": "A"} for i in tg_ids], sp_id=6, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "active"} for i in ts_ids], sp_id=4, tenant_id=1)
        tg_bulk = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.EDIT_USERNAME_COST_CENTER,
                                       portal_type=MOBILITY, requests=[
                                           {"ICCID": i, "MSISDN": numbers[i], "ChangeRequest": {"ContactName": f"tg {n}"}}
                                           for n, i in enumerate(tg_ids)])
        ts_bulk = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.EDIT_USERNAME_COST_CENTER,
                                       requests=[{"ICCID": i, "ChangeRequest": {"ContactName": f"ts {n}",
                                                                                "CostCenter1": "VZ-1"}}
                                                 for n, i in enumerate(ts_ids)])
    summary = run_process(dagbag, tg_bulk)
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    for i in tg_ids[::8]:
        k = tg_ids.index(i)
        assert tg.request("GET", f"/lines/{numbers[i]}")["contactName"] == f"tg {k}"
        assert {f["label"]: f["value"] for f in rev.get_service(services[i])["fields"]}["Username"] == f"tg {k}"
    assert {devices(amop_engine)[i].Username for i in tg_ids[:2]} == {"tg 0", "tg 1"}
    summary = run_process(dagbag, ts_bulk)  # settled by the run's own wait_for_carrier
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    dev = devices(amop_engine)
    for i in ts_ids[::8]:
        k = ts_ids.index(i)
        assert ts.device(i)["costCenterCode"] == "VZ-1"
        assert ts.device(i)["customFields"] == [{"key": "CustomField1", "value": f"ts {k}"}]
        assert (dev[i].Username, dev[i].CostCenter1) == (f"ts {k}", "VZ-1")
    assert len(log_rows(amop_engine, ts_bulk)) >= 3 * N  # two requests and their status polls per device
    rev.close()
