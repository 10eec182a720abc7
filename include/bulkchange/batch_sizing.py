"""How many devices one batch task takes: sized by carrier time, not by count.

Under a real scheduler every batch task pays a fixed cost (a process starts, the Execution API, a
scheduler loop to notice it finished: seconds on a busy machine). A batch of 100 devices at
50 requests/s holds 2 s of carrier work to hide that behind; one of 3,000 holds 60 s. So a run's
batch size follows from the account's rate limit: each batch task holds about ``target_s`` of
carrier work, within bounds:

* at least ``MIN_BATCH_SIZE`` devices (a batch that small is over quickly anyway),
* at most ``MAX_BATCH_SIZE`` devices, which keeps a task's memory flat (the batch's device changes,
  devices and results are in memory at once),
* at least ``batch_concurrency`` batches where the devices allow it (the run's task slots all
  send: with the per-task rate share a lone task would get only its share of the account's rate),
  and a whole number of waves of ``batch_concurrency`` tasks (balanced sizes, no lone small task
  at the end): the nearest whole number to what the target gives, not the next one up. Balanced
  tasks sharing the account's rate end together, and until the next wave's tasks have started
  (a scheduler loop, a process, loading the batch: seconds, more on a busy machine) the account
  sends nothing; so 1.3 waves' worth of devices make one wave of somewhat longer tasks, not two
  short ones (a task then holds at most 1.5 times the target),
* never more batches than Airflow maps (``[core] max_map_length``, read at the DAG edge): that
  bound wins over the cap.

A ``batch_size`` given in the run's conf overrides the rule (still within ``max_map_length``).
Pure: no DB, no clock, no settings; ``processing.prepare`` and the dry run call it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

TARGET_BATCH_SECONDS = 60.0
MIN_BATCH_SIZE = 100
MAX_BATCH_SIZE = 5000


@dataclass(frozen=True)
class BatchSizeChoice:
    size: int
    reason: str  # one sentence for the task log and the dry-run report

    def as_dict(self) -> dict:
        return {"batch_size": self.size, "batch_size_reason": self.reason}


def choose_batch_size(devices: int, *, rate_limit_per_s: float | None, calls_per_device: float = 1.0,
                      batch_concurrency: int = 1, override: int | None = None, max_batches: int | None = None,
                      target_s: float = TARGET_BATCH_SECONDS, minimum: int = MIN_BATCH_SIZE,
                      maximum: int = MAX_BATCH_SIZE) -> BatchSizeChoice:
    """The batch size for ``devices`` device changes to process (see the module doc).

    ``rate_limit_per_s``: the account's limit (None: unlimited, the carrier's latency bounds a task
    instead, so the memory cap is used). ``calls_per_device``: carrier calls one device costs (0 for
    change types that never call the carrier; below 1 for carriers taking device lists)."""
    if override is not None and override < 1:
        raise ValueError(f"batch_size must be at least 1, got {override}")
    if minimum < 1 or maximum < minimum:
        raise ValueError(f"bounds must satisfy 1 <= minimum <= maximum, got {minimum}..{maximum}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be at least 1, got {max_batches}")
    devices = max(0, int(devices))
    slots = max(1, int(batch_concurrency))
    if override is not None:
        size, why = int(override), f"batch size {override} as the run's conf asks (batch_size)"
    else:
        if not rate_limit_per_s or rate_limit_per_s <= 0:
            wanted = float(maximum)
            basis = "no rate limit on the account: the memory cap"
        elif calls_per_device <= 0:
            wanted = float(maximum)
            basis = "no carrier call for this change type: the memory cap"
        else:
            wanted = target_s * rate_limit_per_s / calls_per_device
            basis = (f"{target_s:g} s of carrier work per task at {rate_limit_per_s:g} requests/s and "
                     f"{calls_per_device:g} calls per device = {math.floor(wanted)} devices")
        size = min(maximum, max(minimum, math.floor(wanted)))
        bounded = "" if size == math.floor(wanted) else f", bounded to {minimum}..{maximum}"
        balanced = ""
        if devices and slots > 1:
            # the nearest whole number of waves (every task slot busy, every wave full), at least
            # one, and no more batches than the memory cap needs
            waves = max(1, math.floor(devices / (size * slots) + 0.5), math.ceil(devices / (maximum * slots)))
            even = max(minimum, math.ceil(devices / (waves * slots)))
            if even != size:
                balanced = (f"; {even} so that {devices} devices make {math.ceil(devices / even)} batches "
                            f"for {slots} tasks at once")
                size = even
        why = f"batch size {size}: {basis}{bounded}{balanced}"
    if max_batches is not None and devices > max_batches * size:
        raised = math.ceil(devices / max_batches)
        why += (f"; raised to {raised}: {devices} device changes in batches of {size} would make "
                f"{math.ceil(devices / size)} batch tasks, more than Airflow maps "
                f"([core] max_map_length = {max_batches})")
        size = raised
    return BatchSizeChoice(size, why)


def calls_per_device(handler_cls) -> float:
    """Carrier calls one device costs for a change handler class: 0 without carrier, 1 / group
    size for carriers taking device lists, else 1 (a Jasper deactivation with a communication plan
    costs 2: such a batch holds somewhat more carrier time than the target, never more devices)."""
    if not getattr(handler_cls, "needs_carrier", True):
        return 0.0
    return 1.0 / max(1, getattr(handler_cls, "group_size", 1))


def override_from_conf(value) -> int | None:
    """A run's ``batch_size`` conf / param: None (or empty) lets the rule choose; else the override."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return int(value)
