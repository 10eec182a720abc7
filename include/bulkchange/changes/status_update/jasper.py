"""StatusUpdate on the Jasper family: move devices to a new status (legacy_behaviour.md 3.1)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import failed_result
from bulkchange.changes.status_update.common import StatusUpdateHandler, failed, processed
from bulkchange.db.inventory import DeviceRow, RatePlan, load_rate_plans
from bulkchange.db.rev_customers import tenant_rev_customer_sites
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError


def choose_deactivation_plan(plans: list[RatePlan], usage_mb: Decimal | None) -> RatePlan | None:
    """Legacy rule: the cheapest plan whose allowance covers the usage, else the largest plan."""
    if not plans:
        return None
    usage = usage_mb or Decimal(0)
    covering = [p for p in plans if p.plan_mb >= usage]
    if covering:
        return min(covering, key=lambda p: (p.base_rate, p.plan_mb, p.code))
    return max(plans, key=lambda p: (p.plan_mb, -p.base_rate, p.code))


# The legacy ran the cheapest-plan-first step only when the request's UpdateStatus, trimmed and
# lower-cased, was exactly "deactivated" (ADBC L3280: ``UpdateStatus.ToLower().Trim() == "deactivated"``).
# A Suspend (which Jasper also carries out as DEACTIVATED) never triggered it, nor did "deactivate".
PLAN_FIRST_STATUSES = frozenset({"deactivated"})
ACTIVE_SERVICE_LINE = "Active service line. Cannot change customers."  # the legacy's words


def plan_first(update_status: str | None) -> bool:
    """Whether a status change asked as ``update_status`` moves the device to the cheapest plan first."""
    return (update_status or "").strip().lower() in PLAN_FIRST_STATUSES


class JasperStatusUpdate(StatusUpdateHandler):
    """Jasper family: PUT /devices/{iccid} {"status": ...}, immediate result.

    Deactivation rule (``plan_first``): for a request asking "deactivated", a device with a
    communication plan first moves to the cheapest rate plan covering its usage, then changes
    status; a failed plan change skips the status call.

    ``AccountNumber`` (legacy ``usp_DeviceBulkChange_UpdateRevCustomer``): once the status changed,
    the device takes that Rev.io customer (and its site), unless Rev.io shows a service line of the
    device (``number2`` = ICCID) of another customer that is not disconnected: then the customer
    stays and the device change says "Active service line. Cannot change customers." as the legacy did.
    """

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        return {"rate_plans": load_rate_plans(conn, bulk.service_provider_id),
                "rev_customer_sites": tenant_rev_customer_sites(conn, bulk.tenant_id)}

    def validate(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None) -> None:
        super().validate(dc, request, device)
        account = (request.AccountNumber or "").strip()
        if account and account not in (self.context.get("rev_customer_sites") or {}):
            raise RuleError(f"AccountNumber {account} is not a Rev.io customer of tenant {self.bulk.tenant_id}; "
                            "refused")

    def apply(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        result = super().apply(dc, request, device, verify_first=verify_first, log=log)
        return self._rev_customer(request, device, result, log)

    def _rev_customer(self, request: StatusUpdateRequest, device: DeviceRow, result: DeviceResult,
                      log: CallLog) -> DeviceResult:
        """After a status change: the device takes the request's Rev.io customer (legacy rule)."""
        account = (request.AccountNumber or "").strip()
        if not account or result.status != DeviceChangeStatus.PROCESSED:
            return result
        if self.revio_client is None:
            return result.model_copy(update={
                "status": DeviceChangeStatus.REV_IO_FAILED,
                "details": f"{result.details}; Rev customer {account} not set: {self.revio_problem}"})
        try:
            lines = self.revio_client.find_services(number2=device.iccid, log=log)
        except CarrierError as exc:
            return result.model_copy(update={
                "status": DeviceChangeStatus.REV_IO_FAILED,
                "details": f"{result.details}; Rev customer {account} not set: reading the device's Rev.io "
                           f"service lines failed: {exc}"})
        # a live line of the same customer changes no customer (e.g. the one this request's RevService
        # created in an attempt that died before recording it): only another customer's line holds
        if any(not line.get("disconnected_date") and str(line.get("customer_id")) != account for line in lines):
            return result.model_copy(update={"details": f"{result.details}; {ACTIVE_SERVICE_LINE}"})
        updates = {"RevCustomerId": account}
        site = (self.context.get("rev_customer_sites") or {}).get(account)
        if site is not None:
            updates["SiteId"] = site
        return result.model_copy(update={"device_updates": {**result.device_updates, **updates},
                                          "details": f"{result.details}; Rev customer set to {account}"})

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
        if target == "DEACTIVATED" and plan_first(request.UpdateStatus) and device.communication_plan:
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
