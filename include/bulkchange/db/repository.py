"""Every read and write the pipeline makes to the AMOP database, as SQLAlchemy Core.

The legacy stored procedures become these transactional functions; each statement compiles for
SQL Server, PostgreSQL and SQLite (tests/db proves it). Functions take a ``Connection`` inside
the caller's transaction unless they say otherwise; batch writes are executemany round trips,
not one statement per device. ``IN`` lists are chunked below SQL Server's 2,100-parameter limit.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Sequence

from sqlalchemy import and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from bulkchange.carriers.base import CallRecord
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db.retry import run_in_transaction
from bulkchange.db.tables import IN_CHUNK, change_table, chunks, inventory_table
from bulkchange.sanitize import sanitize_text
from bulkchange.models import (
    BulkChange,
    BulkStatus,
    CARRIER_APPLIED_STATUSES,
    ChangeType,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    FAILED_DEVICE_STATUSES,
    Integration,
    PortalType,
    SETTLED_DEVICE_STATUSES,
    WAITING_DEVICE_STATUSES,
    utcnow,
)

UNSETTLED = (DeviceChangeStatus.NEW.value, DeviceChangeStatus.PENDING.value,
             DeviceChangeStatus.PROCESSING.value)


class BulkChangeNotFound(LookupError):
    pass


def msisdn_key(value: str | None) -> str:
    """A phone number compared by its digits (as bulkchange.tenancy compares it)."""
    return "".join(ch for ch in str(value or "") if ch.isdigit())


# --- claiming ----------------------------------------------------------------------------
def find_new_bulk_change_ids(conn: Connection, limit: int = 50) -> list[int]:
    bc = t.device_bulk_change
    q = (select(bc.c.Id).where(bc.c.Status == BulkStatus.NEW.value, bc.c.ProcessChanges == True)  # noqa: E712
         .order_by(bc.c.Id).limit(limit))
    return [int(i) for i in conn.execute(q).scalars()]


def find_stale_claims(conn: Connection, older_than: datetime, limit: int = 50) -> list[int]:
    """Bulk changes claimed (PENDING) before ``older_than`` whose processing never started."""
    bc = t.device_bulk_change
    q = (select(bc.c.Id).where(bc.c.Status == BulkStatus.PENDING.value, bc.c.ModifiedDate < older_than,
                               bc.c.ProcessChanges == True)  # noqa: E712
         .order_by(bc.c.Id).limit(limit))
    return [int(i) for i in conn.execute(q).scalars()]


def claim_bulk_change(conn: Connection, bulk_id: int, *, from_status: str = BulkStatus.NEW.value,
                      claimed_before: datetime | None = None) -> bool:
    """NEW -> PENDING as one conditional UPDATE: of two concurrent claimers exactly one wins.

    With ``from_status=PENDING`` and ``claimed_before`` it re-claims a stale claim the same way."""
    bc = t.device_bulk_change
    # a bulk change the portal holds (ProcessChanges = 0) is never claimed, whoever asks
    stmt = update(bc).where(bc.c.Id == bulk_id, bc.c.Status == from_status, bc.c.ProcessChanges == True)  # noqa: E712
    if claimed_before is not None:
        stmt = stmt.where(bc.c.ModifiedDate < claimed_before)
    res = conn.execute(stmt.values(Status=BulkStatus.PENDING.value, ModifiedDate=utcnow()))
    won = res.rowcount == 1
    if won and from_status != BulkStatus.PENDING.value:
        record_status_change(conn, bulk_id, from_status, BulkStatus.PENDING)
    return won


def claim_portal_enqueued(conn: Connection, bulk_id: int) -> bool:
    """PROCESSING as the legacy portal leaves a bulk change when it puts it on the SQS queue (it sets
    PROCESSING on enqueue) -> PENDING, as one conditional UPDATE, like ``claim_bulk_change``.

    Never started here is told by ``ModifiedDate``: our column (the portal does not write it),
    set by every status change the pipeline makes, so a bulk change this pipeline set PROCESSING
    is never taken again. Only the SQS entry calls this: a message announces the bulk change."""
    bc = t.device_bulk_change
    res = conn.execute(update(bc).where(bc.c.Id == bulk_id, bc.c.Status == BulkStatus.PROCESSING.value,
                                        bc.c.ModifiedDate.is_(None), bc.c.ProcessChanges == True)  # noqa: E712
                       .values(Status=BulkStatus.PENDING.value, ModifiedDate=utcnow()))
    won = res.rowcount == 1
    if won:
        record_status_change(conn, bulk_id, BulkStatus.PROCESSING.value, BulkStatus.PENDING)
    return won


def never_started(bc=None):
    """A bulk change no one has started: NEW, or PROCESSING as the legacy portal enqueued it."""
    from sqlalchemy import or_

    bc = bc if bc is not None else t.device_bulk_change
    return or_(bc.c.Status == BulkStatus.NEW.value,
               and_(bc.c.Status == BulkStatus.PROCESSING.value, bc.c.ModifiedDate.is_(None)))


def claim_new_bulk_changes(engine: Engine, limit: int = 50) -> list[int]:
    """Find NEW bulk changes and claim each in its own short transaction; return the won ids."""
    with engine.connect() as conn:
        candidates = find_new_bulk_change_ids(conn, limit)
    won = []
    for bulk_id in candidates:
        if run_in_transaction(engine, lambda conn, i=bulk_id: claim_bulk_change(conn, i), what=f"claiming {bulk_id}"):
            won.append(bulk_id)
    return won


def reclaim_stale(engine: Engine, older_than: datetime, limit: int = 50) -> list[int]:
    """Claims whose launch was lost (the trigger failed after the claim): claim them again."""
    with engine.connect() as conn:
        candidates = find_stale_claims(conn, older_than, limit)
    won = []
    for bulk_id in candidates:
        if run_in_transaction(engine, lambda conn, i=bulk_id: claim_bulk_change(
                conn, i, from_status=BulkStatus.PENDING.value, claimed_before=older_than), what=f"re-claiming {bulk_id}"):
            won.append(bulk_id)
    return won


# --- ownership: one processing run per bulk change ------------------------------------------
@dataclass(frozen=True)
class Lease:
    """Who processes a bulk change (``owner``: "bulk_change_process:<run id>") and until when, or
    nobody (``owner`` None)."""
    owner: str | None
    expires: datetime | None


def load_lease(conn: Connection, bulk_id: int) -> Lease:
    bc = t.device_bulk_change
    row = conn.execute(select(bc.c.LeaseOwner, bc.c.LeaseExpiresDate).where(bc.c.Id == bulk_id)).first()
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_id} does not exist")
    return Lease(row[0], row[1])


def acquire_lease(conn: Connection, bulk_id: int, owner: str, until: datetime, *,
                  now: datetime | None = None) -> Lease:
    """Take, renew or take over the bulk change for ``owner`` until ``until``, as one conditional
    UPDATE: it succeeds when nobody holds it, ``owner`` already holds it (a retry of the same run)
    or the holder's lease has expired (a dead run). Returns the lease as it is now: the caller owns
    the bulk change if ``lease.owner == owner``. The UPDATE's row lock is held until the caller's
    transaction ends, so writes made in that transaction are made as the owner."""
    bc = t.device_bulk_change
    now = now or utcnow()
    free = (bc.c.LeaseOwner.is_(None) | (bc.c.LeaseOwner == owner) | bc.c.LeaseExpiresDate.is_(None)
            | (bc.c.LeaseExpiresDate < now))
    won = conn.execute(update(bc).where(bc.c.Id == bulk_id, free)
                       .values(LeaseOwner=owner, LeaseExpiresDate=until)).rowcount == 1
    return Lease(owner, until) if won else load_lease(conn, bulk_id)


def release_lease(conn: Connection, bulk_id: int, owner: str) -> bool:
    """Give the bulk change up (only ``owner`` can). Returns whether it was held by ``owner``."""
    bc = t.device_bulk_change
    return conn.execute(update(bc).where(bc.c.Id == bulk_id, bc.c.LeaseOwner == owner)
                        .values(LeaseOwner=None, LeaseExpiresDate=None)).rowcount == 1


# --- loading -----------------------------------------------------------------------------
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


def load_device_changes(conn: Connection, bulk: BulkChange, *, ids: Sequence[int] | None = None,
                        statuses: Sequence[str] | None = None) -> list[DeviceChange]:
    tbl = change_table(bulk.portal_type)
    base = select(tbl).where(tbl.c.BulkChangeId == bulk.id)
    if statuses is not None:
        base = base.where(tbl.c.Status.in_(list(statuses)))
    rows = []
    if ids is None:
        rows = conn.execute(base.order_by(tbl.c.Id)).mappings().all()
    else:
        for chunk in chunks(list(ids)):
            rows.extend(conn.execute(base.where(tbl.c.Id.in_(chunk)).order_by(tbl.c.Id)).mappings().all())
    return [_device_change(r) for r in rows]


def _device_change(r) -> DeviceChange:
    return DeviceChange(
        id=r["Id"], bulk_change_id=r["BulkChangeId"], iccid=r["ICCID"], msisdn=r["MSISDN"],
        imei=r["IMEI"], eid=r["EID"], device_identifier=r["DeviceIdentifier"], device_id=r["DeviceId"],
        change_request=r["ChangeRequest"], status=DeviceChangeStatus(r["Status"]),
        status_details=r["StatusDetails"], service_provider_id=r["ServiceProviderId"],
        tenant_id=r["TenantId"], carrier_request_id=r["CarrierRequestId"],
        carrier_check_count=r["CarrierCheckCount"] or 0,
    )


@dataclass(frozen=True)
class DeviceRow:
    id: int
    iccid: str | None  # a Mobility line may be known by its number only
    msisdn: str | None
    status: str | None
    communication_plan: str | None
    carrier_rate_plan: str | None
    data_usage_mb: Decimal | None
    # the other carrier identifiers of the tenant's device: every carrier call takes them from here
    eid: str | None = None
    imei: str | None = None

    @property
    def label(self) -> str:
        """How a message names the device: its ICCID, else its number."""
        return self.iccid or f"MSISDN {self.msisdn}"


class DeviceIndex(dict):
    """The devices of some device changes, found by ICCID, or (Mobility lines) by MSISDN when the
    device change carries no ICCID. ``find(dc)`` is the device change's device or None."""

    def find(self, dc: DeviceChange) -> DeviceRow | None:
        if dc.iccid:
            return self.get(dc.iccid)
        if dc.msisdn:
            return self.get(("MSISDN", msisdn_key(dc.msisdn)))
        return None


