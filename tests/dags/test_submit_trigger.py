"""Bad conf for bulk_change_submit is refused at trigger time, naming the field: through the real
``airflow dags trigger`` CLI (a subprocess) and through the REST API v2 (Airflow's own FastAPI app,
in process). A valid conf is accepted by both, so the checks can tell the difference."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"service_provider_id": 2, "change_type": "StatusUpdate", "change_request": {"UpdateStatus": "Suspend"},
        "devices": ["8901260000000000018"], "portal_type": "M2M"}

pytestmark = pytest.mark.airflow


def _airflow(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "airflow", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def serialized(airflow_db):
    """The DAGs in the metadata DB, as the dag-processor would put them."""
    done = _airflow("dags", "reserialize")
    assert done.returncode == 0, done.stderr[-2000:]


def test_cli_trigger_refuses_bad_conf_naming_the_field(serialized):
    bad = _airflow("dags", "trigger", "bulk_change_submit", "-c", json.dumps({**GOOD, "service_provider_id": "abc"}))
    assert bad.returncode != 0
    assert "Invalid input for param service_provider_id: 'abc' is not of type 'integer'" in bad.stderr

    good = _airflow("dags", "trigger", "bulk_change_submit", "-c", json.dumps(GOOD), "-o", "json")
    assert good.returncode == 0, good.stderr[-2000:]
    assert "bulk_change_submit" in good.stdout


@pytest.fixture(scope="module")
def api(serialized):
    from airflow.configuration import conf
    from fastapi.testclient import TestClient

    old = conf.get("core", "simple_auth_manager_all_admins", fallback="False")
    conf.set("core", "simple_auth_manager_all_admins", "True")  # no login, as `./run airflow` runs it
    try:
        from airflow.api_fastapi.app import create_app

        with TestClient(create_app()) as client:
            token = client.get("/auth/token").json()["access_token"]
            client.headers["Authorization"] = f"Bearer {token}"
            yield client
    finally:
        conf.set("core", "simple_auth_manager_all_admins", old)


@pytest.mark.parametrize("over, field, text", [
    ({"service_provider_id": 0}, "service_provider_id", "0 is less than the minimum of 1"),
    ({"service_provider_id": None}, "service_provider_id", "None is not of type 'integer'"),
    ({"change_type": "Teleport"}, "change_type", "'Teleport' is not one of"),
    ({"portal_type": "LNP"}, "portal_type", "'LNP' is not one of ['M2M', 'Mobility']"),
    ({"devices": ["123"]}, "devices", "'123' does not match"),
    ({"change_request": "Suspend"}, "change_request", "'Suspend' is not of type 'object'"),
    ({"dry_run": "yes"}, "dry_run", "'yes' is not of type 'boolean'"),
    ({"batch_size": 5001}, "batch_size", "5001 is greater than the maximum of 5000"),
])
def test_rest_api_answers_400_naming_the_field(api, over, field, text):
    r = api.post("/api/v2/dags/bulk_change_submit/dagRuns", json={"logical_date": None, "conf": {**GOOD, **over}})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"Invalid input for param {field}:") and text in detail, detail


def test_rest_api_accepts_a_valid_submission(api):
    r = api.post("/api/v2/dags/bulk_change_submit/dagRuns", json={"logical_date": None, "conf": GOOD})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "queued" and r.json()["conf"]["devices"] == GOOD["devices"]


@pytest.mark.parametrize("form", [
    {"service_provider_id": 2, "change_request": {"UpdateStatus": "Suspend"}, "devices": ["8901260000000000018"]},
    # what the trigger form sends when only the ICCIDs are filled in: the optional fields as null
    {"service_provider_id": 2, "change_type": "StatusUpdate", "change_request": {"UpdateStatus": "Suspend"},
     "devices": ["8901260000000000018"], "devices_csv": None, "created_by": None, "portal_type": "M2M"},
    {"service_provider_id": 2, "change_request": {"UpdateStatus": "Suspend"},
     "devices_csv": "ICCID\n8901260000000000018", "devices": None},
])
def test_iccids_or_csv_alone_are_enough(api, form):
    r = api.post("/api/v2/dags/bulk_change_submit/dagRuns", json={"logical_date": None, "conf": form})
    assert r.status_code == 200, r.text


def test_every_submit_field_says_what_it_is_and_optional_ones_accept_null(serialized):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["bulk_change_submit"]
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.description or param.schema.get("description_md"), name
    for name in ("devices", "devices_csv", "change_request", "created_by"):
        assert "null" in dag.params.get_param(name).schema["type"], name
    examples = dag.params.get_param("change_request").schema["description_md"]
    for change_type in ("StatusUpdate", "CarrierRatePlanChange", "CustomerRatePlanChange", "CustomerAssignment",
                        "Archival", "ActivateNewService", "CreateRevService", "ChangeICCIDAndIMEI",
                        "EditUsernameCostCenter"):
        assert f"| {change_type} |" in examples, change_type
