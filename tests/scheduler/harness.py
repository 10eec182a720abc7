"""Run Airflow the way production does, for the tests in this folder: each component its own process.

``AirflowCluster`` builds the environment (AIRFLOW_HOME in a temp dir, a fresh PostgreSQL metadata
database, one JWT secret shared by every component, the project's DAGs and plugins, connections
from ``AIRFLOW_CONN_*``), migrates the metadata DB, starts ``api-server``, ``scheduler``,
``dag-processor`` and, for the CeleryExecutor, ``celery worker`` processes (each in its own
process group, output in ``<home>/logs/<name>.log``), and stops all of them, also when a test fails.

Pieces shared with the demo (``bulkchange_demo.demo``): ``free_port`` and ``wait_for``.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from bulkchange_demo.demo import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKER_NAME_ENV = "SCHEDULER_TEST_WORKER_NAME"


class ComponentDied(RuntimeError):
    pass


class AirflowCluster:
    def __init__(self, home: Path, metadata_url: str, *, executor: str = "LocalExecutor",
                 extra_env: dict[str, str] | None = None):
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.metadata_url = metadata_url
        self.api_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # identifies the Celery worker a task ran on in task_instance.hostname (falls back to the FQDN)
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.scheduler.worker_name.from_env",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}:{ROOT}",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        })
        env.update(extra_env or {})
        self.env = env

    # ------------------------------------------------------------------ commands and processes
    def airflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "airflow", *args], env=self.env, text=True,
                             capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                               f"{out.stderr[-3000:]}")
        return out

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.logs / f"{name}.log", "w") as log_file:
            proc = subprocess.Popen([sys.executable, "-m", "airflow", *args], env={**self.env, **(env or {})},
                                    stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_core(self, *, triggerer: bool = False, suffix: str = "") -> None:
        """``suffix`` names the logs of a restart (``scheduler-2.log``), keeping the first ones."""
        self.start(f"api-server{suffix}", "api-server")
        self.start(f"scheduler{suffix}", "scheduler")
        self.start(f"dag-processor{suffix}", "dag-processor")
        if triggerer:
            self.start(f"triggerer{suffix}", "triggerer")

    def kill_all(self) -> list[int]:
        """``kill -9`` of the whole Airflow at once, as a crashed host or container: every component
        and every process under it. A task runner has a process group of its own (the supervisor
        puts it there), so killing the components' groups alone would leave it running; the tree is
        collected first and every process in it killed. Returns the pids killed; the components are
        forgotten (``start_core`` again to restart on the same metadata DB)."""
        import psutil

        procs = []
        for proc in self.procs.values():
            try:
                parent = psutil.Process(proc.pid)
                procs += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        for proc in self.procs.values():
            proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(procs, timeout=30)
        if alive:
            raise RuntimeError(f"still alive after SIGKILL: {alive}")
        self.procs = {}
        return [p.pid for p in procs]

    def start_celery_worker(self, name: str, queue: str, concurrency: int = 2) -> None:
        self.start(name, "celery", "worker", "--celery-hostname", f"{name}@%h", "--queues", queue,
                   "--concurrency", str(concurrency), "--skip-serve-logs", "--without-mingle", "--without-gossip",
                   env={WORKER_NAME_ENV: name})

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ComponentDied(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def logs_summary(self) -> str:
        return "\n".join(f"---- {name} ----\n{self.log_tail(name, 2500)}" for name in self.procs)

    def stop(self, grace_s: float = 25.0) -> None:
        """SIGTERM every component's process group, wait, then SIGKILL what is left."""
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # children (task processes) too
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # ------------------------------------------------------------------ the metadata DB
    def query(self, sql: str, **params) -> list:
        engine = sa.create_engine(self.metadata_url)
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql), params).all()
        finally:
            engine.dispose()

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 240) -> None:
        def parsed():
            self.check_alive()
            try:
                found = {r[0] for r in self.query("SELECT dag_id FROM serialized_dag")}
            except sa.exc.SQLAlchemyError:
                return False
            return set(dag_ids) <= found
        wait_for(parsed, timeout, 3, f"the dag-processor to parse {dag_ids}")


def forget_redis_keys(url: str, name: str) -> None:
    """Drop what a run left in Redis under ``name``: the broker's bindings of its queue, a rate-limit bucket."""
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"*{name}*"))
    if keys:
        client.delete(*keys)
    client.close()