def _device_row(r) -> DeviceRow:
    m = r._mapping
    return DeviceRow(int(m["Id"]), m["ICCID"], m["MSISDN"], m["Status"], m.get("CommunicationPlan"),
                     m["CarrierRatePlan"], m["DataUsageMB"], eid=m.get("EID"), imei=m["IMEI"])


def _inventory_select(d):
    cols = [d.c.Id, d.c.ICCID, d.c.MSISDN, d.c.Status, d.c.CarrierRatePlan, d.c.DataUsageMB, d.c.IMEI]
    cols += [d.c[c] for c in ("CommunicationPlan", "EID") if c in d.c]
    return select(*cols)


def load_devices(conn: Connection, bulk: BulkChange, changes: Sequence[DeviceChange]) -> DeviceIndex:
    """The devices of these device changes, in the bulk change's inventory (``inventory_table``),
    of its service provider and tenant only (multi-tenant guard). Mobility device changes without an
    ICCID are found by their MSISDN."""
    out = DeviceIndex(load_devices_by_iccid(conn, bulk, [dc.iccid for dc in changes if dc.iccid]))
    if int(bulk.portal_type) != PortalType.MOBILITY:
        return out
    numbers = sorted({dc.msisdn for dc in changes if not dc.iccid and dc.msisdn})
    if not numbers:
        return out
    d = inventory_table(bulk.portal_type)
    keys = {msisdn_key(n) for n in numbers}
    # the number as written and its digits only
    variants = sorted({v for n in numbers for v in (n, msisdn_key(n))})
    for chunk in chunks(variants):
        q = _inventory_select(d).where(
            d.c.MSISDN.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
            d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False).order_by(d.c.Id)  # noqa: E712
        for r in conn.execute(q):
            key = msisdn_key(r.MSISDN)
            if key in keys:
                out.setdefault(("MSISDN", key), _device_row(r))
    return out


