"""The benchmark table in docs/development.md is what ``bench.report`` makes of the run's JSON the
table names (path, SHA-256, commit): never edited by hand. No timing is asserted anywhere."""
import hashlib
import json
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "development.md"

RUN = {"machine": {"cpus": 2, "python": "3.11.7", "platform": "Linux", "scale": 1.0, "when": "2026-11-30 18:00:00 UTC",
                   "commit": "abc1234", "settings": "BULKCHANGE_BATCH_CONCURRENCY=3, rate shared through Redis"},
       "load": {"R1": {"before": 0.3, "after": 1.2}, "R3": {"before": 3.5, "after": 4.0}},
       "R1": {"devices": 10000, "wall_s": 207.6, "bound_s": 200.0, "ratio": 1.038},
       "R3": {"devices": 2000, "sqlite_cpu_ms_per_device": 1.9, "postgres_cpu_ms_per_device": 2.1}}


def test_the_docs_table_is_the_scripts_output_of_the_json_it_names():
    block = report.current_block(DOC.read_text())
    source, digest = report.source_of(block)
    path = ROOT / source
    assert path.is_file(), f"the table names {source}, which is not in the repository"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the JSON changed since the table was made"
    assert block == report.render_for(path, under_load=report.marked_under_load(block)), \
        "the table differs from what `python -m bench.report` makes of its JSON: regenerate it, never edit it"


def test_the_docs_table_is_well_formed():
    block = report.current_block(DOC.read_text())
    lines = block.split("\n")
    header = lines.index("| measure | result | target | load before / after | what was measured |")
    body = lines[header + 2:-1]
    assert lines[header + 1] == "|---|---|---|---|---|" and body and lines[-1] == report.END
    for line in body:
        assert line.startswith("| ") and line.endswith(" |") and line.count(" | ") == 4, line
    measures = {line.split(" | ")[0][2:].split()[0] for line in body}
    assert {"R1", "R3"} <= measures
    assert "commit=" in lines[0] and "`" in lines[1]  # the commit measured, in the marker and the header line


def test_a_figure_taken_under_load_is_marked_and_the_load_shown(tmp_path):
    md = report.markdown(RUN, source="x.json", digest="0" * 64)
    r1 = next(line for line in md.split("\n") if line.startswith("| R1 "))
    r3 = next(line for line in md.split("\n") if line.startswith("| R3 "))
    assert "**1.038** |" in r1 and "under load" not in r1 and "| 0.3 / 1.2 |" in r1
    assert "**SQLite 1.9 ms, PostgreSQL 2.1 ms** (under load)" in r3 and "| 3.5 / 4.0 |" in r3
    everything = report.markdown(RUN, source="x.json", digest="0" * 64, under_load=True)
    assert everything.split("\n")[0].endswith(" under-load -->")
    assert all("(under load)" in line for line in everything.split("\n") if line.startswith("| R"))


