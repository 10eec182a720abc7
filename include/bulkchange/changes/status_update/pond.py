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

Every package this handler saw change is saved to ``PondDeviceCarrierRatePlan`` (one row per
package, upserted) in the transaction that records the batch. Each flow starts from the carrier's
current state (packages listed first; enable/disable are idempotent), so a device left in flight by
an interrupted attempt is simply run again: nothing is added twice.
"""
from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.carriers.pond import ACTIVE, PENDING, TERMINATED
from bulkchange.changes.base import failed_result, request_field
from bulkchange.changes.status_update.common import StatusUpdateHandler, processed
from bulkchange.db.carrier_records import PondPackage, save_pond_packages
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import BulkChange, DeviceChange, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError

LIVE = (ACTIVE, PENDING)


def package_type_for(request: StatusUpdateRequest, device: DeviceRow | None) -> str | None:
    wanted = request_field(request, "PackageTypeId", "RatePlanId", "RatePlanCode", "CarrierRatePlan")
    if wanted:
        return wanted
    return str(device.carrier_rate_plan) if device is not None and device.carrier_rate_plan else None


def _num(value: Any) -> tuple[int, str]:
    text = str(value or "")
    return (int(text), text) if text.isdigit() else (-1, text)


def _best_of_type(packages: list[dict], type_id: str) -> dict | None:
    """The package to keep: the newest ACTIVE, else the newest PENDING package of the type."""
    same = [p for p in packages if str(p.get("packageTypeId")) == type_id and p.get("status") in LIVE]
    return max(same, key=lambda p: (p.get("status") == ACTIVE, str(p.get("createdDate") or ""),
                                    _num(p.get("packageId"))), default=None)


def _package(iccid: str, p: dict, status: str | None = None) -> PondPackage:
    remaining = p.get("dataUsageRemainingInBytes")
    return PondPackage(iccid, str(p.get("packageId")), str(p["packageTypeId"]) if p.get("packageTypeId") else None,
                       status or str(p.get("status") or ""), int(remaining) if isinstance(remaining, int) else None)


class PondStatusUpdate(StatusUpdateHandler):
    def __init__(self, bulk: BulkChange, client: Any, context: dict[str, Any]):
        super().__init__(bulk, client, context)
        self._lock = threading.Lock()
        self.packages: dict[int, list[PondPackage]] = {}  # device change id -> packages it changed

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
            if touched:
                with self._lock:
                    self.packages[dc.id] = touched

    def _activate(self, iccid: str, type_id: str, touched: list[PondPackage], log: CallLog) -> str:
        packages = self.client.get_packages(iccid, log=log)
        keep = _best_of_type(packages, type_id)
        added = keep is None
        if keep is None:
            # sent once; a lost answer is looked up in the package list by the client (PondClient.add_package)
            keep = self.client.add_package(iccid, type_id, log=log)
            touched.append(_package(iccid, keep))
        keep_id = str(keep["packageId"])
        if keep.get("status") != ACTIVE:
            keep = {**keep, **(self.client.set_package_status(iccid, keep_id, ACTIVE, log=log) or {})}
        touched.append(_package(iccid, keep, ACTIVE))
        try:
            self._terminate_all(iccid, keep_id, touched, log, packages)
        except CarrierError:
            if added:  # leave the SIM as it was: the new package must not stay ACTIVE beside the old
                try:
                    self.client.set_package_status(iccid, keep_id, TERMINATED, log=log)
                    touched.append(_package(iccid, keep, TERMINATED))
                except CarrierError:
                    pass
            raise
        self.client.update_service_status(iccid, True, log=log)
        return keep_id

    def _terminate_all(self, iccid: str, keep_id: str | None, touched: list[PondPackage], log: CallLog,
                       packages: list[dict] | None = None) -> list[str]:
        if packages is None:
            packages = self.client.get_packages(iccid, log=log)
        ended = []
        for p in packages:
            pid = str(p.get("packageId"))
            if pid == keep_id or p.get("status") not in LIVE:
                continue
            self.client.set_package_status(iccid, pid, TERMINATED, log=log)
            touched.append(_package(iccid, p, TERMINATED))
            ended.append(pid)
        return ended

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        rows = [pkg for r in results for pkg in self.packages.get(r.device_change_id, ())]
        save_pond_packages(conn, self.bulk.service_provider_id, rows, processed_by=processed_by)
