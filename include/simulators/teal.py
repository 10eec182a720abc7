"""Teal (teal.global) Integration API simulator; API root ``/teal/api/v1``.

Shapes follow ``carrier_apis.md`` section 4. Every state-changing call is asynchronous:

* ``POST /esims/enable?requestId=&callbackUrl=`` and ``POST /esims/disable?...`` with
  ``{"entries": [eid, ...]}`` -> ``{"success": true, "requestId"}`` at once; the operation finishes
  ``operation_delay_s`` later (enable: ``deviceStatus`` ONLINE, ``suspended`` false; disable: STOPPED,
  ``suspended`` true);
* ``GET /operation-result?requestId=`` -> while processing HTTP 102 (knob ``processing_status``, see
  below), then ``{"success", "requestId", "operationType", "entries": [{"eid", "iccid", "success",
  "errorMessage"}]}``; 404 for an unknown request id;
* ``GET /esims?limit=&offset=`` (limit at most 100) -> ``{"success": true, "entries": [eSIM, ...],
  "total": n}``; ``GET /esims/info?eid=`` -> the eSIM entry.

eSIM entry fields: ``eid, iccid, imsi, imei, msisdn, deviceName, deviceStatus (ONLINE | WAITING |
STOPPED), suspended, active, planUuid, planName``.

Auth: headers ``ApiKey`` and ``ApiSecret`` against ``accounts`` (default ``demo-teal-key`` /
``demo-teal-secret``); the API key is the account the limits apply to.

Documented (carrier_apis.md): headers, endpoints and bodies above, ``requestId`` (at most 32
characters) and ``callbackUrl`` query parameters, HTTP 102 while processing, per-entry
``success`` / ``errorMessage``, device statuses, the list limit of 100.

**Assumed** (Teal's docs are private):

* HTTP 102 is a bare 1xx *final* response, which some proxies and HTTP stacks do not deliver; uvicorn
  sends it and ``requests`` receives it (status 102, empty body) on loopback. The knob
  ``processing_status=202`` answers ``202 {"success": null, "status": "PROCESSING"}`` instead; clients
  should accept both;
* ``requestId`` is required on enable/disable; re-sending the same requestId with the same entries is
  an idempotent replay (same answer, nothing applied twice); with other entries it is 409;
* at most ``max_entries`` (default 100) EIDs per call; an unknown EID or one listed in
  ``reject_eids`` fails its entry (``success`` false with ``errorMessage``), not the call;
* error bodies ``{"success": false, "errorMessage"}``; no rate limit is documented (the framework's
  knobs apply); callbacks are not sent;
* strict by choice (each switchable; contract: ``contracts/teal.md``): a body field or query parameter
  other than the documented ones is a 400 naming it (``refuse_unknown_fields``); a JSON body must be sent
  as ``application/json`` (else 415, ``require_json_content_type``); a plan uuid the account does not
  have fails its entry (``validate_plans``; the account's plans are ``DEFAULT_PLANS``, the plans of
  seeded eSIMs and ``known_plans``); enabling an eSIM that is already enabled (ONLINE or WAITING) or
  disabling a STOPPED one fails its entry (``refuse_noop_transitions``).
"""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from pydantic import Field, field_validator

from simulators.core import Call, Knobs, SimulatedCarrier

ROOT = "/api/v1"
STATUSES = ("ONLINE", "WAITING", "STOPPED")
DEFAULT_PLANS = ("plan-0001", "plan-0002", "plan-0003")
QUERY_PARAMS = {"operation": frozenset({"requestId", "callbackUrl"}), "esims": frozenset({"limit", "offset"}),
                "info": frozenset({"eid"}), "result": frozenset({"requestId"}), "plans": frozenset()}
ENTRY_FIELDS = ("eid", "iccid", "imsi", "imei", "msisdn", "deviceName", "deviceStatus", "suspended", "active",
                "planUuid", "planName")


