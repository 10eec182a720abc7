"""CarrierRatePlanChange on the Jasper family (legacy_behaviour.md 3.6).

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
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import ChangeHandler, device_not_found, failed_result
from bulkchange.changes.carrier_rate_plan.common import CarrierPlanCheck, is_future, requested_plan, result_base
from bulkchange.db.inventory import DeviceRow, load_rate_plans
from bulkchange.models import (
    BulkChange,
    CarrierRatePlanChangeRequest,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    utcnow,
)
from bulkchange.rules import RuleError

MAX_SCHEDULE_DAYS = 180
SCHEDULED_PREFIX = "scheduled:"


def _jasper_date(when: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSS+00:00``: the UTC instant (the model keeps dates in UTC) with its
    offset written out, the form of Control Center's published examples."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}+00:00"


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
        plan = requested_plan(request)
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
        plan = requested_plan(request)
        comm = self._comm_plan(request, plan)
        when = request.EffectiveDate if is_future(request.EffectiveDate, utcnow()) else None
        updates = {"CommunicationPlan": comm} if comm else {}

        def done(details: str) -> DeviceResult:
            return DeviceResult(status=DeviceChangeStatus.PROCESSED, details=details, carrier_rate_plan=plan,
                                device_updates=dict(updates), **result_base(dc, device))

        def scheduled(details: str) -> DeviceResult:
            return DeviceResult(status=DeviceChangeStatus.PENDING_CARRIER, details=details,
                                carrier_request_id=f"{SCHEDULED_PREFIX}{_jasper_date(when)}", **result_base(dc, device))

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
    plan = requested_plan(request)
    if is_future(request.EffectiveDate, utcnow()):
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
