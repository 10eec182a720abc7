"""Dry runs: validate and plan a bulk change without calling a carrier or changing the AMOP data.

A dry run answers "what would happen": which device changes would be rejected and why, how many
batches, how many carrier calls, and roughly how long it would take under the account's rate
limit. Validation is the same as ``processing.prepare`` (``processing._validate``) but computed in
memory: no device change status moves. The only row written is the report itself, in
``DeviceBulkChangeDryRun``, so the ops team can read it later; the Airflow task also logs it and
returns it as XCom.

The duration estimate is deliberately simple (and says so in the report): the run is bounded by
the account's rate limit (``rate_limit_per_s`` on the carrier connection) and by the requests in
flight (``max_parallel`` per batch task x batch tasks at once) times an assumed per-call latency.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.engine import Connection, Engine

from bulkchange.batch_sizing import calls_per_device, choose_batch_size
from bulkchange.changes import get_handler
from bulkchange.db import bulk_changes, device_changes, inventory, progress
from bulkchange.models import (
    BulkChange,
    DeviceChange,
    DeviceChangeStatus,
    FAILED_DEVICE_STATUSES,
    StatusUpdateRequest,
    parse_change_request,
)
from bulkchange.rules import check_transition

# Assumed latency of one carrier call when estimating a run bounded by parallelism, not rate.
ASSUMED_CALL_LATENCY_S = 0.25
MAX_LISTED_REJECTIONS = 200


@dataclass
class DryRunReport:
    """What a run would do. ``as_dict`` is what is stored, logged and returned as XCom."""

    bulk_change_id: int | None
    service_provider_id: int
    carrier: str
    change_type: str
    devices: int
    would_process: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)
    already_queued: int = 0
    already_settled: int = 0
    would_retry: int = 0
    batches: list[dict[str, Any]] = field(default_factory=list)
    batch_size: int = 100
    batch_size_reason: str = ""  # batch_sizing: what chose the size
    carrier_calls: dict[str, int] = field(default_factory=dict)
    no_call_needed: int = 0
    rate_limit_per_s: float | None = None
    max_parallel: int = 10
    batch_concurrency: int = 1
    estimated_seconds: float = 0.0
    estimate_basis: str = ""
    preflight_error: str | None = None
    report_id: int | None = None
    # what cannot be undone (bulkchange.approval): [{"action", "word", "carrier_status", "devices"}]
    irreversible: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": True, "report_id": self.report_id, "bulk_change_id": self.bulk_change_id,
            "service_provider_id": self.service_provider_id, "carrier": self.carrier,
            "change_type": self.change_type, "devices": self.devices, "would_process": self.would_process,
            "rejected_count": len(self.rejected), "rejected": self.rejected[:MAX_LISTED_REJECTIONS],
            "already_queued": self.already_queued, "already_settled": self.already_settled,
            "would_retry": self.would_retry, "batch_size": self.batch_size,
            "batch_size_reason": self.batch_size_reason,
            "batch_count": len(self.batches), "batches": self.batches, "carrier_calls": self.carrier_calls,
            "no_call_needed": self.no_call_needed, "rate_limit_per_s": self.rate_limit_per_s,
            "max_parallel": self.max_parallel, "batch_concurrency": self.batch_concurrency,
            "estimated_seconds": round(self.estimated_seconds, 1), "estimate_basis": self.estimate_basis,
            "preflight_error": self.preflight_error, "irreversible": self.irreversible,
        }

    def text(self) -> str:
        """The report as the task log shows it."""
        lines = [
            f"DRY RUN {'bulk change ' + str(self.bulk_change_id) if self.bulk_change_id else 'submission'}: "
            f"{self.change_type} on {self.carrier} (service provider {self.service_provider_id})",
            f"  devices: {self.devices}; would process {self.would_process}; rejected {len(self.rejected)}; "
            f"already queued {self.already_queued}; already settled {self.already_settled}"
            + (f"; failed devices to retry {self.would_retry}" if self.would_retry else ""),
        ]
        if self.preflight_error:
            lines.append(f"  stopped before any carrier call: {self.preflight_error}")
        lines.append(f"  batches: {len(self.batches)} of up to {self.batch_size}"
                     + (f" ({self.batch_size_reason})" if self.batch_size_reason else ""))
        for b in self.batches[:20]:
            lines.append(f"    {b['label']}")
        if len(self.batches) > 20:
            lines.append(f"    ... {len(self.batches) - 20} more")
        for i in self.irreversible:
            lines.append(f"  IRREVERSIBLE: {i['action']} for {i['devices']} devices (asked as \"{i['word']}\")")
        calls = ", ".join(f"{k}: {v}" for k, v in self.carrier_calls.items()) or "none"
        lines.append(f"  carrier calls: {calls} ({self.no_call_needed} devices need no call)")
        lines.append(f"  estimated duration: {self.estimated_seconds:.1f} s ({self.estimate_basis})")
        for r in self.rejected[:50]:
            lines.append(f"  rejected {r['device']}: {r['reason']}")
        if len(self.rejected) > 50:
            lines.append(f"  ... {len(self.rejected) - 50} more rejections in the report")
        return "\n".join(lines)


def estimate_seconds(calls: int, *, rate_limit_per_s: float | None, max_parallel: int,
                     batch_concurrency: int, latency_s: float = ASSUMED_CALL_LATENCY_S) -> tuple[float, str]:
    """(seconds, how it was estimated) for ``calls`` carrier calls."""
    in_flight = max(1, max_parallel) * max(1, batch_concurrency)
    parallel_bound = calls * latency_s / in_flight
    if rate_limit_per_s:
        rate_bound = calls / rate_limit_per_s
        if rate_bound >= parallel_bound:
            return rate_bound, f"{calls} calls at the account's rate limit of {rate_limit_per_s:g}/s"
    return parallel_bound, (f"{calls} calls, {in_flight} in flight, assumed {latency_s:g} s per call"
                            + ("" if rate_limit_per_s else "; no rate limit configured"))


def _calls_for(bulk: BulkChange, request, device) -> int:
    """Carrier calls one valid device change needs (status updates: 0 when already there, 2 when a
    Jasper deactivation switches the rate plan first)."""
    if isinstance(request, StatusUpdateRequest) and device is not None:
        check = check_transition(bulk.integration, device.status, request.UpdateStatus,
                                 request.IsIgnoreCurrentStatus)
        if check.already_there:
            return 0
        if check.target == "DEACTIVATED" and device.communication_plan:
            return 2
    return 1


def evaluate(conn: Connection, bulk: BulkChange, changes: list[DeviceChange], *, batch_size: int | None,
             max_parallel: int, batch_concurrency: int, rate_limit_per_s: float | None,
             credentials_problem: str | None = None, queued_ids: list[int] | None = None,
             seen: dict[str, int] | None = None,
             label: Callable[[DeviceChange], str] | None = None, max_batches: int | None = None) -> DryRunReport:
    """Validate ``changes`` (in memory) and plan the run. Reads only. ``batch_size`` None: chosen as
    the run would (``batch_sizing.choose_batch_size``); ``max_batches``: Airflow's max_map_length."""
    from bulkchange.processing import _validate, plan_batches, preflight_problem

    report = DryRunReport(bulk_change_id=bulk.id or None, service_provider_id=bulk.service_provider_id,
                          carrier=bulk.integration.value, change_type=bulk.change_type.value,
                          devices=len(changes) + len(queued_ids or []), batch_size=batch_size or 0,
                          rate_limit_per_s=rate_limit_per_s, max_parallel=max_parallel,
                          batch_concurrency=batch_concurrency, already_queued=len(queued_ids or []))
    label = label or (lambda dc: dc.iccid or dc.msisdn or dc.device_identifier or f"device change {dc.id}")
    problem = preflight_problem(bulk, credentials_problem)
    if problem:
        report.preflight_error = problem
        report.rejected = [{"device": label(dc), "device_change_id": dc.id, "reason": problem} for dc in changes]
        report.estimate_basis = "nothing would be sent"
        return report
    handler_cls = get_handler(bulk.change_type, bulk.integration)
    handler = handler_cls(bulk, None, handler_cls.load_context(conn, bulk))
    from bulkchange.tenancy import attach_references

    attach_references(conn, handler, bulk, changes)
    devices = inventory.load_devices(conn, bulk, changes)
    seen = dict(seen or {})
    accepted: list[DeviceChange] = []
    words: dict[str, int] = {}
    per_device_calls = 0
    for dc in changes:
        reason = _validate(handler, bulk, dc, devices, seen)
        if reason:
            report.rejected.append({"device": label(dc), "device_change_id": dc.id, "reason": reason})
            continue
        accepted.append(dc)
        request = parse_change_request(bulk.change_type, dc.change_request)
        if isinstance(request, StatusUpdateRequest):
            words[request.UpdateStatus] = words.get(request.UpdateStatus, 0) + 1
        # DB-only change types (no carrier call) cost no carrier call
        n = _calls_for(bulk, request, devices.find(dc)) if handler_cls.needs_carrier else 0
        if n == 0:
            report.no_call_needed += 1
        per_device_calls += n
    from bulkchange.approval import irreversible_actions

    report.irreversible = irreversible_actions(bulk.integration, words)
    report.would_process = len(accepted) + report.already_queued
    todo = [dc.id for dc in accepted] + list(queued_ids or [])
    choice = choose_batch_size(len(todo), rate_limit_per_s=rate_limit_per_s,
                               calls_per_device=calls_per_device(handler_cls), batch_concurrency=batch_concurrency,
                               override=batch_size, max_batches=max_batches)
    report.batch_size, report.batch_size_reason = choice.size, choice.reason
    report.batches = [{"label": b.label, "devices": len(b.device_change_ids)}
                      for b in plan_batches(bulk, todo, choice.size)]
    if not getattr(handler_cls, "needs_carrier", True):  # AMOP tables only
        report.no_call_needed = report.would_process
        report.estimate_basis = "no carrier call: this change type only writes the AMOP database"
        return report
    if handler_cls.group_size > 1:  # one call per group of devices (ThingSpace takes lists)
        calls = math.ceil((per_device_calls + report.already_queued) / handler_cls.group_size)
    else:
        calls = per_device_calls + report.already_queued
    report.carrier_calls = {bulk.integration.value: calls}
    report.estimated_seconds, report.estimate_basis = estimate_seconds(
        calls, rate_limit_per_s=rate_limit_per_s, max_parallel=max_parallel, batch_concurrency=batch_concurrency)
    return report


