"""R5 and R6: the deployment at scale, under a real scheduler (``./run bench``; docs/development.md).

R5  many accounts   10 service providers, each its own Jasper account (its own simulator process,
                    so one simulator's CPU never paces another account) with its own rate limit,
                    5 to 50 requests/s, and 1,000 to 5,000 devices; all NEW at once. The sensor is
                    triggered once and must claim all ten in one poke; each account's processing run
                    is timed against its own bound, and the whole against the slowest account's bound.
                    Once with the LocalExecutor, once with the CeleryExecutor and two workers (R5C).
R6  one huge change 100,000 devices in one bulk change at 200 requests/s: the run's time against the
                    bound, how long ``prepare`` took, how many batch tasks were mapped (no setting
                    changed), the peak RSS of the largest batch task (``peak_rss_mb`` of each batch
                    task's XCom), and whether the Bulk changes page and Airflow's grid still answer
                    while the run goes and after it.

Both record the CPU the machine spent meanwhile, by role (``cpu``: batch and other task processes,
scheduler, api-server, simulators, PostgreSQL, ...; ``bench/cpu.py``): on 2 CPUs that sum, not the
carrier, can be the bound.

Both take ``scale`` (device counts shrink, the accounts and rates stay) so the smoke test runs them
in CI in about a minute each.
"""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import requests

from bench import harness
from bench.cpu import CpuByRole
from bulkchange.settings import get_settings

LATENCY_MS = 50
R5_ACCOUNTS = 10
R5_SMALL_ACCOUNTS = 3  # below SMALL_SCALE: the smoke test's three accounts, each its own run
SMALL_SCALE = 0.1
R5_FIRST_SP = 11
# R5C's PostgreSQL: each Celery worker slot holds up to about three connections at once (the worker
# child's result backend, its batch task's AMOP engine), Airflow's own processes about forty: 104 at
# most were open with 17 slots on each of two workers (measured), over the 100 a default server allows
R5C_WORKERS = ("worker1", "worker2")
R5C_CONNECTIONS_PER_SLOT = 4
R5C_CONNECTIONS_BASE = 60
R6_RATE = 200.0
R6_SP = 30
# the deployment's setting as the bench started (R4 sets 1 in this process for dag.test())
SCHEDULER_BATCH_CONCURRENCY = get_settings().batch_concurrency


def r5_accounts(scale: float) -> list[dict]:
    """Account i of 10: rate 5 * (i + 1) requests/s, 1,000 .. 5,000 devices (the slow accounts small,
    the fast ones large, so the bounds overlap and the slowest is a small account: nothing may starve
    it). Below ``SMALL_SCALE`` (the smoke test) three accounts spread over the same range: ten
    Airflow runs at once would cost the test suite minutes of CPU to show the same wiring."""
    count = R5_ACCOUNTS if scale >= SMALL_SCALE else R5_SMALL_ACCOUNTS
    out = []
    for k in range(count):
        i = round(k * (R5_ACCOUNTS - 1) / (count - 1))
        n = max(4, int((1000 + round(4000 * i / (R5_ACCOUNTS - 1))) * scale))
        rate = 5.0 * (i + 1)
        out.append({"sp_id": R5_FIRST_SP + i, "rate": rate, "devices": n,
                    "bound_s": round(harness.fleet_calls(n) / rate, 2)})
    return out


def deployment_env(engine, carriers: dict[int, tuple[str, float]]) -> dict[str, str]:
    """What every scheduler scenario (R4S, R5, R6) gives its deployment: the AMOP and carrier
    connections (``carriers``: service provider -> (API root, rate)), the batch slots, no approvals."""
    url = engine.url
    env = {"AIRFLOW_CONN_AMOP_DB": json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port,
                                               "login": url.username, "schema": url.database}),
           "BULKCHANGE_BATCH_CONCURRENCY": str(SCHEDULER_BATCH_CONCURRENCY),
           "BULKCHANGE_APPROVAL_IRREVERSIBLE": "false", "BULKCHANGE_APPROVAL_MAX_DEVICES": "0",
           "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
    for sp_id, (api_root, rate) in carriers.items():
        env[f"AIRFLOW_CONN_CARRIER_SP_{sp_id}"] = harness.carrier_conn_json(api_root, rate)
    return env


def _celery_env(meta_url: str, redis_url: str, queue: str) -> dict[str, str]:
    return {"AIRFLOW__CELERY__BROKER_URL": redis_url.rsplit("/", 1)[0] + "/2",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url.replace("+psycopg2", ""),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue}


