"""ChangeICCIDAndIMEI on ThingSpace (legacy_behaviour.md 3.8).

* **ThingSpace** (``PUT /devices/{serviceType}/actions/deviceId`` with ``deviceIds``,
  ``deviceIdsTo`` and ``change4gOption`` ``ChangeICCID`` / ``ChangeIMEI``): asynchronous; the device
  change waits as ``PENDING_CARRIER`` with the request id and reconciliation settles it from the
  request's outcome for the device.
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError, PermanentError
from bulkchange.changes.base import failed_result
from bulkchange.changes.change_identifier.common import IdentifierHandler, settled_updates
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import ChangeIdentifierRequest, DeviceChange, DeviceChangeStatus, DeviceResult


class ThingSpaceChangeIdentifier(IdentifierHandler):
    """ThingSpace: one device id change request per device (the API takes one device per request)."""

    def apply(self, dc: DeviceChange, request: ChangeIdentifierRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        from bulkchange.carriers.thingspace import device_id

        kind, new = request.kind, request.new_value
        if verify_first:
            try:
                current = self.client.get_device(new if kind == "ICCID" else device.iccid, log=log)
            except PermanentError:
                current = None  # the new SIM is not on the line yet
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get ThingSpace device before retry")
            if current is not None and device_id(current, kind.lower()) == new:
                return self.moved(dc, device, request, f"{kind} {new} confirmed at the carrier after an "
                                                       "interrupted attempt")
        try:
            request_id = self.client.change_device_id(device.iccid, kind, new, service_plan=request.ServicePlan,
                                                      zip_code=request.ZipCode, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"ThingSpace {kind} change to {new}")
        return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PENDING_CARRIER, device_id=device.id,
                            iccid=device.iccid, previous_device_status=device.status, carrier_request_id=request_id,
                            details=f"ThingSpace accepted the {kind} change to {new} (request {request_id}); "
                                    "waiting for the carrier")


def check_thingspace(client: Any, w: Any) -> DeviceResult | str:
    """The device id change request's outcome; on success the Device's identifier moves."""
    request: ChangeIdentifierRequest = w.request
    request_id = w.dc.carrier_request_id
    status, fault = w.request_outcome(client)  # from the callback when ThingSpace sent one, else polled
    if fault or status == "failure":
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"ThingSpace {request.kind} change to {request.new_value} (request {request_id}) failed: "
                        f"{fault or 'Failure'}")
    if status == "success":
        how = w.report().source if w.report() is not None else f"request {request_id}"
        updates, follow_up = settled_updates(request)
        return w.result(DeviceChangeStatus.PROCESSED, device_updates=updates,
                        details=f"{request.kind} changed to {request.new_value} ({how}){follow_up}")
    return "identifier change request still pending"