def load_devices_by_iccid(conn: Connection, bulk: BulkChange, iccids: Sequence[str]) -> dict[str, DeviceRow]:
    """Devices of the bulk change's service provider and tenant only (multi-tenant guard), in its
    inventory (``inventory_table``)."""
    d = inventory_table(bulk.portal_type)
    out: dict[str, DeviceRow] = {}
    wanted = sorted({i for i in iccids if i})
    for chunk in chunks(wanted):
        q = _inventory_select(d).where(
            d.c.ICCID.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
            d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)  # noqa: E712
        for r in conn.execute(q):
            out[r.ICCID] = _device_row(r)
    return out


@dataclass(frozen=True)
class RatePlan:
    code: str
    communication_plan: str | None
    plan_mb: Decimal
    base_rate: Decimal


def load_rate_plans(conn: Connection, service_provider_id: int) -> list[RatePlan]:
    rp = t.jasper_carrier_rate_plan
    q = select(rp.c.RatePlanCode, rp.c.CommunicationPlan, rp.c.PlanMB, rp.c.BaseRate).where(
        rp.c.ServiceProviderId == service_provider_id, rp.c.IsActive == True)  # noqa: E712
    return [RatePlan(r[0], r[1], Decimal(r[2]), Decimal(r[3])) for r in conn.execute(q)]


# --- submitting, progress, dry runs, retries ------------------------------------------------
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


# --- writing device outcomes ----------------------------------------------------------------
def mark_device_changes(conn: Connection, bulk: BulkChange, ids: Sequence[int], status: DeviceChangeStatus,
                        *, details: str | None = None, processed_by: str,
                        only_statuses: Sequence[str] | None = None) -> int:
    """Set one status on many device changes (chunked IN). Returns rows changed."""
    tbl = change_table(bulk.portal_type)
    now = utcnow()
    values = {"Status": status.value, "LastModified": now, "ProcessedBy": processed_by,
              "IsProcessed": status in SETTLED_DEVICE_STATUSES}
    if details is not None:
        values["StatusDetails"] = details
    if status in SETTLED_DEVICE_STATUSES:
        values["ProcessedDate"] = now
    n = 0
    for chunk in chunks(list(ids)):
        stmt = update(tbl).where(tbl.c.BulkChangeId == bulk.id, tbl.c.Id.in_(chunk))
        if only_statuses is not None:
            stmt = stmt.where(tbl.c.Status.in_(list(only_statuses)))
        n += conn.execute(stmt.values(**values)).rowcount
    return n


@dataclass
class LogEntry:
    device_change_id: int | None
    description: str
    request_text: str = ""
    response_text: str = ""
    error_text: str | None = None
    response_status: str | None = None
    attempt: int | None = None
    duration_ms: int | None = None
    outcome: str | None = None

    @classmethod
    def from_call(cls, device_change_id: int, call: CallRecord) -> "LogEntry":
        """One carrier attempt, one row (a retried call has one row per attempt)."""
        status = str(call.status_code) if call.status_code is not None else "NO_RESPONSE"
        suffix = f" (attempt {call.attempt})" if call.attempt > 1 else ""
        return cls(device_change_id, call.description + suffix, call.request_text, call.response_text,
                   call.error, status, attempt=call.attempt, duration_ms=int(round(call.duration_s * 1000)),
                   outcome=call.outcome)


def add_log_entries(conn: Connection, bulk: BulkChange, entries: Sequence[LogEntry], *, processed_by: str) -> None:
    if not entries:
        return
    for chunk in chunks(log_rows(bulk, entries, processed_by=processed_by), 200):
        conn.execute(insert(t.device_bulk_change_log), list(chunk))


def log_rows(bulk: BulkChange, entries: Sequence[LogEntry], *, processed_by: str) -> list[dict]:
    """The DeviceBulkChangeLog rows of ``entries`` (scrubbed), ready to insert."""
    mobility = bulk.portal_type == PortalType.MOBILITY
    now = utcnow()
    return [{
        "BulkChangeId": bulk.id,
        "M2MDeviceChangeId": None if mobility else e.device_change_id,
        "MobilityDeviceChangeId": e.device_change_id if mobility else None,
        # the one scrubber, at the one place log rows are written (idempotent on scrubbed text)
        "LogEntryDescription": sanitize_text(e.description, limit=512), "ProcessBy": processed_by,
        "RequestText": sanitize_text(e.request_text), "ResponseText": sanitize_text(e.response_text),
        "ErrorText": sanitize_text(e.error_text) if e.error_text is not None else None,
        "HasErrors": e.error_text is not None, "ResponseStatus": e.response_status, "CreatedDate": now,
        "AttemptNumber": e.attempt, "DurationMs": e.duration_ms, "Outcome": e.outcome,
    } for e in entries]


