"""ChangeICCIDAndIMEI: a device gets a new SIM (ICCID) or new equipment (IMEI) and keeps its line
of service and history (legacy_behaviour.md 3.8).

The identity moves on the same ``Device`` row (``DeviceResult.device_updates`` sets ``ICCID`` or
``IMEI`` once the carrier confirms); ``DeviceStatusHistory`` and ``DeviceBulkChangeLog`` rows
written before keep the old ICCID, and the device change keeps the old ICCID it was requested
for. Validation before any carrier call: the new ICCID follows the ICCID rules (19-20 digits,
Luhn), a new IMEI is 15 digits with a valid Luhn check digit, it differs from the current value,
``OldICCID`` / ``OldIMEI`` (when given) match the device, and the new value belongs to no other
device (any service provider: identifiers are global) nor to another device change of the same
bulk change.

* **Jasper** (no SIM-swap call is published; **assumed** and documented in the client): a new IMEI
  is written to the SIM's ``deviceID`` field (Edit Device Details). A new ICCID must be a SIM of the
  same Jasper account: the new SIM takes over the old SIM's rate plan, communication plan and the
  device's status (and ``deviceID`` = the device's IMEI) through Edit Device Details, then the old
  SIM is set ``DEACTIVATED``. Each step is skipped when the carrier already shows its result, so a
  retried attempt sends nothing twice; the device change is ``PROCESSED`` (and the Device moved)
  only when both SIMs are as they should be.
* **ThingSpace** (``PUT /devices/{serviceType}/actions/deviceId`` with ``deviceIds``,
  ``deviceIdsTo`` and ``change4gOption`` ``ChangeICCID`` / ``ChangeIMEI``): asynchronous; the device
  change waits as ``PENDING_CARRIER`` with the request id and reconciliation settles it from the
  request's outcome for the device.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError, PermanentError
from bulkchange.changes.base import ChangeHandler, failed_result
from bulkchange.changes.status_update import device_not_found
from bulkchange.db import schema as t
from bulkchange.db.repository import DeviceRow, change_table, inventory_table
from bulkchange.models import (
    BulkChange,
    ChangeIdentifierRequest,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
)
from bulkchange.rules import RuleError, iccid_problem, luhn_valid

_CHUNK = 500
# Jasper statuses a SIM taking over a device may be given (the device's own status)
JASPER_TAKEOVER_STATUSES = frozenset({"ACTIVATED", "ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "TEST_READY"})
JASPER_INACTIVE = frozenset({"DEACTIVATED", "RETIRED", "PURGED"})


def imei_problem(imei: str | None) -> str | None:
    value = (imei or "").strip()
    if not (len(value) == 15 and value.isdigit() and luhn_valid(value)):
        return f"IMEI {imei!r} must be 15 digits with a valid Luhn check digit"
    return None


def _requested(raw: str | None) -> tuple[str, str] | None:
    """(kind, new value) of a stored ChangeRequest, or None when it does not parse."""
    try:
        req = ChangeIdentifierRequest.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
    except (ValueError, TypeError):
        return None
    return req.kind, req.new_value


def _chunks(values: list[str]):
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


class _IdentifierHandler(ChangeHandler):
    request_model = ChangeIdentifierRequest

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        """Who already holds each requested new identifier (Device rows, and the first device change
        of this bulk change asking for it), and the IMEI of the bulk change's devices."""
        tbl = change_table(bulk.portal_type)
        first_request: dict[tuple[str, str], int] = {}
        iccids: list[str] = []
        for dc_id, iccid, raw in conn.execute(select(tbl.c.Id, tbl.c.ICCID, tbl.c.ChangeRequest)
                                              .where(tbl.c.BulkChangeId == bulk.id).order_by(tbl.c.Id)):
            if iccid:
                iccids.append(iccid)
            wanted = _requested(raw)
            if wanted and wanted[1]:
                first_request.setdefault(wanted, int(dc_id))
        d = inventory_table(bulk.portal_type)
        taken: dict[tuple[str, str], int] = {}
        for kind, column in (("ICCID", d.c.ICCID), ("IMEI", d.c.IMEI)):
            values = sorted({v for k, v in first_request if k == kind})
            for chunk in _chunks(values):
                for dev_id, value in conn.execute(select(d.c.Id, column).where(
                        column.in_(chunk), d.c.IsDeleted == False)):  # noqa: E712
                    taken.setdefault((kind, value), int(dev_id))
        imeis: dict[str, str | None] = {}
        for chunk in _chunks(sorted(set(iccids))):
            for iccid, imei in conn.execute(select(d.c.ICCID, d.c.IMEI).where(
                    d.c.ICCID.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
                    d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)):  # noqa: E712
                imeis[iccid] = imei
        return {"first_request": first_request, "taken": taken, "imeis": imeis}

    def device_imei(self, device: DeviceRow) -> str | None:
        return (self.context.get("imeis") or {}).get(device.iccid)

    def validate(self, dc: DeviceChange, request: ChangeIdentifierRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        kind, new = request.kind, request.new_value
        if kind == "ICCID":
            problem = iccid_problem(new)
            if problem:
                raise RuleError(f"NewICCID: {problem}")
            if request.OldICCID and request.OldICCID.strip() != device.iccid:
                raise RuleError(f"OldICCID {request.OldICCID!r} is not the device's ICCID {device.iccid}")
            if new == device.iccid:
                raise RuleError(f"NewICCID {new} is already the device's ICCID")
        else:
            problem = imei_problem(new)
            if problem:
                raise RuleError(f"NewIMEI: {problem}")
            current = self.device_imei(device)
            if request.OldIMEI and request.OldIMEI.strip() != (current or ""):
                raise RuleError(f"OldIMEI {request.OldIMEI!r} is not the device's IMEI {current!r}")
            if new == current:
                raise RuleError(f"NewIMEI {new} is already the device's IMEI")
        holder = (self.context.get("taken") or {}).get((kind, new))
        if holder is not None and holder != device.id:
            raise RuleError(f"New{kind} {new} already belongs to another device; an {kind} is moved only to a "
                            "device that has none")
        first = (self.context.get("first_request") or {}).get((kind, new))
        if first is not None and first != dc.id:
            raise RuleError(f"New{kind} {new} is also requested by device change {first} of this bulk change")

    @staticmethod
    def moved(dc: DeviceChange, device: DeviceRow, request: ChangeIdentifierRequest, details: str,
              **kw: Any) -> DeviceResult:
        return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details=details,
                            device_id=device.id, iccid=device.iccid, previous_device_status=device.status,
                            device_updates={request.kind: request.new_value}, **kw)


