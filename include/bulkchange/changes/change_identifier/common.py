"""ChangeICCIDAndIMEI: a device gets a new SIM (ICCID) or new equipment (IMEI) and keeps its line
of service and history (legacy_behaviour.md 3.8). One module per carrier family (jasper,
thingspace, telegence); this module holds the validation they share.

The identity moves on the same ``Device`` row (``DeviceResult.device_updates`` sets ``ICCID`` or
``IMEI`` once the carrier confirms); ``DeviceStatusHistory`` and ``DeviceBulkChangeLog`` rows
written before keep the old ICCID, and the device change keeps the old ICCID it was requested
for. Validation before any carrier call: the new ICCID follows the ICCID rules (19-20 digits,
Luhn), a new IMEI is 15 digits with a valid Luhn check digit, it differs from the current value,
``OldICCID`` / ``OldIMEI`` (when given) match the device, and the new value belongs to no other
device (any service provider: identifiers are global) nor to another device change of the same
bulk change. The legacy rule for a known identifier (legacy_behaviour.md section 4): a new ICCID
held only by a spare SIM of the same service provider and tenant (status unknown / inventory, see
``db.sim_swap``) is not "taken": the swap goes ahead and, once the carrier confirms it, the spare's
row is retired; any other holder is refused with the legacy's "ICCID: <iccid> already exists.".

After a confirmed swap, the legacy's follow-up step: with ``AddCustomerRatePlan`` the device also
gets the request's ``CustomerRatePlan`` / ``CustomerRatePool`` (``settled_updates``), in the same
transaction as its new identifier.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.changes.base import ChangeHandler, device_not_found
from bulkchange.db.inventory import DeviceRow
from bulkchange.db.sim_swap import (
    change_requests_in_order,
    device_imeis,
    identifier_holders,
    retire_taken_over_spares,
)
from bulkchange.models import (
    BulkChange,
    ChangeIdentifierRequest,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
)
from bulkchange.rules import RuleError, iccid_problem, luhn_valid


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


class IdentifierHandler(ChangeHandler):
    request_model = ChangeIdentifierRequest

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        """Who already holds each requested new identifier (Device rows, and the first device change
        of this bulk change asking for it), and the IMEI of the bulk change's devices."""
        first_request: dict[tuple[str, str], int] = {}
        iccids: list[str] = []
        for dc_id, iccid, raw in change_requests_in_order(conn, bulk):
            if iccid:
                iccids.append(iccid)
            wanted = _requested(raw)
            if wanted and wanted[1]:
                first_request.setdefault(wanted, dc_id)
        holders: dict[tuple[str, str], list[tuple[int, bool]]] = {}
        for kind in ("ICCID", "IMEI"):
            found = identifier_holders(conn, bulk, kind, [v for k, v in first_request if k == kind])
            holders.update({(kind, value): rows for value, rows in found.items()})
        imeis = device_imeis(conn, bulk, sorted(set(iccids)))
        return {"first_request": first_request, "holders": holders, "imeis": imeis}

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
        others = [spare for dev_id, spare in (self.context.get("holders") or {}).get((kind, new), [])
                  if dev_id != device.id]
        if others and not (kind == "ICCID" and all(others)):
            raise RuleError(f"{kind}: {new} already exists. (only a spare SIM of this service provider's "
                            "inventory, status unknown or inventory, may be taken over)")
        first = (self.context.get("first_request") or {}).get((kind, new))
        if first is not None and first != dc.id:
            raise RuleError(f"New{kind} {new} is also requested by device change {first} of this bulk change")

    @staticmethod
    def moved(dc: DeviceChange, device: DeviceRow, request: ChangeIdentifierRequest, details: str,
              **kw: Any) -> DeviceResult:
        updates, follow_up = settled_updates(request)
        return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, details=details + follow_up,
                            device_id=device.id, iccid=device.iccid, previous_device_status=device.status,
                            device_updates=updates, **kw)

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        record_settled(conn, self.bulk, results)


def settled_updates(request: ChangeIdentifierRequest) -> tuple[dict[str, Any], str]:
    """The device's columns once the carrier confirmed the change (its new identifier and, the legacy
    follow-up, the customer rate plan / pool asked with AddCustomerRatePlan) and the words for it."""
    updates: dict[str, Any] = {request.kind: request.new_value}
    said = []
    if request.CustomerRatePlan is not None:
        updates["CustomerRatePlanId"] = request.CustomerRatePlan
        said.append(f"customer rate plan {request.CustomerRatePlan}")
    if request.CustomerRatePool is not None:
        updates["CustomerPoolId"] = request.CustomerRatePool
        said.append(f"customer rate pool {request.CustomerRatePool}")
    return updates, (f"; {' and '.join(said)} set" if said else "")


def record_settled(conn: Connection, bulk: BulkChange, results: list[DeviceResult]) -> None:
    """In the transaction recording confirmed swaps: retire the spare rows whose ICCID a device took."""
    retire_taken_over_spares(conn, bulk, [(r.device_id, r.device_updates["ICCID"]) for r in results
                                          if r.status == DeviceChangeStatus.PROCESSED and r.device_id is not None
                                          and r.device_updates.get("ICCID")])