def _json(value):
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _wait_final(cluster, engine, bulk_ids: list[int], timeout: float, on_poll=None) -> None:
    from bulkchange.db import bulk_changes
    from bulkchange_demo.demo import wait_for

    def final():
        cluster.check_alive()
        if on_poll:
            on_poll()
        with engine.connect() as conn:
            return all(bulk_changes.load_bulk_change(conn, b).status.is_final for b in bulk_ids)

    wait_for(final, timeout, 1, f"bulk changes {bulk_ids} to finish under the scheduler")
    # finalize writes the final status a moment before the scheduler ends the run
    wait_for(lambda: cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = 'bulk_change_process' "
                                   "AND (end_date IS NULL OR state NOT IN ('success', 'failed'))")[0][0] == 0,
             180, 1, "the processing runs to end")


def run_phases(cluster) -> dict[str, dict]:
    """Where each processing run's time went, from the scheduler's own records (seconds): from the
    run's start to its first batch task starting (``to_batches_s``: prepare and the approval gate,
    with the scheduler loops and task starts between them), the batch tasks (``batches_s``: first
    start to last end), from the last batch to the run's end (``after_batches_s``: wait_for_carrier,
    finalize), the longest a task instance waited between queued and started (``max_queued_s``), and
    each batch task's start and end from the run's start (``batch_spans_s``, by start)."""
    rows = cluster.query(
        "SELECT ti.run_id, ti.task_id, ti.queued_dttm, ti.start_date, ti.end_date, dr.start_date, dr.end_date "
        "FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE ti.dag_id = 'bulk_change_process'")
    out: dict[str, dict] = {}
    for run_id, task_id, queued, start, end, run_start, run_end in rows:
        p = out.setdefault(run_id, {"run_start": run_start, "run_end": run_end, "batch_start": None,
                                    "batch_end": None, "max_queued_s": 0.0, "spans": []})
        if queued and start:
            p["max_queued_s"] = max(p["max_queued_s"], (start - queued).total_seconds())
        if task_id == "process_batch" and start and end:
            p["batch_start"] = min(filter(None, (p["batch_start"], start)))
            p["batch_end"] = max(filter(None, (p["batch_end"], end)))
            p["spans"].append((start, end))
    result = {}
    for run_id, p in out.items():
        if not (p["batch_start"] and p["run_start"] and p["run_end"]):
            continue
        result[run_id] = {"to_batches_s": round((p["batch_start"] - p["run_start"]).total_seconds(), 1),
                          "batches_s": round((p["batch_end"] - p["batch_start"]).total_seconds(), 1),
                          "after_batches_s": round((p["run_end"] - p["batch_end"]).total_seconds(), 1),
                          "max_queued_s": round(p["max_queued_s"], 1),
                          "batch_spans_s": [[round((s - p["run_start"]).total_seconds(), 1),
                                             round((e - p["run_start"]).total_seconds(), 1)]
                                            for s, e in sorted(p["spans"])]}
    return result


def _statuses(engine, bulk_ids: list[int]) -> dict[int, str]:
    from bulkchange.db import bulk_changes

    with engine.connect() as conn:
        return {b: bulk_changes.load_bulk_change(conn, b).status.value for b in bulk_ids}


