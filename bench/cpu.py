"""Where the machine's CPU goes during a scenario, by role (batch tasks, scheduler, simulators, ...).

The batch task's own CPU per device is R3; under a real scheduler the machine also runs the Airflow
processes, the simulators, PostgreSQL and Redis, and on 2 CPUs their sum is what bounds R5 and R6.
``CpuByRole`` samples ``/proc`` in a thread (every ``interval_s``) and adds up each process's user +
system time by role, from its command line; a process that starts and ends between two samples is
missed, and one that ends loses at most its last interval. A process's whole CPU goes to the role of
the last command line seen for it: a task process forked from its supervisor first shows the
supervisor's command line, until it sets its own title. Linux only: elsewhere it records nothing.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# first match wins: (substring of the command line, role)
_ROLES = (
    ("simulators serve", "simulators"),
    ("airflow scheduler", "scheduler"),
    ("api-server", "api-server"), ("api_server", "api-server"),
    ("dag-processor", "dag-processor"), ("dag_processor", "dag-processor"),
    ("celery", "celery workers"),
    ("LocalExecutor", "executor and task supervisors"),
    ("airflow worker --", "task processes"),
    ("postgres", "postgresql"),
    ("redis-server", "redis"),
    ("-m bench", "benchmark process"),
    ("airflow", "airflow cli"),
)


def role_of(cmdline: str) -> str:
    """The role of a process, from its command line (``/proc/<pid>/cmdline``, NULs as spaces)."""
    for needle, role in _ROLES:
        if needle in cmdline:
            return role
    return "other"


class CpuByRole:
    """``with CpuByRole() as cpu: ...``; then ``cpu.result()``: CPU seconds by role, the wall time
    and the machine's CPU capacity over it (CPUs x wall)."""

    def __init__(self, interval_s: float = 1.0, proc: Path = Path("/proc")):
        self.interval_s = interval_s
        self.proc = proc
        self._ticks: dict[tuple[str, str], int] = {}
        self._roles: dict[tuple[str, str], str] = {}
        self._spent: Counter = Counter()  # ticks per process since sampling began
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = 0.0

    def _sample(self, first: bool = False) -> None:
        try:
            pids = [p for p in os.listdir(self.proc) if p.isdigit()]
        except OSError:
            return
        for pid in pids:
            try:
                stat = (self.proc / pid / "stat").read_text()
                fields = stat.rsplit(")", 1)[1].split()
                ticks, started = int(fields[11]) + int(fields[12]), fields[19]
            except (OSError, IndexError, ValueError):
                continue
            key = (pid, started)
            try:
                cmd = (self.proc / pid / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmd = ""
            if cmd:
                self._roles[key] = role_of(cmd)
            elif key not in self._roles:
                # kernel threads have no command line; a process that is exiting (a zombie) has
                # none either, and keeps the role last seen
                self._roles[key] = "kernel"
            if key not in self._ticks:
                # a process already running when sampling began counts from then on
                self._ticks[key] = ticks if first else 0
            self._spent[key] += ticks - self._ticks[key]
            self._ticks[key] = ticks

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "CpuByRole":
        self._t0 = time.monotonic()
        if self.proc.is_dir():
            self._sample(first=True)
            self._thread = threading.Thread(target=self._run, name="cpu-by-role", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._sample()
        self._t1 = time.monotonic()

    def result(self) -> dict:
        wall = (self._t1 or time.monotonic()) - self._t0
        totals: Counter = Counter()
        for key, ticks in self._spent.items():
            totals[self._roles[key]] += ticks
        by_role = {role: round(ticks / _HZ, 1) for role, ticks in totals.most_common() if ticks > 0}
        return {"wall_s": round(wall, 1), "capacity_cpu_s": round(wall * (os.cpu_count() or 1), 1),
                "total_cpu_s": round(sum(by_role.values()), 1), "by_role": by_role}
