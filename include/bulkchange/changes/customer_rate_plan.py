"""CustomerRatePlanChange: DB only, on every carrier (legacy ``usp_DeviceBulkChange_CustomerRatePlanChange_UpdateDevices``).

Each device change carries its own ``CustomerRatePlanId``, ``CustomerPoolId``,
``CustomerDataAllocationMB`` and ``EffectiveDate`` (legacy read the first change only). A field left
out (or null) keeps the device's value; ``0`` for the plan or pool id clears it (legacy "0 = none").
At least one of the three must be given.

* ``EffectiveDate`` missing, or now or earlier (UTC): the ``Device`` columns are written in the
  batch's transaction and the device change is ``PROCESSED``.
* ``EffectiveDate`` in the future: the change is stored in ``Device_CustomerRatePlanOrRatePool_Queue``
  (legacy table, plus the device change it settles) in the batch's transaction and the device
  change waits as ``SCHEDULED``; the bulk change rolls up to ``WAITING_FOR_CARRIER`` ("wait for
  their effective date"). ``apply_due`` (run hourly by the ``customer_rate_plan_scheduler`` DAG)
  applies every due row, for every device (legacy queued only the first 100), marks its device
  change ``PROCESSED`` and rolls its bulk change up, which becomes final with its last device.

``apply_due`` is idempotent and safe to run twice at once: a row is claimed with one conditional
``UPDATE … WHERE IsActive = 1`` before it is applied. A device archived before its date makes the
device change ``ERROR`` with the reason.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy.engine import Connection, Engine

from bulkchange.carriers.base import CallLog
from bulkchange.changes.base import ChangeHandler, device_not_found
from bulkchange.db import customer_rate_plans as plan_queue
from bulkchange.db import bulk_changes, device_changes, progress
from bulkchange.db.device_changes import LogEntry
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import (
    BulkChange,
    CustomerRatePlanChangeRequest,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    utcnow,
)
from bulkchange.rules import RuleError

log = logging.getLogger(__name__)

SCHEDULER = "customer_rate_plan_scheduler"
LOG_DESCRIPTION = "Change Customer Rate Plan: Update AMOP"
DUE_CHUNK = 500


def plan_updates(plan_id: int | None, pool_id: int | None, allocation_mb: Any) -> dict[str, Any]:
    """Device columns to write: None = keep; 0 for an id = clear."""
    out: dict[str, Any] = {}
    if plan_id is not None:
        out["CustomerRatePlanId"] = plan_id or None
    if pool_id is not None:
        out["CustomerPoolId"] = pool_id or None
    if allocation_mb is not None:
        out["CustomerDataAllocationMB"] = allocation_mb
    return out


def check_plan_fields(request: Any) -> None:
    for name in ("CustomerRatePlanId", "CustomerPoolId"):
        value = getattr(request, name, None)
        if value is not None and value < 0:
            raise RuleError(f"{name} must be a positive id (0 clears it), got {value}")


def describe(updates: dict[str, Any]) -> str:
    return ", ".join(f"{k}={'none' if v is None else v}" for k, v in updates.items())


# a future-dated change to queue (written by ``record`` in the batch's transaction)
Scheduled = plan_queue.QueuedChange


class CustomerRatePlanChange(ChangeHandler):
    request_model = CustomerRatePlanChangeRequest
    needs_carrier: ClassVar[bool] = False

    def __init__(self, bulk: BulkChange, client: Any, context: dict[str, Any]):
        super().__init__(bulk, client, context)
        self._lock = threading.Lock()
        self.scheduled: dict[int, Scheduled] = {}

    def validate(self, dc: DeviceChange, request: CustomerRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not plan_updates(request.CustomerRatePlanId, request.CustomerPoolId, request.CustomerDataAllocationMB):
            raise RuleError("CustomerRatePlanChange needs CustomerRatePlanId, CustomerPoolId or "
                            "CustomerDataAllocationMB; none was given")
        check_plan_fields(request)

    def apply(self, dc: DeviceChange, request: CustomerRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None  # validate() ran first
        now = self.context.get("now") or utcnow()
        updates = plan_updates(request.CustomerRatePlanId, request.CustomerPoolId, request.CustomerDataAllocationMB)
        base = dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid,
                    previous_device_status=device.status)
        if request.EffectiveDate is not None and request.EffectiveDate > now:
            with self._lock:
                self.scheduled[dc.id] = Scheduled(dc.id, device.id, request.CustomerRatePlanId, request.CustomerPoolId,
                                                  request.CustomerDataAllocationMB, request.EffectiveDate)
            return DeviceResult(status=DeviceChangeStatus.SCHEDULED, **base,
                                details=f"scheduled for {request.EffectiveDate:%Y-%m-%d %H:%M} UTC: {describe(updates)}")
        return DeviceResult(status=DeviceChangeStatus.PROCESSED, **base, device_updates=updates,
                            details=f"customer rate plan updated: {describe(updates)}")

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        rows = [self.scheduled[r.device_change_id] for r in results
                if r.status == DeviceChangeStatus.SCHEDULED and r.device_change_id in self.scheduled]
        queue_scheduled(conn, self.bulk, rows, created_by=processed_by)


def queue_scheduled(conn: Connection, bulk: BulkChange, rows: list[Scheduled], *, created_by: str) -> int:
    """Insert the queue rows of a batch (one executemany); a device change already queued is skipped."""
    return plan_queue.queue_changes(conn, bulk, rows, created_by=created_by)


@dataclass
class DueSummary:
    applied: int = 0
    failed: int = 0
    bulk_changes: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "failed": self.failed, "bulk_changes": self.bulk_changes}


def apply_due(engine: Engine, *, now: datetime | None = None, processed_by: str = SCHEDULER,
              chunk_size: int = DUE_CHUNK) -> DueSummary:
    """Apply every queued change whose EffectiveDate is at or before ``now`` (UTC, default the
    current time): Device columns, the device change PROCESSED with a log row, the bulk change
    rolled up. One transaction per chunk of ``chunk_size`` rows."""
    now = now or utcnow()
    summary = DueSummary()
    contended = 0
    while True:
        try:
            with engine.begin() as conn:
                n = _apply_chunk(conn, now, processed_by, chunk_size, summary)
        except _Contended as exc:
            contended += 1
            if contended > 5:
                raise
            log.info("%s; selecting again", exc)
            continue
        if n < chunk_size:
            return summary


class _Contended(RuntimeError):
    pass


def _apply_chunk(conn: Connection, now: datetime, processed_by: str, chunk_size: int, summary: DueSummary) -> int:
    ids = plan_queue.due_queue_ids(conn, now, chunk_size)
    if not ids:
        return 0
    # claim: a concurrent run blocks on these rows and then finds them inactive; if it got some
    # first, this chunk is rolled back and selected again
    claimed = plan_queue.claim_queue_rows(conn, ids, applied_at=utcnow())
    if claimed != len(ids):
        raise _Contended(f"{len(ids) - claimed} of {len(ids)} due rows were taken by a concurrent run")
    rows = plan_queue.load_queue_rows(conn, ids)
    # each row's device in its portal type's inventory (Device, or MobilityDevice for a Mobility change)
    by_inventory: dict[int, list] = defaultdict(list)
    alive_rows: set[int] = set()  # queue row ids whose device is still there
    for r in rows:
        by_inventory[int(r["PortalType"] or 0)].append(r)
    for portal_type, members_of in sorted(by_inventory.items()):
        alive = plan_queue.live_device_ids(conn, portal_type, [int(r["DeviceId"]) for r in members_of])
        # inventory columns, one executemany per set of columns written
        groups: dict[tuple[str, ...], list[tuple[int, dict]]] = defaultdict(list)
        alive_rows.update(int(r["Id"]) for r in members_of if int(r["DeviceId"]) in alive)
        for r in members_of:
            if int(r["DeviceId"]) in alive:
                updates = plan_updates(r["CustomerRatePlanId"], r["CustomerRatePoolId"], r["CustomerDataAllocationMB"])
                groups[tuple(sorted(updates))].append((int(r["DeviceId"]), updates))
        for cols, members in groups.items():
            if not cols:
                continue
            plan_queue.write_device_plan_columns(conn, portal_type, cols, members, now=now)
    # device changes, per bulk change
    by_bulk: dict[int, list] = defaultdict(list)
    for r in rows:
        if r["BulkChangeId"] is not None and r["DeviceChangeId"] is not None:
            by_bulk[int(r["BulkChangeId"])].append(r)
    for bulk_id, members in by_bulk.items():
        try:
            bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        except bulk_changes.BulkChangeNotFound:
            continue
        done = [r for r in members if int(r["Id"]) in alive_rows]
        gone = [r for r in members if int(r["Id"]) not in alive_rows]
        if done:
            plan_queue.mark_scheduled_processed(conn, bulk,
                                                [(int(r["DeviceChangeId"]), _applied_text(r)) for r in done],
                                                now=now, processed_by=processed_by)
            device_changes.add_log_entries(conn, bulk, [
                LogEntry(int(r["DeviceChangeId"]), LOG_DESCRIPTION, response_text=_applied_text(r),
                         response_status=DeviceChangeStatus.PROCESSED.value) for r in done],
                processed_by=processed_by)
        if gone:
            device_changes.reject_device_changes(
                conn, bulk, [(int(r["DeviceChangeId"]),
                              f"device {r['DeviceId']} was archived or removed before the effective date "
                              f"{r['EffectiveDate']:%Y-%m-%d %H:%M} UTC; customer rate plan not applied")
                             for r in gone],
                processed_by=processed_by, description=LOG_DESCRIPTION)
        summary.applied += len(done)
        summary.failed += len(gone)
        status, _ = progress.rollup(conn, bulk)
        summary.bulk_changes[bulk_id] = status.value
    gone_n = sum(1 for r in rows if int(r["Id"]) not in alive_rows)
    log.info("customer rate plans due by %s: %d applied, %d failed", now, len(rows) - gone_n, gone_n)
    return len(ids)


def _applied_text(r) -> str:
    updates = plan_updates(r["CustomerRatePlanId"], r["CustomerRatePoolId"], r["CustomerDataAllocationMB"])
    return f"customer rate plan updated on its effective date {r['EffectiveDate']:%Y-%m-%d %H:%M} UTC: {describe(updates)}"
