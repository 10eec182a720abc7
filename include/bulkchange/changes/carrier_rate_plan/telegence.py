"""CarrierRatePlanChange on AT&T Telegence (legacy_behaviour.md 3.6).

* **Telegence**: ``PATCH`` of the line (by its MSISDN) with ``effectiveDate`` (``EffectiveDate``,
  default today, ``yyyy-MM-dd`` of its UTC instant) and the characteristic ``singleUserCode`` =
  ``CarrierRatePlan`` (the plan SOC). Confirmed when the carrier's answer shows the new SOC: PROCESSED
  in the batch. A device left in flight is read first and not patched again when the line already has
  the SOC. A date after today (UTC) waits as PENDING_CARRIER (``scheduled:<date>``) and ``check_telegence``
  reads the line from 00:00 UTC of that date. **Assumed**: Telegence reads the date as a UTC day and the
  SOC appears on the line when it starts (the API does not say).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError, TransientError
from bulkchange.carriers.telegence import characteristic
from bulkchange.changes.base import ChangeHandler, device_not_found, failed_result
from bulkchange.changes.carrier_rate_plan.common import plan_done, result_base, stripped
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import CarrierRatePlanChangeRequest, DeviceChange, DeviceChangeStatus, DeviceResult, utcnow
from bulkchange.rules import RuleError


class TelegenceCarrierRatePlan(ChangeHandler):
    request_model = CarrierRatePlanChangeRequest
    by_msisdn = True  # the line is patched by its number: a Mobility row may carry only the MSISDN

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not stripped(request.CarrierRatePlan):
            raise RuleError("CarrierRatePlan is required (the Telegence plan SOC, sent as singleUserCode)")
        if not device.msisdn:
            raise RuleError(f"Telegence rate plan change needs the line's subscriber number: device {device.iccid} "
                            "has no MSISDN")

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        plan, number = stripped(request.CarrierRatePlan), device.msisdn  # the tenant's row (tenancy)
        when: datetime = request.EffectiveDate or utcnow()
        day = telegence_day(when)
        future = day > telegence_day(utcnow())
        try:
            if verify_first and characteristic(self.client.get_service(number, log=log), "singleUserCode") == plan:
                return plan_done(dc, device, plan, f"singleUserCode {plan} found on {number} after an interrupted attempt")
            answer = self.client.update_service(number, {"singleUserCode": plan}, log=log, effective_date=day,
                                                description="Update Telegence Rate Plan: Telegence API")
            if future:
                return DeviceResult(status=DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=f"scheduled:{day}",
                                    details=f"singleUserCode {plan} of {number} scheduled at the carrier for {day} "
                                            f"(UTC day of {when.isoformat()} UTC); the device is updated once the "
                                            "line shows it", **result_base(dc, device))
            now = characteristic(answer, "singleUserCode")
            if now != plan:
                raise TransientError(f"Telegence answered without singleUserCode {plan} for {number} (got {now!r})")
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Update Telegence Rate Plan of {number} to {plan}")
        return plan_done(dc, device, plan, f"singleUserCode of {number} is {plan} from {when:%Y-%m-%d}")


def telegence_day(when: datetime) -> str:
    """``effectiveDate`` of a Telegence PATCH: the ``yyyy-MM-dd`` date of the UTC instant (the model keeps
    dates in UTC; an EffectiveDate written with an offset is its UTC day, not its local one). Telegence
    publishes a date only; the simulator reads it as a UTC day starting at 00:00 UTC (assumed)."""
    return when.strftime("%Y-%m-%d")


def check_telegence(client: Any, w) -> DeviceResult | str:
    """A future-dated Telegence plan change: not due before 00:00 UTC of its date; then the line must
    show the SOC (``reconcile.WaitingCheck``)."""
    from bulkchange.reconcile import NotDue

    plan = stripped(w.request.CarrierRatePlan)
    day = (w.dc.carrier_request_id or "").split(":", 1)[-1]
    if day > telegence_day(utcnow()):
        return NotDue(f"singleUserCode {plan} is scheduled for {day} (UTC)")
    number = w.device.msisdn if w.device is not None else None
    if not number:
        return w.result(DeviceChangeStatus.API_FAILED, "the line's subscriber number is gone; cannot check the "
                                                       f"scheduled singleUserCode {plan}")
    now = characteristic(client.get_service(number, log=w.log), "singleUserCode")
    if now == plan:
        return w.result(DeviceChangeStatus.PROCESSED, device_updates={"CarrierRatePlan": plan},
                        details=f"scheduled singleUserCode {plan} in effect on {number} (checked on or after {day})")
    return f"scheduled singleUserCode {plan} not on {number} yet (it shows {now!r})"
