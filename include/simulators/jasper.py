"""Cisco IoT Control Center (Jasper) REST API simulator; API root ``/jasper/rws/api/v1``.

Shapes follow ``carrier_apis.md`` section 1; every rule, its public source and the test that checks
it are listed in ``include/simulators/contracts/jasper.md``. Endpoints:

* ``GET  /echo/{message}``                      -> ``{"message": message}`` (``/echo/hello``)
* ``GET  /rateplans?pageNumber=&pageSize=&fields=`` -> ``{"ratePlans": [...], "pageNumber", "lastPage"}``
* ``GET  /devices?modifiedSince=&status=&accountId=&pageSize=&pageNumber=`` (Search Devices)
* ``GET  /devices/{iccid}?fields=``             (Get Device Details)
* ``PUT  /devices/{iccid}``                     (Edit Device Details) -> ``{"iccid": iccid}``
* ``GET  /devices/{iccid}/auditTrails?daysOfHistory=&pageSize=&pageNumber=`` (Get Device Audit History)
* anything else under the API root             -> 404 in Cisco's error shape

Auth: ``Authorization: Basic base64(username:apiKey)`` against ``accounts`` (default ``demo`` /
``demo-api-key``); the username is the account the rate and concurrency limits apply to.

Strict like Control Center (published error codes, see ``ERR``): an unknown rate plan (10000013) or
communication plan (10000014) of the account, a return from a post-activation status to a
pre-activation one (10000029), unrecognised body fields or query parameters (10000028), an unknown
ICCID (20000001), a body that is not JSON (10000023), the rate limit (40000029).

**Assumed** (not in Cisco's public docs; each stricter choice has a knob in ``JasperKnobs``):

* custom field names ``accountCustom1`` .. ``accountCustom10`` (on the device record and editable);
* the audit-trail list key ``deviceAuditTrails`` and its record fields ``field, priorValue, value,
  effectiveDate, status ("Executed"), user, timestamp``; one record per changed field;
* the error codes marked assumed in ``ERR``;
* PURGED is terminal, RETIRED and REPLACED may only become RETIRED/PURGED (knob
  ``enforce_terminal_statuses``); setting the current status again is a no-op;
* a JSON body must be sent as ``application/json`` (else 415; knob ``require_json_content_type``);
* a date-time (``effectiveDate``, ``modifiedSince``) must carry its offset (``Z`` or ``+hh:mm``),
  a naive one is refused (knob ``require_date_offset``); a date-only ``effectiveDate`` equal to
  today (UTC) means "now";
* date format ``yyyy-MM-ddTHH:mm:ss.SSSZ`` (UTC) for every date field, not only audit timestamps;
* a scheduled edit (future ``effectiveDate``) is validated at request time, applied lazily when its
  time comes (re-checking the transition), and only then appears in the audit trail;
* ``fields`` selection always answers ``iccid`` (devices) / ``name`` (rate plans) too;
* the rate plan and communication plan lists are the account's (one enterprise account per simulator).
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
# Control Center refuses a return to a pre-activation state once a SIM is past activation
# (10000029, published); which statuses are "pre-activation" follows Cisco's SIM life cycle.
PRE_ACTIVATION = frozenset({"INVENTORY", "TEST_READY", "ACTIVATION_READY"})
POST_ACTIVATION = frozenset({"ACTIVATED", "DEACTIVATED", "RETIRED", "PURGED", "REPLACED"})
# Assumed (Cisco's full matrix is not public), knob ``enforce_terminal_statuses``: from-status ->
# the only statuses it may change to.
TERMINAL_TRANSITIONS: dict[str, frozenset[str]] = {
    "PURGED": frozenset({"PURGED"}),
    "RETIRED": frozenset({"RETIRED", "PURGED"}),
    "REPLACED": frozenset({"REPLACED", "RETIRED", "PURGED"}),
}

CUSTOM_FIELDS = tuple(f"accountCustom{i}" for i in range(1, 11))
EDITABLE = ("status", "ratePlan", "communicationPlan", "customer", "deviceID", "modemID",
            "overageLimitOverride") + CUSTOM_FIELDS
EDITABLE_SET = frozenset(EDITABLE)
EDIT_BODY_FIELDS = EDITABLE_SET | {"effectiveDate"}
OVERAGE = frozenset({"DEFAULT", "TEMPORARY_OVERRIDE", "PERMANENT_OVERRIDE"})
DEVICE_FIELDS = ("iccid", "imsi", "msisdn", "imei", "status", "ratePlan", "communicationPlan", "customer",
                 "endConsumerId", "dateActivated", "dateUpdated", "dateShipped", "accountId", "fixedIPAddress",
                 "deviceID", "modemID", "overageLimitOverride") + CUSTOM_FIELDS
SEARCH_FIELDS = ("iccid", "status", "ratePlan", "communicationPlan")
RATE_PLAN_FIELDS = ("name", "dataMB", "baseRate")
MAX_SCHEDULE_DAYS = 180
DAY = 86400.0

ERR = {  # errorCode strings
    # published (Cisco Control Center REST API error codes; contracts/jasper.md)
    "credentials": "10000001",
    "modified_since": "10000003",
    "bad_rate_plan": "10000013",
    "bad_comm_plan": "10000014",
    "bad_json": "10000023",
    "unknown_param": "10000028",
    "pre_activation": "10000029",
    "not_found": "20000001",
    "rate_limit": "40000029",
    # assumed (no public code found; chosen not to collide with a published one)
    "nothing_to_edit": "10000004",
    "bad_paging": "10000006",
    "bad_date": "10000007",
    "bad_status": "10000024",
    "bad_value": "10000024",
    "transition": "10000025",
    "bad_overage": "10000026",
    "bad_effective_date": "10000027",
}


def transition_refusal(current: str, target: str, *, terminal: bool = True) -> tuple[str, str] | None:
    """(message, errorCode) when Control Center refuses ``current -> target``, else None.
    ``terminal``: also the assumed end-of-life rules (``TERMINAL_TRANSITIONS``)."""
    if current == target:
        return None
    if current in POST_ACTIVATION and target in PRE_ACTIVATION:
        return (f"Status change from {current} to {target} is not allowed: a SIM cannot return to a "
                "pre-activation state", ERR["pre_activation"])
    if terminal and target not in TERMINAL_TRANSITIONS.get(current, frozenset(STATUSES)):
        return f"Status change from {current} to {target} is not allowed", ERR["transition"]
    return None


DEFAULT_RATE_PLANS = [{"name": "IOT-SUSPEND-0", "dataMB": 0, "baseRate": 0.5},
                      {"name": "IOT-SUSPEND-500", "dataMB": 500, "baseRate": 1.0},
                      {"name": "IOT-1GB", "dataMB": 1024, "baseRate": 4.0}]
DEFAULT_COMMUNICATION_PLANS = [{"name": "COMM-1"}, {"name": "IOT-COMM"}]


def jasper_ts(epoch: float | None = None) -> str:
    """``yyyy-MM-ddTHH:mm:ss.SSSZ`` in UTC."""
    epoch = time.time() if epoch is None else epoch
    dt = datetime.fromtimestamp(epoch, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str, *, require_offset: bool = False) -> tuple[float, bool]:
    """(epoch, date_only) for an ISO-8601 date (``yyyy-MM-dd``) or date-time with an offset (``Z``,
    ``+hh:mm``, ``+hhmm``; the offset is honoured, not read as UTC). A naive date-time means UTC
    unless ``require_offset``, which refuses it. Raises ValueError."""
    s = str(value).strip()
    if "T" in s and " " in s:  # an unencoded '+' in a query string arrives as a space
        s = s.replace(" ", "+")
    if s.endswith("Z") or s.endswith("z"):
        s = s[:-1] + "+00:00"
    if len(s) == 10:
        d = date.fromisoformat(s)
        return datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp(), True
    if "T" not in s:
        raise ValueError(f"not an ISO-8601 date-time: {value!r}")
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        if require_offset:
            raise ValueError(f"date-time without an offset: {value!r}")
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
    validate_rate_plans: bool = Field(True, description="refuse edits naming a rate plan the account does not "
                                      "have (10000013)")
    validate_communication_plans: bool = Field(True, description="refuse edits naming a communication plan the "
                                               "account does not have (10000014)")
    # the knobs below switch off assumed (unpublished) rules; on by default: the stricter choice
    enforce_terminal_statuses: bool = Field(True, description="PURGED is terminal, RETIRED/REPLACED only to "
                                            "RETIRED/PURGED (assumed)")
    require_json_content_type: bool = Field(True, description="a JSON body must be sent as application/json, "
                                            "else 415 (assumed)")
    require_date_offset: bool = Field(True, description="date-times must carry Z or an offset (assumed)")


class JasperSimulator(SimulatedCarrier):
    name = "jasper"
    prefix = "/jasper"
    api_root = ROOT
    knobs_model = JasperKnobs
    rate_limit_message = ("license has exceeded the rate limit", ERR["rate_limit"])
    concurrency_message = ("license has exceeded the rate limit: only one active API call at a time is allowed",
                           ERR["rate_limit"])

    def __init__(self, accounts: dict[str, str] | None = None, rate_plans: list[dict] | None = None,
                 communication_plans: list[dict | str] | None = None, **knobs: Any):
        self._base_rate_plans = [dict(p) for p in (rate_plans or DEFAULT_RATE_PLANS)]
        self.rate_plans = [dict(p) for p in self._base_rate_plans]
        self._base_comm_plans = _named(communication_plans or DEFAULT_COMMUNICATION_PLANS)
        self.communication_plans = [dict(p) for p in self._base_comm_plans]
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
        self.communication_plans = [dict(p) for p in self._base_comm_plans]

    def bad_json(self):
        return self.error(400, "Request body is not valid JSON", ERR["bad_json"])

    def content_type_error(self, request: Request):
        # Assumed (stricter): Control Center's REST API is JSON-only; a body in another content type
        # is refused, not sniffed. Knob ``require_json_content_type``.
        if not self.knobs.require_json_content_type:
            return None
        return self.media_type_refusal(request, message="Content type '{shown}' not supported; send {wanted}")

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
            self._only_params(call, ())
            return {"message": call.path_params["message"]}

        @self.route("GET", "/rateplans")
        def rateplans(call: Call):
            return self._rate_plans(call)

        @self.route("GET", "/devices")
        def search(call: Call):
            return self._search(call)

        @self.route("GET", "/devices/{iccid}")
        def get_device(call: Call):
            self._only_params(call, ("fields",))
            device = _public(self._device(call.iccid))
            wanted = self._fields(call, DEVICE_FIELDS, always="iccid")
            return {k: device.get(k) for k in wanted} if wanted else device

        @self.route("PUT", "/devices/{iccid}")
        def edit_device(call: Call):
            self._only_params(call, ())
            return self._edit(call)

        @self.route("GET", "/devices/{iccid}/auditTrails")
        def audit_trails(call: Call):
            return self._audit(call)

        # Registered last: any other path or method under the API root is Control Center's 404 in its
        # own error shape (assumed message, no published code), not the web framework's.
        @self.route("GET", "/{rest:path}", name="jasper:unknown_get")
        @self.route("PUT", "/{rest:path}", name="jasper:unknown_put")
        @self.route("POST", "/{rest:path}", name="jasper:unknown_post")
        @self.route("PATCH", "/{rest:path}", name="jasper:unknown_patch")
        @self.route("DELETE", "/{rest:path}", name="jasper:unknown_delete")
        def unknown_route(call: Call):
            raise self.error(404, f"Resource not found - no {call.method} {call.path}", None)

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

        @router.get("/communicationplans")
        async def get_comm_plans():
            return {"communicationPlans": self.communication_plans}

        @router.put("/communicationplans")
        async def put_comm_plans(request: Request):
            plans = await request.json()
            if isinstance(plans, dict):
                plans = plans.get("communicationPlans")
            if not isinstance(plans, list) or not all(
                    isinstance(p, str) and p or isinstance(p, dict) and p.get("name") for p in plans):
                return JSONResponse({"error": 'body must be [{"name"}, ...] or ["name", ...]'}, status_code=400)
            with self.lock:
                self.communication_plans = _named(plans)
            return {"communicationPlans": self.communication_plans}

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

    def _only_params(self, call: Call, allowed: tuple[str, ...]) -> None:
        unknown = sorted(k for k in call.query.keys() if k not in allowed)
        if unknown:
            raise self.error(400, f"Unrecognized parameter(s): {', '.join(unknown)}", ERR["unknown_param"])

    def _fields(self, call: Call, known, *, always: str) -> list[str] | None:
        """The ``fields`` selection (comma-separated), ``always`` first; None without one."""
        raw = call.q("fields")
        if raw is None:
            return None
        names = [f.strip() for f in raw.split(",") if f.strip()]
        unknown = sorted({f for f in names if f not in known})
        if unknown or not names:
            raise self.error(400, f"Unrecognized field(s) in fields: {', '.join(unknown) or '(empty)'}",
                             ERR["unknown_param"])
        return [always] + [f for f in dict.fromkeys(names) if f != always]

    def _rate_plans(self, call: Call):
        self._only_params(call, ("pageNumber", "pageSize", "fields"))
        size, page = self._page_params(call)
        known = list(RATE_PLAN_FIELDS) + sorted({k for p in self.rate_plans for k in p} - set(RATE_PLAN_FIELDS))
        wanted = self._fields(call, known, always="name")
        start = (page - 1) * size
        chunk = self.rate_plans[start:start + size]
        plans = [{k: p.get(k) for k in wanted} if wanted else dict(p) for p in chunk]
        return {"ratePlans": plans, "pageNumber": page, "lastPage": start + size >= len(self.rate_plans)}

    def _transition_refusal(self, current: str, target: str) -> tuple[str, str] | None:
        return transition_refusal(current, target, terminal=self.knobs.enforce_terminal_statuses)

    def _edit(self, call: Call):
        iccid = call.iccid
        dev = self._device(iccid)
        body = call.body
        if not isinstance(body, dict):
            raise self.error(400, "At least one device field to edit is required.", ERR["nothing_to_edit"])
        unknown = sorted(k for k in body if k not in EDIT_BODY_FIELDS)
        if unknown:
            raise self.error(400, f"Unrecognized parameter(s): {', '.join(unknown)}", ERR["unknown_param"])
        changes = {k: v for k, v in body.items() if k in EDITABLE_SET}
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
            refusal = self._transition_refusal(dev["status"], target)
            if refusal:
                raise self.error(400, *refusal)
        if "overageLimitOverride" in changes and changes["overageLimitOverride"] not in OVERAGE:
            raise self.error(400, "Invalid overageLimitOverride", ERR["bad_overage"])
        if "ratePlan" in changes and self.knobs.validate_rate_plans:
            if changes["ratePlan"] not in {p.get("name") for p in self.rate_plans}:
                raise self.error(400, f"Invalid rate plan: {changes['ratePlan']!r} is not a rate plan of the account",
                                 ERR["bad_rate_plan"])
        if "communicationPlan" in changes and self.knobs.validate_communication_plans:
            if changes["communicationPlan"] not in {p.get("name") for p in self.communication_plans}:
                raise self.error(400, f"Invalid communication plan: {changes['communicationPlan']!r} is not a "
                                      "communication plan of the account", ERR["bad_comm_plan"])
        now = time.time()
        effective = body.get("effectiveDate")
        if effective not in (None, ""):
            try:
                if not isinstance(effective, str):
                    raise TypeError(effective)
                when, date_only = parse_iso(effective, require_offset=self.knobs.require_date_offset)
            except (ValueError, TypeError):
                raise self.error(400, "Invalid effectiveDate: use yyyy-MM-dd or yyyy-MM-ddTHH:mm:ss.SSS with Z or "
                                      "an offset (+hh:mm)", ERR["bad_effective_date"]) from None
            today = datetime.fromtimestamp(now, timezone.utc).date()
            if date_only and datetime.fromtimestamp(when, timezone.utc).date() == today:
                pass  # "today" = immediately
            elif when <= now or when > now + MAX_SCHEDULE_DAYS * DAY:
                raise self.error(400, f"effectiveDate must be in the future and at most {MAX_SCHEDULE_DAYS} days "
                                      "ahead", ERR["bad_effective_date"])
            else:
                self._schedule_edit(iccid, changes, call.account or "", when, now)
                return {"iccid": iccid}
        self._apply(dev, changes, call.account or "", now, jasper_ts(now))
        return {"iccid": iccid}

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
            if target and self._transition_refusal(dev["status"], target):
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
        self._only_params(call, ("modifiedSince", "status", "accountId", "pageSize", "pageNumber"))
        modified_since = call.q("modifiedSince")
        if not modified_since:
            raise self.error(400, "ModifiedSince is required.", ERR["modified_since"])
        try:
            since, _ = parse_iso(modified_since, require_offset=self.knobs.require_date_offset)
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
        self._only_params(call, ("daysOfHistory", "pageSize", "pageNumber"))
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


def _named(plans: list) -> list[dict]:
    return [{"name": p} if isinstance(p, str) else dict(p) for p in plans]


def _public(device: dict) -> dict:
    return {k: v for k, v in device.items() if not k.startswith("_")}
