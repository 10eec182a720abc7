"""Settling asynchronous carrier work and reconciling device statuses with the carriers.

* ``settle_bulk`` checks the device changes of one bulk change that wait on the carrier:
  PENDING_CARRIER (suspend / restore / deactivate accepted with a requestId) settle when their
  request completes; PENDING_ACTIVATION settle when the line is active with an MSISDN (which,
  with its IP, goes to the device change and to Device). After ``max_checks`` polls without an
  answer, or on a carrier failure, the device change is API_FAILED with the reason. The bulk
  change is rolled up when its last device settles. How one waiting device change is checked is
  the carrier's part (``WAITING_CHECKERS``: ThingSpace requests and lines, Telegence activation
  requests, Teal operation results); counting, failing after ``max_checks`` and recording are shared.
* ``reconcile_provider_statuses`` compares every device the carrier reports for one service
  provider (POND: every SIM on record, read one by one) with the inventory, status and carrier
  rate plan; each status difference becomes a DeviceStatusHistory row with source
  "Reconciliation", each rate plan difference a DeviceRatePlanHistory row, and both update the
  inventory, so a drift is recorded once. Devices with a change in flight are left alone, so
  reconciliation never fights a running bulk change; a second run right after changes nothing.
"""
from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy.engine import Engine

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.revio_service import RevioServiceStep
from bulkchange.db import bulk_changes, device_changes, inventory, progress
from bulkchange.db.retry import run_in_transaction
from bulkchange.engine import run_batch
from bulkchange.models import (
    ChangeType,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    Integration,
    RequestParseError,
    parse_change_request,
)
from bulkchange.rules import RuleError, carrier_status

log = logging.getLogger(__name__)

DEFAULT_MAX_CHECKS = 6
RECONCILER = "device_status_reconcile"


class NotDue(str):
    """A checker's answer for carrier work not due yet (a change scheduled for a future date): the
    device change keeps waiting and the poll is not counted against ``max_checks``."""


@dataclass
class SettleSummary:
    bulk_change_id: int
    settled: dict[str, int] = field(default_factory=dict)
    still_waiting: int = 0
    not_due: int = 0  # of still_waiting: scheduled for later at the carrier (not counted as checks)
    bulk_status: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"bulk_change_id": self.bulk_change_id, "settled": self.settled, "still_waiting": self.still_waiting,
                "not_due": self.not_due,
                "bulk_status": self.bulk_status}


class SharedCalls:
    """One carrier call per key (e.g. per carrier request), shared by the devices waiting on it:
    the first thread asking fetches (and logs the call on its device change), the others wait for
    its answer or its error."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[threading.Event, list]] = {}
        self._lock = threading.Lock()

    def get(self, key: str, fetch: Callable[[], Any]) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            owner = entry is None
            if owner:
                entry = self._entries[key] = (threading.Event(), [None, None])
        done, slot = entry
        if owner:
            try:
                slot[0] = fetch()
            except BaseException as exc:
                slot[1] = exc
                raise
            finally:
                done.set()
        else:
            done.wait()
            if slot[1] is not None:
                raise slot[1]
        return slot[0]


@dataclass
class WaitingCheck:
    """One waiting device change, as a carrier's checker sees it.

    A checker ``check(client, w)`` returns the DeviceResult that settles the device change, or a
    short text saying what it still waits for (``"not active"``); it raises CarrierError when the
    carrier cannot be asked. ``settle_bulk`` counts the checks and fails a device change after
    ``max_checks`` with that text."""

    dc: DeviceChange
    device: Any
    request: Any
    target: str
    checks: int
    shared: SharedCalls
    log: CallLog
    base: dict
    reports: dict = field(default_factory=dict)  # what the carrier reported by callback (thingspace_callbacks)

    def result(self, status: DeviceChangeStatus, details: str, **kw: Any) -> DeviceResult:
        return DeviceResult(status=status, details=details, **self.base, **kw)

    def report(self) -> Any:
        """The carrier's callback about this device's request, or None (then the carrier is polled)."""
        return self.reports.get((self.dc.carrier_request_id, self.dc.iccid))

    def request_answer(self, client: Any) -> dict:
        """The request's outcome for this device: from its callback, else polled (one call per request)."""
        report, request_id = self.report(), self.dc.carrier_request_id
        if report is not None:
            return report.answer()
        return self.shared.get(request_id, lambda: client.request_status(request_id, log=self.log)) \
            if request_id else {}

    def request_outcome(self, client: Any) -> tuple[str, str | None]:
        """(the request's status, lower-cased; this device's fault in it or None), from
        ``request_answer``: one reading of a ThingSpace request result for every checker."""
        answer = self.request_answer(client)
        return str(answer.get("status", "")).lower(), _fault_for(answer, self.dc.iccid)


