import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def airflow_db():
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=dict(os.environ))


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag


@pytest.fixture(autouse=True)
def _restore_param_defaults(request):
    """Isolate tests that run DAGs. Under dag.test() tasks run in this process, and Airflow resolves
    a run's conf into the DAG's own Param objects, so one run's conf would become the next run's
    defaults (a batch_size, a dry_run or the service providers of a reconciliation leaking into
    later tests): put every DAG's defaults back after each test."""
    if "dagbag" not in request.fixturenames:
        yield
        return
    import copy

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    request.getfixturevalue("airflow_db")  # migrated before it is queried (a module may bring its own dagbag)
    dagbag = request.getfixturevalue("dagbag")

    # Every test's AMOP database numbers its bulk changes from 1, but the Airflow metadata DB is
    # shared by the session: a launched run ``bulk_change_1`` left by an earlier test would make the
    # next launch a no-op (skip_when_already_exists) and hand the test the old run.
    with create_session() as session:
        session.query(DagRun).filter(DagRun.run_id.like("bulk_change_%")).delete(synchronize_session=False)

    params = []
    for dag in dagbag.dags.values():
        for holder in [dag] + list(dag.tasks):
            for key in list(getattr(holder, "params", None) or {}):
                param = holder.params.get_param(key)
                params.append((param, copy.deepcopy(param.value)))
    yield
    for param, value in params:
        param.value = value


def amop_conn_json(engine) -> str:
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return json.dumps({"conn_type": "sqlite", "host": url.database})
    return json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
                       "schema": url.database})