class TealKnobs(Knobs):
    operation_delay_s: float = Field(0.5, ge=0, description="an operation finishes after this many seconds")
    processing_status: int = Field(102, description="HTTP status of /operation-result while processing: 102 or 202")
    max_entries: int = Field(100, ge=1, description="EIDs per enable/disable call")
    reject_eids: list[str] = Field(default_factory=list, description="operations on these EIDs fail their entry")
    known_plans: list[str] = Field(default_factory=list, description="plan uuids the account has besides "
                                   "DEFAULT_PLANS and the seeded eSIMs' plans")
    validate_plans: bool = Field(True, description="assigning a plan the account does not have fails the entry "
                                 "(assumed)")
    refuse_unknown_fields: bool = Field(True, description="undocumented body fields or query parameters are "
                                        "refused with 400 (assumed)")
    require_json_content_type: bool = Field(True, description="a JSON body must be sent as application/json, "
                                            "else 415 (assumed)")
    refuse_noop_transitions: bool = Field(True, description="enable of an enabled (ONLINE/WAITING) or disable of "
                                          "a STOPPED eSIM fails its entry (assumed)")

    @field_validator("processing_status")
    @classmethod
    def _processing(cls, v: int) -> int:
        if v not in (102, 202):
            raise ValueError("processing_status must be 102 or 202")
        return v


def make_eid(iccid: str) -> str:
    """A 32-digit EID derived from an ICCID (for seeding)."""
    return ("89049032" + iccid.rjust(24, "0"))[:32]