def _fault_for(answer: dict, iccid: str | None) -> str | None:
    for dev in answer.get("devices") or []:
        ids = {str(i.get("id")) for i in dev.get("deviceIds") or []}
        if iccid in ids and dev.get("faultResponse"):
            fault = dev["faultResponse"]
            return f"{fault.get('faultcode')}: {fault.get('faultstring')}"
    return None


# ThingSpace faults that say the line already is where the action would take it (when the line
# is indeed at the target, the device change is done: the carrier's words go in the details)
ALREADY_THERE_FAULTS = ("DeviceState.Invalid", "DeviceAlreadyActive")


def _ts_at_target(current: dict, w: WaitingCheck) -> tuple[bool, str | None]:
    """(is the line at the device change's target, its MSISDN)."""
    from bulkchange.carriers.thingspace import device_id, device_state

    msisdn = device_id(current, "msisdn") or device_id(current, "mdn")
    state = device_state(current)
    if w.dc.status == DeviceChangeStatus.PENDING_ACTIVATION:
        return state == "active" and bool(msisdn), msisdn
    return bool(w.target) and state == w.target, msisdn


def _ts_done(w: WaitingCheck, current: dict, details: str) -> DeviceResult:
    _, msisdn = _ts_at_target(current, w)
    target = "active" if w.dc.status == DeviceChangeStatus.PENDING_ACTIVATION else w.target
    return w.result(DeviceChangeStatus.PROCESSED, details, new_device_status=target,
                    msisdn=msisdn,
                    ip_address=current.get("ipAddress"))


def check_thingspace(client: Any, w: WaitingCheck) -> DeviceResult | str:
    """PENDING_ACTIVATION: the line is active with an MSISDN; PENDING_CARRIER: the request succeeded.
    A request refused because the line already is at the target settles PROCESSED; an action whose
    answer was lost (``unknown:`` request) is looked for before it is ever sent again."""
    from bulkchange.carriers.thingspace import device_id, device_state
    from bulkchange.changes.status_update.thingspace import UNKNOWN_PREFIX

    dc = w.dc
    request_id = dc.carrier_request_id
    if request_id and request_id.startswith(UNKNOWN_PREFIX):
        return _check_thingspace_unknown(client, w)
    report = w.report()
    if dc.status == DeviceChangeStatus.PENDING_ACTIVATION and report is not None and report.succeeded \
            and report.msisdn:
        return w.result(DeviceChangeStatus.PROCESSED, new_device_status="active", msisdn=report.msisdn,
                        ip_address=report.ip_address,
                        details=f"active with MSISDN {report.msisdn} ({report.source})")
    if dc.status == DeviceChangeStatus.PENDING_ACTIVATION and (report is None or report.succeeded):
        current = client.get_device(dc.iccid, log=w.log)
        msisdn = device_id(current, "msisdn") or device_id(current, "mdn")
        if device_state(current) == "active" and msisdn:
            return w.result(DeviceChangeStatus.PROCESSED, new_device_status="active",
                            msisdn=msisdn,
                            ip_address=current.get("ipAddress"),
                            details=f"active at the carrier with MSISDN {msisdn} after {w.checks} check(s)")
    status, fault = w.request_outcome(client)
    if fault and any(f in fault for f in ALREADY_THERE_FAULTS):
        current = client.get_device(dc.iccid, log=w.log)
        if _ts_at_target(current, w)[0]:
            return _ts_done(w, current, f"carrier request {request_id} refused, the line already being at the "
                                        f"target ({fault}); {device_state(current)} at the carrier")
    if fault or status == "failure":
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"carrier request {request_id} failed: {fault or 'Failure'}")
    if dc.status == DeviceChangeStatus.PENDING_CARRIER and status == "success":
        how = f" ({report.source})" if report is not None else ""
        return w.result(DeviceChangeStatus.PROCESSED, f"carrier request {request_id} completed: {w.target}{how}",
                        new_device_status=w.target)
    return "not active" if dc.status == DeviceChangeStatus.PENDING_ACTIVATION else "request still pending"