# --- the call journal (bulkchange.journal): a log row exists before its request leaves --------------
# ResponseStatus of a carrier attempt whose request was (about to be) sent and whose answer is not
# recorded yet. A row still showing it after its task ended belongs to a call that may have reached
# the carrier with nobody knowing the answer (the task died): its Outcome is ``unknown`` from the
# start, so a retry checks that device at the carrier before sending anything again.
LOG_IN_FLIGHT = "IN_FLIGHT"
IN_FLIGHT_ERROR = ("in flight: the request was sent and no answer was recorded (the task ended before it "
                   "was written); the outcome is unknown and is checked at the carrier before any resend")


def in_flight_entry(device_change_id: int, call: CallRecord) -> LogEntry:
    suffix = f" (attempt {call.attempt})" if call.attempt > 1 else ""
    return LogEntry(device_change_id, call.description + suffix, call.request_text, "", IN_FLIGHT_ERROR,
                    LOG_IN_FLIGHT, attempt=call.attempt, outcome="unknown")


def journal_write(engine: Engine, bulk: BulkChange, *, processed_by: str,
                  intents: Sequence[tuple[int, CallRecord]] = (),
                  completions: Sequence[CallRecord] = (),
                  finished: Sequence[tuple[int, CallRecord]] = ()) -> list[int]:
    """One short transaction of the call journal (never held across an HTTP call).

    ``intents``: attempts about to be sent, inserted as IN_FLIGHT rows; returns their row ids in
    order. ``completions``: attempts whose IN_FLIGHT row (``log_id``) gets its answer.
    ``finished``: attempts never journaled before they were sent, inserted whole."""
    log = t.device_bulk_change_log

    def write(conn) -> list[int]:  # run again if it loses a deadlock or meets a lock (db.retry)
        ids: list[int] = []
        if intents:
            rows = log_rows(bulk, [in_flight_entry(i, c) for i, c in intents], processed_by=processed_by)
            for chunk in chunks(rows, 200):
                result = conn.execute(insert(log).returning(log.c.Id, sort_by_parameter_order=True), list(chunk))
                ids.extend(int(r[0]) for r in result)
        if finished:
            add_log_entries(conn, bulk, [LogEntry.from_call(i, c) for i, c in finished], processed_by=processed_by)
        if completions:
            done = log_rows(bulk, [LogEntry.from_call(0, c) for c in completions], processed_by=processed_by)
            conn.execute(
                update(log).where(log.c.Id == bindparam("log_id"), log.c.ResponseStatus == LOG_IN_FLIGHT).values(
                    LogEntryDescription=bindparam("v_desc"), ResponseText=bindparam("v_resp"),
                    ErrorText=bindparam("v_err"), HasErrors=bindparam("v_has"),
                    ResponseStatus=bindparam("v_status"), DurationMs=bindparam("v_ms"),
                    Outcome=bindparam("v_outcome")),
                [{"log_id": c.log_id, "v_desc": r["LogEntryDescription"], "v_resp": r["ResponseText"],
                  "v_err": r["ErrorText"], "v_has": r["HasErrors"], "v_status": r["ResponseStatus"],
                  "v_ms": r["DurationMs"], "v_outcome": r["Outcome"]} for c, r in zip(completions, done)])
        return ids
    return run_in_transaction(engine, write, what=f"bulk change {bulk.id}: call journal")


# ResponseStatus of an attempt left IN_FLIGHT by a task that died, once a later attempt of the
# batch has checked the device at the carrier and recorded its outcome: the attempt's own answer
# stays unknown (Outcome), the row says what the check found.
LOG_NO_ANSWER = "NO_ANSWER"


def in_flight_log_ids(conn: Connection, bulk: BulkChange, ids: Sequence[int]) -> dict[int, list[int]]:
    """Device change id -> its log rows still IN_FLIGHT. Read when a batch starts, before it sends
    anything: these rows belong to an earlier attempt of the batch that died with the call open."""
    log = t.device_bulk_change_log
    col = log.c.MobilityDeviceChangeId if bulk.portal_type == PortalType.MOBILITY else log.c.M2MDeviceChangeId
    found: dict[int, list[int]] = {}
    for chunk in chunks(list(ids)):
        for dc_id, log_id in conn.execute(select(col, log.c.Id).where(
                log.c.BulkChangeId == bulk.id, col.in_(chunk), log.c.ResponseStatus == LOG_IN_FLIGHT)):
            found.setdefault(int(dc_id), []).append(int(log_id))
    return found


def resolve_in_flight(conn: Connection, stale: dict[int, list[int]], recorded: Sequence[DeviceResult]) -> int:
    """Close the IN_FLIGHT rows ``stale`` names (``in_flight_log_ids``) of the device changes whose
    outcome was just recorded: ``NO_ANSWER``, with what the check at the carrier found. Returns the
    rows updated."""
    log = t.device_bulk_change_log
    params = [{"log_id": log_id, "v_err": sanitize_text(
        "no answer recorded: the task that sent this attempt ended before its answer came; the retry "
        f"checked the device at the carrier and recorded {r.status.value}: {r.details or ''}")}
        for r in recorded for log_id in stale.get(r.device_change_id, ())]
    if not params:
        return 0
    conn.execute(update(log).where(log.c.Id == bindparam("log_id"), log.c.ResponseStatus == LOG_IN_FLIGHT)
                 .values(ResponseStatus=LOG_NO_ANSWER, ErrorText=bindparam("v_err")), params)
    return len(params)


