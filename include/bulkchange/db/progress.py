"""A bulk change's progress: its device changes counted per status, the counts stored on it, and
the bulk status they add up to (``rollup``); dry-run reports, and failed device changes queued
for another attempt.
"""
from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.bulk_changes import BulkChangeNotFound, set_bulk_status
from bulkchange.db.device_changes import LogEntry, add_log_entries
from bulkchange.db.tables import change_table, chunks
from bulkchange.models import (
    BulkChange,
    BulkStatus,
    ChangeType,
    DeviceChangeStatus,
    FAILED_DEVICE_STATUSES,
    SETTLED_DEVICE_STATUSES,
    WAITING_DEVICE_STATUSES,
    utcnow,
)


def progress_from_counts(counts: dict[str, int]) -> dict[str, int]:
    """DeviceBulkChange progress columns from device change counts per status."""
    processed = counts.get(DeviceChangeStatus.PROCESSED.value, 0)
    failed = sum(counts.get(s.value, 0) for s in FAILED_DEVICE_STATUSES)
    total = sum(counts.values())
    return {"TotalCount": total, "ProcessedCount": processed, "ErrorCount": failed,
            "PendingCount": total - processed - failed}


def write_progress(conn: Connection, bulk_id: int, counts: dict[str, int]) -> dict[str, int]:
    """Store the progress counts on the bulk change (in the caller's transaction)."""
    values = progress_from_counts(counts)
    conn.execute(update(t.device_bulk_change).where(t.device_bulk_change.c.Id == bulk_id).values(**values))
    return values


def lock_bulk_change_row(conn: Connection, bulk_id: int) -> None:
    """Take the bulk change's row lock (a no-op UPDATE: an exclusive lock on every dialect) before
    counting its device changes, so the count sees every batch that closed before this one: two
    batches closing at once otherwise each count without the other's rows and the later write
    leaves a stale progress. Every writer takes it last in its transaction, after its own device
    rows (docs/database.md)."""
    bc = t.device_bulk_change
    conn.execute(update(bc).where(bc.c.Id == bulk_id).values(ProcessChanges=bc.c.ProcessChanges))


def refresh_progress(conn: Connection, bulk: BulkChange) -> dict[str, int]:
    lock_bulk_change_row(conn, bulk.id)
    return write_progress(conn, bulk.id, status_counts(conn, bulk))


def load_progress(conn: Connection, bulk_id: int) -> dict[str, int | None]:
    bc = t.device_bulk_change
    row = conn.execute(select(bc.c.TotalCount, bc.c.ProcessedCount, bc.c.ErrorCount, bc.c.PendingCount)
                       .where(bc.c.Id == bulk_id)).mappings().first()
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_id} does not exist")
    return dict(row)


def insert_dry_run_report(conn: Connection, report: dict, *, bulk_change_id: int | None,
                          service_provider_id: int | None, change_type: ChangeType | None,
                          requested_by: str | None) -> int:
    """Keep a dry run's report (the only row a dry run writes). Returns its id."""
    import json

    from bulkchange.models import CHANGE_TYPE_IDS

    return int(conn.execute(insert(t.device_bulk_change_dry_run).values(
        BulkChangeId=bulk_change_id, ServiceProviderId=service_provider_id,
        ChangeRequestTypeId=CHANGE_TYPE_IDS[change_type] if change_type else None,
        RequestedBy=requested_by, Report=json.dumps(report, default=str), CreatedDate=utcnow(),
    )).inserted_primary_key[0])


def load_dry_run_reports(conn: Connection, *, bulk_change_id: int | None = None,
                         report_id: int | None = None) -> list[dict]:
    """Dry-run reports, newest first, each as {"id", "bulk_change_id", "created", "report"}."""
    import json

    d = t.device_bulk_change_dry_run
    q = select(d.c.Id, d.c.BulkChangeId, d.c.CreatedDate, d.c.Report)
    if bulk_change_id is not None:
        q = q.where(d.c.BulkChangeId == bulk_change_id)
    if report_id is not None:
        q = q.where(d.c.Id == report_id)
    return [{"id": int(i), "bulk_change_id": b, "created": c, "report": json.loads(r)}
            for i, b, c, r in conn.execute(q.order_by(d.c.Id.desc()))]