def _check_thingspace_unknown(client: Any, w: WaitingCheck) -> DeviceResult | str:
    """An action whose answer was lost: adopt it when the line is at the target or its provisioning
    history shows it; send it again only when, after ``client.unknown_outcome_wait_s``, the carrier
    shows neither."""
    import time

    from bulkchange.carriers.base import CarrierError as _CarrierError
    from bulkchange.carriers.thingspace import UnknownOutcome, device_state
    from bulkchange.changes.base import request_field
    from bulkchange.changes.status_update.thingspace import UNKNOWN_PREFIX

    dc = w.dc
    _, action, since_text = dc.carrier_request_id.split(":", 2)
    since = float(since_text)
    current = client.get_device(dc.iccid, log=w.log)
    if _ts_at_target(current, w)[0]:
        return _ts_done(w, current, f"ThingSpace {action}: its answer was lost, but the line is "
                                    f"{device_state(current)} at the carrier; the accepted request is adopted, "
                                    f"nothing was sent again")
    events = client.provisioning_history(dc.iccid, since - 120, time.time() + 60, log=w.log)
    mine = [e for e in events if str(e.get("eventType", "")).lower().startswith(action.lower())]
    if mine:
        last = mine[-1]
        if str(last.get("status", "")).lower() not in ("success", "succeeded", "completed"):
            words = "; ".join(str(a.get("value")) for a in last.get("extendedAttributes") or []
                              if isinstance(a, dict) and a.get("value")) or str(last.get("status"))
            return w.result(DeviceChangeStatus.API_FAILED,
                            f"ThingSpace {action} (answer lost) failed at the carrier: {words}")
        return f"the carrier shows the {action} done but the line is {device_state(current)}"
    waited = time.time() - since
    if waited < float(getattr(client, "unknown_outcome_wait_s", 900.0)):
        return NotDue(f"{action} answer lost {int(waited)}s ago; waiting for the carrier to show it")
    try:
        request_id = client.action(action, [dc.iccid], log=w.log,
                                   service_plan=request_field(w.request, "servicePlan", "RatePlanCode",
                                                              "ServicePlanCode"),
                                   mdn_zip_code=request_field(w.request, "mdnZipCode", "ZipCode"),
                                   reason_code=request_field(w.request, "reasonCode"))
    except UnknownOutcome as exc:
        return w.result(dc.status, f"ThingSpace {action} sent again: outcome unknown ({exc}); checked again "
                                   f"before anything else is sent",
                        carrier_request_id=f"{UNKNOWN_PREFIX}{action}:{int(time.time())}")
    except _CarrierError as exc:
        return w.result(DeviceChangeStatus.API_FAILED, f"ThingSpace {action} sent again (the first answer "
                                                      f"was lost) and refused: {exc}")
    return w.result(dc.status, carrier_request_id=request_id,
                    details=f"ThingSpace {action} sent again as request {request_id}: after {int(waited)}s the "
                            f"carrier showed no such request and the line was {device_state(current)}")


