"""The Bulk changes page inside Airflow's own api-server app (in process, SimpleAuthManager with two
users): who may see and do what, what the page shows, and that its actions are Airflow runs made
through Airflow's REST API as the user (audited in Airflow's log)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
ROOT = Path(__file__).resolve().parents[2]
PASSWORDS = {"ops": "ops-pass-31", "watcher": "watcher-pass-47"}


@pytest.fixture(scope="module")
def serialized(airflow_db):
    """The DAGs in the metadata DB, as the dag-processor would put them (the REST API triggers those)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def airflow_app(serialized, tmp_path_factory):
    """Airflow's api-server app with the project's plugins, SimpleAuthManager users ops (admin) and
    watcher (viewer), login required."""
    from airflow import plugins_manager
    from airflow.configuration import conf

    pw_file = tmp_path_factory.mktemp("auth") / "passwords.json"
    pw_file.write_text(json.dumps(PASSWORDS))
    saved = {k: conf.get("core", k, fallback=None) for k in
             ("simple_auth_manager_all_admins", "simple_auth_manager_users", "simple_auth_manager_passwords_file")}
    conf.set("core", "simple_auth_manager_all_admins", "False")
    conf.set("core", "simple_auth_manager_users", "ops:admin,watcher:viewer")
    conf.set("core", "simple_auth_manager_passwords_file", str(pw_file))
    for fn in (plugins_manager.get_fastapi_plugins, plugins_manager._get_plugins):
        getattr(fn, "cache_clear", lambda: None)()
    try:
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        yield create_app()
    finally:
        for k, v in saved.items():
            if v is not None:
                conf.set("core", k, v)


def _client(app, user: str | None):
    from fastapi.testclient import TestClient

    client = TestClient(app)
    if user:
        r = client.post("/auth/token", json={"username": user, "password": PASSWORDS[user]})
        assert r.status_code == 201, r.text
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    return client


@pytest.fixture(autouse=True)
def _no_runs_left(request):
    """Every test's AMOP database numbers bulk changes from 1: forget earlier tests' runs."""
    if "airflow_app" not in request.fixturenames:
        return
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(DagRun.run_id.like("bulk_change_%")).delete(synchronize_session=False)


