"""Shared pieces: a simulator in its own process (so its CPU is not ours), AMOP databases, fleets."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy as sa

from bulkchange.carriers.jasper import JasperClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.db.connect import make_engine
from bulkchange.db.seed import create_schema
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration
from simulators.client import SimulatorControl

ROOT = Path(__file__).resolve().parents[1]
USER, KEY = "bench", "bench-api-key"
PG_ADMIN_URL = os.environ.get("BULKCHANGE_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def commit() -> str:
    """The commit measured; ``+changes`` when tracked files differ from it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return out + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def simulator_process():
    """The simulators in a child process; yields (api_root, control)."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'include'}:{ROOT / 'plugins'}")
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "serve", "--port", str(port),
                             "--jasper-username", USER, "--jasper-api-key", KEY],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/health", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or slow on a loaded machine
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("simulator process did not start")
                time.sleep(0.1)
        yield base + "/jasper/rws/api/v1", SimulatorControl(base + "/jasper")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def client(api_root: str, rate: float | None, max_attempts: int = 5) -> JasperClient:
    policy = CallPolicy(RateLimiter(rate), RetryPolicy(max_attempts=max_attempts, base_delay=0.2, max_delay=5))
    return JasperClient(api_root, USER, KEY, policy=policy)


@contextmanager
def amop_database(kind: str, workdir: Path, admin_url: str = PG_ADMIN_URL):
    """A fresh AMOP database: ``sqlite`` (a file) or ``postgres`` (a throwaway database on the server
    ``admin_url`` connects to)."""
    if kind == "sqlite":
        path = workdir / f"amop-{uuid.uuid4().hex[:8]}.db"
        engine = make_engine(f"sqlite:///{path}")
        create_schema(engine)
        try:
            yield engine
        finally:
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return
    name = f"bulkchange_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(admin_url.rsplit("/", 1)[0] + f"/{name}")
    create_schema(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def pg_database(label: str, admin_url: str = PG_ADMIN_URL):
    """A throwaway empty PostgreSQL database; yields its URL, dropped afterwards."""
    name = f"bulkchange_bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def pg_max_connections(admin_url: str = PG_ADMIN_URL) -> int:
    eng = sa.create_engine(admin_url)
    try:
        with eng.connect() as c:
            return int(c.execute(sa.text("SHOW max_connections")).scalar())
    finally:
        eng.dispose()


@contextmanager
def pg_server(min_connections: int):
    """The PostgreSQL server of a scenario with many clients; yields (admin URL, max_connections).

    The shared server when its ``max_connections`` is enough. Otherwise a throwaway server of the
    same PostgreSQL build (its ``initdb`` and ``postgres``, default settings) in a temporary
    directory on a free port, with ``max_connections`` = ``min_connections``, stopped and removed
    afterwards: a deployment sizes ``max_connections`` for its worker slots
    (docs/deployment.md), and the machine's shared server is not the benchmark's to reconfigure.
    Raises RuntimeError (the scenario's "skipped" reason) when neither is possible."""
    have = pg_max_connections()
    if have >= min_connections:
        yield PG_ADMIN_URL, have
        return
    eng = sa.create_engine(PG_ADMIN_URL)
    try:
        with eng.connect() as c:
            major = int(c.execute(sa.text("SHOW server_version_num")).scalar()) // 10000
    finally:
        eng.dispose()
    bindir = next((d for d in (Path(os.environ.get("BULKCHANGE_BENCH_PG_BINDIR", "/nonexistent")),
                               Path(f"/usr/lib/postgresql/{major}/bin"))
                   if (d / "initdb").exists()), None)  # the one named first, then Debian's
    if bindir is None:
        raise RuntimeError(f"the PostgreSQL server allows {have} connections, the scenario needs "
                           f"{min_connections}, and no initdb of PostgreSQL {major} to start one "
                           "(set BULKCHANGE_BENCH_PG_BINDIR)")
    import pwd
    import shutil
    import tempfile

    as_user: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="bulkchange-bench-pg-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        owner = pwd.getpwnam("postgres")
        os.chown(home, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = home / "data", free_port()

    def run(*args: str) -> None:
        subprocess.run(as_user + list(args), check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(home / "server.log"), "-o",
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={home} "
            f"-c max_connections={min_connections}", "start")
        try:
            yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres", min_connections
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def redis_url() -> str | None:
    """The Redis of the Celery scenario (``BULKCHANGE_TEST_REDIS_URL``, as the tests), or None."""
    import redis

    url = os.environ.get("BULKCHANGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return url
    except Exception:  # noqa: BLE001
        return None


def pg_reachable() -> bool:
    try:
        eng = sa.create_engine(PG_ADMIN_URL)
        with eng.connect():
            pass
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


# Every COMM_PLAN_EVERY-th device has a communication plan and no usage on IOT-1GB: Jasper's Suspend is
# DEACTIVATED, so it first moves to the cheapest plan (IOT-SUSPEND-0), one more carrier call.
COMM_PLAN_EVERY = 10
RATE_PLANS = (("IOT-SUSPEND-0", 0, 0.50), ("IOT-SUSPEND-500", 500, 1.00), ("IOT-1GB", 1024, 4.00))


def fleet_calls(n: int) -> int:
    """Carrier calls the seeded fleet's deactivation needs: one status call per device, plus the rate
    plan switch of every device with a communication plan."""
    return n + len(range(0, n, COMM_PLAN_EVERY))


def seed_fleet(engine, control: SimulatorControl, n: int, *, start: int = 1, sp_id: int = 1,
               fresh: bool = True) -> int:
    """n ACTIVATED Jasper devices (every COMM_PLAN_EVERY-th with a communication plan, so the
    deactivation's cheapest-plan-first rule runs) and a NEW "Deactivated" bulk change (the legacy
    applied the rule to that request only, not to Suspend) for service provider ``sp_id``.
    ``fresh``: empty the simulator and the AMOP device table first (one fleet at a time); without
    it, fleets of several service providers live side by side (ICCIDs from ``start`` must not overlap)."""
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    comm = {x: ("IOT-COMM" if i % COMM_PLAN_EVERY == 0 else None) for i, x in enumerate(iccids)}
    if fresh:
        control.reset()  # the simulator's default account has RATE_PLANS and IOT-COMM
    for i in range(0, n, 5000):
        control.seed_devices([{"iccid": x, "status": "ACTIVATED", "ratePlan": "IOT-1GB", "communicationPlan": comm[x]}
                              for x in iccids[i:i + 5000]])
    with engine.begin() as conn:
        if conn.execute(sa.select(t.service_provider.c.Id).where(t.service_provider.c.Id == sp_id)).first() is None:
            seed.add_service_provider(conn, sp_id=sp_id, name=f"bench {sp_id}", integration=Integration.JASPER,
                                      tenant_id=1)
            conn.execute(t.jasper_carrier_rate_plan.insert(), [
                {"ServiceProviderId": sp_id, "RatePlanCode": code, "CommunicationPlan": "IOT-COMM", "PlanMB": mb,
                 "BaseRate": rate, "IsActive": True} for code, mb, rate in RATE_PLANS])
        if fresh:
            conn.execute(t.device.delete())
        for i in range(0, n, 10_000):
            seed.add_devices(conn, [{"ICCID": x, "Status": "ACTIVATED", "CarrierRatePlan": "IOT-1GB",
                                     "CommunicationPlan": comm[x], "DataUsageMB": 0} for x in iccids[i:i + 10_000]],
                             sp_id=sp_id, tenant_id=1)
        return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": x, "ChangeRequest": {"UpdateStatus": "Deactivated"}}
                                              for x in iccids])


def carrier_conn_json(api_root: str, rate: float | None) -> str:
    extra = {"rate_limit_per_s": rate} if rate else {}
    return json.dumps({"conn_type": "http", "host": api_root, "login": USER, "password": KEY, "extra": extra})
