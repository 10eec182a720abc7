"""Shared fixtures: AMOP databases (SQLite and PostgreSQL), statement capture for the SQL Server
compile check, and an isolated Airflow home. Environment is set before Airflow is imported."""
from __future__ import annotations

import os
import secrets
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One Airflow home (and SQLite metadata DB) per test process: the xdist workers (pytest.ini) inherit
# the environment of the process that started them, so a home this file made there is replaced by
# one of their own; an AIRFLOW_HOME the developer set is kept.
_OWN_HOME = "BULKCHANGE_TEST_AIRFLOW_HOME"
if "AIRFLOW_HOME" not in os.environ or os.environ.get(_OWN_HOME) == os.environ["AIRFLOW_HOME"]:
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix=f"bulkchange-airflow-{_worker}-"))
    os.environ["AIRFLOW_HOME"] = os.environ[_OWN_HOME] = str(_AIRFLOW_HOME)
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(ROOT / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# as deployed (docker-compose.yaml): every XCom value goes through the scrubber
os.environ.setdefault("AIRFLOW__CORE__XCOM_BACKEND", "bulkchange_plugins.xcom.ScrubbedXCom")
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
                      f"sqlite:///{Path(os.environ['AIRFLOW_HOME']) / 'airflow.db'}")
# The in-process api-server apps some tests build (create_app) sign their tokens with this; Airflow
# only generates one when it writes a new airflow.cfg, and a test must not depend on which test of its
# process made Airflow do that first.
os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_urlsafe(32))
# The approval gate (bulkchange.approval) holds irreversible or large runs for a person; tests that are
# not about it run without it (tests/dags/test_approval_gate.py turns it on).
os.environ.setdefault("BULKCHANGE_APPROVAL_IRREVERSIBLE", "false")
os.environ.setdefault("BULKCHANGE_APPROVAL_MAX_DEVICES", "0")
for p in (ROOT / "include", ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from sqlalchemy import event  # noqa: E402
from sqlalchemy.sql.elements import ClauseElement  # noqa: E402

from bulkchange.db.connect import make_engine  # noqa: E402
from bulkchange.db.seed import create_schema  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ADMIN_URL = os.environ.get("BULKCHANGE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

# Every Core statement any test engine executes, for tests/db/test_mssql_compile.py
CAPTURED_STATEMENTS: dict[str, ClauseElement] = {}


def _ours(stmt) -> bool:
    """Our statements only: the dialects' own catalog queries (pg_catalog, sqlite_master) are not ours."""
    from sqlalchemy.sql.util import find_tables

    from bulkchange.db.schema import metadata

    tables = find_tables(stmt, include_crud=True)
    return bool(tables) and all(tb.key in metadata.tables for tb in tables)


def _capture(engine):
    @event.listens_for(engine, "before_execute")
    def _before_execute(conn, clauseelement, multiparams, params, execution_options):
        if isinstance(clauseelement, ClauseElement) and _ours(clauseelement):
            key = f"{type(clauseelement).__name__}:{clauseelement}"
            CAPTURED_STATEMENTS.setdefault(key, clauseelement)
    return engine


def pg_available() -> str | None:
    """None if the PostgreSQL server answers, else why not."""
    import sqlalchemy as sa
    try:
        eng = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(sa.text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {type(exc).__name__}"


def require_pg():
    reason = pg_available()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: .ci/run must start PostgreSQL")
        pytest.skip(reason)


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'amop.db'}"


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = _capture(make_engine(sqlite_url))
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    require_pg()
    import sqlalchemy as sa
    name = f"bulkchange_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_engine(pg_url):
    engine = _capture(make_engine(pg_url))
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def amop_engine(request):
    """The AMOP DB on each supported embedded/test dialect."""
    return request.getfixturevalue("sqlite_engine" if request.param == "sqlite" else "pg_engine")


@pytest.fixture(scope="session")
def simulator():
    """All carrier simulators on a free loopback port for the whole session."""
    from simulators.server import SimulatorServer

    with SimulatorServer() as server:
        yield server


class _Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler protocol
        from email import message_from_bytes, policy

        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback (aiosmtpd); ``.inbox.messages`` holds what arrived."""
    from aiosmtpd.controller import Controller

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    controller.inbox = inbox
    controller.conn_json = __import__("json").dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "bulkchange@example.com"}})
    yield controller
    controller.stop()


@pytest.fixture(autouse=True)
def _fresh_thingspace_tokens():
    """ThingSpace tokens are cached per worker process (carriers/thingspace.py); a test starts
    without the previous test's (its simulator was reset, the tokens would only earn a 401)."""
    from bulkchange.carriers import thingspace

    thingspace._TOKENS.clear()
    yield


# Files whose tests start whole Airflow deployments (scheduler, dag-processor, api-server, Celery
# workers) or the benchmarks: one worker runs them one after another, first, while the other workers
# take the rest. Three deployments at once on a 2-CPU machine starve each other's heartbeats and make
# their waits fail by chance. Then the other minutes-long files, so the run does not end waiting on
# one started last. The order inside each file is kept.
_ONE_DEPLOYMENT_AT_A_TIME = ("tests/scheduler/", "bench/")
_LONG_FIRST = _ONE_DEPLOYMENT_AT_A_TIME + ("tests/browser/", "tests/integration/test_kill_batch.py",
                                           "tests/dags/test_cli_dags_test.py")


def pytest_collection_modifyitems(config, items):
    root = Path(str(config.rootpath))

    def long_first(item) -> int:
        rel = Path(str(item.path)).relative_to(root).as_posix()
        return next((i for i, prefix in enumerate(_LONG_FIRST) if rel.startswith(prefix)), len(_LONG_FIRST))

    items.sort(key=long_first)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest.ini's --dist=loadfile, with every file of ``_ONE_DEPLOYMENT_AT_A_TIME`` in one unit."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class OneDeploymentAtATime(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(_ONE_DEPLOYMENT_AT_A_TIME):
                return "one Airflow deployment at a time"
            return super()._split_scope(nodeid)

    return OneDeploymentAtATime(config, log)
