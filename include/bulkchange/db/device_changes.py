"""Device changes (``M2MDeviceChange``, ``MobilityDeviceChange``) and their log
(``DeviceBulkChangeLog``): loading them, marking and rejecting them, the call journal, recording a
batch's outcomes (with the inventory rows they change), and which devices other bulk changes hold.

Batch writes are executemany round trips, not one statement per device; ``IN`` lists are chunked
(``tables.chunks``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine

from bulkchange.carriers.base import CallRecord
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db.inventory import mirror_telegence_lines, mobility_numbers
from bulkchange.db.retry import run_in_transaction
from bulkchange.db.tables import change_table, chunks, inventory_table
from bulkchange.models import (
    BulkChange,
    CARRIER_APPLIED_STATUSES,
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
from bulkchange.sanitize import sanitize_text

UNSETTLED = (DeviceChangeStatus.NEW.value, DeviceChangeStatus.PENDING.value,
             DeviceChangeStatus.PROCESSING.value)


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


@functools.cache
def _journal_statements():
    """The journal's two statements, built once: a batch writes the journal once per small group of
    carrier attempts, and building and cache-keying a fresh SQLAlchemy statement each time was a
    visible part of the CPU per device (docs/profile-r3.md). Immutable, so shared by every thread."""
    log = t.device_bulk_change_log
    return (insert(log).returning(log.c.Id, sort_by_parameter_order=True),
            update(log).where(log.c.Id == bindparam("log_id"), log.c.ResponseStatus == LOG_IN_FLIGHT).values(
                LogEntryDescription=bindparam("v_desc"), ResponseText=bindparam("v_resp"),
                ErrorText=bindparam("v_err"), HasErrors=bindparam("v_has"),
                ResponseStatus=bindparam("v_status"), DurationMs=bindparam("v_ms"),
                Outcome=bindparam("v_outcome")))


def journal_write(engine: Engine, bulk: BulkChange, *, processed_by: str,
                  intents: Sequence[tuple[int, CallRecord]] = (),
                  completions: Sequence[CallRecord] = (),
                  finished: Sequence[tuple[int, CallRecord]] = ()) -> list[int]:
    """One short transaction of the call journal (never held across an HTTP call), on ``engine``
    or the journal's ``db.connect.HeldConnection``.

    ``intents``: attempts about to be sent, inserted as IN_FLIGHT rows; returns their row ids in
    order. ``completions``: attempts whose IN_FLIGHT row (``log_id``) gets its answer.
    ``finished``: attempts never journaled before they were sent, inserted whole."""
    insert_returning, complete = _journal_statements()

    def write(conn) -> list[int]:  # run again if it loses a deadlock or meets a lock (db.retry)
        ids: list[int] = []
        if intents:
            rows = log_rows(bulk, [in_flight_entry(i, c) for i, c in intents], processed_by=processed_by)
            for chunk in chunks(rows, 200):
                result = conn.execute(insert_returning, list(chunk))
                ids.extend(int(r[0]) for r in result)
        if finished:
            add_log_entries(conn, bulk, [LogEntry.from_call(i, c) for i, c in finished], processed_by=processed_by)
        if completions:
            done = log_rows(bulk, [LogEntry.from_call(0, c) for c in completions], processed_by=processed_by)
            conn.execute(
                complete,
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
        numbers = mobility_numbers(conn, [r.device_id for r in moved]) if mobility else {}
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
            mirror_telegence_lines(conn, bulk.service_provider_id, bulk.integration,
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
