"""EditUsernameCostCenter on the Jasper family (legacy_behaviour.md 3.9).

* **Jasper family**: the username is one Edit Device Details field (``PUT`` at
  ``JASPER_DEVICE_USERNAME_UPDATE_PATH``, default ``/devices/{iccid}``; the field is
  ``JASPER_DEVICE_USERNAME_FIELD``, default ``accountCustom1``: Cisco does not say which field holds
  it), then confirmed through the device audit trail (``JASPER_DEVICE_AUDIT_TRAIL_PATH``, default
  ``/devices/{iccid}/auditTrails``): the newest record of that field must show the new value, else
  the device change is API_FAILED ("the audit trail does not show it"). When ``Device.Username``
  already holds the value no Jasper call is made (the carrier would record no change to confirm).
  Then Rev.io: the device's active service (``Rev_Service``, else searched at Rev.io by ICCID, then
  MSISDN) gets its custom fields, found by label (case and spaces ignored): ``CostCenter1``
  (falling back to ``CostCenter``), ``CostCenter2``, ``CostCenter3`` and ``Username`` (when the
  service has that field). Then the DB: ``Device.Username`` / ``CostCenter1..3`` and the local
  ``Rev_Service`` row. A Rev.io failure after the username landed is REV_IO_FAILED (the username is
  still written); a Rev.io failure with nothing applied is API_FAILED.
"""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import failed_result
from bulkchange.changes.edit_username.common import USERNAME_LABEL, EditUsernameBase, device_updates, edit_result
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, EditUsernameRequest
from bulkchange.rules import RuleError
from bulkchange.sanitize import mask_name, register_personal_key
from bulkchange.settings import get_settings


def jasper_settings() -> tuple[str, str, str]:
    """(username field, update path, audit trail path) from the legacy settings' names."""
    settings = get_settings()
    field = settings.jasper_device_username_field
    register_personal_key(field)  # the username is a person's name: masked in logs and mails
    return field, settings.jasper_device_username_update_path, settings.jasper_device_audit_trail_path


class JasperEditUsername(EditUsernameBase):
    def apply(self, dc: DeviceChange, request: EditUsernameRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        field_name, update_path, audit_path = jasper_settings()
        name = request.ContactName
        done: list[str] = []
        applied = False
        if name is not None:
            if self._extra(device).username == name and not verify_first:
                done.append(f"username already {mask_name(name)!r}")
            else:
                try:
                    landed = False
                    if verify_first:
                        landed = str(self.client.get_device(device.iccid, log=log).get(field_name) or "") == name
                    if landed:
                        done.append(f"username {mask_name(name)!r} found at Jasper after an interrupted attempt")
                    else:
                        self.client.edit_username(device.iccid, name, field=field_name, path=update_path, log=log)
                        records = self.client.audit_records(device.iccid, path=audit_path, log=log)
                        newest = next((r for r in records if r.get("field") == field_name), None)
                        if newest is None or str(newest.get("value")) != name:
                            shown = "no change of it" if newest is None else f"{mask_name(str(newest.get('value')))!r}"
                            return edit_result(dc, device, DeviceChangeStatus.API_FAILED,
                                           f"Unsuccessfully updated the username: the Jasper audit trail of "
                                           f"{device.iccid} does not show {field_name} = {mask_name(name)!r} ({shown})")
                        done.append(f"username {mask_name(name)!r} updated at Jasper and confirmed by the audit trail")
                except CarrierError as exc:
                    return failed_result(dc, device, exc, "Update Jasper username")
            applied = True
        try:
            done.append(self._rev_update(dc, device, request, log, username_label=USERNAME_LABEL,
                                         username_required=False, description=False))
        except (CarrierError, RuleError) as exc:
            if applied:
                return edit_result(dc, device, DeviceChangeStatus.REV_IO_FAILED,
                               "; ".join(done) + f"; Rev.io cost centers failed: {exc}",
                               device_updates(request, cost_centers=False))
            return failed_result(dc, device, exc, "Update Rev.io cost centers")
        return edit_result(dc, device, DeviceChangeStatus.PROCESSED, "; ".join(done), device_updates(request))