def test_the_script_rewrites_only_its_block_and_check_catches_a_hand_edit(tmp_path):
    results = tmp_path / "run.json"
    results.write_text(json.dumps(RUN))
    doc = tmp_path / "page.md"
    doc.write_text(f"before\n\n{report.BEGIN} source=old sha256={'0' * 64} commit=none -->\n| old |\n{report.END}\n\nafter\n")
    assert report.main([str(results), "--docs", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n\n") and text.endswith("\n\nafter\n") and "| old |" not in text
    assert report.main([str(results), "--docs", str(doc), "--check"]) == 0
    doc.write_text(text.replace("**1.038**", "**1.010**"))  # a figure "improved" by hand
    assert report.main([str(results), "--docs", str(doc), "--check"]) == 1


def test_a_page_without_exactly_one_block_is_refused():
    with pytest.raises(ValueError):
        report.current_block("no table here")


def test_r5_accounts_span_the_rates_and_fleets_the_issue_names():
    from bench.scale import r5_accounts

    full = r5_accounts(1.0)
    assert [a["rate"] for a in full] == [5.0 * i for i in range(1, 11)]
    assert (full[0]["devices"], full[-1]["devices"]) == (1000, 5000)
    assert len({a["sp_id"] for a in full}) == 10
    # the slowest account is the smallest, slowest one: its bound is the whole run's target
    assert max(full, key=lambda a: a["bound_s"]) is full[0] and full[0]["bound_s"] == 1100 / 5
    small = r5_accounts(0.01)  # the smoke test: the slowest, a middle and the fastest account
    assert [a["rate"] for a in small] == [5.0, 25.0, 50.0]


def test_r5_and_r6_rows_say_what_was_measured_and_what_failed():
    account = {"sp_id": 11, "rate": 5.0, "devices": 1000, "bound_s": 220.0, "run_s": 240.0, "ratio": 1.09}
    run = {**RUN, "R5": {"executor": "LocalExecutor", "accounts": [account, {**account, "rate": 50.0, "ratio": 1.2}],
                         "devices": 2000, "slowest_bound_s": 220.0, "total_s": 250.0, "ratio": 1.136,
                         "claimed_per_poke": [2, 0], "workers": None, "all_processed": False},
           "R5C": {"skipped": "Redis not reachable (the Celery broker)"},
           "R6": {"devices": 100000, "rate": 200.0, "status": "PROCESSED", "bound_s": 550.0, "run_s": 600.0,
                  "ratio": 1.091, "prepare_s": 20.0, "batch_tasks": 20, "batch_size": 5000, "peak_task_rss_mb": 210.0,
                  "pages_during": {"grid_runs": {"status": 200, "s": 1.0}},
                  "pages_after": {"grid_runs": {"status": 500, "s": 0.1}}}}
    rows = {r[0].split()[0]: r for r in report.rows(run)}
    assert rows["R5"][1] == "1.136" and "1.09..1.20" in rows["R5"][3] and "2 claimed in one sensor poke" in rows["R5"][3]
    assert "NOT every bulk change PROCESSED" in rows["R5"][3]
    assert rows["R5C"][1] == "skipped" and "Redis" in rows["R5C"][3]
    assert rows["R6"][1] == "1.091" and "did NOT all answer 200" in rows["R6"][3] and "210.0 MB" in rows["R6"][3]
    fine = {**run["R6"], "pages_after": {"grid_runs": {"status": 200, "s": 0.1}}}
    assert "grid answer during and after" in report.rows({**RUN, "R6": fine})[-1][3]
    assert "did NOT" in report.rows({**RUN, "R6": {**fine, "pages_during": {"note": "none"}}})[-1][3]


def test_the_slowest_accounts_phases_are_in_the_r5_row():
    """R5's figure alone does not say where a run's time over its bound went: the row names the
    slowest account's phases (to its first batch task, the batch tasks, after them)."""
    phases = {"to_batches_s": 61.5, "batches_s": 230.0, "after_batches_s": 12.5, "max_queued_s": 9.0}
    slow = {"sp_id": 11, "rate": 5.0, "devices": 1000, "bound_s": 220.0, "run_s": 304.0, "ratio": 1.38,
            "phases": phases}
    fast = {**slow, "sp_id": 20, "rate": 50.0, "bound_s": 110.0, "ratio": 1.58,
            "phases": {**phases, "to_batches_s": 1.0}}
    run = {**RUN, "R5": {"executor": "LocalExecutor", "accounts": [fast, slow], "devices": 2000,
                         "slowest_bound_s": 220.0, "total_s": 304.0, "ratio": 1.382, "claimed_per_poke": [2],
                         "workers": None, "all_processed": True}}
    note = {r[0].split()[0]: r for r in report.rows(run)}["R5"][3]
    assert "the slowest account's run: 61.5 s to its first batch task, 230.0 s of batch tasks, 12.5 s after" in note


def test_a_new_run_is_not_marked_under_load_because_the_last_one_was(tmp_path):
    """--under-load marks a whole table; regenerating from the same JSON keeps the mark, but a new
    run's table shows its own load per row (R1 here ran idle, so it is not marked)."""
    old = tmp_path / "old.json"
    old.write_text(json.dumps({**RUN, "machine": {**RUN["machine"], "commit": "old"}}))
    doc = tmp_path / "dev.md"
    doc.write_text(f"x\n{report.BEGIN}\n{report.END}\ny\n")
    assert report.main([str(old), "--docs", str(doc), "--under-load"]) == 0
    assert report.marked_under_load(report.current_block(doc.read_text()))
    assert report.main([str(old), "--docs", str(doc)]) == 0  # the same run again: still marked
    assert report.marked_under_load(report.current_block(doc.read_text()))
    new = tmp_path / "new.json"
    new.write_text(json.dumps(RUN))
    assert report.main([str(new), "--docs", str(doc)]) == 0
    block = report.current_block(doc.read_text())
    assert not report.marked_under_load(block)
    r1 = next(line for line in block.splitlines() if line.startswith("| R1 "))
    assert "(under load)" not in r1


def test_the_benchmark_waits_for_the_load_the_scenario_before_left_and_no_longer_than_told(monkeypatch):
    import bench.__main__ as bench_main

    clock = {"t": 0.0}
    loads = iter([3.0, 2.0, 0.5])  # 2 CPUs: under load until it falls to 1 or below
    monkeypatch.setattr(bench_main.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(bench_main.os, "getloadavg", lambda: (next(loads, 0.5), 0.0, 0.0))
    monkeypatch.setattr(bench_main.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(bench_main.time, "sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    assert bench_main.settle(240, poll_s=5) == 10.0   # two polls under load, then idle
    clock["t"], loads = 0.0, iter([])
    monkeypatch.setattr(bench_main.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert bench_main.settle(12, poll_s=5) == 12.0    # never idle: gives up at the limit
    assert bench_main.settle(0) == 0.0


def test_r3_measured_several_times_shows_its_median_and_every_run():
    run = dict(RUN, R3={"devices": 2000, "runs": 3, "sqlite_cpu_ms_per_device": 1.9,
                        "sqlite_cpu_ms_per_device_runs": [2.4, 1.9, 1.7], "postgres_cpu_ms_per_device": 2.1,
                        "postgres_cpu_ms_per_device_runs": [2.1, 2.0, 2.6]})
    r3 = next(line for line in report.markdown(run, source="x.json", digest="0" * 64).split("\n")
              if line.startswith("| R3 "))
    assert "SQLite 1.9 ms, PostgreSQL 2.1 ms" in r3
    assert "the median of 3 runs on each database; SQLite runs 2.4, 1.9, 1.7; PostgreSQL runs 2.1, 2.0, 2.6" in r3
