"""What every POND handler shares: the package flow (legacy_behaviour.md 3.6) and the packages it saves.

``PondPackageHandler._activate`` lists the SIM's packages, keeps the newest ACTIVE (else PENDING)
package of the wanted package type or adds one, sets it ACTIVE and terminates every other ACTIVE or
PENDING package; if an old package cannot be terminated, a package added by this attempt is terminated
again (as the legacy code did) and the error goes on. Listing first makes a retried device add
nothing twice. Every package a handler saw change (``_keep``) is saved to ``PondDeviceCarrierRatePlan``
(one row per package, upserted) in the transaction that records the batch (``record``).
The StatusUpdate and CarrierRatePlanChange handlers both build on it.
"""
from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.carriers.pond import ACTIVE, PENDING, TERMINATED
from bulkchange.changes.base import ChangeHandler
from bulkchange.db.carrier_records import PondPackage, save_pond_packages
from bulkchange.models import BulkChange, DeviceChange, DeviceResult

LIVE = (ACTIVE, PENDING)


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


class PondPackageHandler(ChangeHandler):
    """A change on POND SIMs that may change their packages."""

    def __init__(self, bulk: BulkChange, client: Any, context: dict[str, Any]):
        super().__init__(bulk, client, context)
        self._lock = threading.Lock()
        self.packages: dict[int, list[PondPackage]] = {}  # device change id -> packages it changed

    def _keep(self, dc: DeviceChange, touched: list[PondPackage]) -> None:
        """Remember the packages this device change changed (``record`` saves them); worker threads call it."""
        if touched:
            with self._lock:
                self.packages[dc.id] = touched

    def _activate(self, iccid: str, type_id: str, touched: list[PondPackage], log: CallLog) -> str:
        """Make a package of ``type_id`` the SIM's only ACTIVE package; answers its id. The SIM's
        services are left as they are."""
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