def unsettled_call_ids(conn: Connection, bulk: BulkChange, ids: Sequence[int]) -> set[int]:
    """Device changes whose last carrier attempt on record is ``unknown`` (its answer lost, or still
    IN_FLIGHT because the task died): the carrier may have the change, so it is checked there
    before anything is sent again."""
    log = t.device_bulk_change_log
    col = log.c.MobilityDeviceChangeId if bulk.portal_type == PortalType.MOBILITY else log.c.M2MDeviceChangeId
    found: set[int] = set()
    for chunk in chunks(list(ids)):
        last = (select(col.label("dc"), func.max(log.c.Id).label("last_id"))
                .where(log.c.BulkChangeId == bulk.id, col.in_(chunk), log.c.Outcome.is_not(None))
                .group_by(col).subquery())
        rows = conn.execute(select(last.c.dc).join(log, log.c.Id == last.c.last_id)
                            .where(log.c.Outcome == "unknown")).all()
        found.update(int(r[0]) for r in rows)
    return found


def reject_device_changes(conn: Connection, bulk: BulkChange, rejections: Sequence[tuple[int, str]], *,
                          processed_by: str, description: str = "Validation: rejected") -> None:
    """Mark each rejected device change ERROR with its own reason and log why (one round trip each)."""
    if not rejections:
        return
    tbl = change_table(bulk.portal_type)
    now = utcnow()
    stmt = (update(tbl).where(tbl.c.Id == bindparam("dc_id"))
            .values(Status=DeviceChangeStatus.ERROR.value, StatusDetails=bindparam("details"),
                    IsProcessed=True, ProcessedDate=now, ProcessedBy=processed_by, LastModified=now))
    rejections = [(i, sanitize_text(reason)) for i, reason in rejections]
    conn.execute(stmt, [{"dc_id": i, "details": reason} for i, reason in rejections])
    add_log_entries(conn, bulk, [LogEntry(i, description, error_text=reason, response_status="ERROR")
                                 for i, reason in rejections], processed_by=processed_by)


def still_in_status(conn: Connection, bulk: BulkChange, ids: Sequence[int], statuses: Sequence[str]) -> set[int]:
    """The device changes among ``ids`` still in one of ``statuses``, locked for the caller's
    transaction: the first statement is an UPDATE on exactly those rows, so a second recorder of
    the same device change waits for this transaction and then no longer finds it in the status
    (PostgreSQL and SQL Server re-check the condition after the wait; SQLite transactions are
    serialized by BEGIN IMMEDIATE). Two round trips per 1,000 ids."""
    tbl = change_table(bulk.portal_type)
    now = utcnow()
    won: set[int] = set()
    for chunk in chunks(sorted(set(ids))):
        cond = (tbl.c.BulkChangeId == bulk.id, tbl.c.Id.in_(list(chunk)), tbl.c.Status.in_(list(statuses)))
        conn.execute(update(tbl).where(*cond).values(LastModified=now))
        won.update(int(i) for i in conn.execute(select(tbl.c.Id).where(*cond)).scalars())
    return won


