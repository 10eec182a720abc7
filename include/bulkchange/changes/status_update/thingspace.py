"""StatusUpdate on ThingSpace: every action answers a requestId and completes later
(legacy_behaviour.md 3.1)."""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import failed_result, request_field
from bulkchange.changes.status_update.common import StatusUpdateHandler, processed, waiting
from bulkchange.db.repository import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError
from bulkchange.sanitize import sanitize_text


def thingspace_action(current: str | None, target: str) -> str:
    """The ThingSpace action that moves a line to ``target`` (restore when it is suspended)."""
    if target == "active":
        return "restore" if (current or "").strip().lower() == "suspend" else "activate"
    return {"suspend": "suspend", "deactive": "deactivate"}[target]


# CarrierRequestId of a ThingSpace action whose answer was lost: "unknown:<action>:<epoch seconds>".
# The device change waits (PENDING_*) and bulkchange.reconcile.check_thingspace looks for the
# accepted request (the line's state, its provisioning history) before anything is sent again.
UNKNOWN_PREFIX = "unknown:"


def unknown_outcome_result(dc: DeviceChange, device: DeviceRow, action: str, exc: Exception,
                           group: int = 1) -> DeviceResult:
    import time

    what = f"ThingSpace {action}" + (f" of {group} devices" if group > 1 else "")
    return waiting(dc, device, waiting_status(action),
                   sanitize_text(f"{what}: outcome unknown ({exc}); the carrier is checked for the "
                                 f"request before anything is sent again"),
                   carrier_request_id=f"{UNKNOWN_PREFIX}{action}:{int(time.time())}")


def waiting_status(action: str) -> DeviceChangeStatus:
    """An activation waits for its line (MDN, IP); every other action for its request."""
    return DeviceChangeStatus.PENDING_ACTIVATION if action == "activate" else DeviceChangeStatus.PENDING_CARRIER


def _forced_same_state(request: StatusUpdateRequest, device: DeviceRow, target: str) -> bool:
    """IsIgnoreCurrentStatus on a device our copy shows at the target already: ThingSpace refuses the
    action when the line is there (suspend a suspended line, activate an active one), so the line is read
    first and nothing is sent when the carrier shows it at the target (issue #12: trust the carrier, not
    our copy); when the carrier shows another state the action is sent as asked."""
    return bool(request.IsIgnoreCurrentStatus) and (device.status or "").strip().lower() == target.lower()


class ThingSpaceStatusUpdate(StatusUpdateHandler):
    """ThingSpace: every action answers a requestId at once and completes later.

    Suspend, restore and deactivate wait as PENDING_CARRIER until the request completes;
    activation waits as PENDING_ACTIVATION until the line is active with an MDN and IP. Nothing
    blocks a worker: bulk_change_process polls the short ones in reschedule mode and
    device_status_reconcile settles activations (bulkchange.settle).
    """

    group_size = 200  # devices per action request (the API takes up to 10,000)

    def validate_move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str) -> None:
        if thingspace_action(device.status, target) == "activate":
            if not (request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode")
                    and request_field(request, "mdnZipCode", "ZipCode")):
                raise RuleError("ThingSpace activation needs Request.servicePlan and Request.mdnZipCode")

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        if verify_first or _forced_same_state(request, device, target):
            first = self._read_first(dc, request, device, target, log, "after an interrupted attempt"
                                     if verify_first else "before sending (IsIgnoreCurrentStatus)")
            if first is not None:
                return first
        action = thingspace_action(device.status, target)
        from bulkchange.carriers.thingspace import UnknownOutcome

        try:
            request_id = self.client.action(
                action, [device.iccid], log=log,
                service_plan=request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode"),
                mdn_zip_code=request_field(request, "mdnZipCode", "ZipCode"),
                reason_code=request_field(request, "reasonCode"))
        except UnknownOutcome as exc:
            return unknown_outcome_result(dc, device, action, exc)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"ThingSpace {action}")
        return waiting(dc, device, waiting_status(action),
                       f"ThingSpace accepted {action} (request {request_id}); waiting for the carrier",
                       carrier_request_id=request_id)

    def _read_first(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str,
                    log: CallLog, why: str) -> DeviceResult | None:
        """The line read at the carrier: PROCESSED when it is at ``target`` already, None when the
        action is to be sent, a failed result when the read fails."""
        from bulkchange.carriers.thingspace import device_id, device_state

        try:
            current = self.client.get_device(device.iccid, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Get ThingSpace device {why}")
        if device_state(current) != target:
            return None
        return processed(dc, device, target, f"state {target} confirmed at the carrier {why}; nothing sent",
                         msisdn=device_id(current, "msisdn") or device_id(current, "mdn"),
                         ip_address=current.get("ipAddress"))

    def apply_group(self, entries, *, log: CallLog) -> list[DeviceResult]:
        """Devices that need the same action with the same plan go in one request."""
        results: dict[int, DeviceResult] = {}
        groups: dict[tuple, list] = {}
        for dc, request, device in entries:
            check = self.transition(device, request)
            if check.already_there:
                results[dc.id] = self.apply(dc, request, device, verify_first=False, log=log)
                continue
            if _forced_same_state(request, device, check.target):
                first = self._read_first(dc, request, device, check.target, log,
                                         "before sending (IsIgnoreCurrentStatus)")
                if first is not None:
                    results[dc.id] = first
                    continue
            action = thingspace_action(device.status, check.target)
            key = (action, request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode"),
                   request_field(request, "mdnZipCode", "ZipCode"), request_field(request, "reasonCode"))
            groups.setdefault(key, []).append((dc, request, device))
        first_id = entries[0][0].id
        for (action, plan, zip_code, reason), members in groups.items():
            iccids = [device.iccid for _, _, device in members]
            from bulkchange.carriers.thingspace import UnknownOutcome

            try:
                request_id = self.client.action(action, iccids, service_plan=plan, mdn_zip_code=zip_code,
                                                reason_code=reason, log=log)
            except UnknownOutcome as exc:
                for dc, _, device in members:
                    results[dc.id] = unknown_outcome_result(dc, device, action, exc, len(iccids))
                continue
            except CarrierError as exc:
                for dc, _, device in members:
                    results[dc.id] = failed_result(dc, device, exc, f"ThingSpace {action} of {len(iccids)} devices")
                continue
            for dc, _, device in members:
                results[dc.id] = waiting(
                    dc, device, waiting_status(action), carrier_request_id=request_id,
                    details=(f"ThingSpace accepted {action} of {len(iccids)} devices (request {request_id}, "
                             f"logged on device change {first_id}); waiting for the carrier"))
        return [results[dc.id] for dc, _, _ in entries]