# carrier family, or (change type, carrier family) for a change type with its own asynchronous
# work -> "module:function" checking one waiting device change (see WaitingCheck)
WAITING_CHECKERS: dict[Any, str] = {
    Integration.THINGSPACE: "bulkchange.reconcile:check_thingspace",
    Integration.TELEGENCE: "bulkchange.changes.status_update.telegence:check_waiting",
    Integration.TEAL: "bulkchange.changes.status_update.teal:check_waiting",
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.JASPER):
        "bulkchange.changes.carrier_rate_plan.jasper:check_jasper",
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.THINGSPACE):
        "bulkchange.changes.carrier_rate_plan.thingspace:check_thingspace",
    (ChangeType.CHANGE_ICCID_AND_IMEI, Integration.THINGSPACE):
        "bulkchange.changes.change_identifier.thingspace:check_thingspace",
    (ChangeType.EDIT_USERNAME_COST_CENTER, Integration.THINGSPACE):
        "bulkchange.changes.edit_username.thingspace:check_waiting",
    (ChangeType.ACTIVATE_NEW_SERVICE, Integration.TELEGENCE):
        "bulkchange.changes.activate_new_service.telegence:check_waiting",
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.TEAL):
        "bulkchange.changes.carrier_rate_plan.teal:check_teal",
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.TELEGENCE):
        "bulkchange.changes.carrier_rate_plan.telegence:check_telegence",
}


# (change type, carrier family) -> "module:function(conn, bulk, results)" storing what its settled
# device changes carry beyond the shared tables (run in the transaction that records them)
SETTLED_RECORDERS: dict[Any, str] = {
    (ChangeType.ACTIVATE_NEW_SERVICE, Integration.TELEGENCE):
        "bulkchange.changes.activate_new_service.telegence:record_settled",
    (ChangeType.CHANGE_ICCID_AND_IMEI, Integration.THINGSPACE):
        "bulkchange.changes.change_identifier.common:record_settled",
}


