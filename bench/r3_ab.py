"""python -m bench.r3_ab [--devices 2000] [--rounds 4] [--out docs/bench-r3-http-ab.json]

R3's workload (a Jasper Suspend through the core at zero latency, SQLite) with the HTTP client's
two shortcuts off and on, alternated in one process (``BoundedSession.prepare_plain``: a carrier
call prepared directly; ``BoundedAdapter.get_connection_with_tls_context``: the connection pool
remembered per host): CPU per device of each run, the machine's load average before and after, the
commit. Alternating in one process is how to compare two versions on a host whose CPU time drifts
(development.md, "R3 moves with the host")."""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import requests

from bench import harness
from bench.__main__ import run_core
from bulkchange.carriers import http


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(harness.ROOT / "bench" / "results" / "r3-http-ab.json"))
    args = parser.parse_args(argv)
    shortcuts = (http.BoundedSession.prepare_plain, http.BoundedAdapter.get_connection_with_tls_context)
    without = (lambda self, *a, **kw: None, requests.adapters.HTTPAdapter.get_connection_with_tls_context)
    runs: dict[str, list[float]] = {"requests": [], "shortcuts": []}
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="bulkchange-r3ab-") as tmp, \
                harness.simulator_process() as (api, control):
            for _ in range(args.rounds):
                for name, (prep, pool) in (("requests", without), ("shortcuts", shortcuts)):
                    http.BoundedSession.prepare_plain, http.BoundedAdapter.get_connection_with_tls_context = prep, pool
                    with harness.amop_database("sqlite", Path(tmp)) as engine:
                        bulk_id = harness.seed_fleet(engine, control, args.devices)
                        control.configure(latency_ms=0, rate_limit=None)
                        c0 = time.process_time()
                        run_core(engine, api, bulk_id, rate=None)
                        runs[name].append(round((time.process_time() - c0) / args.devices * 1000, 3))
    finally:
        http.BoundedSession.prepare_plain, http.BoundedAdapter.get_connection_with_tls_context = shortcuts
    mean = {k: round(sum(v) / len(v), 3) for k, v in runs.items()}
    out = {"what": "R3 CPU ms per device, SQLite, HTTP client shortcuts off ('requests') and on, alternated",
           "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "commit": harness.commit(),
           "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}",
           "devices": args.devices, "load_before": [round(x, 2) for x in load_before],
           "load_after": [round(x, 2) for x in os.getloadavg()], "runs": runs, "mean": mean,
           "less_pct": round(100 * (1 - mean["shortcuts"] / mean["requests"]), 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
