"""Who may do what, through a real api-server with the FAB auth manager configured as compose
configures it: a user without the ops role cannot trigger bulk_change_submit or bulk_change_process
(403 over HTTP), a BulkChangeOps user can, and the read-only role can read runs but not trigger."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.scheduler, pytest.mark.airflow]

USERS = {"ops1": "BulkChangeOps", "viewer1": "BulkChangeReadOnly", "nobody1": "Public"}


USERS_SCRIPT = """
import json, sys
from bulkchange_plugins.roles import sync_roles
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
sync_roles()
with get_application_builder() as ab:
    for user, (role, password) in json.loads(sys.argv[1]).items():
        if ab.sm.find_user(username=user) is None:
            assert ab.sm.add_user(user, user, "test", f"{user}@example.com", ab.sm.find_role(role), password)
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("fab-airflow")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API_AUTH__JWT_ISSUER": "bulkchange",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}",
    })
    airflow = [sys.executable, "-m", "airflow"]

    def run(*args):
        proc = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
        return proc.stdout

    run(*airflow, "db", "migrate")
    run(*airflow, "dags", "reserialize")
    passwords = {user: secrets.token_urlsafe(16) for user in USERS}
    # the roles as compose's airflow-init creates them, and one user per role (one process: fast)
    run(sys.executable, "-c", USERS_SCRIPT, json.dumps({u: [r, passwords[u]] for u, r in USERS.items()}))
    log = open(home / "api-server.log", "w")
    proc = subprocess.Popen([*airflow, "api-server", "--port", str(port), "--host", "127.0.0.1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900  # a loaded 2-core machine takes minutes to boot it
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert proc.poll() is None, (home / "api-server.log").read_text()[-3000:]
        time.sleep(1)
    else:
        proc.terminate()
        pytest.fail("api-server did not become healthy: " + (home / "api-server.log").read_text()[-3000:])
    yield base, passwords
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _token(base, user, password):
    resp = requests.post(f"{base}/auth/token", json={"username": user, "password": password}, timeout=30)
    assert resp.status_code in (200, 201), resp.text
    return resp.json()["access_token"]


def _trigger(base, token, dag_id, conf):
    return requests.post(f"{base}/api/v2/dags/{dag_id}/dagRuns", timeout=30,
                         headers={"Authorization": f"Bearer {token}"},
                         json={"logical_date": None, "conf": conf})


SUBMIT_CONF = {"service_provider_id": 1, "change_type": "StatusUpdate", "change_request": {"UpdateStatus": "Suspend"},
               "devices": ["8901260000000000018"], "dry_run": True}


def test_without_the_ops_role_no_trigger(api_server):
    base, passwords = api_server
    for user in ("viewer1", "nobody1"):
        token = _token(base, user, passwords[user])
        for dag_id, conf in (("bulk_change_submit", SUBMIT_CONF), ("bulk_change_process", {"bulk_change_id": 1})):
            resp = _trigger(base, token, dag_id, conf)
            assert resp.status_code == 403, (user, dag_id, resp.status_code, resp.text)
    # the read-only role reads runs; a user with no role reads nothing
    viewer = _token(base, "viewer1", passwords["viewer1"])
    assert requests.get(f"{base}/api/v2/dags/bulk_change_submit/dagRuns", timeout=30,
                        headers={"Authorization": f"Bearer {viewer}"}).status_code == 200
    nobody = _token(base, "nobody1", passwords["nobody1"])
    assert requests.get(f"{base}/api/v2/dags/bulk_change_submit/dagRuns", timeout=30,
                        headers={"Authorization": f"Bearer {nobody}"}).status_code == 403
    # no token at all
    assert requests.post(f"{base}/api/v2/dags/bulk_change_submit/dagRuns", json={"logical_date": None},
                         timeout=30).status_code == 401


def test_the_ops_role_triggers_submit_and_process_only(api_server):
    base, passwords = api_server
    token = _token(base, "ops1", passwords["ops1"])
    for dag_id, conf in (("bulk_change_submit", SUBMIT_CONF), ("bulk_change_process", {"bulk_change_id": 1})):
        resp = _trigger(base, token, dag_id, conf)
        assert resp.status_code == 200, (dag_id, resp.status_code, resp.text)
        run = resp.json()
        assert run["conf"] == conf and run["triggering_user_name"] == "ops1", json.dumps(run)
    # every other DAG stays read-only for the ops role
    assert _trigger(base, token, "device_status_reconcile", {}).status_code == 403