def settled_recorder(integration: Integration, change_type: Any) -> Callable | None:
    target = SETTLED_RECORDERS.get((change_type, integration.family))
    if target is None:
        return None
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def waiting_checker(integration: Integration,
                    change_type: Any = None) -> Callable[[Any, WaitingCheck], DeviceResult | str]:
    target = WAITING_CHECKERS.get((change_type, integration.family)) or WAITING_CHECKERS.get(integration.family)
    if target is None:
        raise NotImplementedError(f"no asynchronous carrier work to settle for {integration.value}")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def settle_bulk(engine: Engine, bulk_id: int, client: Any, *, max_checks: int = DEFAULT_MAX_CHECKS,
                include_activations: bool = True, max_parallel: int = 10, count_checks: bool = True,
                processed_by: str = RECONCILER, revio_client: Any = None,
                revio_problem: str | None = None, only_reported: bool = False) -> SettleSummary:
    """Check each waiting device change once, with its carrier's checker (``WAITING_CHECKERS``).
    ``count_checks=False`` (the processing run's own short wait) neither counts the poll nor fails
    a device for being slow. A device change that settles ``PROCESSED`` and asks for a Rev.io
    service gets it here (``revio_client``; see changes/revio_service.py), as in process_batch.
    What the carrier reported by callback (``thingspace_callbacks.reports_for``) is handed to the
    checkers, which settle from it instead of polling; ``only_reported`` checks only those device
    changes (a callback's own settlement), activations included."""
    from bulkchange.thingspace_callbacks import reports_for

    statuses = [DeviceChangeStatus.PENDING_CARRIER.value]
    if include_activations or only_reported:
        statuses.append(DeviceChangeStatus.PENDING_ACTIVATION.value)
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        waiting = device_changes.load_device_changes(conn, bulk, statuses=statuses)
        reports = reports_for(conn, bulk, waiting)
        if only_reported:
            waiting = [dc for dc in waiting if (dc.carrier_request_id, dc.iccid) in reports]
        devices = inventory.load_devices(conn, bulk, waiting)
    summary = SettleSummary(bulk_id)
    if not waiting:
        return summary
    checker = waiting_checker(bulk.integration, bulk.change_type)
    rev_step = RevioServiceStep(bulk, revio_client, revio_problem)
    shared = SharedCalls()
    logs = {dc.id: CallLog() for dc in waiting}
    not_due: set[int] = set()

    def check(dc: DeviceChange) -> DeviceResult | None:
        device = devices.find(dc)
        base = dict(device_change_id=dc.id, iccid=dc.iccid, device_id=device.id if device else None,
                    previous_device_status=device.status if device else None)
        try:
            request = parse_change_request(bulk.change_type, dc.change_request)
            update_status = getattr(request, "UpdateStatus", None)  # only status updates have one
            target = carrier_status(bulk.integration, update_status) if update_status else ""
        except (RequestParseError, RuleError) as exc:
            return DeviceResult(status=DeviceChangeStatus.ERROR, details=str(exc), **base)
        checks = dc.carrier_check_count + 1 if count_checks else 0
        try:
            outcome = checker(client, WaitingCheck(dc, device, request, target, checks, shared, logs[dc.id], base,
                                                   reports))
        except CarrierError as exc:
            if checks >= max_checks:
                return DeviceResult(status=DeviceChangeStatus.API_FAILED, **base,
                                    details=f"carrier could not be checked after {checks} attempts: {exc}")
            return None
        if isinstance(outcome, DeviceResult):
            return rev_step.after(dc, request, device, outcome, logs[dc.id])
        if isinstance(outcome, NotDue):
            not_due.add(dc.id)
            return None
        if checks >= max_checks:
            return DeviceResult(status=DeviceChangeStatus.API_FAILED, **base,
                                details=f"{outcome} after {checks} checks (request {dc.carrier_request_id})")
        return None

    outcomes = run_batch(waiting, check, max_parallel=max_parallel)
    results, still = [], []
    for outcome in outcomes:
        if outcome.error is not None:
            log.warning("checking device change %s failed: %s", outcome.item.id, outcome.error)
            still.append(outcome.item.id)
        elif outcome.value is None:
            still.append(outcome.item.id)
        else:
            results.append(outcome.value)
            if not outcome.value.status.is_settled:  # moved on to a next carrier step (e.g. a static IP)
                still.append(outcome.item.id)
    def close(conn):  # run again if it loses a deadlock (db.retry)
        # compare-and-set on the statuses loaded: a device change another checker (the processing
        # run's wait_for_carrier and device_status_reconcile may overlap) settled meanwhile is not
        # recorded twice
        recorded = device_changes.record_results(
            conn, bulk, results, {r.device_change_id: logs[r.device_change_id].records for r in results},
            processed_by=processed_by, source="BulkChange", only_from=statuses)
        rev_step.record(conn, recorded)
        recorder = settled_recorder(bulk.integration, bulk.change_type)
        if recorder is not None and recorded:
            recorder(conn, bulk, recorded)
        if count_checks:
            device_changes.count_carrier_checks(conn, bulk, [i for i in still if i not in not_due])
        return recorded, progress.rollup(conn, bulk)[0]
    results, status = run_in_transaction(engine, close, what=f"bulk change {bulk.id}: recording carrier checks")
    for r in results:
        if r.status.is_settled:
            summary.settled[r.status.value] = summary.settled.get(r.status.value, 0) + 1
    summary.still_waiting = len(still)
    summary.not_due = len(not_due)
    summary.bulk_status = status.value
    return summary


# --- status history reconciliation ---------------------------------------------------------------
PAGE_ATTEMPTS = 3  # tries of one device-list page (each with the client's own retries) before it is reported


@dataclass
class CarrierListing:
    """What the carrier says of the account's devices: ICCID -> status and ICCID -> rate plan, plus
    subscriber number digits -> status / rate plan for Mobility lines on record without their SIM
    (Telegence). ``plan_aliases``: other names the carrier gives a plan (Teal: its name beside its
    uuid), any of which on our side counts as the same plan. ``unread``: what could not be read (a
    ThingSpace page after its retries, a POND SIM); then nothing is called missing at the carrier."""

    states: dict[str, str] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, str] = field(default_factory=dict)
    number_plans: dict[str, str] = field(default_factory=dict)
    plan_aliases: dict[str, set[str]] = field(default_factory=dict)
    unread: list[dict] = field(default_factory=list)


