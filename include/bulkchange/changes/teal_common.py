"""What every Teal handler shares: the eSIM's EID (loaded once per batch from the Device table for
device changes that carry none) and the reading of a finished Teal operation for one device change.

Teal addresses eSIMs by EID and finishes every operation later (``/operation-result``): the
StatusUpdate and CarrierRatePlanChange handlers both build on ``TealHandler`` and settle their
waiting device changes through ``operation_entry``.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.teal import PROCESSING, entry_result
from bulkchange.changes.base import ChangeHandler
from bulkchange.db.device_identifiers import inventory_eids
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult
from bulkchange.rules import RuleError


class TealHandler(ChangeHandler):
    """A change on Teal eSIMs, addressed by EID."""

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        """EIDs from the Device table for this bulk change's device changes that carry none."""
        return {"eids": inventory_eids(conn, bulk)}

    def _eid(self, dc: DeviceChange, device: DeviceRow | None) -> str | None:
        # the tenant's device row, never the device change (bulkchange.tenancy)
        return device.eid if device else None

    def _require_eid(self, dc: DeviceChange, device: DeviceRow) -> None:
        """Refuse (RuleError) a device with no EID: Teal cannot address it."""
        if not self._eid(dc, device):
            raise RuleError(f"Teal needs the eSIM's EID: none on the device change or on device {device.iccid}")


def operation_entry(client: Any, w, *, processing: str, missing: str) -> dict | DeviceResult | str:
    """This device change's entry in the result of the Teal operation it waits on (``reconcile.WaitingCheck``).

    The operation result is read once per request (``w.shared``). Answers the entry (a dict), or what
    the checker answers itself: API_FAILED when no requestId was recorded or the finished operation has
    no entry for this eSIM (``missing``: the end of that reason), ``processing`` (still waiting) while
    Teal is still processing. The entry is found by the device change's EID, else by its ICCID, else it
    is the only entry."""
    request_id = w.dc.carrier_request_id
    if not request_id:
        return w.result(DeviceChangeStatus.API_FAILED, "no Teal requestId was recorded for this device change")
    answer = w.shared.get(request_id, lambda: client.operation_result(request_id, log=w.log))
    if answer is PROCESSING:
        return processing
    entries = [e for e in answer.get("entries") or [] if isinstance(e, dict)]
    entry = (entry_result(answer, w.dc.eid) if w.dc.eid else None) or next(
        (e for e in entries if str(e.get("iccid") or "").strip() == w.dc.iccid or len(entries) == 1), None)
    if entry is None:
        return w.result(DeviceChangeStatus.API_FAILED, f"Teal operation {request_id} finished {missing}")
    return entry
