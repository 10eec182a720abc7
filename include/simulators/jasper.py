"""Cisco IoT Control Center (Jasper) REST API simulator; API root ``/jasper/rws/api/v1``.

Shapes follow ``carrier_apis.md`` section 1. Endpoints:

* ``GET  /echo/{message}``                      -> ``{"message": message}`` (``/echo/hello``)
* ``GET  /rateplans``                           -> ``{"ratePlans": [{"name", "dataMB", "baseRate"}, ...]}``
* ``GET  /devices?modifiedSince=&status=&accountId=&pageSize=&pageNumber=`` (Search Devices)
* ``GET  /devices/{iccid}``                     (Get Device Details)
* ``PUT  /devices/{iccid}``                     (Edit Device Details) -> ``{"iccid": iccid}``
* ``GET  /devices/{iccid}/auditTrails?daysOfHistory=&pageSize=&pageNumber=`` (Get Device Audit History)

Auth: ``Authorization: Basic base64(username:apiKey)`` against ``accounts`` (default ``demo`` /
``demo-api-key``); the username is the account the rate and concurrency limits apply to.

Documented by Cisco (per carrier_apis.md): the status values, the 401 bodies, ``ModifiedSince is
required.`` / ``10000003``, paging limits, the Edit Device Details fields and ``effectiveDate`` (future,
at most 180 days).

**Assumed** (not in Cisco's public docs; marked UNVERIFIED in carrier_apis.md):

* custom field names ``accountCustom1`` .. ``accountCustom10`` (on the device record and editable);
* the audit-trail list key ``deviceAuditTrails`` and its record fields ``field, priorValue, value,
  effectiveDate, status ("Executed"), user, timestamp``; one record per changed field;
* error codes other than 10000001/10000003: see ``ERR`` below (e.g. 404 ``10000010``, invalid status
  ``10000024``); the 429 body reuses the SOAP API's ``400101`` "license has exceeded the rate limit";
* the SIM status transition table ``ALLOWED_TRANSITIONS`` (PURGED is terminal, RETIRED may only
  become PURGED, everything else is free; setting the current status again is a no-op);
* date format ``yyyy-MM-ddTHH:mm:ss.SSSZ`` (UTC) for every date field, not only audit timestamps;
* unknown fields in an edit body are ignored when at least one editable field is present; a
  date-only ``effectiveDate`` equal to today (UTC) means "now";
* a scheduled edit (future ``effectiveDate``) is validated at request time, applied lazily when its
  time comes (re-checking the transition), and only then appears in the audit trail;
* ``GET /rateplans`` answers ``{"ratePlans": [...]}``; with the knob ``validate_rate_plans`` an edit
  naming a rate plan not in that list is refused (400 ``10000030``).
"""
from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import time
from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from simulators.core import Call, Knobs, SimulatedCarrier

ROOT = "/rws/api/v1"
STATUSES = ("ACTIVATED", "ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "PURGED", "REPLACED", "RETIRED",
            "TEST_READY")
# from-status -> statuses it may change to (assumed; Cisco's matrix is not public)
ALLOWED_TRANSITIONS: dict[str, frozenset[str]] = {s: frozenset(STATUSES) for s in STATUSES}
ALLOWED_TRANSITIONS["PURGED"] = frozenset({"PURGED"})
ALLOWED_TRANSITIONS["RETIRED"] = frozenset({"RETIRED", "PURGED"})

CUSTOM_FIELDS = tuple(f"accountCustom{i}" for i in range(1, 11))
EDITABLE = ("status", "ratePlan", "communicationPlan", "customer", "deviceID", "modemID",
            "overageLimitOverride") + CUSTOM_FIELDS
EDITABLE_SET = frozenset(EDITABLE)
OVERAGE = frozenset({"DEFAULT", "TEMPORARY_OVERRIDE", "PERMANENT_OVERRIDE"})
DEVICE_FIELDS = ("iccid", "imsi", "msisdn", "imei", "status", "ratePlan", "communicationPlan", "customer",
                 "endConsumerId", "dateActivated", "dateUpdated", "dateShipped", "accountId", "fixedIPAddress",
                 "deviceID", "modemID", "overageLimitOverride") + CUSTOM_FIELDS
SEARCH_FIELDS = ("iccid", "status", "ratePlan", "communicationPlan")
MAX_SCHEDULE_DAYS = 180
DAY = 86400.0

