"""CarrierRatePlanChange on Teal eSIMs (legacy_behaviour.md 3.6).

* **Teal**: ``POST /esims/assign-plan`` with ``{eid, planUuid}`` (``PlanUuid``; the EID from the
  device change or ``Device.EID``); asynchronous: the device change waits as PENDING_CARRIER with
  our requestId and reconciliation (``check_teal``) settles it from the operation result (Teal's
  ``errorMessage`` on failure; legacy crashed on a null result and took errors for success).
  ``Device.CarrierRatePlan`` becomes ``CarrierRatePlan`` when given, else the plan uuid. A plan uuid the
  account does not have (``GET /plans``, read once per batch) is refused before any call, with the valid ones.
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import device_not_found, failed_result
from bulkchange.changes.carrier_rate_plan.common import CarrierPlanCheck, plan_done, result_base, stripped
from bulkchange.changes.teal_common import TealHandler, operation_entry
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import CarrierRatePlanChangeRequest, DeviceChange, DeviceChangeStatus, DeviceResult
from bulkchange.rules import RuleError


class TealCarrierRatePlan(CarrierPlanCheck, TealHandler):
    request_model = CarrierRatePlanChangeRequest
    plan_lister = "plan_uuids"  # GET /plans: a plan the account does not have is refused before any call
    plan_field = "PlanUuid"

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not stripped(request.PlanUuid):
            raise RuleError("PlanUuid is required for a Teal rate plan change (the plan's uuid)")
        self._require_eid(dc, device)
        self._check_carrier_plan(stripped(request.PlanUuid))

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        eid, plan = self._eid(dc, device) or "", stripped(request.PlanUuid)
        if verify_first:
            try:
                if stripped(self.client.get_esim(eid, log=log).get("planUuid")) == plan:
                    return plan_done(dc, device, stripped(request.CarrierRatePlan) or plan,
                                 f"eSIM {eid} has plan {plan} at the carrier after an interrupted attempt")
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Teal eSIM before retry")
        try:
            request_id = self.client.assign_plan([(eid, plan)], log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Teal Assign Plan {plan} to eSIM {eid}")
        return DeviceResult(status=DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=request_id, **result_base(dc, device),
                            details=f"Teal accepted plan {plan} for eSIM {eid} (request {request_id}); waiting for "
                                    "the carrier")


def check_teal(client: Any, w) -> DeviceResult | str:
    """Settle a waiting Teal plan assignment (``reconcile.WaitingCheck``)."""
    entry = operation_entry(client, w, processing="Teal plan assignment still processing",
                            missing="without this eSIM")
    if not isinstance(entry, dict):
        return entry
    request_id = w.dc.carrier_request_id
    plan = stripped(w.request.PlanUuid)
    if entry.get("success") is True:
        return w.result(DeviceChangeStatus.PROCESSED, f"Teal operation {request_id}: plan {plan} assigned",
                        device_updates={"CarrierRatePlan": stripped(w.request.CarrierRatePlan) or plan})
    return w.result(DeviceChangeStatus.API_FAILED, f"Teal operation {request_id} failed for eSIM "
                                                   f"{entry.get('eid')}: {entry.get('errorMessage') or 'no reason given'}")
