"""StatusUpdate on AT&T Telegence (legacy_behaviour.md 3.1, Telegence).

Target statuses are Telegence's ``subscriberStatus`` letters (``rules.STATUS_ALIASES``): ``A``
active, ``S`` suspended, ``C`` cancelled.

* Suspend, restore and cancel are a PATCH of the line (by subscriber number, the device's MSISDN)
  and take effect at once: the device change is PROCESSED or API_FAILED in the batch.
* Activating a SIM that has no line yet (``inventory``) posts an activation request (needs
  ``Request.singleUserCode`` and ``Request.serviceZipCode``); the carrier answers an activation id
  and ``pending`` / ``reserved``, so the device change waits as PENDING_ACTIVATION with the id as
  its CarrierRequestId. ``reconcile.settle_bulk`` (``check_waiting`` below) polls the id:
  ``active`` -> PROCESSED with the new subscriber number written to the device change and
  ``Device.MSISDN``; ``rejected`` -> API_FAILED with the carrier's reason; still pending after
  ``max_checks`` -> API_FAILED. No worker waits.

One activation request per device change, although the API takes up to 200 lines
(``TelegenceClient.activate`` accepts lists): each device's call is then logged on its own device
change. An activation is never sent twice on purpose: an accepted request whose answer is lost is
not retried (the device change waits without an id and settles when its SIM shows up among the
account's active lines). A device left PROCESSING by an interrupted attempt is looked up at the
carrier first (its line for a PATCH, the account's lines for an activation) and not sent again when
the change is already there; an activation still pending from the lost attempt cannot be seen that
way, so it is sent again: the carrier rejects the duplicate, and a rejected activation whose SIM is
nevertheless active is PROCESSED, not failed.
"""
from __future__ import annotations

import threading
from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError, OutcomeUnknown
from bulkchange.carriers.telegence import characteristic
from bulkchange.changes.base import failed_result, request_field
from bulkchange.changes.status_update.common import StatusUpdateHandler, failed, processed, waiting
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError
from bulkchange.tenancy import billing_account_problem

PLAN_FIELDS = ("singleUserCode", "RatePlanCode", "ServicePlanCode", "servicePlan")
ZIP_FIELDS = ("serviceZipCode", "ZipCode", "mdnZipCode")


def telegence_action(current: str | None, has_line: bool, target: str) -> str:
    """activate (a SIM without a line), restore, suspend or cancel."""
    if target == "A":
        cur = (current or "").strip().upper()
        return "restore" if has_line and cur != "C" else "activate"
    return {"S": "suspend", "C": "cancel"}[target]


def activation_outcome(answer: dict) -> tuple[str, str | None, str | None]:
    """(status, subscriber number, reason) of one activation answer."""
    service = answer.get("service") or {}
    status = str(service.get("status") or answer.get("status") or "").strip().lower()
    number = service.get("subscriberNumber") or characteristic(service, "subscriberNumber")
    reason = service.get("statusReason") or answer.get("statusReason") or answer.get("description")
    return status, (str(number) if number else None), reason


