"""./run bench [--scale F] [--only R1,R2,...] [--out bench/results/latest.json]

Measures, in one run on this machine, against the Jasper simulator running in its own process:

R1  bound ratio     N devices (10,000) at 50 requests/s and 50 ms latency through the core
                    (prepare, process_batch per batch of 100, finalize; SQLite): wall / (calls / 50); calls = N status
                    calls + a rate plan switch for the 1 in 10 devices with a communication plan
R2  legacy shape    1,000 devices at 100 ms latency, no rate limit: a sequential per-device loop (the
                    legacy code's shape) vs our engine (max_parallel 10, and 20 = two batch tasks at once)
R3  cost per device CPU time of this process per device at zero latency and no rate limit, on SQLite
                    and PostgreSQL (client + validation + DB writes; the simulator's CPU is not counted);
                    the median of three runs on each database, alternating (every run in the JSON)
R4  Airflow         the R1 workload through bulk_change_process under dag.test() / the core alone;
                    and batch size 1 vs 100 vs 500 on 1,000 devices under dag.test()
R4S real scheduler  the R1 workload through bulk_change_process under a real scheduler (api-server,
                    scheduler, dag-processor as processes; LocalExecutor; PostgreSQL metadata and AMOP
                    DBs; BULKCHANGE_BATCH_CONCURRENCY batch tasks at once, each with its share of the
                    account's rate, or sharing the account's whole rate through Redis when
                    BULKCHANGE_RATE_LIMIT_REDIS_URL is set; batch size chosen by prepare from the rate)
                    / the core alone
MEM                 peak RSS of one process running process_batch over the largest batch (5,000 devices)
R5  many accounts   10 Jasper accounts at 5..50 requests/s with 1,000..5,000 devices each, all NEW at
                    once, claimed by one sensor poke, under a real scheduler (LocalExecutor); R5C the
                    same with the CeleryExecutor and two workers (bench/scale.py)
R6  one huge change 100,000 devices in one bulk change at 200 requests/s under a real scheduler:
                    ratio to the bound, prepare's time, peak RSS per batch task, the pages still answer

``--scale`` multiplies every device count (the smoke test uses a tiny one). Prints a table and
writes the same figures as JSON, with the commit, the settings and the machine's load average
before and after each scenario; ``python -m bench.report`` turns that JSON into the docs' table.
Before each scenario it waits (``--settle``, 240 s at most) for the load the previous one left to
fall to half the CPUs, so that "under load" in the table means other work, not the benchmark's own.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import harness, scale as scale_runs
from bench.report import is_under_load
from bulkchange.batch_sizing import MAX_BATCH_SIZE
from bulkchange.settings import get_settings

RATE, LATENCY_MS = 50.0, 50
# R4 (dag.test) sets BULKCHANGE_BATCH_CONCURRENCY=1 in this process; R4S's components get the
# deployment's value as it was when the bench started.
SCHEDULER_BATCH_CONCURRENCY = scale_runs.SCHEDULER_BATCH_CONCURRENCY


def _settings() -> str:
    """The deployment settings R4S runs with (they change its figure)."""
    shared = "rate shared through Redis" if get_settings().rate_limit_redis_url else "per-task rate share"
    return f"BULKCHANGE_BATCH_CONCURRENCY={SCHEDULER_BATCH_CONCURRENCY}, {shared}"


def settle(limit_s: float, poll_s: float = 5.0) -> float:
    """Wait until the 1-minute load average is at most half the CPUs, ``limit_s`` at most; returns
    the seconds waited."""
    t0 = time.monotonic()
    while is_under_load(os.getloadavg()[0], os.cpu_count()) and time.monotonic() - t0 < limit_s:
        time.sleep(min(poll_s, max(0.0, limit_s - (time.monotonic() - t0))))
    return round(time.monotonic() - t0, 1)


def _scaled(n: int, scale: float, minimum: int = 4) -> int:
    return max(minimum, int(n * scale))


def run_core(engine, api_root, bulk_id, *, rate, batch_size=100, max_parallel=10):
    from bulkchange import processing

    client = harness.client(api_root, rate)
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size)
    for batch in plan.batches:
        processing.process_batch(engine, bulk_id, batch.device_change_ids, client=client, max_parallel=max_parallel)
    summary = processing.finalize(engine, bulk_id)
    client.close()
    assert summary["status"] == "PROCESSED", summary
    return summary


def r1(scale, workdir, api_root, control):
    n = _scaled(10_000, scale)
    control.configure(latency_ms=LATENCY_MS, rate_limit=RATE)
    with harness.amop_database("sqlite", workdir) as engine:
        bulk_id = harness.seed_fleet(engine, control, n)
        control.configure(latency_ms=LATENCY_MS, rate_limit=RATE)
        t0 = time.perf_counter()
        run_core(engine, api_root, bulk_id, rate=RATE)
        wall = time.perf_counter() - t0
    stats = control.stats()
    bound = harness.fleet_calls(n) / RATE
    return {"devices": n, "wall_s": round(wall, 2), "bound_s": round(bound, 2), "ratio": round(wall / bound, 3),
            "carrier_429s": stats["by_status"].get("429", 0), "max_rps_admitted": stats["max_rps_admitted"]}


def r2(scale, workdir, api_root, control):
    from bulkchange.engine import run_batch

    n = _scaled(1000, scale)
    out = {"devices": n, "latency_ms": 100}
    control.reset()
    control.seed_devices([{"iccid": harness.seed.make_iccid(i + 1), "status": "ACTIVATED"} for i in range(n)])
    control.configure(latency_ms=100)
    iccids = [harness.seed.make_iccid(i + 1) for i in range(n)]
    client = harness.client(api_root, None)
    t0 = time.perf_counter()
    for iccid in iccids:  # the legacy shape: one call after another
        client.update_status(iccid, "DEACTIVATED")
    out["sequential_s"] = round(time.perf_counter() - t0, 2)
    for par in (10, 20):
        control.seed_devices([{"iccid": i, "status": "ACTIVATED"} for i in iccids])
        t0 = time.perf_counter()
        outcomes = run_batch(iccids, lambda i: client.update_status(i, "DEACTIVATED"), max_parallel=par)
        assert all(o.ok for o in outcomes)
        wall = time.perf_counter() - t0
        out[f"engine_p{par}_s"] = round(wall, 2)
        out[f"speedup_p{par}"] = round(out["sequential_s"] / wall, 2)
    client.close()
    return out


# R3 is measured this many times on each database, alternating, and reported as the median: the same
# code's CPU per device moves by a fifth between runs minutes apart on the bench's shared host
# (docs/development.md, "R3 moves with the host"), more than most changes it is meant to judge
R3_RUNS = 3


def r3(scale, workdir, api_root, control):
    import statistics

    n = _scaled(2000, scale)
    runs = R3_RUNS if scale >= 0.5 else 1
    out = {"devices": n, "runs": runs}
    kinds = ["sqlite"] + (["postgres"] if harness.pg_reachable() else [])
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(runs):
        for kind in kinds:
            with harness.amop_database(kind, workdir) as engine:
                bulk_id = harness.seed_fleet(engine, control, n)
                control.configure(latency_ms=0, rate_limit=None)
                c0, t0 = time.process_time(), time.perf_counter()
                run_core(engine, api_root, bulk_id, rate=None)
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
            samples[kind].append(round(cpu / n * 1000, 3))
            walls[kind].append(round(wall, 2))
    for kind in kinds:
        out[f"{kind}_cpu_ms_per_device"] = round(statistics.median(samples[kind]), 3)
        out[f"{kind}_cpu_ms_per_device_runs"] = samples[kind]
        out[f"{kind}_wall_s"] = round(statistics.median(walls[kind]), 2)
    if "postgres" not in kinds:
        out["postgres"] = "skipped: PostgreSQL not reachable"
    return out


def _airflow_env(workdir: Path):
    home = workdir / "airflow"
    home.mkdir(exist_ok=True)
    os.environ.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(harness.ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(harness.ROOT / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # dag.test() runs mapped tasks one after another: give each the account's whole rate
        "BULKCHANGE_BATCH_CONCURRENCY": "1",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        # the benchmarks measure throughput: no run waits for a person at the approval gate
        "BULKCHANGE_APPROVAL_IRREVERSIBLE": "false", "BULKCHANGE_APPROVAL_MAX_DEVICES": "0",
    })
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(harness.ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["bulk_change_process"]


def _dag_run(dag, engine, api_root, bulk_id, rate, batch_size):
    from airflow.sdk import DagRunState

    os.environ["AIRFLOW_CONN_AMOP_DB"] = json.dumps({"conn_type": "sqlite", "host": engine.url.database})
    os.environ["AIRFLOW_CONN_CARRIER_SP_1"] = harness.carrier_conn_json(api_root, rate)
    t0 = time.perf_counter()
    run = dag.test(run_conf={"bulk_change_id": bulk_id, "batch_size": batch_size, "max_parallel": 10})
    wall = time.perf_counter() - t0
    assert run.state == DagRunState.SUCCESS, run.state
    return wall


def r4(scale, workdir, api_root, control, r1_result):
    import logging

    logging.getLogger("airflow").setLevel(logging.WARNING)
    dag = _airflow_env(workdir)
    n = r1_result["devices"]
    out = {"devices": n}
    with harness.amop_database("sqlite", workdir) as engine:
        # warm-up: the first dag.test() in a process starts the in-process Execution API (~5 s)
        warm = harness.seed_fleet(engine, control, 4, start=900_000)
        _dag_run(dag, engine, api_root, warm, None, 100)
        bulk_id = harness.seed_fleet(engine, control, n)
        control.configure(latency_ms=LATENCY_MS, rate_limit=RATE)
        wall = _dag_run(dag, engine, api_root, bulk_id, RATE, 100)
    bound = harness.fleet_calls(n) / RATE
    out.update({"dag_test_wall_s": round(wall, 2), "core_wall_s": r1_result["wall_s"],
                "ratio_to_core": round(wall / r1_result["wall_s"], 3),
                "overhead_pct_of_bound": round((wall - r1_result["wall_s"]) / bound * 100, 1)})
    m = _scaled(1000, scale)
    for size in (1, 100, 500):
        with harness.amop_database("sqlite", workdir) as engine:
            bulk_id = harness.seed_fleet(engine, control, m)
            control.configure(latency_ms=LATENCY_MS, rate_limit=RATE)
            out[f"batch{size}_devices"] = m
            out[f"batch{size}_wall_s"] = round(_dag_run(dag, engine, api_root, bulk_id, RATE, size), 2)
    out["batch_bound_s"] = round(harness.fleet_calls(m) / RATE, 2)
    return out


def r4s(scale, workdir, api_root, control, r1_result):
    """The R1 workload under a real scheduler: the processing run's duration in Airflow's metadata."""
    if not harness.pg_reachable():
        return {"skipped": "PostgreSQL not reachable"}
    from bulkchange.db import bulk_changes
    from bulkchange_demo.demo import wait_for
    from tests.scheduler.harness import AirflowCluster

    n = r1_result["devices"]
    bound = harness.fleet_calls(n) / RATE
    with harness.pg_database("meta") as meta_url, harness.amop_database("postgres", workdir) as engine:
        bulk_id = harness.seed_fleet(engine, control, n)
        control.configure(latency_ms=LATENCY_MS, rate_limit=RATE)
        cluster = AirflowCluster(workdir / "airflow-r4s", meta_url,
                                 extra_env=scale_runs.deployment_env(engine, {1: (api_root, RATE)}))
        try:
            cluster.airflow("db", "migrate")
            cluster.start_core()
            cluster.wait_for_dags(["bulk_change_process"])
            cluster.airflow("dags", "unpause", "bulk_change_process")
            t0 = time.perf_counter()
            cluster.airflow("dags", "trigger", "bulk_change_process", "-c", json.dumps({"bulk_change_id": bulk_id}))

            def final():
                cluster.check_alive()
                with engine.connect() as conn:
                    return bulk_changes.load_bulk_change(conn, bulk_id).status.is_final

            wait_for(final, 3 * bound + 300, 1, f"bulk change {bulk_id} to finish under the scheduler")
            wall = time.perf_counter() - t0
            wait_for(lambda: cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = 'bulk_change_process' "
                                           "AND end_date IS NOT NULL")[0][0] == 1, 120, 1, "the run to end")
        finally:
            cluster.stop()
        with engine.connect() as conn:
            status = bulk_changes.load_bulk_change(conn, bulk_id).status.value
        (start, end), = cluster.query("SELECT start_date, end_date FROM dag_run WHERE dag_id = 'bulk_change_process'")
        tasks = cluster.query("SELECT count(*) FROM task_instance WHERE dag_id = 'bulk_change_process' "
                              "AND task_id = 'process_batch'")[0][0]
        chosen = cluster.query("SELECT value FROM xcom WHERE dag_id = 'bulk_change_process' AND task_id = 'prepare' "
                               "AND key = 'batch_size'")
        chosen = chosen[0][0] if chosen else {}
        chosen = json.loads(chosen) if isinstance(chosen, str) else chosen
    assert status == "PROCESSED", status
    run_s = (end - start).total_seconds()
    shared = get_settings().rate_limit_redis_url is not None  # the components inherit it
    concurrency = SCHEDULER_BATCH_CONCURRENCY
    return {"devices": n, "batch_tasks": tasks, "run_s": round(run_s, 2), "trigger_to_final_s": round(wall, 2),
            "batch_concurrency": concurrency, "batch_size": (chosen or {}).get("batch_size"),
            "batch_size_reason": (chosen or {}).get("reason"),
            "rate_limit": "shared through Redis" if shared else f"per-task share (rate / {concurrency})",
            "core_wall_s": r1_result["wall_s"], "bound_s": round(bound, 2),
            "ratio_to_core": round(run_s / r1_result["wall_s"], 3),
            "overhead_pct_of_bound": round((run_s - r1_result["wall_s"]) / bound * 100, 1)}


MEM_CHILD = """
import sys
from bulkchange import processing
from bulkchange.db.connect import make_engine
from bench import harness
from bulkchange.memory import peak_rss_kb  # the process's own peak (VmHWM), not its parent's

