"""CarrierRatePlanChange: move devices to another carrier rate plan (legacy_behaviour.md 3.6).

``Device.CarrierRatePlan`` (and the Jasper ``CommunicationPlan``) change only once the carrier
confirms the new plan:

* **Jasper** (Edit Device Details ``PUT /devices/{iccid}`` with ``ratePlan`` and
  ``communicationPlan``): an immediate change is confirmed by the carrier's answer naming the ICCID
  (``PROCESSED`` in the batch). A change with a future ``EffectiveDate`` (at most 180 days ahead)
  is accepted by Jasper as a scheduled edit: the device change waits as ``PENDING_CARRIER`` (request
  id ``scheduled:<date>``) and reconciliation reads the device once the date has passed; when the
  carrier shows the new plan it is ``PROCESSED`` and the Device updated, so the AMOP inventory
  never shows a plan the device is not billed on yet, and the bulk change stays
  ``WAITING_FOR_CARRIER`` until then. Polls before the date are not counted against
  ``max_checks`` (``reconcile.NotDue``); after it, ``max_checks`` polls without the new plan fail
  the device change with the reason.
* **ThingSpace** (``PUT /devices/actions/plan``, asynchronous): devices moving to the same plan go
  in one request; each waits as ``PENDING_CARRIER`` with the request id and settles when the
  request's outcome for it is known. A line that is suspended is refused before any call (the
  carrier refuses plan changes while suspended); ``EffectiveDate`` is refused for ThingSpace (the
  API's ``takeEffect`` semantics are not documented).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import ChangeHandler, failed_result
from bulkchange.changes.status_update import device_not_found
from bulkchange.db.repository import DeviceRow, load_rate_plans
from bulkchange.models import (
    BulkChange,
    CarrierRatePlanChangeRequest,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    utcnow,
)
from bulkchange.rules import RuleError

log = logging.getLogger(__name__)

MAX_SCHEDULE_DAYS = 180
SCHEDULED_PREFIX = "scheduled:"


def _plan(request: CarrierRatePlanChangeRequest) -> str:
    plan = (request.CarrierRatePlan or "").strip()
    if not plan:
        raise RuleError("CarrierRatePlan is required (the carrier's rate plan code)")
    return plan


def _is_future(when: datetime | None, now: datetime | None = None) -> bool:
    return when is not None and when > (now or utcnow())


def _jasper_date(when: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSS+00:00``: the UTC instant (the model keeps dates in UTC) with its
    offset written out, the form of Control Center's published examples."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+00:00"


def _base(dc: DeviceChange, device: DeviceRow) -> dict[str, Any]:
    return dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid,
                previous_device_status=device.status)


class CarrierPlanCheck:
    """A plan name checked against the carrier account's published plan listing before any change
    call: the listing is read once per handler (``client.<plan_lister>()``, the names); without a
    client (``prepare``) or when the listing fails, the carrier's own check still refuses an unknown
    plan (the failure is logged). Used by the Jasper, ThingSpace, Teal and POND rate plan changes."""

    plan_lister = ""  # the client method listing the account's plan names
    plan_field = "CarrierRatePlan"

    def __init__(self, bulk: BulkChange, client: Any, context: dict[str, Any]):
        super().__init__(bulk, client, context)
        self._plans_lock = threading.Lock()

    def _carrier_plans(self) -> list[str] | None:
        client = self.client
        if client is None or not hasattr(client, self.plan_lister):
            return None
        with self._plans_lock:
            if "carrier_plans" not in self.context:
                try:
                    self.context["carrier_plans"] = getattr(client, self.plan_lister)()
                except CarrierError as exc:
                    log.warning("bulk change %s: %s plan listing failed, plans are checked by the carrier only: "
                                "%s", self.bulk.id, getattr(client, "carrier_name", "carrier"), exc)
                    self.context["carrier_plans"] = None
            return self.context["carrier_plans"]

    def _check_carrier_plan(self, plan: str) -> None:
        names = self._carrier_plans()
        if names is not None and plan not in names:
            raise RuleError(f"{self.plan_field} {plan!r} is not a rate plan of the carrier account "
                            f"(valid: {', '.join(sorted(set(names))) or 'none listed'}); not sent")


class JasperCarrierRatePlan(CarrierPlanCheck, ChangeHandler):
    """Jasper family: Edit Device Details with ``ratePlan`` (+ ``communicationPlan``), optional
    ``effectiveDate``. The communication plan is the request's ``CommPlan``, else the one
    ``JasperCarrierRatePlan`` lists for the plan, else left as it is at the carrier."""

    request_model = CarrierRatePlanChangeRequest
    plan_lister = "rate_plan_names"  # paged GET /rateplans

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        return {"rate_plans": {p.code: p for p in load_rate_plans(conn, bulk.service_provider_id)}}

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        plan = _plan(request)
        plans = self.context.get("rate_plans") or {}
        if plans and plan not in plans:
            raise RuleError(f"CarrierRatePlan {plan!r} is not an active rate plan of service provider "
                            f"{self.bulk.service_provider_id} (known: {', '.join(sorted(plans))})")
        self._check_carrier_plan(plan)
        when = request.EffectiveDate
        if when is not None and when > utcnow() + timedelta(days=MAX_SCHEDULE_DAYS):
            raise RuleError(f"EffectiveDate {when.isoformat()} is more than {MAX_SCHEDULE_DAYS} days ahead "
                            "(Jasper schedules at most 180 days ahead)")

    def _comm_plan(self, request: CarrierRatePlanChangeRequest, plan: str) -> str | None:
        if request.CommPlan:
            return request.CommPlan
        known = (self.context.get("rate_plans") or {}).get(plan)
        return known.communication_plan if known is not None else None

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        plan = _plan(request)
        comm = self._comm_plan(request, plan)
        when = request.EffectiveDate if _is_future(request.EffectiveDate) else None
        updates = {"CommunicationPlan": comm} if comm else {}

        def done(details: str) -> DeviceResult:
            return DeviceResult(status=DeviceChangeStatus.PROCESSED, details=details, carrier_rate_plan=plan,
                                device_updates=dict(updates), **_base(dc, device))

        def scheduled(details: str) -> DeviceResult:
            return DeviceResult(status=DeviceChangeStatus.PENDING_CARRIER, details=details,
                                carrier_request_id=f"{SCHEDULED_PREFIX}{_jasper_date(when)}", **_base(dc, device))

        if verify_first:
            # an earlier attempt may have sent the edit before it died: ask before sending it again
            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Jasper device before retry")
            if current.get("ratePlan") == plan and (not comm or current.get("communicationPlan") == comm):
                return done(f"rate plan {plan} confirmed at the carrier after an interrupted attempt")
        try:
            self.client.update_rate_plan(device.iccid, plan, comm,
                                         effective_date=_jasper_date(when) if when else None, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Update Jasper Rate Plan to {plan}")
        if when is not None:
            return scheduled(f"rate plan {plan} scheduled at the carrier for {when.isoformat()} UTC; "
                             "the device is updated once the carrier shows it")
        suffix = f" (communication plan {comm})" if comm else ""
        return done(f"rate plan changed to {plan}{suffix}")


def check_jasper(client: Any, w: Any) -> DeviceResult | str:
    """A future-dated Jasper plan change: not due before its date; then the device must show it."""
    from bulkchange.reconcile import NotDue

    request: CarrierRatePlanChangeRequest = w.request
    plan = _plan(request)
    if _is_future(request.EffectiveDate):
        return NotDue(f"rate plan {plan} is scheduled for {request.EffectiveDate.isoformat()} UTC")
    current = client.get_device(w.dc.iccid, log=w.log)
    if current.get("ratePlan") == plan:
        comm = current.get("communicationPlan")
        return w.result(DeviceChangeStatus.PROCESSED, carrier_rate_plan=plan,
                        device_updates={"CommunicationPlan": comm} if comm else {},
                        details=f"scheduled rate plan {plan} in effect at the carrier (checked after "
                                f"{request.EffectiveDate.isoformat()} UTC)")
    return (f"scheduled rate plan {plan} not in effect at the carrier (it shows "
            f"{current.get('ratePlan')!r})")


class ThingSpaceCarrierRatePlan(CarrierPlanCheck, ChangeHandler):
    """ThingSpace: ``PUT /devices/actions/plan`` answers a requestId; the device change waits as
    PENDING_CARRIER and ``check_thingspace`` settles it from the request's per-device outcome. A
    plan the account does not have (``GET /m2m/v1/plans/{aname}``) is refused before any call."""

    request_model = CarrierRatePlanChangeRequest
    group_size = 200
    plan_lister = "service_plan_names"  # GET /m2m/v1/plans/{accountName}

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        plan = _plan(request)
        if request.EffectiveDate is not None and _is_future(request.EffectiveDate):
            raise RuleError("EffectiveDate is not supported for ThingSpace plan changes (they apply at once); "
                            f"got {request.EffectiveDate.isoformat()}")
        if (device.status or "").strip().lower() == "suspend":
            raise RuleError(f"device {device.iccid} is suspended: ThingSpace refuses plan changes while a line "
                            "is suspended (restore it first)")
        self._check_carrier_plan(plan)

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        plan = _plan(request)
        if verify_first:
            from bulkchange.carriers.thingspace import device_plan

            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get ThingSpace device before retry")
            if device_plan(current) == plan:
                return DeviceResult(status=DeviceChangeStatus.PROCESSED, carrier_rate_plan=plan,
                                    details=f"service plan {plan} confirmed at the carrier after an interrupted "
                                            "attempt", **_base(dc, device))
        return self.apply_group([(dc, request, device)], log=log)[0]

    def apply_group(self, entries, *, log: CallLog) -> list[DeviceResult]:
        groups: dict[str, list] = {}
        for dc, request, device in entries:
            groups.setdefault(_plan(request), []).append((dc, device))
        first_id = entries[0][0].id
        results: dict[int, DeviceResult] = {}
        for plan, members in groups.items():
            iccids = [device.iccid for _, device in members]
            try:
                request_id = self.client.change_plan(iccids, plan, log=log)
            except CarrierError as exc:
                for dc, device in members:
                    results[dc.id] = failed_result(dc, device, exc,
                                                   f"ThingSpace plan change to {plan} of {len(iccids)} devices")
                continue
            for dc, device in members:
                results[dc.id] = DeviceResult(
                    status=DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=request_id,
                    details=(f"ThingSpace accepted the plan change to {plan} of {len(iccids)} devices (request "
                             f"{request_id}, logged on device change {first_id}); waiting for the carrier"),
                    **_base(dc, device))
        return [results[dc.id] for dc, _, _ in entries]


def check_thingspace(client: Any, w: Any) -> DeviceResult | str:
    """The plan-change request's outcome for this device."""
    from bulkchange.reconcile import _fault_for

    plan = _plan(w.request)
    request_id = w.dc.carrier_request_id
    answer = w.shared.get(request_id, lambda: client.request_status(request_id, log=w.log))
    fault = _fault_for(answer, w.dc.iccid)
    status = str(answer.get("status", "")).lower()
    if fault or status == "failure":
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"ThingSpace plan change to {plan} (request {request_id}) failed: {fault or 'Failure'}")
    if status == "success":
        return w.result(DeviceChangeStatus.PROCESSED, carrier_rate_plan=plan,
                        details=f"service plan changed to {plan} (request {request_id})")
    return "plan change request still pending"