def reset_failed_device_changes(conn: Connection, bulk: BulkChange, *, processed_by: str,
                                interrupted_prefix: str | None = None) -> list[int]:
    """API_FAILED / ERROR device changes back for another attempt, each with a log row that keeps
    the earlier outcome (earlier log rows stay). Returns the ids reset.

    They go back to NEW (validated again by prepare), except those whose reason starts with
    ``interrupted_prefix`` (swept after their batch task died, so the carrier may have the change
    already): those go back to PROCESSING, which makes the handler ask the carrier before sending."""
    tbl = change_table(bulk.portal_type)
    failed = [s.value for s in FAILED_DEVICE_STATUSES]
    rows = conn.execute(select(tbl.c.Id, tbl.c.Status, tbl.c.StatusDetails)
                        .where(tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(failed))
                        .order_by(tbl.c.Id)).all()
    if not rows:
        return []
    now = utcnow()

    def interrupted(status: str, details: str | None) -> bool:
        return bool(interrupted_prefix) and status == DeviceChangeStatus.ERROR.value \
            and (details or "").startswith(interrupted_prefix)

    for target, details, wanted in (
            (DeviceChangeStatus.NEW, "retry requested: queued for validation again", False),
            (DeviceChangeStatus.PROCESSING, "retry requested: an earlier attempt may have reached the carrier; "
                                            "checked there before sending again", True)):
        ids = [int(i) for i, status, det in rows if interrupted(status, det) == wanted]
        for chunk in chunks(ids):
            conn.execute(update(tbl).where(tbl.c.BulkChangeId == bulk.id, tbl.c.Id.in_(chunk),
                                           tbl.c.Status.in_(failed))
                         .values(Status=target.value, IsProcessed=False, ProcessedDate=None,
                                 ProcessedBy=processed_by, LastModified=now, CarrierRequestId=None,
                                 CarrierCheckCount=0, StatusDetails=details))
    add_log_entries(conn, bulk, [
        LogEntry(int(i), "Retry: failed device change queued again",
                 response_text=f"previous outcome {status}: {details or ''}",
                 response_status=(DeviceChangeStatus.PROCESSING if interrupted(status, details)
                                  else DeviceChangeStatus.NEW).value)
        for i, status, details in rows], processed_by=processed_by)
    return [int(r[0]) for r in rows]


# --- roll-up ----------------------------------------------------------------------------------
def status_counts(conn: Connection, bulk: BulkChange) -> dict[str, int]:
    tbl = change_table(bulk.portal_type)
    q = select(tbl.c.Status, func.count()).where(tbl.c.BulkChangeId == bulk.id).group_by(tbl.c.Status)
    return {status: int(n) for status, n in conn.execute(q)}


def decide_bulk_status(counts: dict[str, int]) -> tuple[BulkStatus, str | None]:
    """The bulk status that the device statuses add up to (PROCESSING while any is open)."""
    total = sum(counts.values())
    open_ = sum(n for s, n in counts.items() if DeviceChangeStatus(s) not in SETTLED_DEVICE_STATUSES)
    if total == 0:
        return BulkStatus.ERROR, "bulk change has no device changes"
    waiting = sum(n for s, n in counts.items() if DeviceChangeStatus(s) in WAITING_DEVICE_STATUSES)
    # future-dated DB changes wait for their effective date like asynchronous carrier work
    scheduled = counts.get(DeviceChangeStatus.SCHEDULED.value, 0)
    waiting += scheduled
    if open_ > waiting:
        return BulkStatus.PROCESSING, None
    if scheduled and waiting == scheduled:
        return BulkStatus.WAITING_FOR_CARRIER, f"{waiting} of {total} device changes wait for their effective date"
    if waiting:
        return BulkStatus.WAITING_FOR_CARRIER, f"{waiting} of {total} device changes wait for the carrier"
    failed = sum(n for s, n in counts.items() if DeviceChangeStatus(s) in FAILED_DEVICE_STATUSES)
    if failed == 0:
        return BulkStatus.PROCESSED, None
    message = f"{failed} of {total} device changes failed"
    # REV_IO_FAILED devices did change at the carrier: the bulk change is not a complete failure
    all_failed = failed == total and not counts.get(DeviceChangeStatus.REV_IO_FAILED.value)
    return (BulkStatus.ERROR if all_failed else BulkStatus.PROCESSED_WITH_ERRORS), message


def rollup(conn: Connection, bulk: BulkChange) -> tuple[BulkStatus, dict[str, int]]:
    lock_bulk_change_row(conn, bulk.id)  # count what every closed batch wrote (see lock_bulk_change_row)
    counts = status_counts(conn, bulk)
    write_progress(conn, bulk.id, counts)
    status, message = decide_bulk_status(counts)
    set_bulk_status(conn, bulk.id, status, error_message=message)
    return status, counts
