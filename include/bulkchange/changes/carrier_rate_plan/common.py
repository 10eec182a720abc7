"""CarrierRatePlanChange: move devices to another carrier rate plan (legacy_behaviour.md 3.6), one
module per carrier family (jasper, thingspace, telegence, teal, pond); this module holds what they share.

``Device.CarrierRatePlan`` (and the Jasper ``CommunicationPlan``) change only once the carrier
confirms the new plan (written through ``DeviceResult.device_updates``, so the device's status and
LastStatusChange stay as they are).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from bulkchange.carriers.base import CarrierError
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import BulkChange, CarrierRatePlanChangeRequest, DeviceChange, DeviceChangeStatus, DeviceResult
from bulkchange.rules import RuleError

log = logging.getLogger(__name__)


def requested_plan(request: CarrierRatePlanChangeRequest) -> str:
    plan = (request.CarrierRatePlan or "").strip()
    if not plan:
        raise RuleError("CarrierRatePlan is required (the carrier's rate plan code)")
    return plan


def is_future(when: datetime | None, now: datetime) -> bool:
    return when is not None and when > now


def result_base(dc: DeviceChange, device: DeviceRow) -> dict[str, Any]:
    return dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid,
                previous_device_status=device.status)


def plan_done(dc: DeviceChange, device: DeviceRow, plan: str, details: str) -> DeviceResult:
    return DeviceResult(status=DeviceChangeStatus.PROCESSED, details=details,
                        device_updates={"CarrierRatePlan": plan}, **result_base(dc, device))


def stripped(value: Any) -> str:
    return str(value).strip() if value not in (None, "") else ""


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
