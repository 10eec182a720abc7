"""Browser tests: Playwright drives Debian's Chromium (``/usr/bin/chromium``, installed by apt; no
browser is downloaded) against a real Airflow (api-server, scheduler, dag-processor as processes,
PostgreSQL metadata DB) with the project's DAGs and plugin, and the Jasper simulator.

Outside CI they skip with the reason when Chromium, Playwright or PostgreSQL is missing; under
CI=true they fail instead (.ci/run installs Chromium and starts PostgreSQL). Screenshots go to
docs/images/, so the pictures in the docs are always what the current code shows.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests

from bulkchange.db.connect import make_engine
from bulkchange.db.seed import create_schema
from tests.conftest import IN_CI
from tests.scheduler.conftest import pg_database  # noqa: F401  (fixture)
from tests.scheduler.harness import AirflowCluster

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
CHROMIUM = os.environ.get("BULKCHANGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
JASPER_USER, JASPER_KEY = "browser", "browser-test-key-5521"
SP_ID, TENANT_ID = 1, 1


def _missing(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true but {reason}: .ci/run must install it")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    """Module-scoped on purpose: Playwright's sync API keeps an asyncio loop running in the main thread
    while it is open, and any later test calling asgiref's async_to_sync there (Airflow's JWT validator)
    would fail with "cannot use AsyncToSync in the same thread as an async event loop"."""
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).exists()):
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (requirements.txt)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    # a busy 2-core machine takes minutes to render the UI; waits are bounded, not sleeps
    context.set_default_timeout(300_000)
    context.set_default_navigation_timeout(300_000)
    pg = context.new_page()
    yield pg
    try:  # what the browser showed last, for a failing test
        pg.screenshot(path=str(Path(os.environ.get("AIRFLOW_HOME", "/tmp")) / "last-browser-page.png"))
    except Exception:  # noqa: BLE001
        pass
    context.close()


class Airflow:
    """The running cluster, its REST API (all users are admins in this setup) and the AMOP DB."""

    def __init__(self, cluster: AirflowCluster, amop_url: str):
        self.cluster = cluster
        self.base = f"http://127.0.0.1:{cluster.api_port}"
        self.amop = make_engine(amop_url)
        self.http = requests.Session()
        token = self.http.get(f"{self.base}/auth/token", timeout=300).json()["access_token"]
        self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params):
        r = self.http.get(f"{self.base}{path}", params=params, timeout=300)
        r.raise_for_status()
        return r.json()

    def unpause(self, dag_id: str) -> None:
        r = self.http.patch(f"{self.base}/api/v2/dags/{dag_id}", params={"update_mask": "is_paused"},
                            json={"is_paused": False}, timeout=300)
        r.raise_for_status()

    def trigger(self, dag_id: str, conf: dict, run_id: str | None = None) -> str:
        body = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        r = self.http.post(f"{self.base}/api/v2/dags/{dag_id}/dagRuns", json=body, timeout=300)
        r.raise_for_status()
        return r.json()["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100, order_by="-id")["dag_runs"]


@pytest.fixture(scope="module")
def jasper():
    from simulators.server import SimulatorServer

    # slow enough that a few hundred devices take a while: the page must show progress moving
    with SimulatorServer(carriers=["jasper"], jasper_accounts={JASPER_USER: JASPER_KEY}, latency_ms=60) as server:
        yield server


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, jasper):
    """Airflow with the project's DAGs and plugin on fresh PostgreSQL databases (metadata and AMOP)."""
    from tests.conftest import require_pg

    require_pg()
    import uuid

    import sqlalchemy as sa

    from tests.conftest import PG_ADMIN_URL

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = [f"bulkchange_browser_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("meta", "amop")]
    with admin.connect() as c:
        for name in names:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    meta_url, amop_url = (PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{n}" for n in names)
    engine = make_engine(amop_url)
    create_schema(engine)
    engine.dispose()
    url = make_engine(amop_url).url
    home = tmp_path_factory.mktemp("airflow")
    cluster = AirflowCluster(home, meta_url, executor="LocalExecutor", extra_env={
        "AIRFLOW_CONN_AMOP_DB": json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port,
                                           "login": url.username, "schema": url.database}),
        f"AIRFLOW_CONN_CARRIER_SP_{SP_ID}": json.dumps({
            "conn_type": "http", "host": jasper.url_for("jasper"), "login": JASPER_USER, "password": JASPER_KEY,
            "extra": {"rate_limit_per_s": 25, "timeout_s": 10}}),
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
    })
    cluster.env["AIRFLOW_CONN_AIRFLOW_API"] = json.dumps({"conn_type": "http", "host": cluster.env["AIRFLOW__API__BASE_URL"]})
    try:
        cluster.airflow("db", "migrate", timeout=600)
        cluster.start_core()
        cluster.wait_for_dags(["bulk_change_process", "bulk_change_submit"], timeout=600)
        from bulkchange_demo.demo import wait_for

        wait_for(lambda: _healthy(cluster), 300, 2, "the api-server")
        af = Airflow(cluster, amop_url)
        for dag_id in ("bulk_change_process", "bulk_change_submit"):
            af.unpause(dag_id)
        yield af
    except Exception as exc:
        raise AssertionError(f"{exc}\n{cluster.logs_summary()}") from exc
    finally:
        cluster.stop()
        with admin.connect() as c:
            for name in names:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _healthy(cluster: AirflowCluster) -> bool:
    cluster.check_alive()
    try:
        return requests.get(f"http://127.0.0.1:{cluster.api_port}/api/v2/monitor/health", timeout=5).ok
    except requests.RequestException:
        return False


def screenshot(page, name: str) -> Path:
    IMAGES.mkdir(parents=True, exist_ok=True)
    path = IMAGES / name
    page.screenshot(path=str(path))
    return path
