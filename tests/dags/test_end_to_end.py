"""NEW bulk change -> sensor DAG -> processing DAG -> PROCESSED devices, under dag.test().

Real parts: Airflow's in-process runner (task SDK, XCom, mapping, trigger rules), the Jasper
simulator over HTTP, and the AMOP DB on SQLite and on PostgreSQL. TriggerDagRunOperator under
dag.test() only creates the triggered run (no scheduler executes it), so the test checks that run
exists and then runs bulk_change_process itself with the same conf.
"""
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bulkchange.db import bulk_changes, claims, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json

ROOT = Path(__file__).resolve().parents[2]
KEY = "e2e-secret-api-key-42"
N = 40

pytestmark = pytest.mark.airflow


@pytest.fixture
def jasper(simulator):
    control = simulator.control("jasper")
    control.reset()
    return control


def _seed(engine, control, n=N, start=50_000, name="e2e"):
    """n ACTIVATED Jasper devices (in the simulator and the AMOP DB) and a NEW Suspend bulk change of them."""
    devices = [{"ICCID": seed.make_iccid(start + i), "Status": "ACTIVATED", "CarrierRatePlan": "IOT-1GB"}
               for i in range(n)]
    control.seed_devices([{"iccid": d["ICCID"], "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for d in devices])
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name=name, integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, devices, sp_id=1, tenant_id=1)
        return seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": d["ICCID"], "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                              for d in devices])


def test_sensor_then_processing_end_to_end(dagbag, amop_engine, simulator, jasper, monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "e2e", "password": KEY}))
    simulator.set_account("jasper", "e2e", KEY)
    bulk_id = _seed(amop_engine, jasper)

    sensor_run = dagbag.dags["bulk_change_sensor"].test()
    assert sensor_run.state == DagRunState.SUCCESS
    with amop_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "PENDING"  # claimed
    # a second sensor run finds nothing to claim
    assert claims.claim_new_bulk_changes(amop_engine) == []

    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 15})
    assert run.state == DagRunState.SUCCESS
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "PROCESSED"
        assert progress.status_counts(conn, bulk) == {"PROCESSED": N}
        statuses = conn.execute(select(t.device.c.Status, func.count()).group_by(t.device.c.Status)).all()
        assert statuses == [("DEACTIVATED", N)]
        assert conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one() == N
        logs = conn.execute(select(t.device_bulk_change_log.c.RequestText, t.device_bulk_change_log.c.ResponseText)).all()
        assert len(logs) == N
        assert not [r for r in logs if KEY in (r[0] + r[1]) or "Authorization" in r[0]]
    puts = jasper.calls(method="PUT")
    assert sorted(c["iccid"] for c in puts) == sorted(seed.make_iccid(50_000 + i) for i in range(N))

    # Re-running the DAG for the finished bulk change sends nothing more
    again = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert again.state == DagRunState.SUCCESS
    assert len(jasper.calls(method="PUT")) == N


def test_missing_carrier_connection_marks_every_device(dagbag, sqlite_engine, jasper, monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.delenv("AIRFLOW_CONN_CARRIER_SP_1", raising=False)
    bulk_id = _seed(sqlite_engine, jasper, n=5)
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert run.state == DagRunState.SUCCESS  # nothing failed in Airflow: the data says why
    with sqlite_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "ERROR"
        changes = device_changes.load_device_changes(conn, bulk)
        assert {c.status.value for c in changes} == {"ERROR"}
        assert all("carrier_sp_1" in c.status_details for c in changes)
    assert jasper.calls() == []


def test_failed_task_emails_the_ops_team(dagbag, sqlite_engine, smtp_server, monkeypatch):
    """A bulk change id that does not exist fails prepare; the failure notifier mails a real SMTP server."""
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.conn_json)
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": 424242})
    assert run.state == DagRunState.FAILED
    subjects = [msg["Subject"] for _, msg in smtp_server.inbox.messages]
    assert "[bulkchange] bulk_change_process failed: prepare" in subjects
    rcpts, msg = smtp_server.inbox.messages[0]
    assert rcpts == ["ops@example.com"]
    body = msg.get_body(preferencelist=("html",)).get_content()
    assert "424242" in body and "does not exist" in body
