"""Read-only queries behind the Bulk changes page (plugins/bulkchange_plugins/ui).

Nothing here writes. Every query is bounded: lists are paged (``limit`` rows, plus one to know
whether there is a next page), device changes are paged by ``Id`` (keyset: ``Id > after``), and
each filter has an index (``IX_DeviceBulkChange_*``, ``IX_*_DeviceChange_BulkChange_Status_Id``,
``IX_*_DeviceChange_BulkChange_Id``, ``IX_DeviceBulkChangeLog_*DeviceChange``), so a bulk change of
100,000 devices opens as fast as one of ten. Statements compile for SQL Server, PostgreSQL and
SQLite like the other db modules'.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.bulk_changes import BulkChangeNotFound
from bulkchange.db.tables import change_table
from bulkchange.models import FAILED_DEVICE_STATUSES, PortalType
from bulkchange.sanitize import sanitize_text

MAX_PAGE_SIZE = 500
RESPONSE_PREVIEW_CHARS = 500


@dataclass
class Page:
    items: list[dict[str, Any]]
    page: int = 1
    page_size: int = 50
    has_next: bool = False
    next_after: int | None = None  # keyset pages: the ``after`` of the next page
    filters: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.items, "page": self.page, "page_size": self.page_size, "has_next": self.has_next,
                "next_after": self.next_after, "filters": self.filters}


def _size(page_size: int) -> int:
    return max(1, min(int(page_size), MAX_PAGE_SIZE))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(sep=" ", timespec="seconds") if value else None


def progress(total: int | None, processed: int | None, errors: int | None, pending: int | None) -> dict[str, Any]:
    """The progress bar of a bulk change from its stored counts (``DeviceBulkChange.*Count``)."""
    total, processed, errors = int(total or 0), int(processed or 0), int(errors or 0)
    pending = int(pending if pending is not None else max(total - processed - errors, 0))
    done = processed + errors
    return {"total": total, "processed": processed, "errors": errors, "pending": pending,
            "percent_done": round(100.0 * done / total, 1) if total else 0.0,
            "percent_processed": round(100.0 * processed / total, 1) if total else 0.0,
            "percent_errors": round(100.0 * errors / total, 1) if total else 0.0}


def _bulk_columns():
    bc, sp, ct, integ = t.device_bulk_change, t.service_provider, t.device_change_request_type, t.integration
    cols = (bc.c.Id, bc.c.ServiceProviderId, sp.c.Name.label("ServiceProviderName"),
            integ.c.Name.label("Carrier"), ct.c.Code.label("ChangeType"), bc.c.PortalTypeId, bc.c.Status,
            bc.c.CreatedBy, bc.c.CreatedDate, bc.c.ModifiedDate, bc.c.ProcessedDate, bc.c.ErrorMessage,
            bc.c.TotalCount, bc.c.ProcessedCount, bc.c.ErrorCount, bc.c.PendingCount)
    joined = (bc.join(sp, sp.c.Id == bc.c.ServiceProviderId)
              .join(ct, ct.c.Id == bc.c.ChangeRequestTypeId)
              .join(integ, integ.c.Id == sp.c.IntegrationId))
    return cols, joined


def _bulk_dict(r) -> dict[str, Any]:
    return {
        "id": int(r["Id"]), "service_provider_id": int(r["ServiceProviderId"]),
        "service_provider": r["ServiceProviderName"], "carrier": r["Carrier"], "change_type": r["ChangeType"],
        "portal_type": PortalType(int(r["PortalTypeId"] or 0)).name, "status": r["Status"],
        "created_by": r["CreatedBy"], "created": _iso(r["CreatedDate"]), "modified": _iso(r["ModifiedDate"]),
        "processed": _iso(r["ProcessedDate"]), "error_message": r["ErrorMessage"],
        "progress": progress(r["TotalCount"], r["ProcessedCount"], r["ErrorCount"], r["PendingCount"]),
    }


def list_bulk_changes(conn: Connection, *, statuses: Sequence[str] | None = None,
                      service_provider_id: int | None = None, created_from: datetime | None = None,
                      created_to: datetime | None = None, page: int = 1, page_size: int = 50) -> Page:
    """Bulk changes newest first, filtered by status, service provider and creation date (``created_to``
    exclusive)."""
    size, page = _size(page_size), max(1, int(page))
    bc = t.device_bulk_change
    cols, joined = _bulk_columns()
    q = select(*cols).select_from(joined)
    if statuses:
        q = q.where(bc.c.Status.in_(list(statuses)))
    if service_provider_id is not None:
        q = q.where(bc.c.ServiceProviderId == int(service_provider_id))
    if created_from is not None:
        q = q.where(bc.c.CreatedDate >= created_from)
    if created_to is not None:
        q = q.where(bc.c.CreatedDate < created_to)
    rows = conn.execute(q.order_by(bc.c.Id.desc()).limit(size + 1).offset((page - 1) * size)).mappings().all()
    return Page([_bulk_dict(r) for r in rows[:size]], page=page, page_size=size, has_next=len(rows) > size,
                filters={"statuses": list(statuses or []), "service_provider_id": service_provider_id,
                         "created_from": _iso(created_from), "created_to": _iso(created_to)})


def service_providers(conn: Connection, limit: int = 1000) -> list[dict[str, Any]]:
    """Service providers for the page's filter (id, name, carrier)."""
    sp, integ = t.service_provider, t.integration
    q = (select(sp.c.Id, sp.c.Name, integ.c.Name.label("Carrier"))
         .select_from(sp.join(integ, integ.c.Id == sp.c.IntegrationId)).order_by(sp.c.Name, sp.c.Id).limit(limit))
    return [{"id": int(i), "name": n, "carrier": c} for i, n, c in conn.execute(q)]