def _thingspace_listing(client: Any, out: CarrierListing) -> None:
    """Every device of the account, each page retried on its own; a page that still fails is put in
    ``out.unread`` (with the ICCID it starts after) and the listing ends there: the devices read so
    far are still reconciled."""
    from bulkchange.carriers.thingspace import device_id, device_plan, device_state

    after, pages = None, 0
    while True:
        for attempt in range(1, PAGE_ATTEMPTS + 1):
            try:
                devices, more = client.list_page(after)
                break
            except CarrierError as exc:
                if attempt == PAGE_ATTEMPTS:
                    out.unread.append({"page": pages + 1, "after_iccid": after, "error": str(exc),
                                       "attempts": PAGE_ATTEMPTS})
                    return
        pages += 1
        for d in devices:
            iccid = device_id(d, "iccid")
            if iccid:
                out.states[iccid] = device_state(d)
                plan = device_plan(d)
                if plan:
                    out.plans[iccid] = plan
        if not more or not devices:
            return
        after = device_id(devices[-1], "iccid")


def _pond_listing(client: Any, iccids: list[str], out: CarrierListing) -> None:
    """POND lists no devices: each SIM on record is read (``GET sims/{iccid}``, through the
    account's rate limit like every call). A SIM POND does not know is missing; one that cannot be
    read goes to ``out.unread``."""
    from bulkchange.carriers.base import PermanentError
    from bulkchange.carriers.pond import sim_state

    for iccid in iccids:
        try:
            sim = client.get_sim(iccid)
        except PermanentError as exc:
            if exc.status_code == 404:
                continue
            out.unread.append({"iccid": iccid, "error": str(exc)})
            continue
        except CarrierError as exc:
            out.unread.append({"iccid": iccid, "error": str(exc)})
            continue
        status, plan = sim_state(sim)
        if status:
            out.states[iccid] = status
        if plan:
            out.plans[iccid] = plan


def carrier_listing(client: Any, integration: Integration, iccids: list[str] | None = None) -> CarrierListing:
    """The carrier's status and rate plan of every device of the account (POND: of ``iccids``, the
    SIMs on record). The rate plan is what ``Device.CarrierRatePlan`` holds after a change: Jasper
    ``ratePlan``, ThingSpace ``servicePlan``, Telegence ``singleUserCode``, Teal ``planUuid`` (its
    ``planName`` also matches), POND the type of the ACTIVE package."""
    out = CarrierListing()
    family = integration.family
    if family == Integration.THINGSPACE:
        _thingspace_listing(client, out)
    elif family == Integration.JASPER:
        for d in client.iter_devices():
            out.states[d["iccid"]] = d["status"]
            if d.get("ratePlan"):
                out.plans[d["iccid"]] = str(d["ratePlan"])
    elif family == Integration.TELEGENCE:
        from bulkchange.carriers.telegence import characteristic

        for line in client.iter_services():
            sim, status = characteristic(line, "sim"), characteristic(line, "subscriberStatus")
            plan = characteristic(line, "singleUserCode")
            number = line.get("subscriberNumber") or characteristic(line, "subscriberNumber")
            if sim and status:
                out.states[str(sim)] = str(status)
                if plan:
                    out.plans[str(sim)] = str(plan)
            if number and status:  # Mobility lines known by number only
                out.numbers[inventory.msisdn_key(str(number))] = str(status)
                if plan:
                    out.number_plans[inventory.msisdn_key(str(number))] = str(plan)
    elif family == Integration.TEAL:
        for e in client.iter_esims():
            if e.get("iccid") and e.get("deviceStatus"):
                iccid = str(e["iccid"])
                out.states[iccid] = str(e["deviceStatus"])
                if e.get("planUuid"):
                    out.plans[iccid] = str(e["planUuid"])
                    if e.get("planName"):
                        out.plan_aliases[iccid] = {str(e["planName"])}
    elif family == Integration.POND:
        _pond_listing(client, list(iccids or []), out)
    else:
        raise NotImplementedError(f"status reconciliation is not available for {integration.value}")
    return out


