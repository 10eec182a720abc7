"""The benchmark runs end to end at a tiny scale, so it cannot rot. No timing is asserted."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_runs_and_writes_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env_path = f"{ROOT}:{ROOT / 'include'}:{ROOT / 'plugins'}"
    res = subprocess.run([sys.executable, "-m", "bench", "--scale", "0.01", "--out", str(out)],
                         cwd=ROOT, env={**__import__("os").environ, "PYTHONPATH": env_path,
                                        "AIRFLOW_HOME": str(tmp_path / "af")},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(out.read_text())
    assert {"R1", "R2", "R3", "R4", "R4S", "MEM", "machine"} <= set(data)
    assert data["R4S"].get("run_s", 0) > 0 or "skipped" in data["R4S"]
    assert data["R1"]["ratio"] > 0 and data["R2"]["speedup_p20"] > 0
    assert data["R3"]["sqlite_cpu_ms_per_device"] > 0 and data["MEM"]["peak_rss_mb"] > 0
    assert "R1 bound ratio" in res.stdout and "written to" in res.stdout
    # every scenario's load average before and after, and the commit: what the docs table shows
    assert set(data["load"]) == {"R1", "R2", "R3", "R4", "R4S", "MEM"} and data["machine"]["commit"]
    from bench.report import markdown

    table = markdown(data, source="bench.json", digest="0" * 64)
    assert all(f"| {name} " in table for name in ("R1", "R2", "R3", "MEM", "R4", "R4S"))
