import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_LOGS = pytest.StashKey[list]()  # (name, path) of the logs of the processes a test started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the end of the logs of the processes it started (``PROCESS_LOGS``)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, path in item.stash.get(PROCESS_LOGS, []):
            text = Path(path).read_text(errors="replace") if Path(path).exists() else "(no log)"
            report.sections.append((f"{name} log ({path})", text[-8000:]))


class ApiServerProcess:
    """Airflow's api-server as production serves it (uvicorn running ``airflow.api_fastapi.main:app``,
    which marks the process a server context: connections come from the environment and the metadata
    DB), in a process of its own, as in production. Under dag.test() tasks run in the test's process:
    an endpoint served by a thread of that process would share the task SDK's process-wide state with
    them (a task's ``SUPERVISOR_COMMS``), which no deployment does.

    The loopback port is bound here (``url`` is known before ``start``) and handed to uvicorn as a file
    descriptor; the output goes to ``log_path``."""

    def __init__(self, log_path: Path):
        from simulators.server import bind_socket

        self.log_path = Path(log_path)
        self._sock = bind_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> None:
        """Start with the environment as it is now (the test's connections included) and wait, bounded,
        for Airflow's health route to answer."""
        import requests

        fd = self._sock.fileno()
        launcher = ("import uvicorn; uvicorn.run('airflow.api_fastapi.main:app', fd=%d, access_log=False, "
                    "log_config=None, log_level='info')" % fd)
        path = [str(ROOT / "include"), str(ROOT / "plugins"), str(ROOT), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", launcher], env=env, pass_fds=[fd], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the api-server exited with {self.proc.returncode}:\n{self.log()[-8000:]}")
            try:  # the socket listens already: a request waits in its backlog until uvicorn serves
                if requests.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the api-server did not answer within {timeout:.0f}s:\n{self.log()[-8000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own process group (start_new_session)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._sock.close()


@pytest.fixture
def api_server(airflow_db, tmp_path, request):
    """An ``ApiServerProcess`` not started yet (set the test's connections, then ``start()``); stopped
    after the test, its log shown if the test fails."""
    server = ApiServerProcess(tmp_path / "api-server.log")
    request.node.stash.setdefault(PROCESS_LOGS, []).append(("api-server", server.log_path))
    yield server
    server.stop()


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


def run_process(dagbag, bulk_id, batch_size: int):
    """bulk_change_process under dag.test() for one bulk change: asserts the run succeeded and answers
    finalize's summary."""
    from airflow.sdk import DagRunState

    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": batch_size})
    assert run.state == DagRunState.SUCCESS
    return run.get_task_instance("finalize").xcom_pull(task_ids="finalize")


def m2m_counts(engine, bulk_id):
    """(bulk change status, {device change status: count}) of an M2M bulk change."""
    from sqlalchemy import func, select

    from bulkchange.db import bulk_changes
    from bulkchange.db import schema as t

    with engine.connect() as conn:
        b = bulk_changes.load_bulk_change(conn, bulk_id)
        return b.status.value, dict(conn.execute(
            select(t.m2m_device_change.c.Status, func.count()).where(t.m2m_device_change.c.BulkChangeId == bulk_id)
            .group_by(t.m2m_device_change.c.Status)).all())
