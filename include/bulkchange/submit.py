"""Submitting a bulk change from outside a portal (the ``bulk_change_submit`` DAG, tests, scripts).

The submission is what the ops team types in the Airflow trigger form (or passes as conf): a
service provider, a change type, the change request fields, the devices (a list of ICCIDs and/or
pasted CSV text) and the portal type. ``parse_submission`` checks what the form's JSON schema
cannot (the field and value are named in ``SubmitError``); ``submit`` then either

* inserts the bulk change and one device change per device row in one transaction, as a portal
  does (``process_now``: claimed at once, NEW -> PENDING, so the sensor cannot launch it a second
  time; otherwise left NEW with ``ProcessChanges`` for the sensor), or
* with ``dry_run``, inserts nothing and keeps only the dry-run report.

Every device row is kept, even a bad one: duplicates, unknown devices and invalid ICCIDs are
listed per device in the result (computed with the same validation as ``prepare``, without
writing), and ``prepare`` records them on their device change as ERROR with the reason; the rest
proceeds.

CSV: a header row naming ``ICCID`` (and optionally ``MSISDN``, ``IMEI``, ``EID``; any case); every
other column is a change request field for that row (``UpdateStatus``, ``IsIgnoreCurrentStatus``,
dotted names such as ``Request.servicePlan`` for nested fields) overriding the form's change
request. Text without a header whose first cell is all digits is read as one ICCID per line.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from bulkchange import dryrun
from bulkchange.changes import UnsupportedChange, get_handler
from bulkchange.db import bulk_changes, claims, progress
from bulkchange.models import (
    BulkChange,
    BulkStatus,
    ChangeType,
    DeviceChange,
    DeviceChangeStatus,
    PortalType,
    RequestParseError,
    parse_change_request,
)
from bulkchange.limits import (
    MAX_CSV_CELL_CHARS,
    LimitError,
    check_conf,
    check_identifier_lengths,
)
from bulkchange.rules import RuleError, carrier_status

IDENTIFIERS = ("ICCID", "MSISDN", "IMEI", "EID")
PORTAL_TYPES = {"m2m": PortalType.M2M, "mobility": PortalType.MOBILITY}
MAX_DEVICES = 100_000


class SubmitError(ValueError):
    """Input the submission cannot accept; names the field and the value."""

    def __init__(self, field_name: str, value: Any, problem: str):
        shown = "nothing" if value is None else repr(_short(value)) if isinstance(value, str) else _short(value)
        super().__init__(f"{field_name}: {problem} (got {shown})")
        self.field = field_name
        self.value = value


class NotAllowed(SubmitError):
    """The triggering user may not submit for this service provider (``authz``); the message says why."""

    def __init__(self, problem: str):
        ValueError.__init__(self, problem)
        self.field, self.value = "service_provider_id", None


def _over_limit(exc: LimitError) -> SubmitError:
    """A SubmitError for input over a size limit: names the field, never echoes the value."""
    err = SubmitError(exc.field.removeprefix("conf field "), None, "over a limit")
    err.args = (f"{err.field}: {str(exc)[len(exc.field) + 2:]}",)
    return err


def _short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class Submission:
    service_provider_id: int
    change_type: ChangeType
    change_request: dict[str, Any]
    portal_type: PortalType
    devices: list[dict[str, Any]]  # identifiers + "fields" (per-row change request overrides)
    created_by: str = "bulk_change_submit"

    def row_request(self, row: dict[str, Any]) -> dict[str, Any]:
        return _merge(self.change_request, row.get("fields") or {})


@dataclass
class SubmitResult:
    bulk_change_id: int | None
    devices: int
    problems: list[dict[str, Any]] = field(default_factory=list)
    claimed: bool = False
    dry_run: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"bulk_change_id": self.bulk_change_id, "devices": self.devices,
                "problem_count": len(self.problems), "problems": self.problems[:dryrun.MAX_LISTED_REJECTIONS],
                "claimed": self.claimed, "dry_run": self.dry_run}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        target = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = target[part] = {}
            target = nxt
        target[parts[-1]] = value
    return out


# --- parsing -------------------------------------------------------------------------------------
def parse_csv(text: str) -> list[dict[str, Any]]:
    """Device rows from pasted CSV text (see module docstring)."""
    text = (text or "").lstrip("\ufeff").strip()
    if not text:
        return []
    sample = text.splitlines()[0]
    dialect = csv.excel_tab if "\t" in sample and "," not in sample else csv.excel
    if ";" in sample and "," not in sample and "\t" not in sample:
        dialect = type("semicolon", (csv.excel,), {"delimiter": ";"})
    reader = csv.reader(io.StringIO(text), dialect)
    rows = [r for r in reader if any(c.strip() for c in r)]
    header = [c.strip() for c in rows[0]]
    if header and header[0].isdigit():  # no header: one ICCID per line
        return [{"ICCID": r[0].strip(), "fields": {}, "where": f"devices_csv line {n + 1}"}
                for n, r in enumerate(rows)]
    canon = {h.upper(): h for h in IDENTIFIERS}
    names = [canon.get(h.upper(), h) for h in header]
    if not any(n in IDENTIFIERS for n in names):
        raise SubmitError("devices_csv", sample, "the header must name a device identifier column "
                                                 f"({', '.join(IDENTIFIERS)})")
    if len(set(names)) != len(names):
        raise SubmitError("devices_csv", sample, "the header names a column twice")
    out = []
    for n, r in enumerate(rows[1:], start=2):
        row: dict[str, Any] = {"fields": {}, "where": f"devices_csv line {n}"}
        if len(r) > len(names):
            row["problem"] = f"line {n} has {len(r)} cells, the header {len(names)}"
        for name, cell in zip(names, r):
            cell = cell.strip()
            if name in IDENTIFIERS:
                row[name] = cell or None
            elif name and cell != "":
                if len(cell) > MAX_CSV_CELL_CHARS:
                    raise SubmitError(f"devices_csv line {n} column {name}", cell,
                                      f"{len(cell):,} characters, at most {MAX_CSV_CELL_CHARS:,}")
                row["fields"][name] = cell
        out.append(row)
    return out


def parse_device_list(devices: Any) -> list[dict[str, Any]]:
    if devices in (None, "", []):
        return []
    if isinstance(devices, str):  # a REST caller sent text: treat as CSV / one per line
        return parse_csv(devices)
    if not isinstance(devices, list):
        raise SubmitError("devices", devices, "must be a list of ICCIDs or device objects")
    out = []
    for n, item in enumerate(devices, start=1):
        if isinstance(item, (str, int)):
            out.append({"ICCID": str(item).strip() or None, "fields": {}, "where": f"devices item {n}"})
        elif isinstance(item, dict):
            row: dict[str, Any] = {"fields": {}, "where": f"devices item {n}"}
            for key, value in item.items():
                name = key.upper() if key.upper() in IDENTIFIERS else key
                if name in IDENTIFIERS:
                    row[name] = str(value).strip() if value not in (None, "") else None
                else:
                    row["fields"][name] = value
            out.append(row)
        else:
            raise SubmitError(f"devices[{n - 1}]", item, "must be an ICCID string or an object")
    return out


def _int(params: dict, name: str, *, minimum: int = 1) -> int:
    value = params.get(name)
    if isinstance(value, bool) or value is None:
        raise SubmitError(name, value, "must be an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SubmitError(name, value, "must be an integer") from None
    if number < minimum:
        raise SubmitError(name, value, f"must be at least {minimum}")
    return number


def parse_submission(params: dict[str, Any]) -> Submission:
    """Check and normalise the submit form / conf. Raises SubmitError naming the field and value."""
    try:  # sizes first: a 10 MB field is refused by name before it is parsed or copied anywhere
        check_conf(params)
    except LimitError as exc:
        raise _over_limit(exc) from None
    sp_id = _int(params, "service_provider_id")
    raw_type = params.get("change_type")
    try:
        change_type = ChangeType.from_code(str(raw_type or ""))
    except ValueError:
        raise SubmitError("change_type", raw_type,
                          f"must be one of {', '.join(c.value for c in ChangeType)}") from None
    request = params.get("change_request") or {}
    if isinstance(request, str):
        try:
            request = json.loads(request) if request.strip() else {}
        except ValueError as exc:
            raise SubmitError("change_request", request, f"is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise SubmitError("change_request", request, "must be a JSON object")
    raw_portal = params.get("portal_type", "M2M")
    portal = PORTAL_TYPES.get(str(raw_portal).strip().lower())
    if portal is None:
        raise SubmitError("portal_type", raw_portal, "must be M2M or Mobility")
    rows = parse_device_list(params.get("devices")) + parse_csv(params.get("devices_csv") or "")
    if not rows:
        raise SubmitError("devices", params.get("devices"), "give at least one device (devices or devices_csv)")
    if len(rows) > MAX_DEVICES:
        raise SubmitError("devices", f"{len(rows)} devices", f"at most {MAX_DEVICES} per bulk change")
    for row in rows:
        try:
            check_identifier_lengths(row, row.get("where", ""))
        except LimitError as exc:
            raise _over_limit(exc) from None
    created_by = str(params.get("created_by") or "bulk_change_submit")[:128]
    return Submission(sp_id, change_type, request, portal, rows, created_by)


# --- checking against the AMOP data ------------------------------------------------------------
def _bulk_for(sub: Submission, sp: bulk_changes.ServiceProviderRow, bulk_id: int = 0) -> BulkChange:
    return BulkChange(id=bulk_id, tenant_id=sp.tenant_id, service_provider_id=sp.id,
                      service_provider_name=sp.name, integration=sp.integration, change_type=sub.change_type,
                      portal_type=sub.portal_type, status=BulkStatus.NEW, write_is_enabled=sp.write_is_enabled,
                      created_by=sub.created_by)


def _in_memory_changes(sub: Submission, sp: bulk_changes.ServiceProviderRow) -> list[DeviceChange]:
    out = []
    for n, row in enumerate(sub.devices, start=1):
        out.append(DeviceChange(
            id=n, bulk_change_id=0, iccid=row.get("ICCID"), msisdn=row.get("MSISDN"), imei=row.get("IMEI"),
            eid=row.get("EID"), device_identifier=row.get("ICCID") or row.get("MSISDN"),
            change_request=json.dumps(sub.row_request(row)), status=DeviceChangeStatus.NEW,
            service_provider_id=sp.id, tenant_id=sp.tenant_id))
    return out


def check_against_db(engine: Engine, sub: Submission) -> bulk_changes.ServiceProviderRow:
    """The service provider, or SubmitError when the submission as a whole cannot be accepted."""
    with engine.connect() as conn:
        sp = bulk_changes.load_service_provider(conn, sub.service_provider_id)
    if sp is None:
        raise SubmitError("service_provider_id", sub.service_provider_id, "no such service provider")
    if not sp.is_active:
        raise SubmitError("service_provider_id", sub.service_provider_id, f"service provider {sp.name} is inactive")
    try:
        handler_cls = get_handler(sub.change_type, sp.integration)
    except UnsupportedChange as exc:
        raise SubmitError("change_type", sub.change_type.value, str(exc)) from None
    # the carrier write switch guards carrier calls only (DB-only change types never checked it)
    if getattr(handler_cls, "needs_carrier", True) and not sp.write_is_enabled:
        raise SubmitError("service_provider_id", sub.service_provider_id,
                          f"writes are disabled for service provider {sp.name} (WriteIsEnabled is off)")
    if not any(row.get("fields") for row in sub.devices):
        # one change request for every device: a mistake in it is the form's, not the devices'
        try:
            request = parse_change_request(sub.change_type, sub.change_request)
        except RequestParseError as exc:
            raise SubmitError("change_request", sub.change_request, str(exc)) from None
        status = getattr(request, "UpdateStatus", None)
        if status is not None:
            try:
                carrier_status(sp.integration, status)
            except RuleError as exc:
                raise SubmitError("change_request.UpdateStatus", status, str(exc)) from None
    return sp


def needs_carrier(sub: Submission, sp: bulk_changes.ServiceProviderRow) -> bool:
    """Whether this change calls the carrier (so needs its connection) or only writes AMOP tables."""
    return bool(getattr(get_handler(sub.change_type, sp.integration), "needs_carrier", True))


def _label(row: dict[str, Any]) -> str:
    ident = row.get("ICCID") or row.get("MSISDN") or row.get("IMEI") or row.get("EID") or "(no identifier)"
    return f"{ident} ({row['where']})" if row.get("where") else ident


def submit(engine: Engine, sub: Submission, *, process_now: bool = True, dry_run: bool = False,
           batch_size: int | None = 100, max_parallel: int = 10, batch_concurrency: int = 1,
           rate_limit_per_s: float | None = None, credentials_problem: str | None = None,
           max_batches: int | None = None) -> SubmitResult:
    """Insert the bulk change (or, with ``dry_run``, only report what would happen). ``batch_size``
    None: chosen from the rate limit as the processing run will (``batch_sizing``)."""
    sp = check_against_db(engine, sub)
    bulk = _bulk_for(sub, sp)
    changes = _in_memory_changes(sub, sp)
    with engine.begin() as conn:
        # read-only: the same validation prepare runs, so the ops team sees per-device problems now
        report = dryrun.evaluate(conn, bulk, changes, batch_size=batch_size, max_parallel=max_parallel,
                                 batch_concurrency=batch_concurrency, rate_limit_per_s=rate_limit_per_s,
                                 credentials_problem=credentials_problem if dry_run else None,
                                 label=lambda dc: _label(sub.devices[dc.id - 1]), max_batches=max_batches)
        problems = [{"device": r["device"], "reason": r["reason"]} for r in report.rejected]
        problems.extend({"device": _label(row), "reason": row["problem"]} for row in sub.devices if row.get("problem"))
        if dry_run:
            report.report_id = progress.insert_dry_run_report(
                conn, report.as_dict(), bulk_change_id=None, service_provider_id=sp.id,
                change_type=sub.change_type, requested_by=sub.created_by)
            return SubmitResult(None, len(sub.devices), problems, dry_run=report.as_dict() | {"text": report.text()})
        rows = [{"ICCID": row.get("ICCID"), "MSISDN": row.get("MSISDN"), "IMEI": row.get("IMEI"),
                 "EID": row.get("EID"), "ChangeRequest": json.dumps(sub.row_request(row))} for row in sub.devices]
        bulk_id = bulk_changes.insert_bulk_change(conn, sp_id=sp.id, tenant_id=sp.tenant_id,
                                                  change_type=sub.change_type, rows=rows,
                                                  portal_type=int(sub.portal_type), process_changes=True,
                                                  created_by=sub.created_by)
        claimed = claims.claim_bulk_change(conn, bulk_id) if process_now else False
    return SubmitResult(bulk_id, len(rows), problems, claimed=claimed)


def submit_from_trigger(accounts: Any, params: dict[str, Any], *, user: str | None, batch_concurrency: int,
                        max_batches: int) -> dict[str, Any]:
    """The ``bulk_change_submit`` task: the form's submission checked (fields, the user's service
    providers, the DB), then inserted (or, ``dry_run``, only reported), with a log line per device
    problem. ``accounts`` gives the AMOP engine, the carrier hook, the allowed service providers and
    the task log (``bulkchange_plugins.tasks.AirflowAccounts``); a ``SubmitError`` refuses the run.

    CreatedBy is who triggered the run (Airflow knows it), not what the form says."""
    from bulkchange import authz
    from bulkchange.batch_sizing import override_from_conf

    params = {**params, "created_by": authz.created_by(user, params.get("created_by"))}
    sub = parse_submission(params)
    problem = authz.service_provider_problem(user, sub.service_provider_id, accounts.allowed_service_providers())
    if problem:
        raise NotAllowed(problem)
    engine = accounts.engine()
    sp = check_against_db(engine, sub)
    carrier = accounts.carrier(sp.id, sp.integration)
    problem = carrier.credentials_problem(sp.integration)
    rate = None if problem else carrier.get_settings().rate_limit_per_s
    dry_run = bool(params.get("dry_run"))
    result = submit(engine, sub, process_now=bool(params.get("process_now")), dry_run=dry_run,
                    batch_size=override_from_conf(params.get("batch_size")), max_parallel=int(params["max_parallel"]),
                    batch_concurrency=batch_concurrency, rate_limit_per_s=rate, credentials_problem=problem,
                    max_batches=max_batches)
    out = result.as_dict()
    if dry_run:
        accounts.say(out["dry_run"].pop("text"))
    else:
        where = "claimed, processing launched" if result.claimed else "NEW, the sensor will pick it up"
        accounts.say(f"bulk change {result.bulk_change_id}: {sub.change_type.value} on {sp.integration.value} "
                     f"({sp.name}), {result.devices} devices, {where}")
        if problem and needs_carrier(sub, sp):
            accounts.say(f"warning: {problem}; processing will mark every device ERROR with this reason")
    for p in result.problems:
        accounts.say(f"device {p['device']}: {p['reason']}")
    accounts.say(f"{len(result.problems)} of {result.devices} devices have a problem; the rest proceeds")
    return out
