"""python -m bench.report RESULTS.json [--docs docs/development.md] [--under-load] [--check]

Rewrites the benchmark table in the docs from one ``./run bench`` run's JSON: everything between
the ``bench-table:begin`` and ``bench-table:end`` markers is replaced, never edited by hand. The
begin marker names the JSON (path and SHA-256) and the commit measured, so a test can check that
the table in the docs is exactly what this script makes of that file (``tests/unit/test_bench_report.py``).

Every row carries the machine's load average (1 minute) before and after its scenario. A figure is
marked **under load** when the load before it was above half the machine's CPUs (other work
shared the machine: the figure is pessimistic, not reproducible on an idle machine), or for every
row with ``--under-load`` (a machine known to be shared). ``--check``: exit 1 if the docs differ
from what the JSON gives, change nothing.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- bench-table:begin"
END = "<!-- bench-table:end -->"
_BLOCK = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)


def rows(res: dict) -> list[tuple[str, str, str, str]]:
    """(measure, value, target, notes) per figure of a run; the console table and the docs table."""
    out = []
    if "R1" in res:
        r = res["R1"]
        out.append(("R1 bound ratio", f"{r['ratio']:.3f}", "<= 1.15",
                     f"{r['devices']} devices through the core at 50 req/s, 50 ms latency: {r['wall_s']} s vs "
                     f"the carrier bound {r['bound_s']} s"))
    if "R2" in res:
        r = res["R2"]
        out.append(("R2 speed-up vs the legacy loop", f"{r['speedup_p20']:.1f} (p10: {r['speedup_p10']:.1f})", ">= 10",
                    f"{r['devices']} devices at {r['latency_ms']} ms: sequential {r['sequential_s']} s, engine "
                    f"{r['engine_p20_s']} s at 20 in flight"))
    if "R3" in res:
        r = res["R3"]
        pg = r.get("postgres_cpu_ms_per_device")
        value = f"SQLite {r['sqlite_cpu_ms_per_device']} ms" + (f", PostgreSQL {pg} ms" if pg is not None else "")
        runs = r.get("runs", 1)
        spread = "".join(f"; {name} runs {', '.join(str(x) for x in r[key])}" for name, key in
                         (("SQLite", "sqlite_cpu_ms_per_device_runs"), ("PostgreSQL", "postgres_cpu_ms_per_device_runs"))
                         if runs > 1 and r.get(key))
        out.append(("R3 CPU per device", value, "< 2 ms",
                    f"{r['devices']} devices, zero latency, CPU of the pipeline process (simulator excluded)"
                    + (f"; the median of {runs} runs on each database" if runs > 1 else "") + spread
                    + ("" if pg is not None else f"; PostgreSQL {r.get('postgres', 'not measured')}")))
    if "MEM" in res:
        r = res["MEM"]
        out.append(("MEM peak RSS of one batch task", f"{r['peak_rss_mb']} MB", "",
                    f"{r['devices']} devices; {r['batch_cost_mb']} MB above the process before the batch"))
    if "R4" in res:
        r = res["R4"]
        out.append(("R4 Airflow (dag.test) / core", f"{r['ratio_to_core']:.3f}", "overhead <= 15 % of bound",
                    f"overhead {r['overhead_pct_of_bound']} % of the bound; {r['dag_test_wall_s']} s vs "
                    f"{r['core_wall_s']} s"))
        out.append(("R4 batch size 1 / 100 / 500", f"{r['batch1_wall_s']} / {r['batch100_wall_s']} / "
                    f"{r['batch500_wall_s']} s", "", f"{r['batch1_devices']} devices, bound {r['batch_bound_s']} s"))
    if "R4S" in res:
        r = res["R4S"]
        if "skipped" in r:
            out.append(("R4S real scheduler / core", "skipped", "", r["skipped"]))
        else:
            out.append(("R4S real scheduler / core", f"{r['ratio_to_core']:.3f}", "overhead <= 15 % of bound",
                        f"overhead {r['overhead_pct_of_bound']} % of the bound; run {r['run_s']} s vs core "
                        f"{r['core_wall_s']} s; {r['batch_tasks']} batch tasks"
                        + (f" of up to {r['batch_size']}" if r.get("batch_size") else "")
                        + f", {r.get('batch_concurrency', 2)} at once, rate {r['rate_limit']}"))
    for name in ("R5", "R5C"):
        r = res.get(name)
        if not r:
            continue
        label = f"{name} many accounts / slowest bound"
        if "skipped" in r:
            out.append((label, "skipped", "", r["skipped"]))
            continue
        ratios = [a["ratio"] for a in r["accounts"]]
        out.append((label, f"{r['ratio']:.3f}", "<= 1.15",
                    f"{r['executor']}{_workers(r)}: "
                    f"{len(r['accounts'])} Jasper accounts at {r['accounts'][0]['rate']:g}..{r['accounts'][-1]['rate']:g} "
                    f"req/s, {r['devices']} devices; all done in {r['total_s']} s vs the slowest account's bound "
                    f"{r['slowest_bound_s']} s; each account's run / its bound {min(ratios):.2f}..{max(ratios):.2f}; "
                    f"{max(r['claimed_per_poke'] or [0])} claimed in one sensor poke"
                    + _phases(max(r["accounts"], key=lambda a: a["bound_s"]).get("phases"), "the slowest account's run")
                    + _cpu(r.get("cpu"))
                    + ("" if r.get("all_processed") else "; NOT every bulk change PROCESSED")))
    if "R6" in res:
        r = res["R6"]
        if "skipped" in r:
            out.append(("R6 one huge bulk change / bound", "skipped", "", r["skipped"]))
        else:
            pages = "answer" if _pages_ok(r.get("pages_during")) and _pages_ok(r.get("pages_after")) else \
                "did NOT all answer 200"
            out.append(("R6 one huge bulk change / bound", f"{r['ratio']:.3f}",
                        "<= 1.15; RSS < 500 MB; prepare < 60 s",
                        f"{r['devices']} devices at {r['rate']:g} req/s: run {r['run_s']} s vs bound {r['bound_s']} s; "
                        f"prepare {r['prepare_s']} s; {r['batch_tasks']} batch tasks of up to {r['batch_size']}; "
                        f"peak RSS of a batch task {r['peak_task_rss_mb']} MB; the Bulk changes page and the grid "
                        f"{pages} during and after the run" + _phases(r.get("phases"), "the run") + _cpu(r.get("cpu"))
                        + ("" if r.get("status") == "PROCESSED" else f"; status {r.get('status')}")))
    return out


def _phases(p, whose: str) -> str:
    """Where a scheduler run's time went (bench.scale.run_phases), when the run recorded it."""
    if not p:
        return ""
    return (f"; {whose}: {p['to_batches_s']} s to its first batch task, {p['batches_s']} s of batch tasks, "
            f"{p['after_batches_s']} s after them (longest wait queued -> running {p['max_queued_s']} s)")


