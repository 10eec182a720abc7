"""A POND activation with Rev.io services through bulk_change_process under dag.test(): the
connections carrier_sp_<N> (POND, distributor id in extra) and revio_sp_<N> reach the core."""
import json

import pytest
from sqlalchemy import select

from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow

SP, N = 13, 30
POND_SECRET, REV_PASSWORD, REV_KEY = "dag-pond-secret-1", "dag-rev-password-2", "dag-rev-apim-key-3"


def test_pond_activation_with_rev_io_under_dag_test(dagbag, sqlite_engine, simulator, monkeypatch):
    from airflow.sdk import DagRunState

    pond, revio = simulator.control("pond"), simulator.control("revio")
    pond.reset()
    revio.reset()
    simulator.set_account("pond", "dag-pond", POND_SECRET)
    revio.set_accounts({"dag@acme": REV_PASSWORD})
    revio.request("PUT", "/subscription_keys", json={"acme": REV_KEY})
    revio.configure(calls_per_minute=0)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.setenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", json.dumps({
        "conn_type": "http", "host": simulator.url_for("pond"), "login": "dag-pond", "password": POND_SECRET,
        "extra": {"distributor_id": "1001"}}))
    monkeypatch.setenv(f"AIRFLOW_CONN_REVIO_SP_{SP}", json.dumps({
        "conn_type": "http", "host": simulator.url_for("revio"), "login": "dag@acme", "password": REV_PASSWORD,
        "extra": {"subscription_key": REV_KEY, "rate_limit_per_s": 50}}))
    iccids = [seed.make_iccid(81_000 + i) for i in range(N)]
    pond.seed_devices([{"iccid": i, "serviceStatus": "DISABLED", "packages": [{"packageTypeId": "101"}]}
                       for i in iccids])
    request = {"UpdateStatus": "Active", "Request": {"PackageTypeId": "103"},
               "RevService": {"RevCustomerId": 900, "ProviderId": 4, "RevProductId": 61, "Rate": "2.5"}}
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="pond", integration=Integration.POND, tenant_id=1)
        seed.add_test_references(conn, tenant_id=1)  # the ids these tests name
        seed.add_devices(conn, [{"ICCID": i, "Status": "SUSPENDED"} for i in iccids], sp_id=SP, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": i, "ChangeRequest": request} for i in iccids])

    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 10})
    assert run.state == DagRunState.SUCCESS
    with sqlite_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "PROCESSED" and progress.status_counts(conn, bulk) == {"PROCESSED": N}
        assert conn.execute(select(t.rev_service.c.Number2)).scalars().all().__len__() == N
        assert len(conn.execute(select(t.rev_service_product)).all()) == N
        active = conn.execute(select(t.pond_device_carrier_rate_plan.c.ICCID)
                              .where(t.pond_device_carrier_rate_plan.c.Status == "ACTIVE")).scalars().all()
        assert sorted(active) == sorted(iccids)
        logs = conn.execute(select(t.device_bulk_change_log)).mappings().all()
    for lg in logs:
        text = f"{lg['RequestText']} {lg['ResponseText']} {lg['ErrorText']}"
        assert not any(s in text for s in (POND_SECRET, REV_PASSWORD, REV_KEY, "Basic "))
    sims = {d["iccid"]: d for d in pond.devices(limit=1000)["devices"]}
    assert all([p["packageTypeId"] for p in sims[i]["packages"] if p["status"] == "ACTIVE"] == ["103"] for i in iccids)
    assert sorted(s["number2"] for s in revio.request("GET", "/services")) == sorted(iccids)
