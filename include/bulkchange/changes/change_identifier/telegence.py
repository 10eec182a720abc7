"""ChangeICCIDAndIMEI on Telegence (legacy_behaviour.md 3.8, PCI Telegence).

The line (addressed by the device's MSISDN) is patched with its new equipment or SIM:

* ``NewIMEI``: the characteristics ``IMEI`` = the new IMEI, ``reasonCode`` ``CUST_OWN_EQU`` and
  ``technologyType`` ``LTE`` (as the public line-config scripts send an IMEI change);
* ``NewICCID``: the characteristic ``sim`` = the new ICCID (a SIM swap; **assumed**, AT&T does not
  publish it).

Confirmed when the carrier's answer shows the new value: PROCESSED, and the Device row (same row,
its history kept) takes the new IMEI or ICCID. Validation (the new value's format, that no other
device holds it, ``OldICCID`` / ``OldIMEI``) is the shared one of ``change_identifier``. A device
left in flight is read first and not patched again when the line already shows the new value.
"""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError, TransientError
from bulkchange.carriers.telegence import characteristic
from bulkchange.changes.base import failed_result
from bulkchange.changes.change_identifier.common import IdentifierHandler
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import ChangeIdentifierRequest, DeviceChange, DeviceResult
from bulkchange.rules import RuleError

IMEI_CHANGE = {"reasonCode": "CUST_OWN_EQU", "technologyType": "LTE"}


class TelegenceChangeIdentifier(IdentifierHandler):
    def validate(self, dc: DeviceChange, request: ChangeIdentifierRequest, device: DeviceRow | None) -> None:
        super().validate(dc, request, device)
        if not device.msisdn:
            raise RuleError(f"Telegence {request.kind} change needs the line's subscriber number: device "
                            f"{device.iccid} has no MSISDN")

    def apply(self, dc: DeviceChange, request: ChangeIdentifierRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        number, new = device.msisdn, request.new_value  # the tenant's row (bulkchange.tenancy)
        name = "IMEI" if request.kind == "IMEI" else "sim"
        try:
            if verify_first and characteristic(self.client.get_service(number, log=log), name) == new:
                return self.moved(dc, device, request, f"{name} {new} found on {number} after an interrupted attempt")
            values = {name: new, **(IMEI_CHANGE if name == "IMEI" else {})}
            answer = self.client.update_service(number, values, log=log,
                                                description=f"Update Telegence {request.kind}: Telegence API")
            now = characteristic(answer, name)
            if now != new:
                raise TransientError(f"Telegence answered without {name} {new} for {number} (got {now!r})")
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Update Telegence {request.kind} of {number}")
        return self.moved(dc, device, request, f"{request.kind} of line {number} changed to {new}")