def is_under_load(load: float | None, cpus: int | None) -> bool:
    """The one rule for "under load": a 1-minute load average above half the machine's CPUs."""
    return load is not None and load > (cpus or 1) / 2


def _cpu(c, top: int = 5) -> str:
    """The machine's CPU during the scenario by role (bench.cpu), when the run recorded it."""
    if not c or not c.get("by_role"):
        return ""
    roles = ", ".join(f"{role} {s:g}" for role, s in list(c["by_role"].items())[:top])
    return (f"; CPU used {c['total_cpu_s']:g} s of the machine's {c['capacity_cpu_s']:g} "
            f"({100 * c['total_cpu_s'] / c['capacity_cpu_s']:.0f} %): {roles} s")


def _workers(r: dict) -> str:
    if not r.get("workers"):
        return ""
    slots = f", {r['slots_per_worker']} slots each" if r.get("slots_per_worker") else ""
    pg = f"; PostgreSQL max_connections {r['pg_max_connections']}" if r.get("pg_max_connections") else ""
    return f" (workers {', '.join(r['workers'])}{slots}{pg})"


def _pages_ok(checks) -> bool:
    if not isinstance(checks, dict) or "error" in checks:
        return False
    timed = [v for v in checks.values() if isinstance(v, dict)]
    return bool(timed) and all(v.get("status") == 200 for v in timed)