def bulk_change(conn: Connection, bulk_id: int) -> dict[str, Any]:
    cols, joined = _bulk_columns()
    row = conn.execute(select(*cols).select_from(joined).where(t.device_bulk_change.c.Id == bulk_id)).mappings().first()
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_id} does not exist")
    return _bulk_dict(row)


def _table_of(bulk: dict[str, Any]):
    return change_table(PortalType[bulk["portal_type"]])


def status_counts(conn: Connection, bulk: dict[str, Any]) -> dict[str, int]:
    """Device changes per status (an index-only scan of IX_*_BulkChange_Status)."""
    tbl = _table_of(bulk)
    q = select(tbl.c.Status, func.count()).where(tbl.c.BulkChangeId == bulk["id"]).group_by(tbl.c.Status)
    return {status: int(n) for status, n in conn.execute(q)}


def _log_fk(bulk: dict[str, Any]):
    log = t.device_bulk_change_log
    return log.c.MobilityDeviceChangeId if bulk["portal_type"] == PortalType.MOBILITY.name else log.c.M2MDeviceChangeId


def _preview(text: str | None) -> str | None:
    if not text:
        return text
    text = sanitize_text(text)  # written scrubbed already; scrubbed again on the way out
    return text if len(text) <= RESPONSE_PREVIEW_CHARS else text[:RESPONSE_PREVIEW_CHARS] + "..."


def device_changes(conn: Connection, bulk: dict[str, Any], *, status: str | None = None, after: int | None = None,
                   page_size: int = 50) -> Page:
    """One page of a bulk change's device changes in Id order (keyset), each with its last carrier
    response (the newest log row: status and scrubbed text)."""
    size = _size(page_size)
    tbl = _table_of(bulk)
    q = select(tbl.c.Id, tbl.c.ICCID, tbl.c.MSISDN, tbl.c.Status, tbl.c.StatusDetails, tbl.c.ProcessedDate,
               tbl.c.LastModified, tbl.c.ProcessedBy).where(tbl.c.BulkChangeId == bulk["id"])
    if status:
        q = q.where(tbl.c.Status == status)
    if after is not None:
        q = q.where(tbl.c.Id > int(after))
    rows = conn.execute(q.order_by(tbl.c.Id).limit(size + 1)).mappings().all()
    rows, has_next = rows[:size], len(rows) > size
    last = last_log_rows(conn, bulk, [int(r["Id"]) for r in rows])
    items = []
    for r in rows:
        entry = last.get(int(r["Id"]))
        items.append({
            "id": int(r["Id"]), "iccid": r["ICCID"], "msisdn": r["MSISDN"], "status": r["Status"],
            "reason": r["StatusDetails"], "processed": _iso(r["ProcessedDate"]), "modified": _iso(r["LastModified"]),
            "processed_by": r["ProcessedBy"],
            "last_response": entry,
        })
    return Page(items, page_size=size, has_next=has_next, next_after=items[-1]["id"] if has_next else None,
                filters={"status": status, "after": after})


