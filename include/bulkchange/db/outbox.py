"""The notification outbox (``DeviceBulkChangeNotification``): every bulk change status change
queues its notifications in the transaction that makes it (``record_status_change``); senders
claim a pending one, send it and record how it went.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.tables import IN_CHUNK
from bulkchange.models import BulkStatus, ChangeType, utcnow
from bulkchange.sanitize import sanitize_text

NOTIFY_WEBHOOK = "webhook"
NOTIFY_EMAIL = "email"
NOTIFY_USERNAME = "username"  # EditUsernameCostCenter: the username-updated report, when it finishes


def _channels(conn: Connection, bulk_id: int, to_status: BulkStatus) -> list[str]:
    if not to_status.is_final:
        return [NOTIFY_WEBHOOK]
    ct, b = t.device_change_request_type, t.device_bulk_change
    code = conn.execute(select(ct.c.Code).select_from(b.join(ct, ct.c.Id == b.c.ChangeRequestTypeId))
                        .where(b.c.Id == bulk_id)).scalar()
    username = (code or "").lower() == ChangeType.EDIT_USERNAME_COST_CENTER.value.lower()
    return [NOTIFY_WEBHOOK, NOTIFY_EMAIL] + ([NOTIFY_USERNAME] if username else [])


def record_status_change(conn: Connection, bulk_id: int, from_status: str | None, to_status: BulkStatus) -> None:
    """Queue the notifications of one bulk change status change, in the caller's transaction:
    a webhook POST for every change, a completion summary email when the status is final.

    Only the net change of a transaction is notified, as only committed states can be seen: a
    re-run that sets a finished bulk change PROCESSING and rolls it back up to the same status in
    one transaction queues nothing."""
    import weakref

    from sqlalchemy import delete

    n = t.device_bulk_change_notification
    txn = conn.get_transaction()
    queued = conn.info.setdefault("bulkchange_outbox", {})
    earlier = queued.pop(bulk_id, None)
    if earlier is not None and txn is not None and earlier[0]() is txn and txn.is_active:
        conn.execute(delete(n).where(n.c.Id.in_(earlier[2])))  # replaced by the net change
        from_status = earlier[1]
    if from_status == to_status.value:
        return
    now = utcnow()
    ids = []
    for ch in _channels(conn, bulk_id, to_status):
        res = conn.execute(insert(n).values(BulkChangeId=bulk_id, Channel=ch, FromStatus=from_status,
                                            ToStatus=to_status.value, State="PENDING", Attempts=0, CreatedDate=now))
        ids.append(res.inserted_primary_key[0])
    if txn is not None:
        queued[bulk_id] = (weakref.ref(txn), from_status, ids)


@dataclass(frozen=True)
class Notification:
    id: int
    bulk_change_id: int
    channel: str
    from_status: str | None
    to_status: str
    attempts: int
    created: datetime


def pending_notifications(conn: Connection, *, bulk_ids: Sequence[int] | None = None,
                          stale_before: datetime | None = None, limit: int = 200) -> list[Notification]:
    """PENDING notifications (and SENDING ones claimed before ``stale_before``: their sender died),
    oldest first."""
    n = t.device_bulk_change_notification
    cond = n.c.State == "PENDING"
    if stale_before is not None:
        cond = cond | and_(n.c.State == "SENDING", n.c.ClaimedDate < stale_before)
    q = select(n).where(cond)
    if bulk_ids is not None:
        if not bulk_ids:
            return []
        q = q.where(n.c.BulkChangeId.in_(list(bulk_ids)[:IN_CHUNK]))
    rows = conn.execute(q.order_by(n.c.Id).limit(limit)).mappings().all()
    return [Notification(int(r["Id"]), int(r["BulkChangeId"]), r["Channel"], r["FromStatus"], r["ToStatus"],
                         int(r["Attempts"] or 0), r["CreatedDate"]) for r in rows]


def claim_notification(conn: Connection, notification_id: int, *, stale_before: datetime | None = None) -> bool:
    """PENDING (or stale SENDING) -> SENDING as one conditional UPDATE: one sender wins."""
    n = t.device_bulk_change_notification
    cond = n.c.State == "PENDING"
    if stale_before is not None:
        cond = cond | and_(n.c.State == "SENDING", n.c.ClaimedDate < stale_before)
    res = conn.execute(update(n).where(n.c.Id == notification_id, cond)
                       .values(State="SENDING", ClaimedDate=utcnow()))
    return res.rowcount == 1


def finish_notification(conn: Connection, notification_id: int, state: str, *, error: str | None = None,
                        attempts: int = 1) -> None:
    """Record a send: SENT, SKIPPED, FAILED (given up), or PENDING again (retried later)."""
    n = t.device_bulk_change_notification
    values = {"State": state, "LastError": sanitize_text(error) if error is not None else None,
              "Attempts": n.c.Attempts + attempts}
    if state == "SENT":
        values["SentDate"] = utcnow()
    conn.execute(update(n).where(n.c.Id == notification_id).values(**values))
