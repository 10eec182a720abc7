"""StatusUpdate on the Jasper family: move devices to a new status (legacy_behaviour.md 3.1)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import ChangeHandler, device_not_found, failed_result
from bulkchange.db.repository import DeviceRow, RatePlan, load_rate_plans
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError, check_transition


def choose_deactivation_plan(plans: list[RatePlan], usage_mb: Decimal | None) -> RatePlan | None:
    """Legacy rule: the cheapest plan whose allowance covers the usage, else the largest plan."""
    if not plans:
        return None
    usage = usage_mb or Decimal(0)
    covering = [p for p in plans if p.plan_mb >= usage]
    if covering:
        return min(covering, key=lambda p: (p.base_rate, p.plan_mb, p.code))
    return max(plans, key=lambda p: (p.plan_mb, -p.base_rate, p.code))


class JasperStatusUpdate(ChangeHandler):
    """Jasper family: PUT /devices/{iccid} {"status": ...}, immediate result.

    DEACTIVATED rule: a device with a communication plan first moves to the cheapest rate plan
    covering its usage, then changes status; a failed plan change skips the status call.
    """

    request_model = StatusUpdateRequest

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        return {"rate_plans": load_rate_plans(conn, bulk.service_provider_id)}

    def validate(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        check_transition(self.bulk.integration, device.status, request.UpdateStatus,
                         request.IsIgnoreCurrentStatus)

    def apply(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None  # validate() ran first
        check = check_transition(self.bulk.integration, device.status, request.UpdateStatus,
                                 request.IsIgnoreCurrentStatus)
        target = check.target

        def done(details: str, rate_plan: str | None = None) -> DeviceResult:
            return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details=details,
                                device_id=device.id, iccid=device.iccid, previous_device_status=device.status,
                                new_device_status=target, carrier_rate_plan=rate_plan)

        if check.already_there:
            return done(f"already {target}; no carrier call needed")
        current: dict | None = None
        if verify_first:
            # An earlier attempt may have sent the change before it died: ask before sending again.
            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Jasper device before retry")
            if str(current.get("status", "")).upper() == target:
                return done(f"status {target} confirmed at the carrier after an interrupted attempt",
                            rate_plan=current.get("ratePlan"))

        new_plan = None
        if target == "DEACTIVATED" and device.communication_plan:
            plan = choose_deactivation_plan(self.context.get("rate_plans", []), device.data_usage_mb)
            if plan is None:
                return DeviceResult(
                    device_change_id=dc.id, status=DeviceChangeStatus.ERROR, device_id=device.id,
                    iccid=device.iccid, previous_device_status=device.status,
                    details="Error Updating Rate Plan for Deactivation: no active rate plan configured "
                            f"for service provider {self.bulk.service_provider_id}")
            if current is not None and current.get("ratePlan") == plan.code:
                new_plan = plan.code  # the interrupted attempt changed the plan already: not sent again
            elif plan.code != device.carrier_rate_plan:
                try:
                    self.client.update_rate_plan(device.iccid, plan.code, log=log)
                except CarrierError as exc:
                    return failed_result(dc, device, exc, "Error Updating Rate Plan for Deactivation")
                new_plan = plan.code
        try:
            self.client.update_status(device.iccid, target, log=log)
        except CarrierError as exc:
            result = failed_result(dc, device, exc, f"Update Jasper status to {target}")
            result.carrier_rate_plan = new_plan
            return result
        suffix = f" (rate plan {new_plan} first)" if new_plan else ""
        return done(f"status changed to {target}{suffix}", rate_plan=new_plan)