def r5(scale: float, workdir: Path, *, executor: str = "LocalExecutor") -> dict:
    """Ten accounts at once under the real scheduler (see the module doc)."""
    from tests.scheduler.harness import AirflowCluster, forget_redis_keys

    if not harness.pg_reachable():
        return {"skipped": "PostgreSQL not reachable"}
    redis_url = None
    if executor == "CeleryExecutor":
        redis_url = harness.redis_url()
        if redis_url is None:
            return {"skipped": "Redis not reachable (the Celery broker)"}
    accounts = r5_accounts(scale)
    queue = f"bulkchange_bench_{uuid.uuid4().hex[:8]}"
    # every account's batch tasks at once (a run per account x BULKCHANGE_BATCH_CONCURRENCY slots)
    # spread over the workers, plus room for the prepare / finalize of other runs
    slots = -(-len(accounts) * SCHEDULER_BATCH_CONCURRENCY // len(R5C_WORKERS)) + 2 if redis_url else 0
    connections = R5C_CONNECTIONS_PER_SLOT * slots * len(R5C_WORKERS) + R5C_CONNECTIONS_BASE if redis_url else 0
    with ExitStack() as stack:
        try:
            admin_url, max_connections = stack.enter_context(harness.pg_server(connections))
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            return {"skipped": f"no PostgreSQL with {connections} connections for {slots} slots per worker: {exc}"}
        sims = [stack.enter_context(harness.simulator_process()) for _ in accounts]
        meta_url = stack.enter_context(harness.pg_database("meta", admin_url))
        engine = stack.enter_context(harness.amop_database("postgres", workdir, admin_url))
        start = 1
        for acc, (api, control) in zip(accounts, sims):
            acc["bulk_change_id"] = harness.seed_fleet(engine, control, acc["devices"], start=start,
                                                       sp_id=acc["sp_id"], fresh=False)
            start += acc["devices"]
            control.configure(latency_ms=LATENCY_MS, rate_limit=acc["rate"])
        env = deployment_env(engine, {a["sp_id"]: (api, a["rate"]) for a, (api, _c) in zip(accounts, sims)})
        if redis_url:
            env.update(_celery_env(meta_url, redis_url, queue))
        cluster = AirflowCluster(workdir / f"airflow-r5-{executor}", meta_url, executor=executor, extra_env=env)
        bulk_ids = [a["bulk_change_id"] for a in accounts]
        slowest = max(a["bound_s"] for a in accounts)
        cpu = stack.enter_context(CpuByRole())  # Airflow up and the ten runs; not the seeding
        try:
            cluster.airflow("db", "migrate")
            cluster.start_core()
            if redis_url:
                for name in R5C_WORKERS:
                    cluster.start_celery_worker(name, queue, concurrency=slots)
            cluster.wait_for_dags(["bulk_change_sensor", "bulk_change_process"])
            cluster.airflow("dags", "unpause", "bulk_change_process")
            cluster.airflow("dags", "trigger", "bulk_change_sensor")  # one sensor run, triggered once
            cluster.airflow("dags", "unpause", "bulk_change_sensor")
            _wait_final(cluster, engine, bulk_ids, 3 * slowest + 600)
        finally:
            cluster.stop()
            if redis_url:
                forget_redis_keys(env["AIRFLOW__CELERY__BROKER_URL"], queue)
        runs = {r[0]: (r[1], r[2]) for r in cluster.query(
            "SELECT run_id, start_date, end_date FROM dag_run WHERE dag_id = 'bulk_change_process'")}
        phases = run_phases(cluster)
        claims = [_json(v[0]) for v in cluster.query(
            "SELECT value FROM xcom WHERE dag_id = 'bulk_change_sensor' AND task_id = 'claim' "
            "AND key = 'return_value' ORDER BY run_id")]
        hosts = sorted({r[0] for r in cluster.query(
            "SELECT DISTINCT hostname FROM task_instance WHERE dag_id = 'bulk_change_process' "
            "AND task_id = 'process_batch'")})
        calls = [c.stats() for _api, c in sims]
        statuses = _statuses(engine, bulk_ids)
    per_account = []
    for acc, stats in zip(accounts, calls):
        s, e = runs[f"bulk_change_{acc['bulk_change_id']}"]
        run_s = (e - s).total_seconds()
        per_account.append({"sp_id": acc["sp_id"], "rate": acc["rate"], "devices": acc["devices"],
                            "bound_s": acc["bound_s"], "run_s": round(run_s, 2),
                            "ratio": round(run_s / acc["bound_s"], 3), "status": statuses[acc["bulk_change_id"]],
                            "carrier_peak_rps": stats["max_rps_admitted"],
                            "carrier_429s": stats["by_status"].get("429", 0),
                            "phases": phases.get(f"bulk_change_{acc['bulk_change_id']}", {})})
    first = min(s for s, _e in runs.values())
    last = max(e for _s, e in runs.values())
    total = (last - first).total_seconds()
    return {"executor": executor, "accounts": per_account, "devices": sum(a["devices"] for a in accounts),
            "slowest_bound_s": slowest, "total_s": round(total, 2), "ratio": round(total / slowest, 3),
            "claimed_per_poke": [len(c or []) for c in claims], "workers": hosts if redis_url else None,
            "slots_per_worker": slots or None, "pg_max_connections": max_connections,
            "all_processed": all(v == "PROCESSED" for v in statuses.values()), "cpu": cpu.result()}


def _ui_checks(base: str, bulk_id: int, run_id: str) -> dict:
    """The Bulk changes page (HTML and its JSON) and Airflow's grid: HTTP status and seconds each."""
    http = requests.Session()
    out = {}
    try:
        token = http.get(f"{base}/auth/token", timeout=120).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        for name, path, params in (
                ("bulk_change_page", f"/bulkchange/bulk-changes/{bulk_id}", None),
                ("bulk_change_api", f"/bulkchange/api/bulk-changes/{bulk_id}", None),
                ("devices_api", f"/bulkchange/api/bulk-changes/{bulk_id}/devices", None),
                ("grid_structure", "/ui/grid/structure/bulk_change_process", None),
                ("grid_runs", "/ui/grid/runs/bulk_change_process", None),
                ("grid_task_instances", "/ui/grid/ti_summaries/bulk_change_process", {"run_ids": run_id})):
            t0 = time.perf_counter()
            r = http.get(base + path, params=params, timeout=300)
            out[name] = {"status": r.status_code, "s": round(time.perf_counter() - t0, 2)}
    except requests.RequestException as exc:  # a page that does not answer is a figure, not a crash
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        http.close()
    return out


def r6(scale: float, workdir: Path) -> dict:
    """100,000 devices in one bulk change at 200 requests/s under the real scheduler."""
    from tests.scheduler.harness import AirflowCluster

    if not harness.pg_reachable():
        return {"skipped": "PostgreSQL not reachable"}
    n = max(4, int(100_000 * scale))
    bound = harness.fleet_calls(n) / R6_RATE
    with ExitStack() as stack:
        api, control = stack.enter_context(harness.simulator_process())
        meta_url = stack.enter_context(harness.pg_database("meta"))
        engine = stack.enter_context(harness.amop_database("postgres", workdir))
        t0 = time.perf_counter()
        bulk_id = harness.seed_fleet(engine, control, n, sp_id=R6_SP)
        seed_s = time.perf_counter() - t0
        control.configure(latency_ms=LATENCY_MS, rate_limit=R6_RATE)
        cluster = AirflowCluster(workdir / "airflow-r6", meta_url,
                                 extra_env=deployment_env(engine, {R6_SP: (api, R6_RATE)}))
        run_id = f"bulk_change_{bulk_id}"
        during: dict = {}
        cpu = stack.enter_context(CpuByRole())  # Airflow up, the run, the pages; not the seeding

        def check_during():
            # once the first batch task has finished: the pages while the run still goes
            if during or not cluster.query("SELECT 1 FROM task_instance WHERE dag_id = 'bulk_change_process' "
                                           "AND task_id = 'process_batch' AND state = 'success' LIMIT 1"):
                return
            during.update(_ui_checks(f"http://127.0.0.1:{cluster.api_port}", bulk_id, run_id))

        try:
            cluster.airflow("db", "migrate")
            cluster.start_core()
            cluster.wait_for_dags(["bulk_change_process"])
            cluster.airflow("dags", "unpause", "bulk_change_process")
            cluster.airflow("dags", "trigger", "bulk_change_process", "-r", run_id,
                            "-c", json.dumps({"bulk_change_id": bulk_id}))
            _wait_final(cluster, engine, [bulk_id], 3 * bound + 900, on_poll=check_during)
            after = _ui_checks(f"http://127.0.0.1:{cluster.api_port}", bulk_id, run_id)
        finally:
            cluster.stop()
        (start, end), = cluster.query("SELECT start_date, end_date FROM dag_run WHERE run_id = :r", r=run_id)
        (p_start, p_end), = cluster.query("SELECT start_date, end_date FROM task_instance WHERE run_id = :r "
                                          "AND task_id = 'prepare'", r=run_id)
        batches = [_json(v[0]) for v in cluster.query(
            "SELECT value FROM xcom WHERE run_id = :r AND task_id = 'process_batch' AND key = 'return_value'",
            r=run_id)]
        chosen = cluster.query("SELECT value FROM xcom WHERE run_id = :r AND task_id = 'prepare' "
                               "AND key = 'batch_size'", r=run_id)
        chosen = _json(chosen[0][0]) if chosen else {}
        status = _statuses(engine, [bulk_id])[bulk_id]
        stats = control.stats()
        phases = run_phases(cluster).get(run_id, {})
    run_s = (end - start).total_seconds()
    rss = [b.get("peak_rss_mb") for b in batches if isinstance(b, dict) and b.get("peak_rss_mb")]
    return {"devices": n, "rate": R6_RATE, "status": status, "seed_s": round(seed_s, 1),
            "bound_s": round(bound, 2), "run_s": round(run_s, 2), "ratio": round(run_s / bound, 3),
            "prepare_s": round((p_end - p_start).total_seconds(), 2), "batch_tasks": len(batches),
            "batch_size": (chosen or {}).get("batch_size"), "batch_concurrency": SCHEDULER_BATCH_CONCURRENCY,
            "peak_task_rss_mb": max(rss) if rss else None,
            "carrier_429s": stats["by_status"].get("429", 0), "carrier_peak_rps": stats["max_rps_admitted"],
            "pages_during": during or {"note": "no batch task had finished before the run ended"},
            "pages_after": after, "phases": phases, "cpu": cpu.result()}
