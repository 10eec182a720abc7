"""EditUsernameCostCenter (legacy_behaviour.md 3.9, seeds/004): a device's username and cost centers.

Each device change carries its own ``ContactName`` and ``CostCenter1..3`` (the legacy code applied
the first row's values to every device). A field left out is not changed.
One module per carrier family (jasper, telegence, thingspace); this module holds the shared
context, validation and Rev.io update.

**Retries.** Every step reads before it writes: the Rev.io patch only carries the fields whose
value differs (a retried device whose Rev.io service is already up to date is not patched again),
an interrupted Jasper or Telegence device is read at the carrier first and not edited again when
the value is there. ThingSpace edits set values, so sending one again is harmless.

**Notification.** Legacy had a "Username Update Report" email (never actually called). Here the
outbox queues one ``username`` notification when an EditUsernameCostCenter bulk change reaches a
final status (``outbox.record_status_change``), and ``notify.dispatch`` mails
``notify.username_report_email`` (the devices and their new values) to the summary recipients.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, PermanentError
from bulkchange.carriers.revio import field_index
from bulkchange.changes.base import ChangeHandler, device_not_found
from bulkchange.db import username_changes as db
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import (
    BulkChange,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    EditUsernameRequest,
)
from bulkchange.rules import RuleError

COST_CENTER_LABELS = {"CostCenter1": ("CostCenter1", "CostCenter"), "CostCenter2": ("CostCenter2",),
                      "CostCenter3": ("CostCenter3",)}
USERNAME_LABEL = "Username"
PUSH_SETTING = "PushUsernameUpdate"


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
        extras: dict[str, DeviceExtra] = {}
        by_id: dict[int, DeviceExtra] = {}
        for r in db.current_usernames(conn, bulk):
            extra = DeviceExtra(r.Username, {"CostCenter1": r.CostCenter1, "CostCenter2": r.CostCenter2,
                                             "CostCenter3": r.CostCenter3})
            extras[r.ICCID] = by_id[int(r.Id)] = extra
        for device_id, service_id in db.active_rev_services(conn, bulk):
            if device_id in by_id:
                by_id[device_id].rev_service_id = service_id  # the newest wins
        raw = db.service_provider_settings(conn, bulk.service_provider_id)
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
                # the description holds the ContactName here: labelled so the scrubber masks it
                labelled.append({**ops[-1], "field": "ContactName"})
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
        groups: dict[tuple[str, ...], list[dict]] = {}
        # by the results' ids, not over rev_rows: the batch records groups while its threads still add
        for dc_id in sorted(done):
            if dc_id not in self.rev_rows:
                continue
            service_id, columns = self.rev_rows[dc_id]
            if columns:
                groups.setdefault(tuple(sorted(columns)), []).append(
                    {"s_id": service_id, **{f"v_{c}": columns[c] for c in columns}})
        for cols, rows in groups.items():
            db.update_rev_service_columns(conn, cols, rows)


def edit_result(dc: DeviceChange, device: DeviceRow, status: DeviceChangeStatus, details: str,
            updates: dict | None = None) -> DeviceResult:
    return DeviceResult(device_change_id=dc.id, status=status, details=details, device_id=device.id,
                        iccid=device.iccid, previous_device_status=device.status, device_updates=updates or {})