def carrier_states(client: Any, integration: Integration, unread: list[dict] | None = None, *,
                   numbers: dict[str, str] | None = None, iccids: list[str] | None = None) -> dict[str, str]:
    """ICCID -> the carrier's status for every device of the account (``carrier_listing``)."""
    listing = carrier_listing(client, integration, iccids)
    if unread is not None:
        unread.extend(listing.unread)
    if numbers is not None:
        numbers.update(listing.numbers)
    return listing.states


def _same_plan(ours: str | None, theirs: str, aliases: set[str]) -> bool:
    mine = (ours or "").strip().lower()
    return mine == theirs.strip().lower() or mine in {a.strip().lower() for a in aliases}


def reconcile_provider_statuses(engine: Engine, service_provider_id: int, integration: Integration, client: Any, *,
                                dry_run: bool = False) -> dict[str, Any]:
    """Status and rate plan drift of one service provider's devices. Each difference is written to
    the inventory with a history row (statuses: DeviceStatusHistory; rate plans:
    DeviceRatePlanHistory), so it is recorded once: the next run finds the inventory agreeing with
    the carrier. Devices with a change in flight are left alone."""
    iccids = None
    if integration.family == Integration.POND:  # no device list at the carrier: the SIMs on record are read
        with engine.connect() as conn:
            iccids = [iccid for _, iccid, *_ in inventory.provider_devices(conn, service_provider_id, integration)
                      if iccid]
    listing = carrier_listing(client, integration, iccids)
    # read after the listing: a device change that started meanwhile is in flight (left alone)
    with engine.connect() as conn:
        ours = inventory.provider_devices(conn, service_provider_id, integration, rate_plans=True)
        busy = device_changes.open_iccids(conn, service_provider_id)
    states, unread = listing.states, listing.unread
    settled_late = [] if dry_run else settle_lost_answers(engine, service_provider_id, integration, states)
    drift: dict[str, int] = {}
    plan_drift: dict[str, int] = {}
    changes, plan_changes = [], []
    missing = skipped = 0
    settled_iccids = {r["iccid"] for r in settled_late}
    for dev_id, iccid, msisdn, status, plan in ours:
        key = iccid
        theirs = states.get(iccid) if iccid else None
        their_plan = listing.plans.get(iccid) if iccid else None
        if theirs is None and msisdn:
            theirs = listing.numbers.get(inventory.msisdn_key(msisdn))
            their_plan = listing.number_plans.get(inventory.msisdn_key(msisdn))
            iccid = iccid or msisdn  # how the drift report and history name a line without a SIM on record
        if theirs is None:
            missing += 0 if unread else 1  # an incomplete listing cannot say a device is missing
            continue
        if iccid in settled_iccids:
            continue  # its device change now records the carrier's state
        status_differs = (status or "").lower() != str(theirs).lower()
        plan_differs = bool(their_plan) and not _same_plan(plan, their_plan,
                                                           listing.plan_aliases.get(key or "", set()))
        if not status_differs and not plan_differs:
            continue
        if key in busy or iccid in busy:
            skipped += 1
            continue
        if status_differs:
            pair = f"{theirs} -> {status}"
            drift[pair] = drift.get(pair, 0) + 1
            changes.append((dev_id, iccid, status, theirs))
        if plan_differs:
            pair = f"{their_plan} -> {plan}"
            plan_drift[pair] = plan_drift.get(pair, 0) + 1
            plan_changes.append((dev_id, iccid, plan, their_plan))
    if (changes or plan_changes) and not dry_run:
        with engine.begin() as conn:
            inventory.record_reconciled_statuses(conn, changes, changed_by=RECONCILER, integration=integration,
                                                 service_provider_id=service_provider_id)
            inventory.record_reconciled_rate_plans(conn, plan_changes, changed_by=RECONCILER, integration=integration)
    return {"service_provider_id": service_provider_id, "integration": integration.value,
            "carrier_devices": len(states), "our_devices": len(ours), "drift": drift,
            "updated": 0 if dry_run else len(changes), "dry_run": dry_run,
            "rate_plan_drift": plan_drift, "rate_plans_updated": 0 if dry_run else len(plan_changes),
            "missing_at_carrier": missing, "skipped_in_flight": skipped,
            "unread_pages": unread, "settled_after_lost_answer": settled_late}