def record_results(conn: Connection, bulk: BulkChange, results: Sequence[DeviceResult],
                   calls: dict[int, list[CallRecord]], *, processed_by: str,
                   source: str = "BulkChange", only_from: Sequence[str] | None = None) -> list[DeviceResult]:
    """Write a batch's outcomes: device changes, Device rows, status history and call logs.

    One executemany per table, inside the caller's transaction.

    ``only_from``: compare-and-set. Only device changes still in one of these statuses (the
    status the recorder saw) are recorded; a result whose device change another recorder settled
    meanwhile is dropped whole (no status, Device or history row, and none of its unjournaled log
    rows; the call journal's rows of its carrier attempts stay: those calls happened), so racing
    recorders write each real status change once. Returns the results recorded.
    """
    if not results:
        return []
    if only_from is not None:
        mine = still_in_status(conn, bulk, [r.device_change_id for r in results], only_from)
        results = [r for r in results if r.device_change_id in mine]
        if not results:
            return []
    tbl = change_table(bulk.portal_type)
    now = utcnow()
    # (an IN list cannot be expanded in an executemany: one equality per status)
    cas = (or_(*(tbl.c.Status == s for s in only_from)),) if only_from is not None else ()
    conn.execute(
        update(tbl).where(tbl.c.Id == bindparam("dc_id"), *cas).values(
            Status=bindparam("status"), StatusDetails=bindparam("details"),
            IsProcessed=bindparam("settled"), ProcessedDate=bindparam("pdate"),
            ProcessedBy=processed_by, LastModified=now,
            MSISDN=func.coalesce(bindparam("msisdn"), tbl.c.MSISDN),
            IpAddress=func.coalesce(bindparam("ip"), tbl.c.IpAddress),
            CarrierRequestId=func.coalesce(bindparam("req_id"), tbl.c.CarrierRequestId)),
        [{"dc_id": r.device_change_id, "status": r.status.value, "details": sanitize_text(r.details),
          "settled": r.status in SETTLED_DEVICE_STATUSES,
          "pdate": now if r.status in SETTLED_DEVICE_STATUSES else None,
          "msisdn": r.msisdn, "ip": r.ip_address, "req_id": r.carrier_request_id} for r in results])

    d = inventory_table(bulk.portal_type)
    mobility = d is t.mobility_device
    changed = [r for r in results if r.status in CARRIER_APPLIED_STATUSES and r.device_id is not None
               and (r.new_device_status is not None or r.carrier_rate_plan is not None)]
    if changed:
        # the status's DeviceStatusId from its one owner (db.device_status), never from the request
        ids = device_status_ids(conn, bulk.integration, [r.new_device_status for r in changed])
        common = dict(CarrierRatePlan=func.coalesce(bindparam("rate_plan"), d.c.CarrierRatePlan),
                      MSISDN=func.coalesce(bindparam("msisdn"), d.c.MSISDN),
                      IPAddress=func.coalesce(bindparam("ip"), d.c.IPAddress), ModifiedDate=now)
        for with_status in (True, False):
            members = [r for r in changed if bool(r.new_device_status) == with_status]
            if not members:
                continue
            values = dict(common)
            if with_status:  # the status and its id, always together
                values.update(Status=bindparam("new_status"), DeviceStatusId=bindparam("new_status_id"),
                              LastStatusChange=func.coalesce(bindparam("lsc"), d.c.LastStatusChange))
            conn.execute(update(d).where(d.c.Id == bindparam("d_id")).values(**values), [
                {"d_id": r.device_id, "rate_plan": r.carrier_rate_plan, "msisdn": r.msisdn, "ip": r.ip_address,
                 **({"new_status": r.new_device_status, "new_status_id": ids.get(r.new_device_status),
                     "lsc": now if r.new_device_status != r.previous_device_status else None} if with_status else {})}
                for r in members])
        moved = [r for r in changed if r.new_device_status and r.new_device_status != r.previous_device_status]
        numbers = _mobility_numbers(conn, [r.device_id for r in moved]) if mobility else {}
        history = [{"DeviceId": None if mobility else r.device_id, "ICCID": r.iccid,
                    "MobilityDeviceId": r.device_id if mobility else None,
                    "MSISDN": (r.msisdn or numbers.get(r.device_id)) if mobility else None,
                    "PreviousStatus": r.previous_device_status,
                    "CurrentStatus": r.new_device_status, "ChangedBy": processed_by, "BulkChangeId": bulk.id,
                    "Source": source, "ChangedDate": now}
                   for r in moved]
        if history:
            conn.execute(insert(t.device_status_history), history)
        if mobility and bulk.integration.family == Integration.TELEGENCE:
            _mirror_telegence_lines(conn, bulk.service_provider_id, bulk.integration,
                                    [r for r in changed if r.new_device_status], processed_by=processed_by, now=now)

    # A partial success: the carrier applied the rate plan, a later step of the same change failed
    # (e.g. the status call after a deactivation's plan change). The plan is in at the carrier, so it
    # is in the inventory too; the status is not touched.
    partial = [r for r in results if r.status not in CARRIER_APPLIED_STATUSES and r.device_id is not None
               and r.carrier_rate_plan is not None]
    if partial:
        conn.execute(update(d).where(d.c.Id == bindparam("d_id")).values(
            CarrierRatePlan=bindparam("rate_plan"), ModifiedDate=now),
            [{"d_id": r.device_id, "rate_plan": r.carrier_rate_plan} for r in partial])

    _apply_device_updates(conn, [r for r in results if r.status in CARRIER_APPLIED_STATUSES
                                 and r.device_id is not None and r.device_updates], now, table=d)

    entries: list[LogEntry] = []
    for r in results:
        recs = calls.get(r.device_change_id) or []
        # attempts already in the call journal (written as they happened) are not written twice
        entries.extend(LogEntry.from_call(r.device_change_id, c) for c in recs if not c.journaled)
        if not recs:
            failed = r.status in FAILED_DEVICE_STATUSES
            entries.append(LogEntry(r.device_change_id, "Update AMOP",
                                    response_text="" if failed else r.details,
                                    error_text=r.details if failed else None,
                                    response_status=r.status.value))
    add_log_entries(conn, bulk, entries, processed_by=processed_by)
    return list(results)


