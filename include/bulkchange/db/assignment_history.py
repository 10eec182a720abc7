"""The device history a customer assignment leaves (legacy ``usp_DeviceBulkChange_UpdateDeviceHistory``,
run with the bulk change and its effective date at the end of a CustomerAssignment): one
``DeviceAssignmentHistory`` row per device it changed, written in the transaction that records the
device change, so a retried batch that records nothing writes nothing."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t


def record_assignment_history(conn: Connection, rows: Sequence[dict[str, Any]], *, changed_by: str,
                              now: datetime) -> None:
    """``rows``: BulkChangeId, DeviceChangeId, PortalTypeId, DeviceId, ICCID, ServiceProviderId,
    TenantId, SiteId, RevCustomerId, CustomerRatePlanId, CustomerPoolId, EffectiveDate (None = now)."""
    if not rows:
        return
    conn.execute(insert(t.device_assignment_history),
                 [{**r, "EffectiveDate": r.get("EffectiveDate") or now, "ChangedBy": changed_by[:128],
                   "CreatedDate": now} for r in rows])


def load_assignment_history(conn: Connection, bulk_change_id: int) -> list[dict[str, Any]]:
    h = t.device_assignment_history
    return [dict(r) for r in conn.execute(h.select().where(h.c.BulkChangeId == bulk_change_id)
                                          .order_by(h.c.Id)).mappings()]
