"""device_status_reconcile under dag.test(): drift found once across two runs, summary in XCom."""
import json

import pytest
from sqlalchemy import func, select

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import Integration
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
KEY = "reconcile-key-31"


def test_reconcile_dag_records_drift_once(dagbag, amop_engine, simulator, monkeypatch):
    from airflow.sdk import DagRunState

    jasper = simulator.control("jasper")
    jasper.reset()
    simulator.set_account("jasper", "recon", KEY)
    iccids = [seed.make_iccid(80_000 + i) for i in range(30)]
    jasper.seed_devices([{"iccid": i, "status": "DEACTIVATED" if n % 3 == 0 else "ACTIVATED"}
                         for n, i in enumerate(iccids)])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=5, name="recon", integration=Integration.JASPER, tenant_id=1)
        seed.add_service_provider(conn, sp_id=6, name="no connection", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=5, tenant_id=1)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_5", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "recon", "password": KEY}))
    dag = dagbag.dags["device_status_reconcile"]

    dry = dag.test(run_conf={"dry_run": True})
    assert dry.state == DagRunState.SUCCESS
    with amop_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one() == 0

    for expected in (10, 0):  # the second run right after the first finds nothing
        run = dag.test(run_conf={"dry_run": False})  # dag.test() keeps the last run_conf in the DAG object
        assert run.state == DagRunState.SUCCESS
        summary = run.get_task_instance("summarize").xcom_pull(task_ids="summarize")
        assert summary["devices_updated"] == expected, summary
        assert summary["skipped"] == [6]  # a provider without a connection is reported, not failed
        if expected:
            assert summary["drift"] == {"Jasper": {"DEACTIVATED -> ACTIVATED": 10}}
    with amop_engine.connect() as conn:
        sources = conn.execute(select(t.device_status_history.c.Source, func.count())
                               .group_by(t.device_status_history.c.Source)).all()
    assert sources == [("Reconciliation", 10)]