def _mobility_numbers(conn: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    m = t.mobility_device
    out: dict[int, str | None] = {}
    for chunk in chunks(sorted(set(ids))):
        out.update((int(i), n) for i, n in conn.execute(select(m.c.Id, m.c.MSISDN).where(m.c.Id.in_(chunk))))
    return out


def _mirror_telegence_lines(conn: Connection, service_provider_id: int, integration: Integration,
                            results: Sequence[DeviceResult], *, processed_by: str, now: datetime) -> None:
    """A Telegence status the pipeline changed, in Telegence's own line table (legacy TelegenceDevice,
    by subscriber number, as the legacy sync keeps it): the letter, its DeviceStatusId and the previous
    id. A line the table does not have yet (a new activation) is added."""
    numbers = _mobility_numbers(conn, [r.device_id for r in results])
    lines = {}
    for r in results:
        number = r.msisdn or numbers.get(r.device_id)
        if number:
            lines[number] = r.new_device_status
    if not lines:
        return
    ids = device_status_ids(conn, integration, lines.values())
    td = t.telegence_device
    have: set[str] = set()
    for chunk in chunks(sorted(lines)):
        have.update(conn.execute(select(td.c.SubscriberNumber).where(
            td.c.ServiceProviderId == service_provider_id, td.c.SubscriberNumber.in_(chunk))).scalars())
    known = [n for n in sorted(lines) if n in have]
    if known:
        conn.execute(update(td).where(td.c.ServiceProviderId == service_provider_id,
                                      td.c.SubscriberNumber == bindparam("number")).values(
            OldDeviceStatusId=td.c.DeviceStatusId, DeviceStatusId=bindparam("status_id"),
            SubscriberNumberStatus=bindparam("status"), ModifiedBy=processed_by[:128], ModifiedDate=now),
            [{"number": n, "status": lines[n], "status_id": ids.get(lines[n])} for n in known])
    new = [n for n in sorted(lines) if n not in have]
    if new:
        conn.execute(insert(td), [
            {"SubscriberNumber": n, "SubscriberNumberStatus": lines[n], "DeviceStatusId": ids.get(lines[n]),
             "ServiceProviderId": service_provider_id, "CreatedBy": processed_by[:128], "CreatedDate": now,
             "IsActive": True, "IsDeleted": False} for n in new])


# Inventory columns a change type may set through DeviceResult.device_updates: never the keys, the
# owner, the audit columns, nor the status (only ``new_device_status`` writes it, with its id).
_NOT_UPDATABLE = {"Id", "ServiceProviderId", "TenantId", "CreatedDate", "ModifiedDate", "Status", "DeviceStatusId"}
DEVICE_UPDATABLE = frozenset(c.name for c in t.device.columns) - _NOT_UPDATABLE


def _apply_device_updates(conn: Connection, results: Sequence[DeviceResult], now: datetime, *,
                          table=None) -> None:
    """One executemany per distinct set of updated columns (``table``: the inventory, Device by default)."""
    d = t.device if table is None else table
    updatable = frozenset(c.name for c in d.columns) - _NOT_UPDATABLE
    groups: dict[tuple[str, ...], list[DeviceResult]] = {}
    for r in results:
        unknown = set(r.device_updates) - updatable
        if unknown:
            raise ValueError(f"device change {r.device_change_id}: {d.name} has no updatable column "
                             f"{', '.join(sorted(unknown))}")
        groups.setdefault(tuple(sorted(r.device_updates)), []).append(r)
    for cols, members in groups.items():
        conn.execute(update(d).where(d.c.Id == bindparam("d_id"))
                     .values(ModifiedDate=now, **{c: bindparam(f"v_{c}") for c in cols}),
                     [{"d_id": r.device_id, **{f"v_{c}": r.device_updates[c] for c in cols}} for r in members])


def count_carrier_checks(conn: Connection, bulk: BulkChange, ids: Sequence[int]) -> None:
    """One more poll of the carrier request for each of these waiting device changes."""
    tbl = change_table(bulk.portal_type)
    for chunk in chunks(list(ids)):
        conn.execute(update(tbl).where(tbl.c.Id.in_(chunk))
                     .values(CarrierCheckCount=func.coalesce(tbl.c.CarrierCheckCount, 0) + 1, LastModified=utcnow()))


def bulk_changes_waiting(conn: Connection, service_provider_ids: Sequence[int] | None = None) -> list[int]:
    """Bulk changes with device changes waiting on asynchronous carrier work."""
    waiting = [s.value for s in WAITING_DEVICE_STATUSES]
    ids: set[int] = set()
    for tbl in (t.m2m_device_change, t.mobility_device_change):
        q = select(tbl.c.BulkChangeId).where(tbl.c.Status.in_(waiting)).distinct()
        if service_provider_ids is not None:
            q = q.where(tbl.c.ServiceProviderId.in_(list(service_provider_ids)))
        ids.update(int(i) for i in conn.execute(q).scalars())
    return sorted(ids)


def bulk_changes_in_progress(conn: Connection, service_provider_id: int) -> list[int]:
    """Bulk changes of the service provider a live run is processing now (PROCESSING under a hold
    that has not expired): their batch tasks are calling the carrier account."""
    b = t.device_bulk_change
    q = select(b.c.Id).where(b.c.ServiceProviderId == service_provider_id, b.c.Status == BulkStatus.PROCESSING.value,
                             b.c.LeaseExpiresDate > utcnow()).order_by(b.c.Id)
    return [int(i) for i in conn.execute(q).scalars()]


def open_iccids(conn: Connection, service_provider_id: int) -> set[str]:
    """ICCIDs with a device change in flight (not settled) for this service provider."""
    settled = [s.value for s in SETTLED_DEVICE_STATUSES]
    out: set[str] = set()
    for tbl in (t.m2m_device_change, t.mobility_device_change):
        q = select(tbl.c.ICCID).where(tbl.c.ServiceProviderId == service_provider_id,
                                      tbl.c.Status.not_in(settled), tbl.c.ICCID.is_not(None)).distinct()
        out.update(conn.execute(q).scalars())
    return out


# Device changes that hold their device: queued or at the carrier, not settled. NEW is not validated
# yet (its own prepare checks then); SCHEDULED is a DB change stored for a later date.
IN_FLIGHT = (DeviceChangeStatus.PENDING.value, DeviceChangeStatus.PROCESSING.value,
             DeviceChangeStatus.PENDING_ACTIVATION.value, DeviceChangeStatus.PENDING_CARRIER.value)


def lock_service_provider(conn: Connection, service_provider_id: int) -> None:
    """Serialize, until the caller's transaction ends, the steps that queue device changes of one
    service provider (a device belongs to one): a no-op UPDATE that takes the row's lock."""
    sp = t.service_provider
    conn.execute(update(sp).where(sp.c.Id == service_provider_id).values(Name=sp.c.Name))


@dataclass(frozen=True)
class BusyDevice:
    iccid: str
    bulk_change_id: int
    device_change_id: int
    status: str


def busy_devices(conn: Connection, bulk: BulkChange, iccids: Sequence[str],
                 msisdns: Sequence[str] = ()) -> dict[str, BusyDevice]:
    """ICCID (or MSISDN, for Mobility lines named by number) -> the in-flight device change
    (IN_FLIGHT) another bulk change of the same service provider has on that device (the oldest)."""
    out: dict[str, BusyDevice] = {}
    for column, given in (("ICCID", iccids), ("MSISDN", msisdns)):
        wanted = sorted({i for i in given if i})
        for tbl in (t.m2m_device_change, t.mobility_device_change):
            for chunk in chunks(wanted):
                q = (select(tbl.c[column], tbl.c.BulkChangeId, tbl.c.Id, tbl.c.Status)
                     .where(tbl.c.ServiceProviderId == bulk.service_provider_id, tbl.c[column].in_(list(chunk)),
                            tbl.c.BulkChangeId != bulk.id, tbl.c.Status.in_(IN_FLIGHT))
                     .order_by(tbl.c.Id))
                for key, other, dc_id, status in conn.execute(q):
                    out.setdefault(key, BusyDevice(key, int(other), int(dc_id), status))
    return out


def provider_inventory(integration: Integration):
    """The inventory reconciliation reads for a service provider: Telegence lines are Mobility lines
    (``MobilityDevice``), every other carrier's SIMs are in ``Device``."""
    return t.mobility_device if integration.family == Integration.TELEGENCE else t.device


def record_reconciled_statuses(conn: Connection, changes: Sequence[tuple[int, str, str | None, str]], *,
                               changed_by: str, integration: Integration, service_provider_id: int) -> None:
    """Device status drift found at the carrier: (device id, ICCID or number, our status, carrier
    status), written to the provider's inventory (``provider_inventory``) with its DeviceStatusId."""
    if not changes:
        return
    now = utcnow()
    d = provider_inventory(integration)
    mobility = d is t.mobility_device
    ids = device_status_ids(conn, integration, [new for *_, new in changes])
    conn.execute(update(d).where(d.c.Id == bindparam("d_id")).values(
        Status=bindparam("new_status"), DeviceStatusId=bindparam("new_status_id"), LastStatusChange=now,
        ModifiedDate=now),
        [{"d_id": dev_id, "new_status": new, "new_status_id": ids.get(new)} for dev_id, _, _, new in changes])
    numbers = _mobility_numbers(conn, [c[0] for c in changes]) if mobility else {}
    conn.execute(insert(t.device_status_history), [
        {"DeviceId": None if mobility else dev_id, "MobilityDeviceId": dev_id if mobility else None,
         "ICCID": iccid if not mobility or iccid != numbers.get(dev_id) else None,
         "MSISDN": numbers.get(dev_id), "PreviousStatus": old, "CurrentStatus": new, "ChangedBy": changed_by,
         "BulkChangeId": None, "Source": "Reconciliation", "ChangedDate": now}
        for dev_id, iccid, old, new in changes])
    if mobility and integration.family == Integration.TELEGENCE:
        _mirror_telegence_lines(conn, service_provider_id, integration, [
            DeviceResult(device_change_id=0, status=DeviceChangeStatus.PROCESSED, details="", device_id=dev_id,
                         new_device_status=new) for dev_id, _, _, new in changes],
            processed_by=changed_by, now=now)


def provider_devices(conn: Connection, service_provider_id: int, integration: Integration | None = None, *,
                     rate_plans: bool = False) -> list[tuple]:
    """(id, ICCID, MSISDN, status) of the provider's live devices in its inventory; with
    ``rate_plans`` (id, ICCID, MSISDN, status, carrier rate plan)."""
    d = provider_inventory(integration) if integration is not None else t.device
    cols = [d.c.Id, d.c.ICCID, d.c.MSISDN, d.c.Status] + ([d.c.CarrierRatePlan] if rate_plans else [])
    q = select(*cols).where(d.c.ServiceProviderId == service_provider_id, d.c.IsDeleted == False)  # noqa: E712
    return [(int(row[0]), *row[1:]) for row in conn.execute(q)]


def record_reconciled_rate_plans(conn: Connection, changes: Sequence[tuple[int, str, str | None, str]], *,
                                 changed_by: str, integration: Integration) -> None:
    """Carrier rate plan drift found at the carrier: (device id, ICCID or number, our plan, carrier
    plan), written to the provider's inventory (``CarrierRatePlan``) with a DeviceRatePlanHistory row
    each, as ``record_reconciled_statuses`` does for statuses: the inventory then agrees with the
    carrier, so the next run records nothing again while the plan stays."""
    if not changes:
        return
    now = utcnow()
    d = provider_inventory(integration)
    mobility = d is t.mobility_device
    conn.execute(update(d).where(d.c.Id == bindparam("d_id")).values(
        CarrierRatePlan=bindparam("new_plan"), ModifiedDate=now),
        [{"d_id": dev_id, "new_plan": new} for dev_id, _, _, new in changes])
    numbers = _mobility_numbers(conn, [c[0] for c in changes]) if mobility else {}
    conn.execute(insert(t.device_rate_plan_history), [
        {"DeviceId": None if mobility else dev_id, "MobilityDeviceId": dev_id if mobility else None,
         "ICCID": iccid if not mobility or iccid != numbers.get(dev_id) else None,
         "MSISDN": numbers.get(dev_id), "PreviousRatePlan": old, "CurrentRatePlan": new, "ChangedBy": changed_by,
         "Source": "Reconciliation", "ChangedDate": now}
        for dev_id, iccid, old, new in changes])


def service_providers(conn: Connection, ids: Sequence[int] | None = None) -> list[tuple[int, str]]:
    """(id, integration name) of active service providers, optionally only these ids."""
    sp, integ = t.service_provider, t.integration
    q = select(sp.c.Id, integ.c.Name).select_from(sp.join(integ, integ.c.Id == sp.c.IntegrationId)).where(
        sp.c.IsActive == True)  # noqa: E712
    if ids is not None:
        q = q.where(sp.c.Id.in_(list(ids)))
    return [(int(i), name) for i, name in conn.execute(q.order_by(sp.c.Id))]


# --- roll-up ----------------------------------------------------------------------------------
def status_counts(conn: Connection, bulk: BulkChange) -> dict[str, int]:
    tbl = change_table(bulk.portal_type)
    q = select(tbl.c.Status, func.count()).where(tbl.c.BulkChangeId == bulk.id).group_by(tbl.c.Status)
    return {status: int(n) for status, n in conn.execute(q)}


def fail_unsettled(conn: Connection, bulk: BulkChange, reason: str, *, processed_by: str) -> int:
    """Sweep device changes no task settled (a batch task failed for good) to ERROR with the reason."""
    tbl = change_table(bulk.portal_type)
    ids = [int(i) for i in conn.execute(select(tbl.c.Id).where(
        tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(UNSETTLED))).scalars()]
    if ids:
        reject_device_changes(conn, bulk, [(i, reason) for i in ids], processed_by=processed_by,
                              description="Finalize: not processed")
    return len(ids)


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


# --- notification outbox ----------------------------------------------------------------------
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