ERR = {  # errorCode strings; only 10000001 and 10000003 are documented, the rest are assumed
    "credentials": "10000001",
    "bad_json": "10000002",
    "modified_since": "10000003",
    "nothing_to_edit": "10000004",
    "bad_paging": "10000006",
    "bad_date": "10000007",
    "not_found": "10000010",
    "bad_status": "10000024",
    "transition": "10000025",
    "bad_overage": "10000026",
    "bad_effective_date": "10000027",
    "effective_date_range": "10000028",
    "bad_value": "10000029",
    "bad_rate_plan": "10000030",
    "rate_limit": "400101",
}
DEFAULT_RATE_PLANS = [{"name": "IOT-SUSPEND-0", "dataMB": 0, "baseRate": 0.5},
                      {"name": "IOT-SUSPEND-500", "dataMB": 500, "baseRate": 1.0},
                      {"name": "IOT-1GB", "dataMB": 1024, "baseRate": 4.0}]


def jasper_ts(epoch: float | None = None) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC."""
    epoch = time.time() if epoch is None else epoch
    dt = datetime.fromtimestamp(epoch, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> tuple[float, bool]:
    """(epoch, date_only) for an ISO-8601 date or date-time; naive means UTC. Raises ValueError."""
    s = str(value).strip()
    if "T" in s and " " in s:  # an unencoded '+' in a query string arrives as a space
        s = s.replace(" ", "+")
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    if len(s) == 10:
        d = date.fromisoformat(s)
        return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp(), True
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp(), False


class _ModifiedIndex:
    """ICCIDs ordered by dateUpdated, for Search Devices without sorting the inventory per request.

    ``entries`` holds (epoch, seq, iccid) sorted; an update appends a new entry (stale ones are
    skipped while reading and compacted away when they outnumber live ones)."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self.clear()

    def clear(self) -> None:
        self.entries: list[tuple[float, int, str]] = []
        self.current: dict[str, tuple[float, int, str]] = {}

    def set(self, iccid: str, epoch: float) -> None:
        key = (epoch, next(self._seq), iccid)
        self.current[iccid] = key
        if not self.entries or key >= self.entries[-1]:
            self.entries.append(key)
        else:
            bisect.insort(self.entries, key)
        self._maybe_compact()

    def set_many(self, items: list[tuple[str, float]]) -> None:
        for iccid, epoch in items:
            key = (epoch, next(self._seq), iccid)
            self.current[iccid] = key
            self.entries.append(key)
        self.entries.sort()
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if len(self.entries) > 2 * len(self.current) + 1024:
            self.entries = sorted(self.current.values())

    def since(self, epoch: float):
        """Live ICCIDs with dateUpdated >= epoch, oldest first."""
        current = self.current
        for i in range(bisect.bisect_left(self.entries, (epoch,)), len(self.entries)):
            key = self.entries[i]
            if current.get(key[2]) is key:
                yield key[2]


class JasperKnobs(Knobs):
    validate_rate_plans: bool = Field(False, description="refuse edits naming a rate plan not in /rateplans")


