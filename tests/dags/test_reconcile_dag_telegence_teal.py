"""device_status_reconcile under dag.test() settles Telegence activations and Teal operations left
waiting by their bulk changes, and finds Teal status drift."""
import json
import time

import pytest
from sqlalchemy import select

from bulkchange import processing
from bulkchange.carriers.teal import TealClient
from bulkchange.carriers.telegence import TelegenceClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from simulators.teal import make_eid
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
TG = ("dag-tg-app", "dag-tg-secret")
TEAL = ("dag-teal-key", "dag-teal-secret")


def _run(engine, bulk_id, client):
    plan = processing.prepare(engine, bulk_id)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client)
    return processing.finalize(engine, bulk_id)


def test_reconcile_dag_settles_telegence_and_teal(dagbag, amop_engine, simulator, monkeypatch):
    from airflow.sdk import DagRunState

    tg, teal = simulator.control("telegence"), simulator.control("teal")
    for control, (user, secret) in ((tg, TG), (teal, TEAL)):
        control.reset()
        control.set_accounts({user: secret})
    tg.configure(activation_delay_s=0.2)
    teal.configure(operation_delay_s=0.2)
    sims = [seed.make_iccid(81_000 + i) for i in range(10)]
    esims = [seed.make_iccid(82_000 + i) for i in range(20)]
    tg.seed_devices([{"iccid": i} for i in sims])
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "ONLINE"} for i in esims])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_service_provider(conn, sp_id=12, name="teal", integration=Integration.TEAL, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "inventory"} for i in sims], sp_id=6, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "EID": make_eid(i), "Status": "ONLINE"} for i in esims],
                         sp_id=12, tenant_id=1)
        tg_bulk = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, portal_type=2,
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Active", "Request": {
                                           "singleUserCode": "IOT5GB", "serviceZipCode": "30004"}}} for i in sims])
        teal_bulk = seed.add_bulk_change(conn, sp_id=12, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                         requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                   for i in esims[:15]])
    tg_client = TelegenceClient(simulator.url_for("telegence"), *TG, timeout=10)
    teal_client = TealClient(simulator.url_for("teal"), *TEAL, timeout=10)
    try:
        assert _run(amop_engine, tg_bulk, tg_client)["status"] == "WAITING_FOR_CARRIER"
        assert _run(amop_engine, teal_bulk, teal_client)["status"] == "WAITING_FOR_CARRIER"
    finally:
        tg_client.close()
        teal_client.close()
    # drift the bulk changes did not cause: the carrier stopped two eSIMs nobody asked about
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "STOPPED"} for i in esims[18:]])
    time.sleep(0.5)  # both carriers finish their work

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    for sp, url, (user, secret) in ((6, simulator.url_for("telegence"), TG), (12, simulator.url_for("teal"), TEAL)):
        monkeypatch.setenv(f"AIRFLOW_CONN_CARRIER_SP_{sp}", json.dumps(
            {"conn_type": "http", "host": url, "login": user, "password": secret}))
    run = dagbag.dags["device_status_reconcile"].test(run_conf={"dry_run": False, "service_provider_ids": [6, 12]})
    assert run.state == DagRunState.SUCCESS
    summary = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
    assert summary["device_changes_settled"] == 25 and summary["skipped"] == []
    assert summary["drift"] == {"Telegence": {}, "Teal": {"STOPPED -> ONLINE": 2}}
    bc = t.device_bulk_change
    with amop_engine.connect() as conn:
        statuses = dict(conn.execute(select(bc.c.Id, bc.c.Status)).all())
        ours = {iccid: status for tbl in (t.device, t.mobility_device)  # Telegence lines are Mobility lines
                for iccid, status in conn.execute(select(tbl.c.ICCID, tbl.c.Status))}
        numbers = conn.execute(select(t.mobility_device.c.MSISDN)
                               .where(t.mobility_device.c.ServiceProviderId == 6)).scalars().all()
    assert statuses == {tg_bulk: "PROCESSED", teal_bulk: "PROCESSED"}
    assert {ours[i] for i in sims} == {"A"} and all(numbers)
    assert {ours[i] for i in esims[:15]} == {"STOPPED"} and {ours[i] for i in esims[15:18]} == {"ONLINE"}
    assert {ours[i] for i in esims[18:]} == {"STOPPED"}