def dry_run_bulk_change(engine: Engine, bulk_id: int, *, batch_size: int | None = 100, max_parallel: int = 10,
                        batch_concurrency: int = 1, rate_limit_per_s: float | None = None,
                        credentials_problem: str | None = None, retry_failed: bool = False,
                        requested_by: str | None = None, max_batches: int | None = None) -> DryRunReport:
    """What ``bulk_change_process`` would do with this bulk change now (``retry_failed``: with its
    failed device changes queued again). Writes only the report."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    from bulkchange.processing import _already_queued_identifiers

    with engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        all_changes = device_changes.load_device_changes(conn, bulk)
        candidates = [dc for dc in all_changes if dc.status == DeviceChangeStatus.NEW
                      or (retry_failed and dc.status in FAILED_DEVICE_STATUSES)]
        queued = [dc.id for dc in all_changes
                  if dc.status in (DeviceChangeStatus.PENDING, DeviceChangeStatus.PROCESSING)]
        # as after the reset a retry makes: failed candidates are not "already queued" duplicates of themselves
        candidate_ids = {dc.id for dc in candidates}
        seen = {k: v for k, v in _already_queued_identifiers(conn, bulk).items() if v not in candidate_ids}
        report = evaluate(conn, bulk, candidates, batch_size=batch_size, max_parallel=max_parallel,
                          batch_concurrency=batch_concurrency, rate_limit_per_s=rate_limit_per_s,
                          credentials_problem=credentials_problem, queued_ids=queued, seen=seen,
                          max_batches=max_batches)
        report.devices = len(all_changes)
        report.would_retry = sum(1 for dc in candidates if dc.status in FAILED_DEVICE_STATUSES)
        report.already_settled = sum(1 for dc in all_changes if dc.status.is_settled) - report.would_retry
        report.report_id = progress.insert_dry_run_report(
            conn, report.as_dict(), bulk_change_id=bulk.id, service_provider_id=bulk.service_provider_id,
            change_type=bulk.change_type, requested_by=requested_by)
    return report