def last_log_rows(conn: Connection, bulk: dict[str, Any], device_change_ids: Sequence[int]) -> dict[int, dict]:
    """The newest log row of each of these device changes (at most one page of them)."""
    if not device_change_ids:
        return {}
    log, fk = t.device_bulk_change_log, _log_fk(bulk)
    newest = (select(fk.label("dc"), func.max(log.c.Id).label("last_id"))
              .where(fk.in_(list(device_change_ids)[:MAX_PAGE_SIZE])).group_by(fk).subquery())
    q = (select(newest.c.dc, log.c.LogEntryDescription, log.c.ResponseStatus, log.c.ResponseText, log.c.ErrorText,
                log.c.CreatedDate)
         .select_from(newest.join(log, log.c.Id == newest.c.last_id)))
    return {int(dc): {"description": d, "status": s, "response": _preview(resp), "error": _preview(err),
                      "at": _iso(at)} for dc, d, s, resp, err, at in conn.execute(q)}


def device_change_log(conn: Connection, bulk: dict[str, Any], device_change_id: int, *,
                      limit: int = 100) -> list[dict[str, Any]]:
    """The log rows of one device change of this bulk change, oldest first (at most ``limit``)."""
    log, fk = t.device_bulk_change_log, _log_fk(bulk)
    q = (select(log.c.Id, log.c.LogEntryDescription, log.c.ProcessBy, log.c.RequestText, log.c.ResponseText,
                log.c.ErrorText, log.c.HasErrors, log.c.ResponseStatus, log.c.CreatedDate)
         .where(fk == int(device_change_id), log.c.BulkChangeId == bulk["id"]).order_by(log.c.Id).limit(_size(limit)))
    return [{"id": int(r["Id"]), "description": r["LogEntryDescription"], "by": r["ProcessBy"],
             "request": sanitize_text(r["RequestText"]), "response": sanitize_text(r["ResponseText"]),
             "error": sanitize_text(r["ErrorText"]), "has_errors": bool(r["HasErrors"]),
             "status": r["ResponseStatus"], "at": _iso(r["CreatedDate"])}
            for r in conn.execute(q).mappings()]


FAILED_CSV_COLUMNS = ("DeviceChangeId", "ICCID", "MSISDN", "IMEI", "EID", "Status", "Reason", "ProcessedDate")


def failed_device_rows(conn: Connection, bulk: dict[str, Any], *, chunk: int = 5000) -> Iterator[tuple]:
    """Every failed device change (API_FAILED, ERROR, REV_IO_FAILED) as CSV rows, read in keyset chunks
    so a 100,000-device bulk change streams without being held in memory."""
    tbl = _table_of(bulk)
    failed = sorted(s.value for s in FAILED_DEVICE_STATUSES)
    after = 0
    while True:
        rows = conn.execute(
            select(tbl.c.Id, tbl.c.ICCID, tbl.c.MSISDN, tbl.c.IMEI, tbl.c.EID, tbl.c.Status, tbl.c.StatusDetails,
                   tbl.c.ProcessedDate)
            .where(tbl.c.BulkChangeId == bulk["id"], tbl.c.Status.in_(failed), tbl.c.Id > after)
            .order_by(tbl.c.Id).limit(chunk)).all()
        for r in rows:
            yield (int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], _iso(r[7]))
        if len(rows) < chunk:
            return
        after = int(rows[-1][0])


def dry_run_reports(conn: Connection, bulk_id: int, *, limit: int = 10) -> list[dict[str, Any]]:
    """The newest dry-run reports of a bulk change (summary figures and the stored report)."""
    d = t.device_bulk_change_dry_run
    q = (select(d.c.Id, d.c.CreatedDate, d.c.RequestedBy, d.c.Report).where(d.c.BulkChangeId == bulk_id)
         .order_by(d.c.Id.desc()).limit(_size(limit)))
    out = []
    for i, created, by, report in conn.execute(q):
        try:
            body = json.loads(report)
        except ValueError:
            body = {"unreadable": True}
        out.append({"id": int(i), "created": _iso(created), "requested_by": by, "report": body})
    return out


def dry_run_report(conn: Connection, bulk_id: int, report_id: int) -> dict[str, Any] | None:
    d = t.device_bulk_change_dry_run
    row = conn.execute(select(d.c.Id, d.c.CreatedDate, d.c.RequestedBy, d.c.Report)
                       .where(d.c.Id == report_id, d.c.BulkChangeId == bulk_id)).first()
    if row is None:
        return None
    return {"id": int(row[0]), "created": _iso(row[1]), "requested_by": row[2], "report": json.loads(row[3])}
