"""The main job on the embedded default: a 1,000-device Jasper deactivation, end to end, for real.

1. Start the carrier simulators on loopback (Jasper with 1,000 seeded devices).
2. Create the AMOP database (SQLite), a Jasper service provider, its devices and rate plans, and
   a StatusUpdate bulk change to Deactivated, inserted as NEW the way the portal writes it.
3. Run Airflow (``airflow standalone``: scheduler, dag-processor, api-server, triggerer;
   LocalExecutor; SQLite metadata DB) with the project's DAGs and demo connections.
4. Trigger bulk_change_sensor, which claims the bulk change and launches bulk_change_process.
5. Wait for the bulk change to reach a final status and print a per-status summary. The request
   asks "Deactivated" (a Suspend would not switch plans: the legacy rule): the half of the fleet
   with a communication plan first moves to the cheapest rate plan covering its usage, and the
   summary counts those switches from the log rows.

``--serve`` does steps 1-3 and keeps Airflow up (UI on the printed URL) until Ctrl-C.
Everything lives under ``var/demo/`` and is recreated on every run.

Startup waits for the api-server to answer and for the dag-processor to parse the DAGs, printing
what it still waits for, up to ``--startup-timeout`` seconds (a busy 2-core machine can take
minutes). DAGs are created paused; only the ones the demo uses are unpaused, once the api-server
listens, so no run starts before it can reach the Execution API. ``bulk_change_sqs`` stays paused
unless ``DEVICE_BULK_CHANGE_QUEUE_URL`` names a queue. The UI is on port 8080 (``--port``; the next
free port when 8080 is taken).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.db.connect import make_engine
from bulkchange.db.seed import create_schema
from bulkchange.models import ChangeType, Integration
from bulkchange.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var" / "demo"
SP_ID, TENANT_ID = 1, 1
JASPER_USER, JASPER_KEY = "demo", "demo-api-key-7f3a9c"


DEFAULT_PORT = 8080
# the DAGs each mode needs; every other DAG stays paused (bulk_change_sqs also needs a queue)
DEMO_DAGS = ["bulk_change_sensor", "bulk_change_process"]
SERVE_DAGS = DEMO_DAGS + ["bulk_change_submit"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_or_free(wanted: int) -> int:
    """``wanted`` when nothing listens there, else a free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", wanted))
        except OSError:
            return free_port()
    return wanted


def demo_devices(n: int) -> list[dict]:
    """Half the fleet has a communication plan, so the DEACTIVATED rate-plan rule shows up."""
    out = []
    for i in range(n):
        with_plan = i % 2 == 0
        out.append({
            "ICCID": seed.make_iccid(i + 1), "MSISDN": f"1555{i + 1:07d}", "IMEI": f"35{i + 1:013d}",
            "Status": "ACTIVATED", "CarrierRatePlan": "IOT-1GB",
            "CommunicationPlan": "IOT-COMM" if with_plan else None,
            "DataUsageMB": (i % 7) * 100,
        })
    return out


def seed_simulator(control, devices: list[dict]) -> None:
    """The same fleet at the Jasper simulator (its default account has the demo's rate and
    communication plans)."""
    control.seed_devices([{"iccid": d["ICCID"], "msisdn": d["MSISDN"], "imei": d["IMEI"], "status": d["Status"],
                           "ratePlan": d["CarrierRatePlan"], "communicationPlan": d["CommunicationPlan"]}
                          for d in devices])


# the log row the Jasper client writes for each rate plan edit (bulkchange.carriers.jasper)
RATE_PLAN_LOG = "Update Jasper Rate Plan: Jasper API"


def rate_plan_switches(conn, bulk_id: int) -> dict[str, int]:
    """Devices whose rate plan the carrier took before their deactivation, per new plan, read from
    the bulk change's log rows (one applied rate plan edit per device change)."""
    lg = t.device_bulk_change_log
    rows = conn.execute(select(lg.c.M2MDeviceChangeId, lg.c.RequestText).where(
        lg.c.BulkChangeId == bulk_id, lg.c.LogEntryDescription == RATE_PLAN_LOG,
        lg.c.Outcome == "applied")).all()
    plans: dict[int, str] = {}
    for dc_id, text in rows:  # "PUT /devices/<iccid>\n<JSON body>"
        try:
            plans[dc_id] = str(json.loads((text or "").partition("\n")[2] or "{}").get("ratePlan") or "?")
        except (ValueError, AttributeError):
            plans[dc_id] = "?"
    out: dict[str, int] = {}
    for plan in plans.values():
        out[plan] = out.get(plan, 0) + 1
    return out


