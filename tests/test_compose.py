"""docker-compose.yaml cannot run here (no Docker engine), so check it against the code."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("dags", "plugins", "include/bulkchange", "include/bulkchange_demo")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def _common_env(compose) -> dict:
    return compose["x-airflow-common"]["environment"]


def test_services_of_the_official_shape(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-worker", "airflow-triggerer", "airflow-init", "simulators"):
        assert name in services, name
    assert services["simulators"]["profiles"] == ["simulators"]
    assert _common_env(compose)["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_commands_are_real_airflow_commands(compose):
    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    for name, svc in compose["services"].items():
        if not name.startswith("airflow-") or svc.get("entrypoint"):
            continue
        args = svc["command"].split()
        parser.parse_args(args)  # exits with SystemExit on an unknown command


def test_every_setting_the_code_reads_is_provided(compose):
    read = set()
    for d in CODE_DIRS:
        for path in (ROOT / d).rglob("*.py"):
            read.update(re.findall(r'os\.environ\.get\(\s*"((?:BULKCHANGE|MAX_PARALLEL)_[A-Z_]*)"', path.read_text()))
    assert read, "the code reads its settings from the environment"
    env = _common_env(compose)
    assert sorted(read - set(env)) == []
    # the connections the DAGs use by default
    for conn in ("AIRFLOW_CONN_AMOP_DB", "AIRFLOW_CONN_SMTP_DEFAULT", "AIRFLOW_CONN_CARRIER_SP_1"):
        assert conn in env


def test_mounted_paths_exist_and_include_is_importable(compose):
    common = compose["x-airflow-common"]
    for volume in common["volumes"]:
        host, container = volume.split(":")[:2]
        if host.startswith("./var"):
            continue  # created at run time
        assert (ROOT / host).is_dir(), host
    assert "/opt/airflow/include" in common["environment"]["PYTHONPATH"]
    assert "./include:/opt/airflow/include" in common["volumes"]
    assert (ROOT / "Dockerfile").read_text().count("requirements.txt") >= 1
