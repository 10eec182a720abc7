"""StatusUpdate on Teal eSIMs (legacy_behaviour.md 3.1, Teal, with its defects fixed).

Target statuses are Teal's ``deviceStatus`` values (``rules.STATUS_ALIASES``): ONLINE or WAITING
are reached by ``POST /esims/enable``, STOPPED by ``POST /esims/disable`` (legacy always called
disable). Devices are addressed by EID: the device change's ``EID``, else ``Device.EID``; a
device with neither is rejected before any call.

Teal finishes every operation later: the device change waits as PENDING_CARRIER with our
``requestId`` as its CarrierRequestId, and ``reconcile.settle_bulk`` (``check_waiting`` below)
reads ``/operation-result`` once per request: still processing -> keep waiting; the device's entry
succeeded -> PROCESSED; the entry failed -> the eSIM is read, and when it already has the target status
(Teal refuses enabling an enabled eSIM, disabling a stopped one) PROCESSED with Teal's words, else
API_FAILED with Teal's ``errorMessage`` (legacy took errors for success). ``bulk_change_process``'s ``wait_for_carrier`` sensor polls these in
reschedule mode and ``device_status_reconcile`` settles whatever is left, so no worker waits.

Devices needing the same operation go in one call of up to 100 EIDs, logged on the group's first
device change (like ThingSpace). A device left PROCESSING by an interrupted attempt is read at
the carrier first (``/esims/info``) and not sent again when it already has the target status.
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.carriers.teal import MAX_ENTRIES
from bulkchange.changes.base import failed_result
from bulkchange.changes.status_update.common import StatusUpdateHandler, processed, waiting
from bulkchange.changes.teal_common import TealHandler, operation_entry
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest


def teal_operation(target: str) -> str:
    return "disable" if target == "STOPPED" else "enable"


def reached(esim: dict, target: str) -> bool:
    """Does this eSIM (``/esims/info``) already have the target status? Enabled = ONLINE or WAITING."""
    status = str(esim.get("deviceStatus") or "").upper()
    if target == "STOPPED":
        return status == "STOPPED"
    return status in ("ONLINE", "WAITING")


class TealStatusUpdate(TealHandler, StatusUpdateHandler):
    group_size = MAX_ENTRIES

    def validate_move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str) -> None:
        self._require_eid(dc, device)

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        eid = self._eid(dc, device) or ""
        if verify_first:
            try:
                esim = self.client.get_esim(eid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Teal eSIM before retry")
            if reached(esim, target):
                return processed(dc, device, target, f"eSIM {eid} is {esim.get('deviceStatus')} at the carrier "
                                                     "after an interrupted attempt")
        operation = teal_operation(target)
        try:
            request_id = self.client.operation(operation, [eid], log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Teal {operation} of eSIM {eid}")
        return waiting(dc, device, DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=request_id,
                       details=f"Teal accepted {operation} of eSIM {eid} (request {request_id}); "
                               "waiting for the carrier")

    def apply_group(self, entries, *, log: CallLog) -> list[DeviceResult]:
        results: dict[int, DeviceResult] = {}
        groups: dict[str, list] = {}
        for dc, request, device in entries:
            check = self.transition(device, request)
            if check.already_there:
                results[dc.id] = self.apply(dc, request, device, verify_first=False, log=log)
            else:
                groups.setdefault(teal_operation(check.target), []).append((dc, device))
        first_id = entries[0][0].id
        for operation, members in groups.items():
            for start in range(0, len(members), MAX_ENTRIES):
                chunk = members[start:start + MAX_ENTRIES]
                eids = [self._eid(dc, device) or "" for dc, device in chunk]
                try:
                    request_id = self.client.operation(operation, eids, log=log)
                except CarrierError as exc:
                    for dc, device in chunk:
                        results[dc.id] = failed_result(dc, device, exc, f"Teal {operation} of {len(eids)} eSIMs")
                    continue
                for (dc, device), eid in zip(chunk, eids):
                    results[dc.id] = waiting(
                        dc, device, DeviceChangeStatus.PENDING_CARRIER, carrier_request_id=request_id,
                        details=(f"Teal accepted {operation} of eSIM {eid} with {len(eids) - 1} others (request "
                                 f"{request_id}, logged on device change {first_id}); waiting for the carrier"))
        return [results[dc.id] for dc, _, _ in entries]


def check_waiting(client: Any, w) -> DeviceResult | str:
    """Settle one device change waiting on a Teal operation (``reconcile.WaitingCheck``)."""
    entry = operation_entry(client, w, processing="Teal operation still processing",
                            missing="without a result for this eSIM")
    if not isinstance(entry, dict):
        return entry
    request_id = w.dc.carrier_request_id
    eid = entry.get("eid") or w.dc.eid
    if entry.get("success") is True:
        return w.result(DeviceChangeStatus.PROCESSED, new_device_status=w.target,
                        details=f"Teal operation {request_id} done: eSIM {eid} is {w.target}")
    words = entry.get("errorMessage") or "no reason given"
    if eid and w.target:
        # Teal refuses to enable an enabled eSIM or disable a stopped one (contracts/teal.md rule 12):
        # when the eSIM is at the target, the refusal says the change is there (issue #12: the carrier's
        # state decides, not our copy)
        esim = client.get_esim(eid, log=w.log)
        if reached(esim, w.target):
            return w.result(DeviceChangeStatus.PROCESSED, new_device_status=w.target,
                            details=f"Teal operation {request_id} refused for eSIM {eid} ({words}), the eSIM already "
                                    f"being {esim.get('deviceStatus')} at the carrier")
    return w.result(DeviceChangeStatus.API_FAILED, f"Teal operation {request_id} failed for eSIM {eid}: {words}")
