"""CarrierRatePlanChange on ThingSpace (legacy_behaviour.md 3.6).

* **ThingSpace** (``PUT /devices/actions/plan``, asynchronous): devices moving to the same plan go
  in one request; each waits as ``PENDING_CARRIER`` with the request id and settles when the
  request's outcome for it is known. A line that is suspended is refused before any call (the
  carrier refuses plan changes while suspended); ``EffectiveDate`` is refused for ThingSpace (the
  API's ``takeEffect`` semantics are not documented).
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import ChangeHandler, device_not_found, failed_result
from bulkchange.changes.carrier_rate_plan.common import CarrierPlanCheck, is_future, requested_plan, result_base
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import CarrierRatePlanChangeRequest, DeviceChange, DeviceChangeStatus, DeviceResult, utcnow
from bulkchange.rules import RuleError


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
        plan = requested_plan(request)
        if request.EffectiveDate is not None and is_future(request.EffectiveDate, utcnow()):
            raise RuleError("EffectiveDate is not supported for ThingSpace plan changes (they apply at once); "
                            f"got {request.EffectiveDate.isoformat()}")
        if (device.status or "").strip().lower() == "suspend":
            raise RuleError(f"device {device.iccid} is suspended: ThingSpace refuses plan changes while a line "
                            "is suspended (restore it first)")
        self._check_carrier_plan(plan)

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        plan = requested_plan(request)
        if verify_first:
            from bulkchange.carriers.thingspace import device_plan

            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get ThingSpace device before retry")
            if device_plan(current) == plan:
                return DeviceResult(status=DeviceChangeStatus.PROCESSED, carrier_rate_plan=plan,
                                    details=f"service plan {plan} confirmed at the carrier after an interrupted "
                                            "attempt", **result_base(dc, device))
        return self.apply_group([(dc, request, device)], log=log)[0]

    def apply_group(self, entries, *, log: CallLog) -> list[DeviceResult]:
        groups: dict[str, list] = {}
        for dc, request, device in entries:
            groups.setdefault(requested_plan(request), []).append((dc, device))
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
                    **result_base(dc, device))
        return [results[dc.id] for dc, _, _ in entries]


def check_thingspace(client: Any, w: Any) -> DeviceResult | str:
    """The plan-change request's outcome for this device."""
    plan = requested_plan(w.request)
    request_id = w.dc.carrier_request_id
    status, fault = w.request_outcome(client)  # from the callback when ThingSpace sent one, else polled
    if fault or status == "failure":
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"ThingSpace plan change to {plan} (request {request_id}) failed: {fault or 'Failure'}")
    if status == "success":
        return w.result(DeviceChangeStatus.PROCESSED, carrier_rate_plan=plan,
                        details=f"service plan changed to {plan} (request {request_id})")
    return "plan change request still pending"