def settle_lost_answers(engine: Engine, service_provider_id: int, integration: Integration,
                        states: dict[str, str]) -> list[dict]:
    """ThingSpace status updates recorded API_FAILED after an unknown outcome (an action whose answer
    was lost, or a transient failure after its retries) whose line the carrier shows at the target:
    the device change is settled PROCESSED and its bulk change rolled up again. Returns what was
    settled (for the drift report)."""
    if integration.family != Integration.THINGSPACE or not states:
        return []
    from sqlalchemy import or_, select

    from bulkchange.changes.status_update.thingspace import UNKNOWN_PREFIX
    from bulkchange.db import schema as t

    tbl = t.m2m_device_change
    with engine.connect() as conn:
        rows = conn.execute(select(tbl.c.Id, tbl.c.BulkChangeId, tbl.c.ICCID).where(
            tbl.c.ServiceProviderId == service_provider_id, tbl.c.Status == DeviceChangeStatus.API_FAILED.value,
            tbl.c.ICCID.in_(list(states)) if len(states) < 2000 else tbl.c.ICCID.is_not(None),
            or_(tbl.c.CarrierRequestId.like(f"{UNKNOWN_PREFIX}%"), tbl.c.StatusDetails.like("%failed after %attempt%"),
                tbl.c.StatusDetails.like("%could not be checked%")))).all()
    by_bulk: dict[int, list] = {}
    for row in rows:
        if row.ICCID in states:
            by_bulk.setdefault(row.BulkChangeId, []).append(row)
    settled: list[dict] = []
    for bulk_id, members in by_bulk.items():
        with engine.begin() as conn:
            bulk = bulk_changes.load_bulk_change(conn, bulk_id)
            if bulk.change_type != ChangeType.STATUS_UPDATE:
                continue
            dcs = {dc.id: dc for dc in device_changes.load_device_changes(conn, bulk, ids=[r.Id for r in members])}
            devices = inventory.load_devices(conn, bulk, list(dcs.values()))
            results = []
            for dc in dcs.values():
                if dc.status != DeviceChangeStatus.API_FAILED:
                    continue
                try:
                    request = parse_change_request(bulk.change_type, dc.change_request)
                    target = carrier_status(bulk.integration, request.UpdateStatus)
                except (RequestParseError, RuleError, AttributeError):
                    continue
                theirs = str(states.get(dc.iccid) or "").lower()
                if not target or theirs != target.lower():
                    continue
                device = devices.find(dc)
                results.append(DeviceResult(
                    device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, iccid=dc.iccid,
                    device_id=device.id if device else None,
                    previous_device_status=device.status if device else None,
                    new_device_status=target, details=f"settled by reconciliation: the carrier shows the line {theirs}, the target of this "
                            f"change, which had been recorded failed after an unknown outcome "
                            f"({(dc.status_details or '')[:200]})"))
            if not results:
                continue
            results = device_changes.record_results(conn, bulk, results, {}, processed_by=RECONCILER,
                                                    source="Reconciliation",
                                                    only_from=[DeviceChangeStatus.API_FAILED.value])
            status, _ = progress.rollup(conn, bulk)
            settled.extend({"iccid": r.iccid, "device_change_id": r.device_change_id, "bulk_change_id": bulk_id,
                            "status": r.new_device_status, "bulk_status": status.value} for r in results)
    return settled