class JasperSimulator(SimulatedCarrier):
    name = "jasper"
    prefix = "/jasper"
    api_root = ROOT
    knobs_model = JasperKnobs
    rate_limit_message = ("license has exceeded the rate limit", ERR["rate_limit"])
    concurrency_message = ("license has exceeded the rate limit: only one active API call at a time is allowed",
                           ERR["rate_limit"])

    def __init__(self, accounts: dict[str, str] | None = None, rate_plans: list[dict] | None = None,
                 **knobs: Any):
        self._base_rate_plans = [dict(p) for p in (rate_plans or DEFAULT_RATE_PLANS)]
        self.rate_plans = [dict(p) for p in self._base_rate_plans]
        self.audit: dict[str, list[tuple[float, dict]]] = {}
        self.scheduled_edits: list[dict] = []
        self._index = _ModifiedIndex()
        super().__init__(accounts=accounts if accounts is not None else {"demo": "demo-api-key"}, **knobs)

    # ---------------------------------------------------------------- framework hooks
    def reset_state(self) -> None:
        self.audit.clear()
        self.scheduled_edits.clear()
        self._index.clear()
        self.rate_plans = [dict(p) for p in self._base_rate_plans]

    def bad_json(self):
        return self.error(400, "Request body is not valid JSON", ERR["bad_json"])

    def normalize_device(self, device: dict) -> dict:
        device = super().normalize_device(device)
        now = jasper_ts()
        out: dict[str, Any] = dict.fromkeys(DEVICE_FIELDS)
        out.update({"status": "ACTIVATED", "dateShipped": now, "accountId": "100001",
                    "overageLimitOverride": "DEFAULT"})
        out.update(device)
        if out["status"] not in STATUSES:
            raise ValueError(f"{out['iccid']}: status {out['status']!r} is not one of {', '.join(STATUSES)}")
        if out["dateUpdated"]:
            out["_updated"] = parse_iso(out["dateUpdated"])[0]
        else:
            out["_updated"] = time.time()
            out["dateUpdated"] = jasper_ts(out["_updated"])
        if out["status"] == "ACTIVATED" and not out["dateActivated"]:
            out["dateActivated"] = out["dateUpdated"]
        return out

    def on_devices_seeded(self, devices: list[dict]) -> None:
        self._index.set_many([(d["iccid"], d["_updated"]) for d in devices])
        for d in devices:
            self.audit.pop(d["iccid"], None)

    def control_view(self, device: dict) -> dict:
        return _public(device)

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            raise self.error(401, "Full authentication is required to access this resource")
        try:
            user, sep, key = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise self.error(401, "Invalid credentials", ERR["credentials"]) from None
        if not sep or not key or self.accounts.get(user) != key:
            raise self.error(401, "Invalid credentials", ERR["credentials"])
        return user

    # ---------------------------------------------------------------- routes
    def add_routes(self) -> None:
        @self.route("GET", "/echo/{message}")
        def echo(call: Call):
            return {"message": call.path_params["message"]}

        @self.route("GET", "/rateplans")
        def rateplans(call: Call):
            return {"ratePlans": [dict(p) for p in self.rate_plans]}

        @self.route("GET", "/devices")
        def search(call: Call):
            return self._search(call)

        @self.route("GET", "/devices/{iccid}")
        def get_device(call: Call):
            return _public(self._device(call.iccid))

        @self.route("PUT", "/devices/{iccid}")
        def edit_device(call: Call):
            return self._edit(call)

        @self.route("GET", "/devices/{iccid}/auditTrails")
        def audit_trails(call: Call):
            return self._audit(call)

    def add_control_routes(self, router: APIRouter) -> None:
        @router.get("/rateplans")
        async def get_rate_plans():
            return {"ratePlans": self.rate_plans}

        @router.put("/rateplans")
        async def put_rate_plans(request: Request):
            plans = await request.json()
            if isinstance(plans, dict):
                plans = plans.get("ratePlans")
            if not isinstance(plans, list) or not all(isinstance(p, dict) and p.get("name") for p in plans):
                return JSONResponse({"error": 'body must be [{"name", "dataMB", "baseRate"}, ...]'}, status_code=400)
            with self.lock:
                self.rate_plans = [dict(p) for p in plans]
            return {"ratePlans": self.rate_plans}

        @router.get("/scheduled_edits")
        async def scheduled(iccid: str | None = None):
            self.run_due()
            with self.lock:
                return [dict(e) for e in self.scheduled_edits if iccid is None or e["iccid"] == iccid]

    # ---------------------------------------------------------------- behaviour
    def _device(self, iccid: str | None) -> dict:
        dev = self.devices.get(iccid or "")
        if dev is None:
            raise self.error(404, "Resource not found - Invalid iccid.", ERR["not_found"])
        return dev

    def _edit(self, call: Call):
        iccid = call.iccid
        dev = self._device(iccid)
        body = call.body
        changes = {k: v for k, v in body.items() if k in EDITABLE_SET} if isinstance(body, dict) else {}
        if not changes:
            raise self.error(400, "At least one device field to edit is required.", ERR["nothing_to_edit"])
        for k, v in changes.items():
            if v is not None and not isinstance(v, (str, int, float)) or isinstance(v, bool):
                raise self.error(400, f"Invalid value for {k}", ERR["bad_value"])
            if isinstance(v, (int, float)):
                changes[k] = str(v)
        if "status" in changes:
            target = changes["status"]
            if target not in STATUSES:
                raise self.error(400, "Invalid status", ERR["bad_status"])
            self._check_transition(dev["status"], target)
        if "overageLimitOverride" in changes and changes["overageLimitOverride"] not in OVERAGE:
            raise self.error(400, "Invalid overageLimitOverride", ERR["bad_overage"])
        if "ratePlan" in changes and self.knobs.validate_rate_plans:
            if changes["ratePlan"] not in {p.get("name") for p in self.rate_plans}:
                raise self.error(400, "Invalid rate plan", ERR["bad_rate_plan"])
        now = time.time()
        effective = body.get("effectiveDate")
        if effective not in (None, ""):
            try:
                when, date_only = parse_iso(effective)
            except (ValueError, TypeError):
                raise self.error(400, "Invalid effectiveDate", ERR["bad_effective_date"]) from None
            today = datetime.fromtimestamp(now, timezone.utc).date()
            if date_only and datetime.fromtimestamp(when, timezone.utc).date() == today:
                pass  # "today" = immediately
            elif when <= now or when > now + MAX_SCHEDULE_DAYS * DAY:
                raise self.error(400, f"effectiveDate must be in the future and at most {MAX_SCHEDULE_DAYS} days "
                                      "ahead", ERR["effective_date_range"])
            else:
                self._schedule_edit(iccid, changes, call.account or "", when, now)
                return {"iccid": iccid}
        self._apply(dev, changes, call.account or "", now, jasper_ts(now))
        return {"iccid": iccid}

    def _check_transition(self, current: str, target: str) -> None:
        if target not in ALLOWED_TRANSITIONS.get(current, frozenset(STATUSES)):
            raise self.error(400, f"Status change from {current} to {target} is not allowed", ERR["transition"])

    def _apply(self, dev: dict, changes: dict, user: str, now: float, effective_ts: str) -> int:
        now_ts = jasper_ts(now)
        trail = self.audit.setdefault(dev["iccid"], [])
        changed = 0
        for field_name, value in changes.items():
            prior = dev.get(field_name)
            if prior == value:
                continue
            trail.append((now, {"field": field_name, "priorValue": prior, "value": value,
                                "effectiveDate": effective_ts, "status": "Executed", "user": user,
                                "timestamp": now_ts}))
            if field_name == "status" and value == "ACTIVATED" and not dev.get("dateActivated"):
                dev["dateActivated"] = now_ts
            dev[field_name] = value
            changed += 1
        if changed:
            dev["dateUpdated"] = now_ts
            dev["_updated"] = now
            self._index.set(dev["iccid"], now)
        return changed

    def _schedule_edit(self, iccid: str, changes: dict, user: str, when: float, now: float) -> None:
        record = {"id": len(self.scheduled_edits) + 1, "iccid": iccid, "effectiveDate": jasper_ts(when),
                  "changes": dict(changes), "user": user, "requestedAt": jasper_ts(now), "status": "Pending"}
        self.scheduled_edits.append(record)
        generation = self._generation

        def apply() -> None:
            dev = self.devices.get(iccid)
            if generation != self._generation or dev is None:
                return
            target = changes.get("status")
            if target and target not in ALLOWED_TRANSITIONS.get(dev["status"], frozenset(STATUSES)):
                record["status"] = "Failed"
                return
            self._apply(dev, changes, user, time.time(), record["effectiveDate"])
            record["status"] = "Executed"

        self.schedule_at(when, apply)

    def _page_params(self, call: Call) -> tuple[int, int]:
        size = self.int_param(call, "pageSize", 50, 1, 50, "pageSize must be between 1 and 50", ERR["bad_paging"])
        page = self.int_param(call, "pageNumber", 1, 1, 10 ** 9, "pageNumber must be 1 or more", ERR["bad_paging"])
        return size, page

    def _search(self, call: Call):
        modified_since = call.q("modifiedSince")
        if not modified_since:
            raise self.error(400, "ModifiedSince is required.", ERR["modified_since"])
        try:
            since, _ = parse_iso(modified_since)
        except ValueError:
            raise self.error(400, "Invalid modifiedSince date format.", ERR["bad_date"]) from None
        status = call.q("status") or None
        if status is not None and status not in STATUSES:
            raise self.error(400, "Invalid status", ERR["bad_status"])
        account_id = call.q("accountId") or None
        size, page = self._page_params(call)
        skip = (page - 1) * size
        chunk: list[dict] = []
        more = False
        devices = self.devices
        for iccid in self._index.since(since):
            d = devices.get(iccid)
            if d is None or (status and d["status"] != status) or \
                    (account_id and str(d["accountId"]) != account_id):
                continue
            if skip:
                skip -= 1
            elif len(chunk) < size:
                chunk.append({k: d.get(k) for k in SEARCH_FIELDS})
            else:
                more = True
                break
        return {"devices": chunk, "pageNumber": page, "lastPage": not more}

    def _audit(self, call: Call):
        iccid = call.iccid
        self._device(iccid)
        days = self.int_param(call, "daysOfHistory", 30, 1, 365, "daysOfHistory must be between 1 and 365",
                              ERR["bad_paging"])
        size, page = self._page_params(call)
        cutoff = time.time() - days * DAY
        records = []
        for epoch, rec in reversed(self.audit.get(iccid, ())):  # newest first
            if epoch < cutoff:
                break
            records.append(rec)
        start = (page - 1) * size
        return {"iccid": iccid, "timestamp": jasper_ts(), "pageNumber": page,
                "lastPage": start + size >= len(records),
                "deviceAuditTrails": [dict(r) for r in records[start:start + size]]}


def _public(device: dict) -> dict:
    return {k: v for k, v in device.items() if not k.startswith("_")}