@pytest.fixture
def amop(monkeypatch, sqlite_engine):
    """A Jasper provider and a finished bulk change with 3 processed and 2 failed devices."""
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    iccids = [seed.make_iccid(71_000 + i) for i in range(5)]
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=3, name="Fleet A", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=3, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=3, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       created_by="portal-user", requests=[
                                           {"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in iccids])
        tbl = t.m2m_device_change
        conn.execute(update(tbl).where(tbl.c.BulkChangeId == bulk_id, tbl.c.ICCID.in_(iccids[:3]))
                     .values(Status="PROCESSED", IsProcessed=True))
        conn.execute(update(tbl).where(tbl.c.BulkChangeId == bulk_id, tbl.c.ICCID.in_(iccids[3:]))
                     .values(Status="API_FAILED", StatusDetails="carrier said 500 after 3 attempts", IsProcessed=True))
        conn.execute(update(t.device_bulk_change).where(t.device_bulk_change.c.Id == bulk_id).values(
            Status="PROCESSED_WITH_ERRORS", TotalCount=5, ProcessedCount=3, ErrorCount=2, PendingCount=0,
            ErrorMessage="2 of 5 device changes failed"))
    return {"engine": sqlite_engine, "bulk_id": bulk_id, "iccids": iccids}


API_ROUTES = ["/bulkchange/api/bulk-changes", "/bulkchange/api/service-providers", "/bulkchange/api/bulk-changes/1",
              "/bulkchange/api/bulk-changes/1/devices", "/bulkchange/api/bulk-changes/1/devices/1/log",
              "/bulkchange/api/bulk-changes/1/failed.csv", "/bulkchange/api/bulk-changes/1/dry-runs/1"]


@pytest.mark.parametrize("path", API_ROUTES)
def test_anonymous_reads_are_refused(airflow_app, amop, path):
    r = _client(airflow_app, None).get(path)
    assert r.status_code == 401, r.text


@pytest.mark.parametrize("path", ["/bulkchange/api/bulk-changes/1/retry", "/bulkchange/api/bulk-changes/1/dry-run",
                                  "/bulkchange/api/bulk-changes/1/approval"])
def test_anonymous_actions_are_refused(airflow_app, amop, path):
    r = _client(airflow_app, None).post(path, json={"decision": "Approve"})
    assert r.status_code == 401, r.text


def test_anonymous_page_goes_to_the_login_page(airflow_app, amop):
    r = _client(airflow_app, None).get("/bulkchange/", follow_redirects=False)
    assert r.status_code == 303 and "/auth/login" in r.headers["location"], (r.status_code, r.headers)
    assert "Bulk changes" not in r.text


def test_a_forged_token_is_refused(airflow_app, amop):
    client = _client(airflow_app, None)
    r = client.get("/bulkchange/api/bulk-changes", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code in (401, 403), r.text


def test_the_list_page_and_its_data(airflow_app, amop):
    client = _client(airflow_app, "watcher")
    page = client.get("/bulkchange/")
    assert page.status_code == 200 and "Bulk changes" in page.text and "watcher" in page.text
    data = client.get("/bulkchange/api/bulk-changes").json()
    (row,) = data["items"]
    assert row["id"] == amop["bulk_id"] and row["service_provider"] == "Fleet A" and row["carrier"] == "Jasper"
    assert row["change_type"] == "StatusUpdate" and row["status"] == "PROCESSED_WITH_ERRORS"
    assert row["created_by"] == "portal-user"
    assert row["progress"] == {"total": 5, "processed": 3, "errors": 2, "pending": 0, "percent_done": 100.0,
                               "percent_processed": 60.0, "percent_errors": 40.0}
    assert client.get("/bulkchange/api/bulk-changes", params={"status": "PROCESSING"}).json()["items"] == []
    assert client.get("/bulkchange/api/bulk-changes", params={"service_provider_id": 4}).json()["items"] == []


def test_the_detail_data_devices_log_and_failed_csv(airflow_app, amop):
    client = _client(airflow_app, "watcher")
    bulk_id = amop["bulk_id"]
    assert client.get(f"/bulkchange/bulk-changes/{bulk_id}").status_code == 200
    detail = client.get(f"/bulkchange/api/bulk-changes/{bulk_id}").json()
    assert detail["counts"] == {"PROCESSED": 3, "API_FAILED": 2}
    assert detail["can"] == {"retry": False, "dry_run": False, "approve": False, "trigger": False}  # a viewer
    failed = client.get(f"/bulkchange/api/bulk-changes/{bulk_id}/devices", params={"status": "API_FAILED"}).json()
    assert [d["iccid"] for d in failed["items"]] == amop["iccids"][3:]
    assert failed["items"][0]["reason"] == "carrier said 500 after 3 attempts"
    page1 = client.get(f"/bulkchange/api/bulk-changes/{bulk_id}/devices", params={"page_size": 2}).json()
    page2 = client.get(f"/bulkchange/api/bulk-changes/{bulk_id}/devices",
                       params={"page_size": 2, "after": page1["next_after"]}).json()
    assert [d["iccid"] for d in page1["items"] + page2["items"]] == amop["iccids"][:4]
    csv_text = client.get(f"/bulkchange/api/bulk-changes/{bulk_id}/failed.csv").text.splitlines()
    assert csv_text[0].startswith("DeviceChangeId,ICCID,MSISDN")
    assert [line.split(",")[1] for line in csv_text[1:]] == amop["iccids"][3:]
    assert client.get("/bulkchange/api/bulk-changes/999").status_code == 404


def test_a_viewer_cannot_retry_and_nothing_reaches_airflow(airflow_app, amop, monkeypatch):
    """The page's own check refuses before anything is sent to Airflow's REST API."""
    from bulkchange_plugins.ui import airflow_rest

    sent = []

    async def record(*args, **kwargs):
        sent.append(args)
        raise AssertionError("a refused caller's action must not reach Airflow")

    monkeypatch.setattr(airflow_rest, "call", record)
    client = _client(airflow_app, "watcher")
    r = client.post(f"/bulkchange/api/bulk-changes/{amop['bulk_id']}/retry")
    assert r.status_code == 403 and "watcher may not trigger bulk_change_process runs" in r.json()["detail"]
    assert client.post(f"/bulkchange/api/bulk-changes/{amop['bulk_id']}/dry-run").status_code == 403
    assert sent == []


def _runs(bulk_id):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(r.run_id, r.conf, r.triggering_user_name, r.note) for r in session.query(DagRun).filter(
            DagRun.dag_id == "bulk_change_process", DagRun.run_id.like(f"bulk_change_{bulk_id}_%"))]


def _audit(event, owner):
    from airflow.models.log import Log
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.query(Log).filter(Log.event == event, Log.owner == owner,
                                         Log.dag_id == "bulk_change_process").count()


def test_retry_failed_devices_is_an_airflow_run_made_as_the_user(airflow_app, amop):
    bulk_id = amop["bulk_id"]
    client = _client(airflow_app, "ops")
    assert client.get(f"/bulkchange/api/bulk-changes/{bulk_id}").json()["can"]["retry"] is True
    before = _audit("trigger_dag_run", "ops")
    r = client.post(f"/bulkchange/api/bulk-changes/{bulk_id}/retry")
    assert r.status_code == 200, r.text
    run_id = r.json()["dag_run_id"]
    assert run_id.startswith(f"bulk_change_{bulk_id}_retry_")
    (run,) = [x for x in _runs(bulk_id) if x[0] == run_id]
    assert run[1] == {"bulk_change_id": bulk_id, "retry_failed": True}
    assert run[2] == "ops" and "Retry failed devices" in run[3]
    assert _audit("trigger_dag_run", "ops") == before + 1  # Airflow's own audit log names the user
    runs = client.get(f"/bulkchange/api/bulk-changes/{bulk_id}").json()["runs"]
    assert run_id in [x["run_id"] for x in runs]
    assert [x["kind"] for x in runs if x["run_id"] == run_id] == ["retry failed devices"]

    dry = client.post(f"/bulkchange/api/bulk-changes/{bulk_id}/dry-run")
    assert dry.status_code == 200, dry.text
    assert [x[1] for x in _runs(bulk_id) if x[0] == dry.json()["dag_run_id"]] == [
        {"bulk_change_id": bulk_id, "dry_run": True, "retry_failed": False}]


def test_retry_is_refused_while_nothing_failed_or_the_run_is_open(airflow_app, amop):
    bulk_id = amop["bulk_id"]
    with amop["engine"].begin() as conn:
        conn.execute(update(t.device_bulk_change).where(t.device_bulk_change.c.Id == bulk_id).values(Status="PROCESSING"))
    r = _client(airflow_app, "ops").post(f"/bulkchange/api/bulk-changes/{bulk_id}/retry")
    assert r.status_code == 409 and "once its run is over" in r.json()["detail"]
    assert _runs(bulk_id) == []
