"""EditUsernameCostCenter (legacy_behaviour.md 3.9, seeds/004): a device's username and cost centers.

Each device change carries its own ``ContactName`` and ``CostCenter1..3`` (the legacy code applied
the first row's values to every device). A field left out is not changed.

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
* **Telegence**: the Rev.io service (required) is read and patched according to the service
  provider's setting ``PushUsernameUpdate`` (``ServiceProvider.Settings`` JSON; legacy tenant
  option 43): ``USERNAME`` (default) -> the ``Username`` custom field, ``SERVICE_DESCRIPTION`` ->
  the service's root ``description``, ``BOTH`` -> both; cost centers as above. Then the line's
  ``contactName`` characteristic (``PATCH`` of the line by its MSISDN), then the DB.
* **ThingSpace**: ``CostCenter1`` is the device's cost center (``PUT /devices/costCenter`` with
  ``costCenter``; an empty value sends ``removeCostCenter``, the SDK's DeviceCostCenterRequest), ``ContactName``, ``CostCenter2`` and ``CostCenter3`` are the custom
  fields ``CustomField1..3`` (``PUT /devices/actions/customFields``; assumed mapping). Both answer
  a requestId: the device change waits as PENDING_CARRIER with the request ids and reconciliation
  (``check_waiting``) settles it, writing the DB when every request succeeded. No Rev.io call.

**Retries.** Every step reads before it writes: the Rev.io patch only carries the fields whose
value differs (a retried device whose Rev.io service is already up to date is not patched again),
an interrupted Jasper or Telegence device is read at the carrier first and not edited again when
the value is there. ThingSpace edits set values, so sending one again is harmless.

**Notification.** Legacy had a "Username Update Report" email (never actually called). Here the
outbox queues one ``username`` notification when an EditUsernameCostCenter bulk change reaches a
final status (``repository.record_status_change``), and ``notify.dispatch`` mails
``notify.username_report_email`` (the devices and their new values) to the summary recipients.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError, PermanentError, TransientError
from bulkchange.carriers.revio import field_index
from bulkchange.changes.base import ChangeHandler, failed_result
from bulkchange.changes.status_update import device_not_found
from bulkchange.db import repository as repo
from bulkchange.db import schema as t
from bulkchange.db.repository import DeviceRow
from bulkchange.models import (
    BulkChange,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    EditUsernameRequest,
)
from bulkchange.rules import RuleError
from bulkchange.sanitize import mask_name, register_personal_key

log = logging.getLogger(__name__)

COST_CENTER_LABELS = {"CostCenter1": ("CostCenter1", "CostCenter"), "CostCenter2": ("CostCenter2",),
                      "CostCenter3": ("CostCenter3",)}
USERNAME_LABEL = "Username"
PUSH_SETTING = "PushUsernameUpdate"
PUSH_MODES = ("USERNAME", "SERVICE_DESCRIPTION", "BOTH")
THINGSPACE_CUSTOM_FIELDS = {"ContactName": "CustomField1", "CostCenter2": "CustomField2", "CostCenter3": "CustomField3"}


def jasper_settings() -> tuple[str, str, str]:
    """(username field, update path, audit trail path) from the legacy settings' names."""
    field = os.environ.get("JASPER_DEVICE_USERNAME_FIELD") or "accountCustom1"
    register_personal_key(field)  # the username is a person's name: masked in logs and mails
    return (field,
            os.environ.get("JASPER_DEVICE_USERNAME_UPDATE_PATH") or "/devices/{iccid}",
            os.environ.get("JASPER_DEVICE_AUDIT_TRAIL_PATH") or "/devices/{iccid}/auditTrails")


@dataclass
class DeviceExtra:
    """What the DB knows of one device beyond DeviceRow: current values and its Rev.io service."""

    username: str | None = None
    cost_centers: dict[str, str | None] = field(default_factory=dict)
    rev_service_id: int | None = None


