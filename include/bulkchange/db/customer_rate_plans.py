"""The customer rate plan queue (``Device_CustomerRatePlanOrRatePool_Queue``): future-dated
CustomerRatePlanChange rows a bulk change stores, and what applying a due row writes (inventory
columns, the device change settled)."""
from __future__ import annotations

from datetime import datetime
from dataclasses import dataclass
from typing import Any, Sequence

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from bulkchange.db import tables
from bulkchange.db import schema as t
from bulkchange.db.tables import chunks
from bulkchange.models import BulkChange, DeviceChangeStatus, utcnow


@dataclass
class QueuedChange:
    """One future-dated change to store (the handlers queue these, written by ``queue_changes``)."""

    device_change_id: int
    device_id: int
    plan_id: int | None
    pool_id: int | None
    allocation_mb: Any
    effective: datetime


def queued_device_change_ids(conn: Connection, bulk_id: int, device_change_ids: Sequence[int]) -> set[int]:
    """The ids among ``device_change_ids`` that already have a queue row of this bulk change."""
    q = t.device_customer_rate_plan_queue
    have: set[int] = set()
    for chunk in chunks(sorted(set(device_change_ids))):
        have.update(int(i) for i in conn.execute(select(q.c.DeviceChangeId).where(
            q.c.BulkChangeId == bulk_id, q.c.DeviceChangeId.in_(list(chunk)))).scalars())
    return have


def queue_changes(conn: Connection, bulk: BulkChange, rows: Sequence[QueuedChange], *, created_by: str) -> int:
    """The number of queue rows inserted (executemany in chunks of 200); a device change already queued is skipped."""
    if not rows:
        return 0
    q = t.device_customer_rate_plan_queue
    have = queued_device_change_ids(conn, bulk.id, [r.device_change_id for r in rows])
    now = utcnow()
    new = [{"DeviceId": r.device_id, "CustomerRatePlanId": r.plan_id, "CustomerRatePoolId": r.pool_id,
            "CustomerDataAllocationMB": r.allocation_mb, "EffectiveDate": r.effective,
            "PortalType": int(bulk.portal_type), "TenantId": bulk.tenant_id, "CreatedBy": created_by[:128],
            "CreatedDate": now, "IsActive": True, "ServiceProviderId": bulk.service_provider_id,
            "BulkChangeId": bulk.id, "DeviceChangeId": r.device_change_id}
           for r in rows if r.device_change_id not in have]
    for chunk in chunks(new, 200):
        conn.execute(insert(q), list(chunk))
    return len(new)


def due_queue_ids(conn: Connection, now: datetime, limit: int) -> list[int]:
    """Ids of at most ``limit`` active queue rows due by ``now``, earliest EffectiveDate (then Id) first."""
    q = t.device_customer_rate_plan_queue
    return [int(i) for i in conn.execute(
        select(q.c.Id).where(q.c.IsActive == True, q.c.EffectiveDate <= now)  # noqa: E712
        .order_by(q.c.EffectiveDate, q.c.Id).limit(limit)).scalars()]


def claim_queue_rows(conn: Connection, ids: Sequence[int], *, applied_at: datetime) -> int:
    """The number of the still-active rows among ``ids`` this call deactivated (stamped AppliedDate)."""
    q = t.device_customer_rate_plan_queue
    return conn.execute(update(q).where(q.c.Id.in_(ids), q.c.IsActive == True)  # noqa: E712
                        .values(IsActive=False, AppliedDate=applied_at)).rowcount


def load_queue_rows(conn: Connection, ids: Sequence[int]) -> list[RowMapping]:
    """The queue rows with these ids (every column, as mappings)."""
    q = t.device_customer_rate_plan_queue
    return list(conn.execute(select(q).where(q.c.Id.in_(ids))).mappings().all())


def live_device_ids(conn: Connection, portal_type: int, device_ids: Sequence[int]) -> set[int]:
    """The ids among ``device_ids`` of the portal type's inventory rows that are not deleted."""
    d = tables.inventory_table(portal_type)
    return {int(i) for i in conn.execute(select(d.c.Id).where(
        d.c.Id.in_(sorted(set(device_ids))), d.c.IsDeleted == False)).scalars()}  # noqa: E712


def write_device_plan_columns(conn: Connection, portal_type: int, columns: Sequence[str],
                              members: Sequence[tuple[int, dict[str, Any]]], *, now: datetime) -> None:
    """Nothing: writes ``columns`` (and ModifiedDate) onto the given (device id, values) inventory rows."""
    d = tables.inventory_table(portal_type)
    conn.execute(update(d).where(d.c.Id == bindparam("d_id"))
                 .values(ModifiedDate=now, **{c: bindparam(f"v_{c}") for c in columns}),
                 [{"d_id": dev_id, **{f"v_{c}": u[c] for c in columns}} for dev_id, u in members])


def mark_scheduled_processed(conn: Connection, bulk: BulkChange, applied: Sequence[tuple[int, str]], *,
                             now: datetime, processed_by: str) -> None:
    """Nothing: the given (device change id, details) still SCHEDULED become PROCESSED with those details."""
    tbl = tables.change_table(bulk.portal_type)
    conn.execute(update(tbl).where(tbl.c.Id == bindparam("dc_id"),
                                   tbl.c.Status == DeviceChangeStatus.SCHEDULED.value).values(
        Status=DeviceChangeStatus.PROCESSED.value, StatusDetails=bindparam("details"), IsProcessed=True,
        ProcessedDate=now, ProcessedBy=processed_by, LastModified=now),
        [{"dc_id": dc_id, "details": details} for dc_id, details in applied])
