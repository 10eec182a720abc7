"""POND StatusUpdate (legacy_behaviour.md 3.1 "Pond" and the package flow of 3.6).

* **Active** (``ACTIVE``): list the SIM's packages; keep the newest ACTIVE (else PENDING) package of the
  wanted package type or add one, set it ACTIVE, terminate every other ACTIVE or PENDING package,
  then enable the SIM's services. Afterwards the SIM has exactly one ACTIVE package. The package type
  comes from ``Request.PackageTypeId`` (or ``RatePlanId`` / ``RatePlanCode``, as the portal names
  it), else the device's current carrier rate plan. If an old package cannot be terminated, a
  package added by this attempt is terminated again (as the legacy code did) and the device is
  API_FAILED with the reason.
* **Suspend** (``SUSPENDED``): disable the SIM's services.
* **Terminate** (``TERMINATED``): disable the services, then terminate every ACTIVE or PENDING package.

The package flow and the saving of the packages it changed are shared with the POND rate plan change
(``changes/pond_common.py``): every package this handler saw change is saved to
``PondDeviceCarrierRatePlan`` (one row per package, upserted) in the transaction that records the batch. Each flow starts from the carrier's
current state (packages listed first; enable/disable are idempotent), so a device left in flight by
an interrupted attempt is simply run again: nothing is added twice.
"""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.carriers.pond import ACTIVE
from bulkchange.changes.base import failed_result, request_field
from bulkchange.changes.pond_common import PondPackageHandler
from bulkchange.changes.status_update.common import StatusUpdateHandler, processed
from bulkchange.db.carrier_records import PondPackage
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError


def package_type_for(request: StatusUpdateRequest, device: DeviceRow | None) -> str | None:
    wanted = request_field(request, "PackageTypeId", "RatePlanId", "RatePlanCode", "CarrierRatePlan")
    if wanted:
        return wanted
    return str(device.carrier_rate_plan) if device is not None and device.carrier_rate_plan else None


class PondStatusUpdate(PondPackageHandler, StatusUpdateHandler):
    def validate_move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str) -> None:
        if target == ACTIVE and not package_type_for(request, device):
            raise RuleError("POND activation needs Request.PackageTypeId (or RatePlanId), or a carrier rate plan "
                            "on the device")

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        def done(details: str, rate_plan: str | None = None) -> DeviceResult:
            return processed(dc, device, target, details, carrier_rate_plan=rate_plan)

        touched: list[PondPackage] = []
        step = "Update Pond Status"
        try:
            if target == ACTIVE:
                step = "Activate Pond SIM"
                type_id = package_type_for(request, device)
                kept = self._activate(device.iccid, str(type_id), touched, log)
                self.client.update_service_status(device.iccid, True, log=log)
                return done(f"services enabled; package {kept} (type {type_id}) is the only ACTIVE package",
                            rate_plan=str(type_id))
            if target == "SUSPENDED":
                step = "Disable Pond services"
                self.client.update_service_status(device.iccid, False, log=log)
                return done("services disabled (suspended)")
            step = "Terminate Pond SIM"
            self.client.update_service_status(device.iccid, False, log=log)
            ended = self._terminate_all(device.iccid, None, touched, log)
            return done(f"services disabled; {len(ended)} package(s) terminated")
        except CarrierError as exc:
            return failed_result(dc, device, exc, step)
        finally:
            self._keep(dc, touched)
