"""CarrierRatePlanChange and ChangeICCIDAndIMEI end to end under dag.test():

* Jasper: an immediate plan change settles in bulk_change_process; a future-dated one leaves the run
  WAITING_FOR_CARRIER at once (wait_for_carrier does not sit on a change scheduled for later) and
  device_status_reconcile settles it once its date has passed.
* ThingSpace: ICCID and IMEI changes wait on the carrier's request and are settled by
  bulk_change_process's own wait_for_carrier; the Device rows move with their history.
"""
import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from bulkchange.rules import luhn_check_digit
from tests.dags.conftest import amop_conn_json, m2m_counts
from tests.dags.conftest import run_process as run_bulk_change_process

pytestmark = pytest.mark.airflow
KEY = "dag-rate-plan-key-7"
ACCOUNT = "0000000000-00007"
TS_SECRETS = ("dag-id-secret-7", "dag-id-uws-7")


def counts(engine, bulk_id):
    return m2m_counts(engine, bulk_id)


def run_process(dagbag, bulk_id):
    return run_bulk_change_process(dagbag, bulk_id, batch_size=25)


def log_texts(engine):
    with engine.connect() as conn:
        return " ".join((a or "") + (b or "") for a, b in conn.execute(
            select(t.device_bulk_change_log.c.RequestText, t.device_bulk_change_log.c.ResponseText)))


def test_jasper_rate_plan_now_and_scheduled(dagbag, amop_engine, simulator, monkeypatch):
    from airflow.sdk import DagRunState

    jasper = simulator.control("jasper")
    jasper.reset()
    simulator.set_account("jasper", "dag-rp", KEY)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "dag-rp", "password": KEY}))
    iccids = [seed.make_iccid(400_000 + i) for i in range(60)]
    jasper.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "P-1G"} for i in iccids])
    # the carrier account has the plans the bulk changes name (Control Center refuses any other)
    jasper.add_rate_plans([{"name": n, "dataMB": mb, "baseRate": r} for n, mb, r in
                           (("P-0", 0, 0.5), ("P-500", 500, 1.0), ("P-1G", 1024, 4.0))])
    jasper.add_communication_plans(["CP-1"])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="jasper", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED", "CarrierRatePlan": "P-1G"} for i in iccids],
                         sp_id=1, tenant_id=1)
        now_bulk = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                        requests=[{"ICCID": i, "ChangeRequest": {"CarrierRatePlan": "P-500",
                                                                                 "CommPlan": "CP-1"}}
                                                  for i in iccids[:50]])
    summary = run_process(dagbag, now_bulk)
    assert summary["status"] == "PROCESSED" and counts(amop_engine, now_bulk) == ("PROCESSED", {"PROCESSED": 50})

    when = datetime.now(timezone.utc) + timedelta(hours=1)  # far enough that no busy machine reaches it
    with amop_engine.begin() as conn:
        later_bulk = seed.add_bulk_change(
            conn, sp_id=1, tenant_id=1, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
            requests=[{"ICCID": i, "ChangeRequest": {"CarrierRatePlan": "P-0",
                                                     "EffectiveDate": when.strftime("%Y-%m-%dT%H:%M:%SZ")}}
                      for i in iccids[50:]])
    summary = run_process(dagbag, later_bulk)
    assert summary["status"] == "WAITING_FOR_CARRIER"
    assert counts(amop_engine, later_bulk) == ("WAITING_FOR_CARRIER", {"PENDING_CARRIER": 10})
    # the date comes: the carrier applies its scheduled edits and our clock reads a time after it
    assert jasper.run_scheduled(2 * 3600) == 10
    from bulkchange.changes.carrier_rate_plan import jasper as carrier_rate_plan

    real_now = carrier_rate_plan.utcnow
    monkeypatch.setattr(carrier_rate_plan, "utcnow", lambda: real_now() + timedelta(hours=2))
    run = dagbag.dags["device_status_reconcile"].test(run_conf={"service_provider_ids": [1], "dry_run": False})
    assert run.state == DagRunState.SUCCESS
    assert counts(amop_engine, later_bulk) == ("PROCESSED", {"PROCESSED": 10})
    with amop_engine.connect() as conn:
        plans = dict(conn.execute(select(t.device.c.ICCID, t.device.c.CarrierRatePlan)).all())
    assert {plans[i] for i in iccids[:50]} == {"P-500"} and {plans[i] for i in iccids[50:]} == {"P-0"}
    assert {jasper.device(i)["ratePlan"] for i in iccids[50:]} == {"P-0"}
    assert KEY not in log_texts(amop_engine)


def test_thingspace_identifier_changes_settle_within_the_run(dagbag, amop_engine, simulator, monkeypatch):
    ts = simulator.control("thingspace")
    ts.reset()
    ts.configure(action_delay_s=0.3)
    carrier = simulator.carrier("thingspace")
    carrier.clients["dag-id-key"] = TS_SECRETS[0]
    carrier.users["dag-id-user"] = TS_SECRETS[1]
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_4", json.dumps({
        "conn_type": "http", "host": simulator.url_for("thingspace"), "login": "dag-id-key",
        "password": TS_SECRETS[0],
        "extra": {"uws_username": "dag-id-user", "uws_password": TS_SECRETS[1], "account_name": ACCOUNT}}))
    iccids = [seed.make_iccid(410_000 + i) for i in range(40)]
    new_sims = [seed.make_iccid(420_000 + i) for i in range(20)]
    new_imeis = [f"35{7_000 + i:012d}" for i in range(20)]
    new_imeis = [b + luhn_check_digit(b) for b in new_imeis]
    ts.seed_devices([{"iccid": i, "state": "active", "accountName": ACCOUNT} for i in iccids])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        ids = seed.add_devices(conn, [{"ICCID": i, "Status": "active"} for i in iccids], sp_id=4, tenant_id=1)
        requests = [{"ICCID": o, "ChangeRequest": {"NewICCID": n}} for o, n in zip(iccids[:20], new_sims)]
        requests += [{"ICCID": o, "ChangeRequest": {"NewIMEI": n}} for o, n in zip(iccids[20:], new_imeis)]
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.CHANGE_ICCID_AND_IMEI,
                                       requests=requests)
    summary = run_process(dagbag, bulk_id)
    assert summary["status"] == "PROCESSED" and counts(amop_engine, bulk_id) == ("PROCESSED", {"PROCESSED": 40})
    with amop_engine.connect() as conn:
        rows = {r.Id: r for r in conn.execute(select(t.device.c.Id, t.device.c.ICCID, t.device.c.IMEI))}
    assert [rows[i].ICCID for i in ids[:20]] == new_sims  # the same Device rows, on their new SIMs
    assert [rows[i].IMEI for i in ids[20:]] == new_imeis
    assert {ts.device(n)["iccid"] for n in new_sims} == set(new_sims)
    assert len(ts.calls(method="PUT", path_contains="/actions/deviceId")) == 40
    texts = log_texts(amop_engine)
    assert not any(s in texts for s in TS_SECRETS)