class JasperChangeIdentifier(_IdentifierHandler):
    """Jasper family: IMEI -> ``deviceID``; ICCID -> the new SIM takes over, the old SIM is deactivated."""

    def apply(self, dc: DeviceChange, request: ChangeIdentifierRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None
        if request.kind == "IMEI":
            return self._imei(dc, request, device, verify_first, log)
        return self._iccid(dc, request, device, log)

    def _imei(self, dc, request, device, verify_first, log) -> DeviceResult:
        new = request.new_value
        field = self.client.EQUIPMENT_ID_FIELD
        if verify_first:
            try:
                current = self.client.get_device(device.iccid, log=log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Get Jasper device before retry")
            if str(current.get(field) or "") == new:
                return self.moved(dc, device, request, f"IMEI {new} confirmed at the carrier after an "
                                                       "interrupted attempt")
        try:
            self.client.set_equipment_imei(device.iccid, new, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Update Jasper IMEI to {new}")
        return self.moved(dc, device, request, f"IMEI changed to {new} (Jasper {field})")

    def _iccid(self, dc, request, device, log) -> DeviceResult:
        new = request.new_value
        # Every step reads the carrier first, so a retried attempt only sends what is missing.
        try:
            old_sim = self.client.get_device(device.iccid, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Get Jasper SIM {device.iccid}")
        try:
            new_sim = self.client.get_device(new, log=log)
        except PermanentError as exc:
            return failed_result(dc, device, exc, f"New SIM {new} is not in the Jasper account")
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Get Jasper SIM {new}")
        status = (device.status or "").upper()
        if status not in JASPER_TAKEOVER_STATUSES:
            status = str(old_sim.get("status") or "").upper()
        wanted: dict[str, Any] = {"ratePlan": old_sim.get("ratePlan") or device.carrier_rate_plan,
                                  "communicationPlan": old_sim.get("communicationPlan") or device.communication_plan,
                                  "status": status if status in JASPER_TAKEOVER_STATUSES else None,
                                  self.client.EQUIPMENT_ID_FIELD: self.device_imei(device)}
        changes = {k: v for k, v in wanted.items() if v and new_sim.get(k) != v}
        if changes:
            try:
                self.client.edit_device(new, changes, log=log,
                                        description=f"Move device to new SIM {new}: Jasper API")
            except CarrierError as exc:
                return failed_result(dc, device, exc, f"New SIM {new} taking over {device.iccid}")
        if str(old_sim.get("status") or "").upper() not in JASPER_INACTIVE:
            try:
                self.client.update_status(device.iccid, "DEACTIVATED", log=log)
            except CarrierError as exc:
                result = failed_result(dc, device, exc, f"Deactivate old SIM {device.iccid}")
                result.details += (f" (new SIM {new} has taken over; the device stays on {device.iccid} in AMOP "
                                   "until the old SIM is deactivated: retry the device)")
                return result
        return self.moved(dc, device, request,
                          f"ICCID changed to {new}: the new SIM took over ({', '.join(sorted(changes)) or 'nothing to copy'})"
                          f", old SIM {device.iccid} deactivated", carrier_rate_plan=wanted["ratePlan"])


class ThingSpaceChangeIdentifier(_IdentifierHandler):
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
    from bulkchange.reconcile import _fault_for

    request: ChangeIdentifierRequest = w.request
    request_id = w.dc.carrier_request_id
    answer = w.shared.get(request_id, lambda: client.request_status(request_id, log=w.log))
    fault = _fault_for(answer, w.dc.iccid)
    status = str(answer.get("status", "")).lower()
    if fault or status == "failure":
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"ThingSpace {request.kind} change to {request.new_value} (request {request_id}) failed: "
                        f"{fault or 'Failure'}")
    if status == "success":
        return w.result(DeviceChangeStatus.PROCESSED, device_updates={request.kind: request.new_value},
                        details=f"{request.kind} changed to {request.new_value} (request {request_id})")
    return "identifier change request still pending"