class TealSimulator(SimulatedCarrier):
    name = "teal"
    prefix = "/teal"
    api_root = ROOT
    knobs_model = TealKnobs

    def __init__(self, accounts: dict[str, str] | None = None, **knobs: Any):
        self.by_eid: dict[str, str] = {}  # EID -> ICCID
        self.operations: dict[str, dict] = {}
        self.plans: list[str] = list(DEFAULT_PLANS)
        super().__init__(accounts=accounts if accounts is not None else {"demo-teal-key": "demo-teal-secret"},
                         **knobs)

    # ---------------------------------------------------------------- framework hooks
    def reset_state(self) -> None:
        self.by_eid.clear()
        self.operations.clear()
        self.plans = list(DEFAULT_PLANS)

    def content_type_error(self, request):
        if not self.knobs.require_json_content_type:
            return None
        return self.media_type_refusal(request)

    def check_query(self, call: Call, kind: str) -> None:
        unknown = sorted(set(call.request.query_params) - QUERY_PARAMS[kind])
        if unknown and self.knobs.refuse_unknown_fields:
            raise self.error(400, f"unrecognized parameter(s): {', '.join(unknown)}")

    def check_fields(self, obj: Any, allowed: set[str], where: str = "") -> None:
        unknown = sorted(set(obj) - allowed) if isinstance(obj, dict) else []
        if unknown and self.knobs.refuse_unknown_fields:
            raise self.error(400, f"unrecognized field(s): {', '.join(where + u for u in unknown)}")

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        body: dict[str, Any] = {"success": False, "errorMessage": message}
        if code is not None:
            body["errorCode"] = code
        return body

    def normalize_device(self, device: dict) -> dict:
        device = super().normalize_device(device)
        status = device.pop("status", None) or device.get("deviceStatus") or "ONLINE"
        if status not in STATUSES:
            raise ValueError(f"{device['iccid']}: deviceStatus {status!r} is not one of {', '.join(STATUSES)}")
        out: dict[str, Any] = dict.fromkeys(ENTRY_FIELDS)
        out.update({"planUuid": "plan-0001", "planName": "Teal Global 1GB"})
        out.update(device)
        out["eid"] = str(out.get("eid") or make_eid(out["iccid"]))
        out["deviceStatus"] = status
        out["suspended"] = status == "STOPPED"
        out["active"] = status != "STOPPED"
        return out

    def on_devices_seeded(self, devices: list[dict]) -> None:
        seeded = {d["iccid"] for d in devices}
        if self.by_eid:
            self.by_eid = {e: i for e, i in self.by_eid.items() if i not in seeded}
        for d in devices:
            self.by_eid[d["eid"]] = d["iccid"]
            if d.get("planUuid") and d["planUuid"] not in self.plans:
                self.plans.append(d["planUuid"])  # an eSIM's plan is one of its account's

    def authenticate(self, request) -> str:
        key = request.headers.get("apikey", "")
        secret = request.headers.get("apisecret", "")
        if not key or not secret:
            raise self.error(401, "ApiKey and ApiSecret headers are required")
        if self.accounts.get(key) != secret:
            raise self.error(401, "Invalid ApiKey or ApiSecret")
        return key

    # ---------------------------------------------------------------- routes
    def add_routes(self) -> None:
        @self.route("POST", "/esims/enable")
        def enable(call: Call):
            return self._operation(call, "ENABLE")

        @self.route("POST", "/esims/disable")
        def disable(call: Call):
            return self._operation(call, "DISABLE")

        @self.route("POST", "/esims/assign-plan")
        def assign_plan(call: Call):
            return self._assign_plan(call)

        @self.route("GET", "/operation-result")
        def operation_result(call: Call):
            return self._result(call)

        @self.route("GET", "/esims")
        def list_esims(call: Call):
            self.check_query(call, "esims")
            limit = self.int_param(call, "limit", 100, 1, 100, "limit must be between 1 and 100")
            offset = self.int_param(call, "offset", 0, 0, 10 ** 9, "offset must be 0 or more")
            iccids = list(self.devices)[offset:offset + limit]
            return {"success": True, "entries": [_public(self.devices[i]) for i in iccids],
                    "total": len(self.devices)}

        @self.route("GET", "/plans")
        def list_plans(call: Call):  # path published (carrier_apis.md section 4); answer shape assumed
            self.check_query(call, "plans")
            return {"success": True, "entries": [{"uuid": p, "name": p} for p in
                                                 sorted(set(self.plans) | set(self.knobs.known_plans))]}

        @self.route("GET", "/esims/info")
        def esim_info(call: Call):
            self.check_query(call, "info")
            eid = call.q("eid") or ""
            iccid = self.by_eid.get(eid)
            if iccid is None or iccid not in self.devices:
                raise self.error(404, f"eSIM {eid} not found")
            call.iccid = iccid
            return _public(self.devices[iccid])

    def add_control_routes(self, router: APIRouter) -> None:
        @router.get("/plans")
        async def get_plans():
            return {"plans": sorted(set(self.plans) | set(self.knobs.known_plans))}

        @router.get("/operations")
        async def operations():
            self.run_due()
            with self.lock:
                return [dict(op) for op in self.operations.values()]

    # ---------------------------------------------------------------- behaviour
    def _operation(self, call: Call, kind: str):
        request_id = self._request_id(call)
        body = call.body
        self.check_fields(body, {"entries"})
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e for e in entries):
            raise self.error(400, "entries must be a non-empty list of EIDs")

        def outcome(eid: str, iccid: str, dev: dict) -> dict:
            if eid in self.knobs.reject_eids:
                return {"eid": eid, "iccid": iccid, "success": False,
                        "errorMessage": f"{kind.lower()} rejected for eSIM {eid} (injected)"}
            if self.knobs.refuse_noop_transitions and (dev["deviceStatus"] == "STOPPED") == (kind == "DISABLE"):
                return {"eid": eid, "iccid": iccid, "success": False,
                        "errorMessage": f"eSIM {eid} is {dev['deviceStatus']}; it cannot be {kind.lower()}d"}
            enabled = kind == "ENABLE"
            dev.update(deviceStatus="ONLINE" if enabled else "STOPPED", suspended=not enabled, active=enabled)
            return {"eid": eid, "iccid": iccid, "success": True, "errorMessage": None}

        return self._start(call, request_id, kind, list(entries), {}, outcome)

    # ---------------------------------------------------------------- plan assignment
    # ``POST /esims/assign-plan?requestId=`` ``{"entries": [{"eid", "planUuid"}]}``: asynchronous like
    # enable/disable (same replay rule, same operation result, ``operationType`` ASSIGN_PLAN). **Assumed**:
    # a plan uuid is any non-empty string unless the knob ``known_plans`` lists the valid ones; an
    # unknown one fails its entry; the eSIM's ``planUuid`` changes and ``planName`` becomes the uuid.
    def _assign_plan(self, call: Call):
        request_id = self._request_id(call)
        body = call.body
        self.check_fields(body, {"entries"})
        for n, entry in enumerate(body.get("entries") or [] if isinstance(body, dict) else []):
            self.check_fields(entry, {"eid", "planUuid"}, f"entries[{n}].")
        entries = body.get("entries") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, dict) and isinstance(e.get("eid"), str) and e["eid"] and
                isinstance(e.get("planUuid"), str) and e["planUuid"] for e in entries):
            raise self.error(400, "entries must be a non-empty list of {eid, planUuid}")
        plans = {e["eid"]: e["planUuid"] for e in entries}

        def outcome(eid: str, iccid: str, dev: dict) -> dict:
            plan = plans[eid]
            if eid in self.knobs.reject_eids or (self.knobs.validate_plans and plan not in self.plans
                                                 and plan not in self.knobs.known_plans):
                return {"eid": eid, "iccid": iccid, "success": False,
                        "errorMessage": f"plan {plan} cannot be assigned to eSIM {eid}"}
            dev.update(planUuid=plan, planName=plan)
            return {"eid": eid, "iccid": iccid, "success": True, "errorMessage": None}

        return self._start(call, request_id, "ASSIGN_PLAN", [e["eid"] for e in entries], {"plans": plans}, outcome)

    # ---------------------------------------------------------------- what every operation shares
    def _request_id(self, call: Call) -> str:
        """The operation's ``requestId`` (required, at most 32 characters); the query is checked too."""
        request_id = call.q("requestId") or ""
        if not request_id or len(request_id) > 32:
            raise self.error(400, "requestId is required (at most 32 characters)")
        self.check_query(call, "operation")
        return request_id

    def _start(self, call: Call, request_id: str, kind: str, eids: list[str], details: dict[str, Any],
               outcome: Callable[[str, str, dict], dict]):
        """Accept an operation on ``eids`` (at most ``max_entries``): a replay of ``request_id`` with the
        same kind, EIDs and ``details`` answers as the first call did, with anything else it is 409; a new
        one finishes ``operation_delay_s`` later, each eSIM's result being ``outcome(eid, iccid, eSIM)``
        (an unknown eSIM fails its entry)."""
        if len(eids) > self.knobs.max_entries:
            raise self.error(400, f"at most {self.knobs.max_entries} entries per request, got {len(eids)}")
        call.iccids = [self.by_eid[e] for e in eids if e in self.by_eid]
        known = self.operations.get(request_id)
        if known is not None:
            if known["kind"] != kind or known["eids"] != eids or any(known.get(k) != v for k, v in details.items()):
                raise self.error(409, f"requestId {request_id} was already used for another operation")
            return {"success": True, "requestId": request_id}
        op = {"requestId": request_id, "kind": kind, "eids": eids, **details, "done": False, "results": None,
              "callbackUrl": call.q("callbackUrl")}
        self.operations[request_id] = op
        generation = self._generation

        def finish() -> None:
            if generation != self._generation:
                return
            results = []
            for eid in eids:
                iccid = self.by_eid.get(eid)
                dev = self.devices.get(iccid) if iccid else None
                if dev is None:
                    results.append({"eid": eid, "iccid": None, "success": False,
                                    "errorMessage": f"eSIM {eid} not found"})
                else:
                    results.append(outcome(eid, iccid, dev))
            op["results"], op["done"] = results, True

        self.schedule(self.knobs.operation_delay_s, finish)
        return {"success": True, "requestId": request_id}

    def _result(self, call: Call):
        self.check_query(call, "result")
        request_id = call.q("requestId") or ""
        op = self.operations.get(request_id)
        if op is None:
            raise self.error(404, f"no operation with requestId {request_id!r}")
        call.iccids = [self.by_eid[e] for e in op["eids"] if e in self.by_eid]
        if not op["done"]:
            if self.knobs.processing_status == 102:
                return Response(status_code=102)
            return JSONResponse({"success": None, "status": "PROCESSING", "requestId": request_id}, status_code=202)
        return {"success": all(r["success"] for r in op["results"]), "requestId": request_id,
                "operationType": op["kind"], "entries": [dict(r) for r in op["results"]]}


def _public(device: dict) -> dict:
    return {k: device.get(k) for k in ENTRY_FIELDS}
