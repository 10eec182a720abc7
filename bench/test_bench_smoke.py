"""The benchmark runs end to end at a tiny scale, so it cannot rot. No timing is asserted.

R5 runs here with the LocalExecutor only and three accounts at this scale (R5C is the same code
plus two Celery workers, which ``tests/scheduler/test_real_scheduler.py`` already starts); ``./run
bench`` runs both executors with ten accounts."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_bench_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env_path = f"{ROOT}:{ROOT / 'include'}:{ROOT / 'plugins'}"
    res = subprocess.run([sys.executable, "-m", "bench", "--scale", "0.01", "--out", str(out),
                          "--only", "R1,R2,R3,R4,R4S,MEM,R5,R6", "--settle", "0"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": env_path,
                                        "AIRFLOW_HOME": str(tmp_path / "af")},
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"R1", "R2", "R3", "R4", "R4S", "MEM", "machine"} <= set(data)
    assert data["R4S"].get("run_s", 0) > 0 or "skipped" in data["R4S"]
    assert data["R1"]["ratio"] > 0 and data["R2"]["speedup_p20"] > 0
    assert data["R3"]["sqlite_cpu_ms_per_device"] > 0 and data["MEM"]["peak_rss_mb"] > 0
    assert "R1 bound ratio" in res.stdout and "written to" in res.stdout
    # every scenario's load average before and after, and the commit: what the docs table shows
    assert set(data["load"]) == {"R1", "R2", "R3", "R4", "R4S", "MEM", "R5", "R6"} and data["machine"]["commit"]
    # many accounts: every bulk change done, all claimed by one sensor poke
    r5 = data["R5"]
    if "skipped" not in r5 or IN_CI:
        assert r5["all_processed"] and max(r5["claimed_per_poke"]) == len(r5["accounts"]) == 3, r5
        assert r5["executor"] == "LocalExecutor" and r5["ratio"] > 0
        assert "scheduler" in r5["cpu"]["by_role"], r5["cpu"]
        # where each run's time went, read from the scheduler's records: the phases add up to the run
        for acc in r5["accounts"]:
            p = acc["phases"]
            assert abs(p["to_batches_s"] + p["batches_s"] + p["after_batches_s"] - acc["run_s"]) < 1.5, acc
    # one large change: done, every batch task reported its memory, the pages answered
    r6 = data["R6"]
    if "skipped" not in r6 or IN_CI:
        assert r6["status"] == "PROCESSED" and r6["peak_task_rss_mb"] > 0, r6
        assert r6["batch_tasks"] == -(-r6["devices"] // r6["batch_size"]), r6  # every planned batch ran
        assert r6["prepare_s"] >= 0 and r6["pages_after"]["bulk_change_page"]["status"] == 200, r6
        assert all(v["status"] == 200 for v in r6["pages_after"].values()), r6["pages_after"]
        assert r6["phases"]["batches_s"] > 0, r6
        # the machine's CPU meanwhile, by role: the scheduler and the simulator ran all along
        assert {"scheduler", "simulators"} <= set(r6["cpu"]["by_role"]), r6["cpu"]
        assert r6["cpu"]["total_cpu_s"] > 0 and r6["cpu"]["capacity_cpu_s"] > 0, r6["cpu"]
    from bench.report import markdown

    table = markdown(data, source="bench.json", digest="0" * 64)
    assert all(f"| {name} " in table for name in ("R1", "R2", "R3", "MEM", "R4", "R4S", "R5", "R6"))


def test_pg_server_gives_the_connections_asked_for():
    """R5C's PostgreSQL: the shared server when it allows enough connections, else a throwaway one
    with exactly what was asked for, gone afterwards (its worker slots would not fit otherwise)."""
    import sqlalchemy as sa

    from bench import harness

    if not harness.pg_reachable():
        assert not IN_CI, "PostgreSQL must be reachable in CI"
        import pytest
        pytest.skip("PostgreSQL not reachable")
    have = harness.pg_max_connections()
    with harness.pg_server(have) as (url, n):
        assert (url, n) == (harness.PG_ADMIN_URL, have)
    with harness.pg_server(have + 7) as (url, n):
        assert url != harness.PG_ADMIN_URL and n == have + 7
        assert harness.pg_max_connections(url) == have + 7
        with harness.pg_database("probe", url) as db_url:
            eng = sa.create_engine(db_url)
            with eng.connect() as c:
                assert c.execute(sa.text("SELECT 1")).scalar() == 1
            eng.dispose()
    eng = sa.create_engine(url)
    try:
        import pytest
        with pytest.raises(sa.exc.OperationalError):  # stopped with the scenario
            with eng.connect():
                pass
    finally:
        eng.dispose()


def test_r3_http_ab_runs_both_versions_and_restores_the_shortcuts(tmp_path):
    out = tmp_path / "ab.json"
    env_path = f"{ROOT}:{ROOT / 'include'}:{ROOT / 'plugins'}"
    res = subprocess.run([sys.executable, "-m", "bench.r3_ab", "--devices", "20", "--rounds", "1", "--out", str(out)],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": env_path}, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert len(data["runs"]["requests"]) == len(data["runs"]["shortcuts"]) == 1 and data["commit"]
    assert all(v > 0 for v in data["mean"].values()) and data["load_before"] and data["load_after"]
