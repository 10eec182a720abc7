"""CarrierRatePlanChange on Telegence, Teal and POND (legacy_behaviour.md 3.6).

``Device.CarrierRatePlan`` changes only once the carrier confirms the new plan (written through
``DeviceResult.device_updates``, so the device's status and LastStatusChange stay as they are).

* **Telegence**: ``PATCH`` of the line (by its MSISDN) with ``effectiveDate`` (``EffectiveDate``,
  default today, ``yyyy-MM-dd`` of its UTC instant) and the characteristic ``singleUserCode`` =
  ``CarrierRatePlan`` (the plan SOC). Confirmed when the carrier's answer shows the new SOC: PROCESSED
  in the batch. A device left in flight is read first and not patched again when the line already has
  the SOC. A date after today (UTC) waits as PENDING_CARRIER (``scheduled:<date>``) and ``check_telegence``
  reads the line from 00:00 UTC of that date. **Assumed**: Telegence reads the date as a UTC day and the
  SOC appears on the line when it starts (the API does not say).
* **Teal**: ``POST /esims/assign-plan`` with ``{eid, planUuid}`` (``PlanUuid``; the EID from the
  device change or ``Device.EID``); asynchronous: the device change waits as PENDING_CARRIER with
  our requestId and reconciliation (``check_teal``) settles it from the operation result (Teal's
  ``errorMessage`` on failure; legacy crashed on a null result and took errors for success).
  ``Device.CarrierRatePlan`` becomes ``CarrierRatePlan`` when given, else the plan uuid. A plan uuid the
  account does not have (``GET /plans``, read once per batch) is refused before any call, with the valid ones.
* **POND**: the package flow of the POND status update, reused as is (``PondStatusUpdate._activate``
  without its final "enable services": a rate plan change does not change the SIM's status): the
  package type ``RatePlanId`` (else ``CarrierRatePlan``) is kept or added, set ACTIVE, every other
  live package terminated; if that fails, a package this attempt added is terminated again and the
  device is API_FAILED. Packages go to ``PondDeviceCarrierRatePlan``. Listing the packages first
  makes a retried device add nothing twice.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError, TransientError
from bulkchange.carriers.teal import PROCESSING, entry_result
from bulkchange.carriers.telegence import characteristic
from bulkchange.changes.base import ChangeHandler, failed_result
from bulkchange.changes.carrier_rate_plan import CarrierPlanCheck
from bulkchange.changes.status_update import device_not_found
from bulkchange.changes.status_update_pond import PondStatusUpdate
from bulkchange.changes.status_update_teal import TealStatusUpdate
from bulkchange.db.repository import DeviceRow, PondPackage
from bulkchange.models import CarrierRatePlanChangeRequest, DeviceChange, DeviceChangeStatus, DeviceResult, utcnow
from bulkchange.rules import RuleError


def _base(dc: DeviceChange, device: DeviceRow) -> dict[str, Any]:
    return dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid, previous_device_status=device.status)


def _done(dc: DeviceChange, device: DeviceRow, plan: str, details: str) -> DeviceResult:
    return DeviceResult(status=DeviceChangeStatus.PROCESSED, details=details,
                        device_updates={"CarrierRatePlan": plan}, **_base(dc, device))


def _text(value: Any) -> str:
    return str(value).strip() if value not in (None, "") else ""


# -- Telegence -------------------------------------------------------------------------------------
class TelegenceCarrierRatePlan(ChangeHandler):
    request_model = CarrierRatePlanChangeRequest
    by_msisdn = True  # the line is patched by its number: a Mobility row may carry only the MSISDN

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not _text(request.CarrierRatePlan):
            raise RuleError("CarrierRatePlan is required (the Telegence plan SOC, sent as singleUserCode)")
        if not device.msisdn:
            raise RuleError(f"Telegence rate plan change needs the line's subscriber number: device {device.iccid} "
                            "has no MSISDN")

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        plan, number = _text(request.CarrierRatePlan), device.msisdn  # the tenant's row (tenancy)
        when: datetime = request.EffectiveDate or utcnow()
        day = telegence_day(when)
        future = day > telegence_day(utcnow())
        try:
            if verify_first and characteristic(self.client.get_service(number, log=log), "singleUserCode") == plan:
                return _done(dc, device, plan, f"singleUserCode {plan} found on {number} after an interrupted attempt")
            answer = self.client.update_service(number, {"singleUserCode": plan}, log=log, effective_date=day,
                                                description="Update Telegence Rate Plan: Telegence API")
            if future:
                return DeviceResult(status=DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=f"scheduled:{day}",
                                    details=f"singleUserCode {plan} of {number} scheduled at the carrier for {day} "
                                            f"(UTC day of {when.isoformat()} UTC); the device is updated once the "
                                            "line shows it", **_base(dc, device))
            now = characteristic(answer, "singleUserCode")
            if now != plan:
                raise TransientError(f"Telegence answered without singleUserCode {plan} for {number} (got {now!r})")
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Update Telegence Rate Plan of {number} to {plan}")
        return _done(dc, device, plan, f"singleUserCode of {number} is {plan} from {when:%Y-%m-%d}")


def telegence_day(when: datetime) -> str:
    """``effectiveDate`` of a Telegence PATCH: the ``yyyy-MM-dd`` date of the UTC instant (the model keeps
    dates in UTC; an EffectiveDate written with an offset is its UTC day, not its local one). Telegence
    publishes a date only; the simulator reads it as a UTC day starting at 00:00 UTC (assumed)."""
    return when.strftime("%Y-%m-%d")


def check_telegence(client: Any, w) -> DeviceResult | str:
    """A future-dated Telegence plan change: not due before 00:00 UTC of its date; then the line must
    show the SOC (``reconcile.WaitingCheck``)."""
    from bulkchange.reconcile import NotDue

    plan = _text(w.request.CarrierRatePlan)
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


# -- Teal ------------------------------------------------------------------------------------------
class TealCarrierRatePlan(CarrierPlanCheck, ChangeHandler):
    request_model = CarrierRatePlanChangeRequest
    plan_lister = "plan_uuids"  # GET /plans: a plan the account does not have is refused before any call
    plan_field = "PlanUuid"
    load_context = TealStatusUpdate.load_context  # EIDs of devices whose device change carries none
    _eid = TealStatusUpdate._eid

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not _text(request.PlanUuid):
            raise RuleError("PlanUuid is required for a Teal rate plan change (the plan's uuid)")
        if not self._eid(dc, device):
            raise RuleError(f"Teal needs the eSIM's EID: none on the device change or on device {device.iccid}")
        self._check_carrier_plan(_text(request.PlanUuid))

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        eid, plan = self._eid(dc, device) or "", _text(request.PlanUuid)
        if verify_first:
            try:
                if _text(self.client.get_esim(eid, log=log).get("planUuid")) == plan:
                    return _done(dc, device, _text(request.CarrierRatePlan) or plan,
                                 f"eSIM {eid} has plan {plan} at the carrier after an interrupted attempt")
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Teal eSIM before retry")
        try:
            request_id = self.client.assign_plan([(eid, plan)], log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Teal Assign Plan {plan} to eSIM {eid}")
        return DeviceResult(status=DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=request_id, **_base(dc, device),
                            details=f"Teal accepted plan {plan} for eSIM {eid} (request {request_id}); waiting for "
                                    "the carrier")


def check_teal(client: Any, w) -> DeviceResult | str:
    """Settle a waiting Teal plan assignment (``reconcile.WaitingCheck``)."""
    request_id = w.dc.carrier_request_id
    if not request_id:
        return w.result(DeviceChangeStatus.API_FAILED, "no Teal requestId was recorded for this device change")
    answer = w.shared.get(request_id, lambda: client.operation_result(request_id, log=w.log))
    if answer is PROCESSING:
        return "Teal plan assignment still processing"
    entries = [e for e in answer.get("entries") or [] if isinstance(e, dict)]
    entry = (entry_result(answer, w.dc.eid) if w.dc.eid else None) or next(
        (e for e in entries if _text(e.get("iccid")) == w.dc.iccid or len(entries) == 1), None)
    if entry is None:
        return w.result(DeviceChangeStatus.API_FAILED, f"Teal operation {request_id} finished without this eSIM")
    plan = _text(w.request.PlanUuid)
    if entry.get("success") is True:
        return w.result(DeviceChangeStatus.PROCESSED, f"Teal operation {request_id}: plan {plan} assigned",
                        device_updates={"CarrierRatePlan": _text(w.request.CarrierRatePlan) or plan})
    return w.result(DeviceChangeStatus.API_FAILED, f"Teal operation {request_id} failed for eSIM "
                                                   f"{entry.get('eid')}: {entry.get('errorMessage') or 'no reason given'}")


# -- POND ------------------------------------------------------------------------------------------
class _PackagesOnly:
    """The POND client as the package flow sees it during a rate plan change: every call goes
    through, except switching the SIM's services on (that is a status change, not a plan change)."""

    def __init__(self, client: Any):
        self._client = client

    def update_service_status(self, iccid: str, enable: bool, *, log: CallLog | None = None) -> dict:
        return {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class PondCarrierRatePlan(CarrierPlanCheck, PondStatusUpdate):
    request_model = CarrierRatePlanChangeRequest
    plan_lister = "package_type_ids"  # GET /{distributorId}/package-types, the ACTIVE ones
    plan_field = "RatePlanId (POND package type)"

    def __init__(self, bulk, client, context):
        super().__init__(bulk, client, context)
        self._flow = PondStatusUpdate(bulk, _PackagesOnly(client) if client is not None else None, context)

    @staticmethod
    def package_type(request: CarrierRatePlanChangeRequest) -> str:
        return _text(request.RatePlanId) or _text(request.CarrierRatePlan)

    def validate(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if not self.package_type(request):
            raise RuleError("RatePlanId (the POND package type) or CarrierRatePlan is required")
        self._check_carrier_plan(self.package_type(request))

    def apply(self, dc: DeviceChange, request: CarrierRatePlanChangeRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        type_id = self.package_type(request)
        touched: list[PondPackage] = []
        try:
            kept = self._flow._activate(device.iccid, type_id, touched, log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Change Pond package to type {type_id}")
        finally:
            if touched:
                with self._lock:
                    self.packages[dc.id] = touched
        return _done(dc, device, type_id, f"package {kept} (type {type_id}) is the only ACTIVE package")
