"""Archival: DB only, on every carrier (legacy ``usp_DeviceBulkChange_Archival_ArchiveDevices``).

An archived device gets ``IsActive = 0`` and ``IsDeleted = 1`` in ``Device`` (the legacy archive
kept the row, soft-deleted); it then drops out of every device lookup, so a later bulk change or
a second archival finds it "not found". Nothing is called at any carrier or at Rev.io.

Refused per device (``ERROR`` with the reason, the rest of the bulk change proceeds), as the
legacy portal checked, unless the device change's request has ``OverrideValidation: true``:

* an active Rev.io service: a ``Rev_Service`` row for the device with ``IsActive = 1`` and no
  ``DisconnectedDate``;
* usage in the last 30 days: ``Device.LastUsageDate`` within 30 days of now; a device without a
  ``LastUsageDate`` counts as recently used when its ``DataUsageMB`` (the current cycle's usage) is
  above 0. (The legacy portal read a usage table we do not have; this is our assumption.)
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog
from bulkchange.changes.base import ChangeHandler, device_not_found
from bulkchange.db.bulk_devices import active_rev_services, device_usage
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import ArchivalRequest, BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult, utcnow
from bulkchange.rules import RuleError

RECENT_USAGE_DAYS = 30


class Archival(ChangeHandler):
    request_model = ArchivalRequest
    needs_carrier: ClassVar[bool] = False

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        """Usage and active Rev.io services of this bulk change's devices (two queries)."""
        usage = device_usage(conn, bulk)
        services = {dev: [sid for sid, _ in found] for dev, found in active_rev_services(conn, bulk).items()}
        return {"usage": usage, "rev_services": services}

    def validate(self, dc: DeviceChange, request: ArchivalRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk) + " (or already archived)")
        if request.OverrideValidation:
            return
        services = self.context.get("rev_services", {}).get(device.id)
        if services:
            raise RuleError(f"device {device.iccid} has an active Rev.io service "
                            f"({', '.join(str(i) for i in sorted(services))}); disconnect it first or set "
                            f"OverrideValidation")
        problem = recent_usage(*self.context.get("usage", {}).get(device.id, (None, None)),
                               now=self.context.get("now") or utcnow())
        if problem:
            raise RuleError(f"device {device.iccid} {problem}; set OverrideValidation to archive it anyway")

    def apply(self, dc: DeviceChange, request: ArchivalRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        assert device is not None  # validate() ran first
        how = " (validation overridden)" if request.OverrideValidation else ""
        return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, device_id=device.id,
                            iccid=device.iccid, previous_device_status=device.status,
                            device_updates={"IsActive": False, "IsDeleted": True},
                            details=f"device archived{how}")


def recent_usage(last_usage: datetime | None, usage_mb: Any, *, now: datetime) -> str | None:
    if last_usage is not None:
        if last_usage >= now - timedelta(days=RECENT_USAGE_DAYS):
            return f"had usage on {last_usage:%Y-%m-%d}, within the last {RECENT_USAGE_DAYS} days"
        return None
    if usage_mb is not None and usage_mb > 0:
        return f"has {usage_mb} MB of usage this cycle (within the last {RECENT_USAGE_DAYS} days)"
    return None