def device_updates(request: EditUsernameRequest, *, username: bool = True, cost_centers: bool = True) -> dict:
    out: dict[str, Any] = {}
    if username and request.ContactName is not None:
        out["Username"] = request.ContactName
    if cost_centers:
        out.update(request.cost_centers())
    return out


class EditUsernameBase(ChangeHandler):
    request_model = EditUsernameRequest
    needs_rev_service = False  # Telegence: the Rev.io service is the point of the change

    def __init__(self, bulk: BulkChange, client: Any, context: dict[str, Any]):
        super().__init__(bulk, client, context)
        self._lock = threading.Lock()
        self.rev_rows: dict[int, tuple[int, dict]] = {}  # device change id -> (Rev.io service id, columns)

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        tbl = repo.change_table(bulk.portal_type)
        d, s, sp = repo.inventory_table(bulk.portal_type), t.rev_service, t.service_provider
        iccids = select(tbl.c.ICCID).where(tbl.c.BulkChangeId == bulk.id)
        extras: dict[str, DeviceExtra] = {}
        by_id: dict[int, DeviceExtra] = {}
        rows = conn.execute(select(d.c.Id, d.c.ICCID, d.c.Username, d.c.CostCenter1, d.c.CostCenter2, d.c.CostCenter3)
                            .where(d.c.ICCID.in_(iccids), d.c.ServiceProviderId == bulk.service_provider_id,
                                   d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False))  # noqa: E712
        for r in rows:
            extra = DeviceExtra(r.Username, {"CostCenter1": r.CostCenter1, "CostCenter2": r.CostCenter2,
                                             "CostCenter3": r.CostCenter3})
            extras[r.ICCID] = by_id[int(r.Id)] = extra
        device_ids = select(d.c.Id).where(d.c.ICCID.in_(iccids), d.c.ServiceProviderId == bulk.service_provider_id,
                                          d.c.TenantId == bulk.tenant_id)
        for r in conn.execute(select(s.c.DeviceId, s.c.ServiceId).where(
                s.c.DeviceId.in_(device_ids), s.c.IsActive == True, s.c.DisconnectedDate.is_(None))  # noqa: E712
                .order_by(s.c.Id)):
            if int(r.DeviceId) in by_id:
                by_id[int(r.DeviceId)].rev_service_id = int(r.ServiceId)  # the newest wins
        raw = conn.execute(select(sp.c.Settings).where(sp.c.Id == bulk.service_provider_id)).scalar()
        try:
            settings = json.loads(raw) if raw else {}
        except ValueError:
            settings = {}
        mode = str((settings or {}).get(PUSH_SETTING) or "USERNAME").strip().upper()
        return {"extras": extras, "push_mode": mode}

    # -- validation ------------------------------------------------------------------------------
    def validate(self, dc: DeviceChange, request: EditUsernameRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        if request.ContactName is None and not request.cost_centers():
            raise RuleError("EditUsernameCostCenter needs ContactName or CostCenter1..3: the request sets none")

    def _extra(self, device: DeviceRow) -> DeviceExtra:
        return self.context.get("extras", {}).get(device.iccid) or DeviceExtra()

    # -- Rev.io ----------------------------------------------------------------------------------
    def _rev_service(self, device: DeviceRow, dc: DeviceChange, log: CallLog) -> dict | None:
        revio = self.revio_client
        known = self._extra(device).rev_service_id
        if known:
            return revio.get_service(known, log=log)
        for key, value in (("number2", device.iccid), ("number", device.msisdn)):
            if not value:
                continue
            live = [s for s in revio.find_services(log=log, **{key: value}) if not s.get("disconnected_date")]
            if live:
                return live[-1]
        return None

    def _rev_update(self, dc: DeviceChange, device: DeviceRow, request: EditUsernameRequest, log: CallLog, *,
                    username_label: str | None, username_required: bool, description: bool) -> str:
        """Patch the device's Rev.io service; returns what was done. Raises CarrierError / RuleError."""
        wanted: list[tuple[tuple[str, ...], Any, bool]] = [
            (COST_CENTER_LABELS[k], v, True) for k, v in request.cost_centers().items()]
        if request.ContactName is not None and username_label:
            wanted.append(((username_label,), request.ContactName, username_required))
        root = {"description": request.ContactName} if description and request.ContactName is not None else {}
        if not wanted and not root:
            return "no Rev.io field to update"
        if self.revio_client is None and not root and not any(required for _, _, required in wanted):
            return "no Rev.io connection; no Rev.io field required"
        if self.revio_client is None:
            raise PermanentError(f"Rev.io not updated: {self.revio_problem or 'no Rev.io connection'}")
        service = self._rev_service(device, dc, log)
        if service is None:
            if not any(required for _, _, required in wanted) and not root:
                return "no Rev.io service; no Rev.io field to update"
            raise PermanentError(f"no active Rev.io service found for ICCID {device.iccid}"
                                 f"{f' / MSISDN {device.msisdn}' if device.msisdn else ''}")
        service_id = service.get("service_id") or service.get("id")
        ops, missing, labelled = [], [], []
        for labels, value, required in wanted:
            index = field_index(service, *labels)
            if index is None:
                if required:
                    missing.append(" / ".join(labels))
                continue
            if (service["fields"][index] or {}).get("value") != value:
                ops.append({"op": "replace", "path": f"/fields/{index}/value", "value": value})
                # the log names the field: the scrubber masks a personal one (Username) by its label
                labelled.append({**ops[-1], "field": (service["fields"][index] or {}).get("label") or labels[0]})
        if missing:
            raise PermanentError(f"Rev.io service {service_id} has no custom field labelled {', '.join(missing)}")
        for key, value in root.items():
            if service.get(key) != value:
                ops.append({"op": "replace", "path": f"/{key}", "value": value})
                labelled.append(ops[-1])
        columns = {k: v for k, v in device_updates(request).items()}
        with self._lock:
            self.rev_rows[dc.id] = (int(service_id), columns)
        if not ops:
            return f"Rev.io service {service_id} already up to date"
        answer = self.revio_client.patch_service(service_id, ops, log=log, log_operations=labelled)
        if isinstance(answer, dict) and answer.get("ok") is False:
            raise PermanentError(f"Rev.io refused the update: {answer.get('message')}")
        return f"Rev.io service {service_id}: {len(ops)} field(s) updated"

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        """Keep the local Rev_Service copy in step."""
        done = {r.device_change_id for r in results if r.status == DeviceChangeStatus.PROCESSED}
        s = t.rev_service
        groups: dict[tuple[str, ...], list[dict]] = {}
        for dc_id, (service_id, columns) in self.rev_rows.items():
            if dc_id in done and columns:
                groups.setdefault(tuple(sorted(columns)), []).append(
                    {"s_id": service_id, **{f"v_{c}": columns[c] for c in columns}})
        for cols, rows in groups.items():
            conn.execute(update(s).where(s.c.ServiceId == bindparam("s_id"))
                         .values(**{c: bindparam(f"v_{c}") for c in cols}), rows)


def _result(dc: DeviceChange, device: DeviceRow, status: DeviceChangeStatus, details: str,
            updates: dict | None = None) -> DeviceResult:
    return DeviceResult(device_change_id=dc.id, status=status, details=details, device_id=device.id,
                        iccid=device.iccid, previous_device_status=device.status, device_updates=updates or {})


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
                            return _result(dc, device, DeviceChangeStatus.API_FAILED,
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
                return _result(dc, device, DeviceChangeStatus.REV_IO_FAILED,
                               "; ".join(done) + f"; Rev.io cost centers failed: {exc}",
                               device_updates(request, cost_centers=False))
            return failed_result(dc, device, exc, "Update Rev.io cost centers")
        return _result(dc, device, DeviceChangeStatus.PROCESSED, "; ".join(done), device_updates(request))


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
        return _result(dc, device, DeviceChangeStatus.PROCESSED, "; ".join(done), device_updates(request))


# -- ThingSpace ------------------------------------------------------------------------------------
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
        return _result(dc, device, DeviceChangeStatus.PENDING_CARRIER,
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
