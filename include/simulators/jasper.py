"""Cisco IoT Control Center (Jasper) REST API simulator, root ``/jasper/rws/api/v1``.

Shapes follow carrier_apis.md section 1. Assumed where Cisco's public docs stop (marked there
UNVERIFIED): the 404 error code 10000010, the invalid-status code 10000024, the audit-trail
list key ``deviceAuditTrails`` and its record fields (field, priorValue, value, effectiveDate,
status, user, timestamp), custom field names ``accountCustom1..10``, and the transition table.
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime, timedelta, timezone
from typing import Any

from fastapi import Request

from simulators.core import SimError, SimulatedCarrier

ROOT = "/rws/api/v1"
STATUSES = {"ACTIVATED", "ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "PURGED", "REPLACED", "RETIRED",
            "TEST_READY"}
# Target -> statuses it may NOT come from (everything else is allowed): PURGED is terminal,
# a RETIRED SIM can only be purged.
FORBIDDEN_FROM = {s: {"PURGED"} | ({"RETIRED"} if s != "PURGED" else set()) for s in STATUSES}
EDITABLE = {"status", "ratePlan", "communicationPlan", "customer", "deviceID", "modemID", "overageLimitOverride",
            "effectiveDate"} | {f"accountCustom{i}" for i in range(1, 11)}
OVERAGE = {"DEFAULT", "TEMPORARY_OVERRIDE", "PERMANENT_OVERRIDE"}
DEVICE_FIELDS = ("iccid", "imsi", "msisdn", "imei", "status", "ratePlan", "communicationPlan", "customer",
                 "endConsumerId", "dateActivated", "dateUpdated", "dateShipped", "accountId", "fixedIPAddress",
                 "deviceID", "modemID", "overageLimitOverride")


def _ts(dt: datetime | None = None) -> str:
    dt = dt or datetime.now(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class JasperSimulator(SimulatedCarrier):
    name = "jasper"
    prefix = "/jasper"

    def __init__(self, accounts: dict[str, str] | None = None, **knobs: Any):
        self.accounts = dict(accounts or {"demo": "demo-api-key"})
        self.audit: dict[str, list[dict]] = {}
        self.scheduled_edits: list[dict] = []
        self.rate_plans = [{"name": "IOT-SUSPEND-0", "dataMB": 0, "baseRate": 0.5},
                           {"name": "IOT-SUSPEND-500", "dataMB": 500, "baseRate": 1.0},
                           {"name": "IOT-1GB", "dataMB": 1024, "baseRate": 4.0}]
        super().__init__(**knobs)

    def reset_state(self) -> None:
        self.audit.clear()
        self.scheduled_edits.clear()

    def normalize_device(self, device: dict) -> dict:
        now = _ts()
        out = {f: None for f in DEVICE_FIELDS}
        out.update({"status": "ACTIVATED", "dateUpdated": now, "dateShipped": now, "accountId": "100001"})
        out.update(device)
        if out["status"] not in STATUSES:
            raise ValueError(f"bad seed status {out['status']}")
        return out

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        if not header.lower().startswith("basic "):
            raise self.error(401, "Full authentication is required to access this resource")
        try:
            user, _, key = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise self.error(401, "Invalid credentials", "10000001") from None
        if self.accounts.get(user) != key or not key:
            raise self.error(401, "Invalid credentials", "10000001")
        return user

    def _device(self, iccid: str) -> dict:
        dev = self.devices.get(iccid)
        if dev is None:
            raise self.error(404, "Resource not found - Invalid iccid.", "10000010")
        return dev

    def add_routes(self) -> None:
        r = self.router

        @r.get(ROOT + "/echo/hello")
        async def echo(request: Request):
            return await self.handle(request, None, lambda account, body: (200, {"message": "hello"}))

        @r.get(ROOT + "/rateplans")
        async def rateplans(request: Request):
            return await self.handle(request, None, lambda a, b: (200, {"ratePlans": self.rate_plans}))

        @r.get(ROOT + "/devices/{iccid}")
        async def get_device(iccid: str, request: Request):
            return await self.handle(request, iccid, lambda a, b: (200, dict(self._device(iccid))))

        @r.put(ROOT + "/devices/{iccid}")
        async def edit_device(iccid: str, request: Request):
            return await self.handle(request, iccid, lambda account, body: self._edit(iccid, account, body))

        @r.get(ROOT + "/devices/{iccid}/auditTrails")
        async def audit(iccid: str, request: Request, daysOfHistory: int = 30, pageSize: int = 50,
                        pageNumber: int = 1):
            return await self.handle(request, iccid, lambda a, b: self._audit(iccid, daysOfHistory, pageSize,
                                                                              pageNumber))

        @r.get(ROOT + "/devices")
        async def search(request: Request, modifiedSince: str | None = None, status: str | None = None,
                         accountId: str | None = None, pageSize: int = 50, pageNumber: int = 1):
            return await self.handle(request, None, lambda a, b: self._search(modifiedSince, status, accountId,
                                                                              pageSize, pageNumber))

    # -- behaviour ------------------------------------------------------------------------------
    def _edit(self, iccid: str, account: str, body: Any) -> tuple[int, dict]:
        dev = self._device(iccid)
        if not isinstance(body, dict) or not (set(body) & (EDITABLE - {"effectiveDate"})):
            raise self.error(400, "At least one device field to edit is required.", "10000004")
        unknown = set(body) - EDITABLE
        if unknown:
            raise self.error(400, f"Unknown field(s): {', '.join(sorted(unknown))}", "10000005")
        if "status" in body:
            target = str(body["status"])
            if target not in STATUSES:
                raise self.error(400, "Invalid status", "10000024")
            if dev["status"] in FORBIDDEN_FROM[target] and dev["status"] != target:
                raise self.error(400, f"Status change from {dev['status']} to {target} is not allowed", "10000025")
        if "overageLimitOverride" in body and body["overageLimitOverride"] not in OVERAGE:
            raise self.error(400, "Invalid overageLimitOverride", "10000026")
        changes = {k: v for k, v in body.items() if k != "effectiveDate"}
        effective = body.get("effectiveDate")
        if effective:
            try:
                when = datetime.fromisoformat(str(effective).replace("Z", "+00:00"))
            except ValueError:
                raise self.error(400, "Invalid effectiveDate", "10000027") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            now = datetime.now(timezone.utc)
            if when <= now or when > now + timedelta(days=180):
                raise self.error(400, "effectiveDate must be in the future and within 180 days", "10000028")
            self.scheduled_edits.append({"iccid": iccid, "effectiveDate": _ts(when), "changes": changes,
                                         "user": account})
            return 200, {"iccid": iccid}
        now_ts = _ts()
        trail = self.audit.setdefault(iccid, [])
        for field, value in changes.items():
            if dev.get(field) == value:
                continue
            trail.append({"field": field, "priorValue": dev.get(field), "value": value, "effectiveDate": now_ts,
                          "status": "Executed", "user": account, "timestamp": now_ts})
            if field == "status" and value == "ACTIVATED" and not dev.get("dateActivated"):
                dev["dateActivated"] = now_ts
            dev[field] = value
        dev["dateUpdated"] = now_ts
        return 200, {"iccid": iccid}

    def _audit(self, iccid: str, days: int, page_size: int, page: int) -> tuple[int, dict]:
        self._device(iccid)
        if not 1 <= days <= 365 or not 1 <= page_size <= 50 or page < 1:
            raise self.error(400, "Invalid paging or daysOfHistory", "10000006")
        records = list(reversed(self.audit.get(iccid, [])))  # newest first
        start = (page - 1) * page_size
        chunk = records[start:start + page_size]
        return 200, {"iccid": iccid, "timestamp": _ts(), "pageNumber": page,
                     "lastPage": start + page_size >= len(records), "deviceAuditTrails": chunk}

    def _search(self, modified_since: str | None, status: str | None, account_id: str | None, page_size: int,
                page: int) -> tuple[int, dict]:
        if not modified_since:
            raise self.error(400, "ModifiedSince is required.", "10000003")
        if not 1 <= page_size <= 50 or page < 1:
            raise self.error(400, "Invalid pageSize or pageNumber", "10000006")
        since = modified_since.replace("+00:00", "Z")
        devices = [d for d in self.devices.values() if (d["dateUpdated"] or "") >= since[:23]
                   and (status is None or d["status"] == status)
                   and (account_id is None or d["accountId"] == account_id)]
        devices.sort(key=lambda d: d["dateUpdated"] or "")
        start = (page - 1) * page_size
        chunk = devices[start:start + page_size]
        return 200, {"devices": [{"iccid": d["iccid"], "status": d["status"], "ratePlan": d["ratePlan"],
                                  "communicationPlan": d["communicationPlan"]} for d in chunk],
                     "pageNumber": page, "lastPage": start + page_size >= len(devices)}
