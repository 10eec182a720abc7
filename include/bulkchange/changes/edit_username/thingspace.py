"""EditUsernameCostCenter on ThingSpace (legacy_behaviour.md 3.9).

* **ThingSpace**: ``CostCenter1`` is the device's cost center (``PUT /devices/costCenter`` with
  ``costCenter``; an empty value sends ``removeCostCenter``, the SDK's DeviceCostCenterRequest), ``ContactName``, ``CostCenter2`` and ``CostCenter3`` are the custom
  fields ``CustomField1..3`` (``PUT /devices/actions/customFields``; assumed mapping). Both answer
  a requestId: the device change waits as PENDING_CARRIER with the request ids and reconciliation
  (``check_waiting``) settles it, writing the DB when every request succeeded. No Rev.io call.
"""
from __future__ import annotations

from typing import Any

from bulkchange.carriers.base import CallLog, CarrierError, TransientError
from bulkchange.changes.base import failed_result
from bulkchange.changes.edit_username.common import EditUsernameBase, device_updates, edit_result
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, EditUsernameRequest
from bulkchange.sanitize import THINGSPACE_CONTACT_NAME_FIELD

# the ContactName's field is personal data: sanitize masks its values wherever they show
THINGSPACE_CUSTOM_FIELDS = {"ContactName": THINGSPACE_CONTACT_NAME_FIELD, "CostCenter2": "CustomField2",
                            "CostCenter3": "CustomField3"}


def _thingspace_put(client: Any, path: str, body: dict, description: str, log: CallLog) -> str:
    answer = client._call("PUT", path, json_body=body, log=log, description=description) or {}
    request_id = answer.get("requestId") if isinstance(answer, dict) else None
    if not request_id:
        raise TransientError(f"{description} answered without a requestId")
    return str(request_id)


class ThingSpaceEditUsername(EditUsernameBase):
    def apply(self, dc: DeviceChange, request: EditUsernameRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        devices = [{"deviceIds": [{"id": device.iccid, "kind": "iccid"}]}]
        account = self.client.account_name
        ids = []
        try:
            if request.CostCenter1 is not None:
                body: dict[str, Any] = {"accountName": account, "devices": devices}
                body.update({"costCenter": request.CostCenter1} if request.CostCenter1 else {"removeCostCenter": True})
                ids.append(_thingspace_put(self.client, "/m2m/v1/devices/costCenter", body,
                                           "ThingSpace Cost Center: ThingSpace API", log))
            custom = [{"key": key, "value": getattr(request, attr)} for attr, key in THINGSPACE_CUSTOM_FIELDS.items()
                      if getattr(request, attr) is not None]
            if custom:
                ids.append(_thingspace_put(self.client, "/m2m/v1/devices/actions/customFields",
                                           {"accountName": account, "devices": devices, "customFieldsToUpdate": custom},
                                           "ThingSpace Custom Fields: ThingSpace API", log))
        except CarrierError as exc:
            result = failed_result(dc, device, exc, "ThingSpace cost center / custom fields")
            if ids:
                result.details += f" (request {ids[0]} was accepted before)"
            return result
        return edit_result(dc, device, DeviceChangeStatus.PENDING_CARRIER,
                       f"ThingSpace accepted request(s) {', '.join(ids)}; waiting for the carrier") \
            .model_copy(update={"carrier_request_id": ",".join(ids)})


def check_waiting(client: Any, w) -> DeviceResult | str:
    """Settle a waiting ThingSpace username / cost center edit (``reconcile.WaitingCheck``): PROCESSED
    with the DB columns when every request succeeded, API_FAILED with the carrier's fault."""
    from bulkchange.reconcile import _fault_for

    ids = [i for i in (w.dc.carrier_request_id or "").split(",") if i]
    if not ids:
        return w.result(DeviceChangeStatus.API_FAILED, "no ThingSpace request id to check")
    pending = 0
    for request_id in ids:
        answer = w.shared.get(request_id, lambda rid=request_id: client.request_status(rid, log=w.log))
        fault = _fault_for(answer, w.dc.iccid)
        status = str(answer.get("status", "")).lower()
        if fault or status == "failure":
            return w.result(DeviceChangeStatus.API_FAILED, f"ThingSpace request {request_id} failed: {fault or 'Failure'}")
        if status != "success":
            pending += 1
    if pending:
        return f"{pending} of {len(ids)} ThingSpace request(s) still pending"
    return w.result(DeviceChangeStatus.PROCESSED, f"ThingSpace request(s) {', '.join(ids)} completed",
                    device_updates=device_updates(w.request))
