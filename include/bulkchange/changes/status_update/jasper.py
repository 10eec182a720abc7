"""StatusUpdate on the Jasper family: move devices to a new status (legacy_behaviour.md 3.1)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import failed_result
from bulkchange.changes.status_update.common import StatusUpdateHandler, failed, processed
from bulkchange.db.repository import DeviceRow, RatePlan, load_rate_plans
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest


def choose_deactivation_plan(plans: list[RatePlan], usage_mb: Decimal | None) -> RatePlan | None:
    """Legacy rule: the cheapest plan whose allowance covers the usage, else the largest plan."""
    if not plans:
        return None
    usage = usage_mb or Decimal(0)
    covering = [p for p in plans if p.plan_mb >= usage]
    if covering:
        return min(covering, key=lambda p: (p.base_rate, p.plan_mb, p.code))
    return max(plans, key=lambda p: (p.plan_mb, -p.base_rate, p.code))


class JasperStatusUpdate(StatusUpdateHandler):
    """Jasper family: PUT /devices/{iccid} {"status": ...}, immediate result.

    DEACTIVATED rule: a device with a communication plan first moves to the cheapest rate plan
    covering its usage, then changes status; a failed plan change skips the status call.
    """

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        return {"rate_plans": load_rate_plans(conn, bulk.service_provider_id)}

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        current: dict | None = None
        if verify_first:
            # An earlier attempt may have sent the change before it died: ask before sending again.
            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Jasper device before retry")
            if str(current.get("status", "")).upper() == target:
                return processed(dc, device, target,
                                 f"status {target} confirmed at the carrier after an interrupted attempt",
                                 carrier_rate_plan=current.get("ratePlan"))

        new_plan = None
        if target == "DEACTIVATED" and device.communication_plan:
            plan = choose_deactivation_plan(self.context.get("rate_plans", []), device.data_usage_mb)
            if plan is None:
                return failed(dc, device, "Error Updating Rate Plan for Deactivation: no active rate plan configured "
                                          f"for service provider {self.bulk.service_provider_id}",
                              status=DeviceChangeStatus.ERROR)
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
        return processed(dc, device, target, f"status changed to {target}{suffix}", carrier_rate_plan=new_plan)