url, api_root, bulk_id, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")]
engine = make_engine(url)
client = harness.client(api_root, None)
before = peak_rss_kb()  # after imports, before any device is loaded
processing.process_batch(engine, bulk_id, ids, client=client)
after = peak_rss_kb()
print(before, after)
"""


def mem(scale, workdir, api_root, control):
    """Peak RSS of a fresh process that runs one process_batch over n devices (what a mapped task does)."""
    from bulkchange import processing

    n = _scaled(MAX_BATCH_SIZE, scale)  # the largest batch prepare plans (batch_sizing)
    with harness.amop_database("sqlite", workdir) as engine:
        bulk_id = harness.seed_fleet(engine, control, n)
        control.configure(latency_ms=0, rate_limit=None)
        plan = processing.prepare(engine, bulk_id, batch_size=n)
        ids = ",".join(str(i) for i in plan.batches[0].device_change_ids)
        env = dict(os.environ, PYTHONPATH=f"{harness.ROOT}:{harness.ROOT / 'include'}:{harness.ROOT / 'plugins'}")
        res = subprocess.run([sys.executable, "-c", MEM_CHILD, str(engine.url), api_root, str(bulk_id), ids],
                             env=env, capture_output=True, text=True, check=True)
    before, after = (int(x) for x in res.stdout.split()[-2:])
    return {"devices": n, "peak_rss_mb": round(after / 1024, 1), "rss_before_batch_mb": round(before / 1024, 1),
            "batch_cost_mb": round((after - before) / 1024, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default="R1,R2,R3,R4,R4S,MEM,R5,R5C,R6")
    parser.add_argument("--out", default=str(harness.ROOT / "bench" / "results" / "latest.json"))
    parser.add_argument("--settle", type=float, default=240.0,
                        help="before each scenario, wait up to this many seconds for the load average to "
                             "fall to half the CPUs (what the previous scenario left); 0: do not wait")
    args = parser.parse_args(argv)
    only = {x.strip().upper() for x in args.only.split(",")}
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), "scale": args.scale,
                                 "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": harness.commit(),
                                 "settings": _settings()},
                     "load": {}}

    def measured(name: str, fn, *a):
        """Run one scenario, with the machine's 1-minute load average before and after it.

        It first lets the previous scenario's own load die down (R5's thirty task processes leave a
        1-minute load average of about 13 behind them, which decays with a time constant of a
        minute): it waits until the load is at most half the CPUs, at most ``--settle`` seconds, so a
        figure is marked under load only for load the benchmark did not make itself."""
        waited = settle(args.settle)
        before = os.getloadavg()[0]
        results[name] = fn(*a)
        results["load"][name] = {"before": round(before, 2), "after": round(os.getloadavg()[0], 2),
                                 "settled_s": waited}
        print(name, results[name], results["load"][name], flush=True)

    with tempfile.TemporaryDirectory(prefix="bulkchange-bench-") as tmp, harness.simulator_process() as (api, control):
        workdir = Path(tmp)
        if "R1" in only or "R4" in only or "R4S" in only:
            measured("R1", r1, args.scale, workdir, api, control)
        if "R2" in only:
            measured("R2", r2, args.scale, workdir, api, control)
        if "R3" in only:
            measured("R3", r3, args.scale, workdir, api, control)
        if "MEM" in only:
            measured("MEM", mem, args.scale, workdir, api, control)
        if "R4" in only:
            measured("R4", r4, args.scale, workdir, api, control, results["R1"])
        if "R4S" in only:
            measured("R4S", r4s, args.scale, workdir, api, control, results["R1"])
    with tempfile.TemporaryDirectory(prefix="bulkchange-bench-") as tmp:  # each with its own simulators
        workdir = Path(tmp)
        if "R5" in only:
            measured("R5", scale_runs.r5, args.scale, workdir)
        if "R5C" in only:
            measured("R5C", lambda *a: scale_runs.r5(*a, executor="CeleryExecutor"), args.scale, workdir)
        if "R6" in only:
            measured("R6", scale_runs.r6, args.scale, workdir)
    print_table(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


def print_table(res: dict) -> None:
    from bench.report import rows as table_rows

    rows = table_rows(res)
    width = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'measure':<{width}}  {'value':<34}  {'target':<26}  load before/after  notes")
    for name, value, target, notes in rows:
        load = res.get("load", {}).get(name.split()[0], {})
        shown = f"{load['before']:.1f}/{load['after']:.1f}" if load else "-"
        print(f"{name:<{width}}  {value:<34}  {target:<26}  {shown:<17}  {notes}")
    m = res["machine"]
    print(f"\nmachine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}, scale {m['scale']}, "
          f"commit {m.get('commit')}; {m.get('settings')}")


if __name__ == "__main__":
    sys.exit(main())