def seed_amop(url: str, n: int) -> int:
    engine = make_engine(url)
    create_schema(engine)
    devices = demo_devices(n)
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP_ID, name="Demo Jasper account", integration=Integration.JASPER,
                                  tenant_id=TENANT_ID)
        for code, mb, rate in (("IOT-SUSPEND-0", 0, 0.50), ("IOT-SUSPEND-500", 500, 1.00), ("IOT-1GB", 1024, 4.00)):
            conn.execute(t.jasper_carrier_rate_plan.insert().values(
                ServiceProviderId=SP_ID, RatePlanCode=code, CommunicationPlan="IOT-COMM", PlanMB=mb, BaseRate=rate,
                IsActive=True))
        seed.add_devices(conn, devices, sp_id=SP_ID, tenant_id=TENANT_ID)
        bulk_id = seed.add_bulk_change(
            conn, sp_id=SP_ID, tenant_id=TENANT_ID, change_type=ChangeType.STATUS_UPDATE, created_by="demo",
            requests=[{"ICCID": d["ICCID"], "MSISDN": d["MSISDN"],
                       "ChangeRequest": {"UpdateStatus": "Deactivated", "IsIgnoreCurrentStatus": False}}
                      for d in devices])
    engine.dispose()
    return bulk_id


def airflow_env(amop_url: str, jasper_url: str, api_port: int) -> dict[str, str]:
    home = VAR / "airflow"
    env = dict(os.environ)  # the children inherit this process's environment, then the demo's setup
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # the connection form's Test button (off by default: it calls whatever host a user types)
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        # nothing runs before the api-server listens: the demo unpauses what it uses once it does
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # loopback only: this demo lets anyone who reaches it in as admin (no login)
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        # a busy 2-core machine answers the Execution API slowly: a task waits and retries instead of
        # failing its first call (the 5 s default turned the first sensor runs red)
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
        "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW_CONN_AMOP_DB": json.dumps({"conn_type": "sqlite", "host": amop_url.removeprefix("sqlite:///")}),
        f"AIRFLOW_CONN_CARRIER_SP_{SP_ID}": json.dumps({
            "conn_type": "http", "host": jasper_url, "login": JASPER_USER, "password": JASPER_KEY,
            "extra": {"rate_limit_per_s": 200, "timeout_s": 10}}),
        # run notes are written through the REST API (no login needed in this setup)
        "AIRFLOW_CONN_AIRFLOW_API": json.dumps({"conn_type": "http", "host": f"http://127.0.0.1:{api_port}"}),
        "PYTHONPATH": f"{ROOT / 'include'}:{ROOT / 'plugins'}",
        # standalone starts its components as `airflow ...` from PATH
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    })
    return env


def airflow(env: dict, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, check=check, text=True,
                          capture_output=capture)


