"""The bulk change row (``DeviceBulkChange``) and its service provider: loading, inserting (as the
portal writes it), setting its status (which queues its notifications, ``outbox``), sweeping the
device changes no task settled, and what a notification reports about it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.device_changes import UNSETTLED, reject_device_changes
from bulkchange.db.outbox import record_status_change
from bulkchange.db.tables import change_table, chunks
from bulkchange.models import (
    BulkChange,
    BulkStatus,
    ChangeType,
    DeviceChangeStatus,
    FAILED_DEVICE_STATUSES,
    Integration,
    PortalType,
    utcnow,
)
from bulkchange.sanitize import sanitize_text


class BulkChangeNotFound(LookupError):
    pass


def load_bulk_change(conn: Connection, bulk_id: int) -> BulkChange:
    bc, sp, ct, integ = t.device_bulk_change, t.service_provider, t.device_change_request_type, t.integration
    q = (select(bc.c.Id, bc.c.TenantId, bc.c.ServiceProviderId, bc.c.PortalTypeId, bc.c.Status,
                bc.c.CreatedBy, bc.c.ProcessChanges, sp.c.Name.label("SpName"), sp.c.WriteIsEnabled, ct.c.Code,
                integ.c.Name.label("IntegrationName"))
         .select_from(bc.join(sp, sp.c.Id == bc.c.ServiceProviderId)
                      .join(ct, ct.c.Id == bc.c.ChangeRequestTypeId)
                      .join(integ, integ.c.Id == sp.c.IntegrationId))
         .where(bc.c.Id == bulk_id))
    row = conn.execute(q).mappings().first()
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_id} does not exist")
    return BulkChange(
        id=row["Id"], tenant_id=row["TenantId"], service_provider_id=row["ServiceProviderId"],
        service_provider_name=row["SpName"], integration=Integration.from_name(row["IntegrationName"]),
        change_type=ChangeType.from_code(row["Code"]), portal_type=PortalType(row["PortalTypeId"]),
        status=BulkStatus(row["Status"]), write_is_enabled=bool(row["WriteIsEnabled"]),
        created_by=row["CreatedBy"], process_changes=bool(row["ProcessChanges"]),
    )


def set_bulk_status(conn: Connection, bulk_id: int, status: BulkStatus, *,
                    error_message: str | None = None) -> None:
    bc = t.device_bulk_change
    now = utcnow()
    values = {"Status": status.value, "ModifiedDate": now}
    error_message = sanitize_text(error_message) if error_message is not None else None
    if status.is_final:
        values["ProcessedDate"] = now
        values["ErrorMessage"] = error_message
    elif error_message is not None:
        values["ErrorMessage"] = error_message
    previous = conn.execute(select(bc.c.Status).where(bc.c.Id == bulk_id)).scalar_one_or_none()
    # Conditional on a different status: of two concurrent roll-ups to the same status only one
    # changes it, so only one records the notification.
    changed = conn.execute(update(bc).where(bc.c.Id == bulk_id, bc.c.Status != status.value)
                           .values(**values)).rowcount == 1
    if changed:
        record_status_change(conn, bulk_id, previous, status)
    else:
        conn.execute(update(bc).where(bc.c.Id == bulk_id).values(**values))


@dataclass(frozen=True)
class ServiceProviderRow:
    id: int
    name: str
    tenant_id: int
    integration: Integration
    write_is_enabled: bool
    is_active: bool


def load_service_provider(conn: Connection, sp_id: int) -> ServiceProviderRow | None:
    sp, integ = t.service_provider, t.integration
    row = conn.execute(select(sp.c.Id, sp.c.Name, sp.c.TenantId, sp.c.WriteIsEnabled, sp.c.IsActive,
                              integ.c.Name.label("IntegrationName"))
                       .select_from(sp.join(integ, integ.c.Id == sp.c.IntegrationId))
                       .where(sp.c.Id == sp_id)).mappings().first()
    if row is None:
        return None
    return ServiceProviderRow(int(row["Id"]), row["Name"], int(row["TenantId"]),
                              Integration.from_name(row["IntegrationName"]), bool(row["WriteIsEnabled"]),
                              bool(row["IsActive"]))


def insert_bulk_change(conn: Connection, *, sp_id: int, tenant_id: int, change_type: ChangeType,
                       rows: Sequence[dict], portal_type: int = 0, process_changes: bool = True,
                       created_by: str | None = None, status: str = BulkStatus.NEW.value) -> int:
    """Insert a bulk change and its device changes (as the portal writes them) in the caller's
    transaction. Each row holds ICCID, MSISDN, IMEI, EID, DeviceId, DeviceIdentifier and
    ChangeRequest (a JSON string). Returns the new DeviceBulkChange.Id."""
    from bulkchange.models import CHANGE_TYPE_IDS

    now = utcnow()
    bulk_id = int(conn.execute(insert(t.device_bulk_change).values(
        TenantId=tenant_id, ServiceProviderId=sp_id, ChangeRequestTypeId=CHANGE_TYPE_IDS[change_type],
        PortalTypeId=int(portal_type), ProcessChanges=process_changes, Status=status,
        CreatedBy=created_by, CreatedDate=now, ModifiedDate=now,
        TotalCount=len(rows), ProcessedCount=0, ErrorCount=0, PendingCount=len(rows),
    )).inserted_primary_key[0])
    table = change_table(portal_type)
    values = [{
        "BulkChangeId": bulk_id, "ICCID": r.get("ICCID"), "MSISDN": r.get("MSISDN"), "IMEI": r.get("IMEI"),
        "EID": r.get("EID"), "DeviceId": r.get("DeviceId"),
        "DeviceIdentifier": r.get("DeviceIdentifier") or r.get("ICCID") or r.get("MSISDN"),
        "ChangeRequest": r.get("ChangeRequest"), "Status": DeviceChangeStatus.NEW.value, "IsProcessed": False,
        "LastModified": now, "ServiceProviderId": sp_id, "TenantId": tenant_id,
    } for r in rows]
    for chunk in chunks(values, 500):
        conn.execute(insert(table), list(chunk))
    return bulk_id


def service_providers(conn: Connection, ids: Sequence[int] | None = None) -> list[tuple[int, str]]:
    """(id, integration name) of active service providers, optionally only these ids."""
    sp, integ = t.service_provider, t.integration
    q = select(sp.c.Id, integ.c.Name).select_from(sp.join(integ, integ.c.Id == sp.c.IntegrationId)).where(
        sp.c.IsActive == True)  # noqa: E712
    if ids is not None:
        q = q.where(sp.c.Id.in_(list(ids)))
    return [(int(i), name) for i, name in conn.execute(q.order_by(sp.c.Id))]


def fail_unsettled(conn: Connection, bulk: BulkChange, reason: str, *, processed_by: str) -> int:
    """Sweep device changes no task settled (a batch task failed for good) to ERROR with the reason."""
    tbl = change_table(bulk.portal_type)
    ids = [int(i) for i in conn.execute(select(tbl.c.Id).where(
        tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(UNSETTLED))).scalars()]
    if ids:
        reject_device_changes(conn, bulk, [(i, reason) for i in ids], processed_by=processed_by,
                              description="Finalize: not processed")
    return len(ids)


def bulk_change_summary_row(conn: Connection, bulk_id: int) -> dict | None:
    """The DeviceBulkChange columns a notification reports (status, dates, error message)."""
    bc = t.device_bulk_change
    row = conn.execute(select(bc.c.Status, bc.c.CreatedDate, bc.c.ProcessedDate, bc.c.ErrorMessage,
                              bc.c.CreatedBy).where(bc.c.Id == bulk_id)).mappings().first()
    return dict(row) if row else None


def first_failures(conn: Connection, bulk: BulkChange, limit: int = 20) -> list[tuple[int, str | None, str, str | None]]:
    """(device change id, ICCID, status, reason) of the first failed device changes."""
    tbl = change_table(bulk.portal_type)
    q = (select(tbl.c.Id, tbl.c.ICCID, tbl.c.Status, tbl.c.StatusDetails)
         .where(tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_([s.value for s in FAILED_DEVICE_STATUSES]))
         .order_by(tbl.c.Id).limit(limit))
    return [(int(i), iccid, status, details) for i, iccid, status, details in conn.execute(q)]
