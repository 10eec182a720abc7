"""This process's peak memory: what a batch task reports (``peak_rss_mb``) and the MEM benchmark reads."""
from __future__ import annotations

import resource


def peak_rss_kb() -> int:
    """The process's own peak resident memory in KB: ``VmHWM`` where Linux gives it. ``ru_maxrss``
    (the fallback) on Linux also carries the peak of the parent that forked the process."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def peak_rss_mb() -> float:
    return round(peak_rss_kb() / 1024, 1)