def _load(res: dict, measure: str) -> tuple[float | None, float | None]:
    """The 1-minute load average before and after the scenario of a row ("R4S real ..." -> R4S)."""
    load = (res.get("load") or {}).get(measure.split()[0]) or {}
    return load.get("before"), load.get("after")


def markdown(res: dict, *, source: str, digest: str, under_load: bool = False) -> str:
    m = res["machine"]
    cpus = m.get("cpus") or 1
    flag = " under-load" if under_load else ""
    lines = [f"{BEGIN} source={source} sha256={digest} commit={m.get('commit', 'unknown')}{flag} -->",
             f"Run of {m.get('when', '?')} at commit `{m.get('commit', 'unknown')}`: {cpus} CPUs, Python "
             f"{m.get('python', '?')}, scale {m.get('scale', 1.0)}"
             + (f", {m['settings']}" if m.get("settings") else "") + ". Generated by `python -m bench.report "
             f"{source}`; do not edit by hand.",
             "",
             "| measure | result | target | load before / after | what was measured |",
             "|---|---|---|---|---|"]
    for measure, value, target, notes in rows(res):
        before, after = _load(res, measure)
        loaded = under_load or is_under_load(before, cpus)
        load = "—" if before is None else f"{before:.1f} / {after:.1f}"
        shown = f"**{value}**" + (" (under load)" if loaded else "")
        lines.append(f"| {measure} | {shown} | {target} | {load} | {notes} |")
    lines.append(END)
    return "\n".join(lines)


def render_for(json_path: Path, *, under_load: bool = False) -> str:
    raw = json_path.read_bytes()
    try:
        source = json_path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        source = json_path.as_posix()
    return markdown(json.loads(raw), source=source, digest=hashlib.sha256(raw).hexdigest(), under_load=under_load)


def replace_block(doc: str, block: str) -> str:
    if len(_BLOCK.findall(doc)) != 1:
        raise ValueError(f"the page must hold exactly one {BEGIN} ... {END} block")
    return _BLOCK.sub(lambda _m: block, doc)


def marked_under_load(block: str) -> bool:
    return " under-load -->" in block.split("\n", 1)[0]


def sticky_under_load(block: str, json_path: Path) -> bool:
    """A table once marked under load as a whole stays so when it is regenerated from the same run
    (the same JSON bytes); a new run's table is marked by its own load figures (and --under-load)."""
    try:
        _source, digest = source_of(block)
    except ValueError:
        return False
    return marked_under_load(block) and digest == hashlib.sha256(json_path.read_bytes()).hexdigest()


def source_of(block: str) -> tuple[str, str]:
    """(source path, sha256) named by a block's begin marker."""
    head = block.split("\n", 1)[0]
    found = re.search(r"source=(\S+) sha256=([0-9a-f]{64}) ", head)
    if not found:
        raise ValueError(f"the begin marker names no source and sha256: {head}")
    return found[1], found[2]


def current_block(doc: str) -> str:
    found = _BLOCK.findall(doc)
    if len(found) != 1:
        raise ValueError(f"the page must hold exactly one {BEGIN} ... {END} block, found {len(found)}")
    return found[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path)
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "development.md")
    parser.add_argument("--under-load", action="store_true", help="mark every figure as taken under load")
    parser.add_argument("--check", action="store_true", help="only check the docs match the JSON")
    args = parser.parse_args(argv)
    doc = args.docs.read_text()
    block = render_for(args.results, under_load=args.under_load or sticky_under_load(current_block(doc), args.results))
    if args.check:
        ok = current_block(doc) == block
        print("the table matches the JSON" if ok else "the table differs from what the JSON gives")
        return 0 if ok else 1
    args.docs.write_text(replace_block(doc, block))
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
