"""ChangeICCIDAndIMEI on the Jasper family (legacy_behaviour.md 3.8).

* **Jasper** (no SIM-swap call is published; **assumed** and documented in the client): a new IMEI
  is written to the SIM's ``deviceID`` field (Edit Device Details). A new ICCID must be a SIM of the
  same Jasper account: the new SIM takes over the old SIM's rate plan, communication plan and the
  device's status (and ``deviceID`` = the device's IMEI) through Edit Device Details, then the old
  SIM is set ``DEACTIVATED``. Each step is skipped when the carrier already shows its result, so a
  retried attempt sends nothing twice; the device change is ``PROCESSED`` (and the Device moved)
  only when both SIMs are as they should be.
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError, PermanentError
from bulkchange.changes.base import failed_result
from bulkchange.changes.change_identifier.common import IdentifierHandler
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import ChangeIdentifierRequest, DeviceChange, DeviceResult

# Jasper statuses a SIM taking over a device may be given (the device's own status)
JASPER_TAKEOVER_STATUSES = frozenset({"ACTIVATED", "ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "TEST_READY"})
JASPER_INACTIVE = frozenset({"DEACTIVATED", "RETIRED", "PURGED"})


class JasperChangeIdentifier(IdentifierHandler):
    """Jasper family: IMEI -> ``deviceID``; ICCID -> the new SIM takes over, the old SIM is deactivated."""

    def apply(self, dc: DeviceChange, request: ChangeIdentifierRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        if request.kind == "IMEI":
            return self._imei(dc, request, device, verify_first, log)
        return self._iccid(dc, request, device, log)

    def _imei(self, dc, request, device, verify_first, log) -> DeviceResult:
        new = request.new_value
        field = self.client.EQUIPMENT_ID_FIELD
        if verify_first:
            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Jasper device before retry")
            if str(current.get(field) or "") == new:
                return self.moved(dc, device, request, f"IMEI {new} confirmed at the carrier after an "
                                                       "interrupted attempt")
        try:
            self.client.set_equipment_imei(device.iccid, new, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Update Jasper IMEI to {new}")
        return self.moved(dc, device, request, f"IMEI changed to {new} (Jasper {field})")

    def _iccid(self, dc, request, device, log) -> DeviceResult:
        new = request.new_value
        # Every step reads the carrier first, so a retried attempt only sends what is missing.
        try:
            old_sim = self.client.get_device(device.iccid, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Get Jasper SIM {device.iccid}")
        try:
            new_sim = self.client.get_device(new, log=log)
        except PermanentError as exc:
            return failed_result(dc, device, exc, f"New SIM {new} is not in the Jasper account")
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Get Jasper SIM {new}")
        status = (device.status or "").upper()
        if status not in JASPER_TAKEOVER_STATUSES:
            status = str(old_sim.get("status") or "").upper()
        wanted: dict[str, Any] = {"ratePlan": old_sim.get("ratePlan") or device.carrier_rate_plan,
                                  "communicationPlan": old_sim.get("communicationPlan") or device.communication_plan,
                                  "status": status if status in JASPER_TAKEOVER_STATUSES else None,
                                  self.client.EQUIPMENT_ID_FIELD: self.device_imei(device)}
        changes = {k: v for k, v in wanted.items() if v and new_sim.get(k) != v}
        if changes:
            try:
                self.client.edit_device(new, changes, log=log,
                                        description=f"Move device to new SIM {new}: Jasper API")
            except CarrierError as exc:
                return failed_result(dc, device, exc, f"New SIM {new} taking over {device.iccid}")
        if str(old_sim.get("status") or "").upper() not in JASPER_INACTIVE:
            try:
                self.client.update_status(device.iccid, "DEACTIVATED", log=log)
            except CarrierError as exc:
                result = failed_result(dc, device, exc, f"Deactivate old SIM {device.iccid}")
                result.details += (f" (new SIM {new} has taken over; the device stays on {device.iccid} in AMOP "
                                   "until the old SIM is deactivated: retry the device)")
                return result
        return self.moved(dc, device, request,
                          f"ICCID changed to {new}: the new SIM took over ({', '.join(sorted(changes)) or 'nothing to copy'})"
                          f", old SIM {device.iccid} deactivated", carrier_rate_plan=wanted["ratePlan"])
