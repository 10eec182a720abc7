"""EditUsernameCostCenter on AT&T Telegence (legacy_behaviour.md 3.9).

* **Telegence**: the Rev.io service (required) is read and patched according to the service
  provider's setting ``PushUsernameUpdate`` (``ServiceProvider.Settings`` JSON; legacy tenant
  option 43): ``USERNAME`` (default) -> the ``Username`` custom field, ``SERVICE_DESCRIPTION`` ->
  the service's root ``description``, ``BOTH`` -> both; cost centers as above. Then the line's
  ``contactName`` characteristic (``PATCH`` of the line by its MSISDN), then the DB.
"""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError, TransientError
from bulkchange.changes.base import failed_result
from bulkchange.changes.edit_username.common import (
    PUSH_SETTING,
    USERNAME_LABEL,
    EditUsernameBase,
    device_updates,
    edit_result,
)
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, EditUsernameRequest
from bulkchange.rules import RuleError
from bulkchange.sanitize import mask_name

PUSH_MODES = ("USERNAME", "SERVICE_DESCRIPTION", "BOTH")


class TelegenceEditUsername(EditUsernameBase):
    def validate(self, dc: DeviceChange, request: EditUsernameRequest, device: DeviceRow | None) -> None:
        super().validate(dc, request, device)
        mode = self.context.get("push_mode", "USERNAME")
        if mode not in PUSH_MODES:
            raise RuleError(f"ServiceProvider setting {PUSH_SETTING} is {mode!r}: expected one of "
                            f"{', '.join(PUSH_MODES)}")
        if request.ContactName is not None and not device.msisdn:
            raise RuleError(f"Telegence contactName needs the line's subscriber number: device {device.iccid} "
                            "has no MSISDN")

    def apply(self, dc: DeviceChange, request: EditUsernameRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        mode = self.context.get("push_mode", "USERNAME")
        try:
            done = [self._rev_update(dc, device, request, log,
                                     username_label=USERNAME_LABEL if mode in ("USERNAME", "BOTH") else None,
                                     username_required=True, description=mode in ("SERVICE_DESCRIPTION", "BOTH"))]
        except (CarrierError, RuleError) as exc:
            return failed_result(dc, device, exc, "Update Rev.io service")
        name = request.ContactName
        if name is not None:
            number = device.msisdn  # the tenant's row (bulkchange.tenancy)
            try:
                from bulkchange.carriers.telegence import characteristic

                there = verify_first and characteristic(self.client.get_service(number, log=log), "contactName") == name
                if not there:
                    answer = self.client.update_service(number, {"contactName": name}, log=log,
                                                        description="Update Telegence contactName: Telegence API")
                    now = characteristic(answer, "contactName")
                    if now is not None and now != name:
                        raise TransientError(f"Telegence answered contactName {now!r}")
                done.append(f"contactName of {number} set to {mask_name(name)!r}")
            except CarrierError as exc:
                failed = failed_result(dc, device, exc, f"Telegence contactName of {number}")
                failed.details = f"{done[0]}; {failed.details}"
                return failed
        return edit_result(dc, device, DeviceChangeStatus.PROCESSED, "; ".join(done), device_updates(request))
