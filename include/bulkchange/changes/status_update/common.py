"""What every StatusUpdate handler shares: the validate/apply opening and the result builders.

``validate`` refuses a device that is not in the tenant's inventory and a transition the carrier's
rules refuse (``rules.check_transition``); a device still to move then goes through the carrier's
own checks (``validate_move``). ``apply`` answers PROCESSED without a carrier call when the device is
at the target already; otherwise the carrier module's ``move`` does the work.
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog
from bulkchange.changes.base import ChangeHandler, device_not_found
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest
from bulkchange.rules import RuleError, TransitionCheck, check_transition


def result_fields(dc: DeviceChange, device: DeviceRow) -> dict[str, Any]:
    """The fields every result of a device's status change carries."""
    return dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid,
                previous_device_status=device.status)


def processed(dc: DeviceChange, device: DeviceRow, target: str, details: str, **fields: Any) -> DeviceResult:
    """The device is at ``target`` at the carrier."""
    return DeviceResult(status=DeviceChangeStatus.PROCESSED, details=details, new_device_status=target,
                        **result_fields(dc, device), **fields)


def waiting(dc: DeviceChange, device: DeviceRow, status: DeviceChangeStatus, details: str,
            **fields: Any) -> DeviceResult:
    """The carrier finishes later: the device change waits (PENDING_CARRIER / PENDING_ACTIVATION)."""
    return DeviceResult(status=status, details=details, **result_fields(dc, device), **fields)


def failed(dc: DeviceChange, device: DeviceRow, details: str,
           status: DeviceChangeStatus = DeviceChangeStatus.API_FAILED, **fields: Any) -> DeviceResult:
    """A refusal with its reason (a carrier exception goes through ``changes.base.failed_result``)."""
    return DeviceResult(status=status, details=details, **result_fields(dc, device), **fields)


class StatusUpdateHandler(ChangeHandler):
    """A StatusUpdate on one carrier family: subclasses implement ``move`` (and ``validate_move`` when
    the carrier needs more than an allowed transition)."""

    request_model = StatusUpdateRequest

    def transition(self, device: DeviceRow, request: StatusUpdateRequest) -> TransitionCheck:
        """The target status on this carrier and whether the device is there already (RuleError when
        the carrier's rules refuse the move)."""
        return check_transition(self.bulk.integration, device.status, request.UpdateStatus,
                                request.IsIgnoreCurrentStatus)

    def validate(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        check = self.transition(device, request)
        if not check.already_there:
            self.validate_move(dc, request, device, check.target)

    def validate_move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str) -> None:
        """The carrier's own checks of a device that has to move to ``target``; raises RuleError."""

    def apply(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None  # validate() ran first
        check = self.transition(device, request)
        if check.already_there:
            return processed(dc, device, check.target, f"already {check.target}; no carrier call needed")
        return self.move(dc, request, device, check.target, verify_first=verify_first, log=log)

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        """The carrier work moving a device that is not at ``target`` yet."""
        raise NotImplementedError