class TelegenceStatusUpdate(StatusUpdateHandler):
    # suspend, restore and cancel address the line by its number: a Mobility row may carry only the
    # MSISDN; an activation needs the SIM (validate refuses it without an ICCID on record)
    by_msisdn = True

    def __init__(self, bulk, client, context):
        super().__init__(bulk, client, context)
        self._lines: dict[str, str] | None = None
        self._lines_lock = threading.Lock()

    def _number(self, dc: DeviceChange, device: DeviceRow | None) -> str | None:
        # the tenant's device row, never the device change (bulkchange.tenancy)
        return device.msisdn if device else None

    def _active_lines(self) -> dict[str, str]:
        """ICCID -> subscriber number of the account's active lines, read once per batch (only
        when an interrupted activation has to be checked)."""
        with self._lines_lock:
            if self._lines is None:
                self._lines = self.client.active_lines()
            return self._lines

    def validate_move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str) -> None:
        number = self._number(dc, device)
        action = telegence_action(device.status, bool(number), target)
        if action == "activate":
            if not device.iccid:
                raise RuleError(f"Telegence activation needs the SIM's ICCID: {device.label} has none on record")
            problem = billing_account_problem(request_field(request, "billingAccountNumber", "BAN"), self.client)
            if problem:
                raise RuleError(problem)
            if not (request_field(request, *PLAN_FIELDS) and request_field(request, *ZIP_FIELDS)):
                raise RuleError("Telegence activation needs Request.singleUserCode (plan SOC) and "
                                "Request.serviceZipCode")
        elif not number:
            raise RuleError(f"Telegence {action} needs the line's subscriber number: device {device.label} "
                            "has no MSISDN")

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        def done(details: str, msisdn: str | None = None) -> DeviceResult:
            return processed(dc, device, target, details, msisdn=msisdn)

        number = self._number(dc, device)
        action = telegence_action(device.status, bool(number), target)
        if action != "activate":
            if verify_first:
                try:
                    line = self.client.get_service(number, log=log)
                except CarrierError as exc:
                    return failed_result(dc, device, exc, "Get Telegence line before retry")
                if characteristic(line, "subscriberStatus") == target:
                    return done(f"subscriberStatus {target} confirmed at the carrier after an interrupted attempt")
            try:
                self.client.set_status(number, target, log=log,
                                       reason_code=request_field(request, "statusReasonCode", "reasonCode"))
            except CarrierError as exc:
                return failed_result(dc, device, exc, f"Telegence {action} of {number}")
            return done(f"Telegence {action}: subscriber {number} is now {target}")

        if verify_first:
            try:
                found = self._active_lines().get(device.iccid)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "List Telegence lines before retry")
            if found:
                return done(f"active at the carrier as {found} after an interrupted attempt", msisdn=found)
        line = self.client.activation_request(device.iccid, plan=request_field(request, *PLAN_FIELDS) or "",
                                              zip_code=request_field(request, *ZIP_FIELDS) or "",
                                              imei=request_field(request, "IMEI"),
                                              billing_account=request_field(request, "billingAccountNumber",
                                                                            "BAN"))
        try:
            answer = self.client.activate([line], log=log)[0]
        except OutcomeUnknown as exc:  # answer lost: looked up, never resent
            return waiting(dc, device, DeviceChangeStatus.PENDING_ACTIVATION,
                           f"{exc}; waiting to find the line active at the carrier")
        except CarrierError as exc:
            return failed_result(dc, device, exc, "Telegence activation")
        status, found, reason = activation_outcome(answer if isinstance(answer, dict) else {})
        activation_id = str(answer.get("id") or "") if isinstance(answer, dict) else ""
        if status == "rejected":
            return failed(dc, device, f"Telegence rejected the activation: {reason or 'no reason given'}",
                          carrier_request_id=activation_id or None)
        if status == "active" and found:
            return done(f"Telegence activated SIM {device.iccid} as subscriber {found}", msisdn=found)
        if not activation_id:
            return waiting(dc, device, DeviceChangeStatus.PENDING_ACTIVATION,
                           f"Telegence activation answered without an activation id ({status!r}); "
                           "waiting to find the line active at the carrier")
        return waiting(dc, device, DeviceChangeStatus.PENDING_ACTIVATION, carrier_request_id=activation_id,
                       details=f"Telegence accepted the activation (id {activation_id}, {status or 'pending'}); "
                               "waiting for the carrier")


def check_waiting(client: Any, w) -> DeviceResult | str:
    """Settle one waiting Telegence activation (``reconcile.WaitingCheck``).

    By its activation id; without one (the answer to the activation was lost) or when the carrier
    rejected it, the SIM is looked up among the account's active lines (read once per pass), so a
    line activated by an earlier, duplicate or lost request is recognised rather than failed."""
    activation_id = w.dc.carrier_request_id

    def line_number() -> str | None:
        return w.shared.get("telegence:active_lines", client.active_lines).get(w.dc.iccid)

    def active(number: str, how: str) -> DeviceResult:
        return w.result(DeviceChangeStatus.PROCESSED, new_device_status="A", msisdn=number,
                        details=f"{how} active as subscriber {number} after {w.checks} check(s)")

    if not activation_id:
        number = line_number()
        return active(number, "Telegence line found") if number else "Telegence line not found active"
    status, number, reason = activation_outcome(client.activation_status(activation_id, log=w.log))
    if status == "active" and number:
        return active(number, f"Telegence activation {activation_id}")
    if status == "rejected":
        number = line_number()
        if number:
            return active(number, f"Telegence activation {activation_id} was rejected ({reason}) but the line is")
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"Telegence rejected activation {activation_id}: {reason or 'no reason given'}")
    return f"Telegence activation {status or 'status unknown'}"