def wait_for(predicate, timeout: float, interval: float = 2.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class AirflowApi:
    """The demo's Airflow, through its REST API (no login in this setup: all users are admins)."""

    def __init__(self, base_url: str):
        import requests

        self.base = base_url.rstrip("/")
        self.http = requests.Session()
        self._token = False

    def healthy(self) -> bool:
        import requests

        try:
            r = self.http.get(f"{self.base}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return False
        return r.ok and r.json().get("metadatabase", {}).get("status") == "healthy"

    def _auth(self) -> None:
        if not self._token:
            r = self.http.get(f"{self.base}/auth/token", timeout=30)
            r.raise_for_status()
            self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
            self._token = True

    def parsed(self, dag_ids: list[str]) -> set[str]:
        """The DAGs of ``dag_ids`` the dag-processor has parsed so far (none while the server is too
        busy to answer)."""
        import requests

        found = set()
        try:
            self._auth()
            for dag_id in dag_ids:
                r = self.http.get(f"{self.base}/api/v2/dags/{dag_id}", timeout=60)
                if r.ok:
                    found.add(dag_id)
        except requests.RequestException:
            pass
        return found

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._auth()
        r = self.http.patch(f"{self.base}/api/v2/dags/{dag_id}", params={"update_mask": "is_paused"},
                            json={"is_paused": paused}, timeout=30)
        r.raise_for_status()

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self._auth()
        r = self.http.post(f"{self.base}/api/v2/dags/{dag_id}/dagRuns",
                           json={"logical_date": None, "conf": conf or {}}, timeout=30)
        r.raise_for_status()
        return r.json()["dag_run_id"]


def wait_until_ready(api: AirflowApi, proc: subprocess.Popen, dag_ids: list[str], timeout: float,
                     log_path: Path, report_every: float = 15.0) -> None:
    """Wait for the api-server and the parsed DAGs, saying what is missing every ``report_every`` s."""
    started = time.monotonic()
    last_report = started
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited with {proc.returncode}; see {log_path}")
        up = api.healthy()
        parsed = api.parsed(dag_ids) if up else set()
        if up and parsed == set(dag_ids):
            print(f"   ready after {time.monotonic() - started:.0f}s", flush=True)
            return
        now = time.monotonic()
        if now - started > timeout:
            missing = "the api-server" if not up else f"the DAGs {sorted(set(dag_ids) - parsed)} to be parsed"
            raise TimeoutError(f"Airflow was not ready after {timeout:.0f}s: still waiting for {missing} "
                               f"(see {log_path}; a busy machine may need --startup-timeout)")
        if now - last_report >= report_every:
            state = (f"api-server up, {len(parsed)}/{len(dag_ids)} DAGs parsed" if up
                     else "waiting for the api-server to listen")
            print(f"   {now - started:4.0f}s  {state}", flush=True)
            last_report = now
        time.sleep(3)


def unpause_for_demo(api: AirflowApi, dag_ids: list[str]) -> list[str]:
    """Unpause the DAGs the demo uses; the legacy SQS entry only when a queue is configured."""
    wanted = list(dag_ids)
    if get_settings().device_bulk_change_queue_url:
        wanted.append("bulk_change_sqs")
    for dag_id in wanted:
        api.set_paused(dag_id, False)
    return wanted


def stop_process_group(proc: subprocess.Popen) -> None:
    """Stop standalone and every component it started (they share its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    time.sleep(2)  # let the components finish their own shutdown, then make sure none is left
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def print_summary(amop_url: str, bulk_id: int, sim_control) -> dict:
    engine = make_engine(amop_url)
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        counts = progress.status_counts(conn, bulk)
        device_status = dict(conn.execute(select(t.device.c.Status, func.count()).group_by(t.device.c.Status)).all())
        history = conn.execute(select(func.count()).select_from(t.device_status_history)
                               .where(t.device_status_history.c.BulkChangeId == bulk_id)).scalar_one()
        logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log)
                            .where(t.device_bulk_change_log.c.BulkChangeId == bulk_id)).scalar_one()
        leaks = conn.execute(select(func.count()).select_from(t.device_bulk_change_log).where(
            t.device_bulk_change_log.c.RequestText.contains(JASPER_KEY)
            | t.device_bulk_change_log.c.ResponseText.contains(JASPER_KEY)
            | t.device_bulk_change_log.c.RequestText.contains("Authorization")
        )).scalar_one()
        switches = rate_plan_switches(conn, bulk_id)
        with_comm_plan = conn.execute(select(func.count()).select_from(t.device)
                                      .where(t.device.c.CommunicationPlan.is_not(None))).scalar_one()
    status_puts = [c for c in sim_control.calls(method="PUT") if '"status"' in json.dumps(c.get("body") or c.get("request") or {})]
    per_device: dict[str, int] = {}
    for c in status_puts:
        per_device[c.get("iccid")] = per_device.get(c.get("iccid"), 0) + 1
    print()
    print(f"Bulk change {bulk_id}: {bulk.status.value}")
    print("  device changes by status: " + ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print("  Device table by status:   " + ", ".join(f"{k}={v}" for k, v in sorted(device_status.items())))
    print(f"  DeviceStatusHistory rows: {history}")
    print(f"  DeviceBulkChangeLog rows: {logs} (rows containing the API key or an Authorization header: {leaks})")
    print(f"  rate plan switched first: {sum(switches.values())} devices of {with_comm_plan} with a communication "
          "plan (cheapest plan covering the usage, before DEACTIVATED)"
          + (": " + ", ".join(f"{k}={v}" for k, v in sorted(switches.items())) if switches else ""))
    print(f"  carrier status changes:   {len(status_puts)} for {len(per_device)} devices "
          f"(most for one device: {max(per_device.values(), default=0)})")
    return {"status": bulk.status.value, "counts": counts, "history": history, "logs": logs, "leaks": leaks,
            "rate_plan_switches": switches}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--serve", action="store_true", help="keep Airflow running with the UI; no bulk change run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for the bulk change")
    parser.add_argument("--startup-timeout", type=float, default=900,
                        help="seconds to wait for the api-server and DAG parsing (default 900)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="UI / API port (default 8080; the next free port when taken)")
    args = parser.parse_args(argv)

    from simulators.server import SimulatorServer

    def stop(signum, _frame):  # run the cleanup below (Airflow runs in its own process group)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    shutil.rmtree(VAR, ignore_errors=True)
    (VAR / "airflow").mkdir(parents=True)
    amop_url = f"sqlite:///{VAR / 'amop.db'}"

    print("== starting carrier simulators")
    sims = SimulatorServer(jasper_accounts={JASPER_USER: JASPER_KEY}, latency_ms=20)
    sims.start()
    control = sims.control("jasper")
    seed_simulator(control, demo_devices(args.devices))
    print(f"   Jasper simulator: {sims.url_for('jasper')} ({args.devices} devices)")

    print("== creating the AMOP database and a NEW bulk change")
    bulk_id = seed_amop(amop_url, args.devices)
    print(f"   {amop_url}: bulk change {bulk_id}, StatusUpdate -> Deactivated, {args.devices} devices")

    api_port = port_or_free(args.port)
    if api_port != args.port:
        print(f"   port {args.port} is taken; using {api_port}")
    env = airflow_env(amop_url, sims.url_for("jasper"), api_port)
    print("== preparing the Airflow metadata database (SQLite)")
    airflow(env, "db", "migrate")
    print(f"== starting Airflow (scheduler, dag-processor, api-server on :{api_port}, triggerer)")
    log_path = VAR / "airflow" / "standalone.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        api = AirflowApi(f"http://127.0.0.1:{api_port}")
        dags = SERVE_DAGS if args.serve else DEMO_DAGS
        print(f"== waiting for the api-server and the DAGs {', '.join(dags)} (up to {args.startup_timeout:.0f}s)")
        wait_until_ready(api, proc, dags, args.startup_timeout, log_path)
        print(f"   unpaused: {', '.join(unpause_for_demo(api, dags))} (the other DAGs stay paused)")
        if args.serve:
            print(f"\nAirflow UI: http://127.0.0.1:{api_port} (no login needed in this demo setup); "
                  f"Bulk changes page: http://127.0.0.1:{api_port}/plugin/bulk-changes")
            print(f"Bulk change {bulk_id} is NEW; the sensor DAG picks it up within "
                  f"{get_settings().sensor_every_minutes} minutes. Ctrl-C stops everything.")
            signal.pause()
            return 0
        print("== triggering bulk_change_sensor")
        api.trigger("bulk_change_sensor")
        engine = make_engine(amop_url)
        started = time.monotonic()
        last = [""]

        def finished():
            with engine.connect() as conn:
                bulk = bulk_changes.load_bulk_change(conn, bulk_id)
                counts = progress.status_counts(conn, bulk)
            line = f"   {time.monotonic() - started:5.0f}s  {bulk.status.value:<22} " + \
                ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            if line.split(None, 1)[1] != last[0]:
                print(line, flush=True)
                last[0] = line.split(None, 1)[1]
            return bulk.status.is_final

        wait_for(finished, args.timeout, 3, f"bulk change {bulk_id} to finish (see {log_path})")
        summary = print_summary(amop_url, bulk_id, control)
        ok = summary["status"] == "PROCESSED" and summary["leaks"] == 0
        print("\nDemo " + ("succeeded." if ok else f"ended with bulk change status {summary['status']}."))
        return 0 if ok else 1
    finally:
        stop_process_group(proc)
        sims.stop()


if __name__ == "__main__":
    sys.exit(main())
