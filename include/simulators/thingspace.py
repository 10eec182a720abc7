"""Verizon ThingSpace Connectivity Management (M2M) simulator; API root ``/thingspace/api``.

Shapes follow ``carrier_apis.md`` section 2 and the published SDK's models (a conformance test
builds requests with ``sdksio-verizon-apis-sdk`` and parses our answers with it). Endpoints:

* ``POST /ts/v1/oauth2/token``  form ``grant_type=client_credentials``, Basic ``key:secret`` ->
  ``{access_token, token_type, expires_in, scope}``; the same token again within its lifetime.
* ``POST /m2m/v1/session/login`` (Bearer) ``{username, password}`` -> ``{sessionToken}``;
  ``POST /m2m/v1/session/logout``. A session expires after ``session_idle_s`` without use.
* ``POST /m2m/v1/devices/actions/{activate,suspend,restore,deactivate}`` -> ``{requestId}`` at once;
  the devices change ``action_delay_s`` later. Activation assigns an MDN/MSISDN and an IP address.
* ``POST /m2m/v1/devices/actions/add`` ``{state: preactive, devicesToAdd, accountName}`` (up to 200
  devices, each with its ICCID and IMEI) -> at once, per device ``[{deviceIds, response}]``
  (``Success`` / ``Error. Device already exists.``); the devices are ``preactive``.
* ``POST /m2m/v1/devices/actions/list``: one device (``deviceId``) or the account's devices, at most
  ``maxNumberOfDevices`` (<= 100) per page, ``largestDeviceIdSeen`` paging, ``hasMoreData``.
* ``POST /m2m/v1/devices/history/actions/list`` ``{deviceId, earliest, latest}`` (SDK
  DeviceProvisioningHistoryListRequest) -> ``[{hasMoreData, provisioningHistory: [{occurredAt, status,
  eventBy, eventType, servicePlan, mdn, msisdn, extendedAttributes}]}]``, oldest first.
* ``GET  /m2m/v1/accounts/{aname}/requests/{requestId}/status`` -> ``{requestId, status}`` with
  status ``Pending`` / ``Success`` / ``Failure``.
* ``POST|GET /m2m/v1/callbacks/{aname}``, ``DELETE /m2m/v1/callbacks/{aname}/name/{serviceName}``:
  a registered ``CarrierService`` URL (loopback only) gets one POST per device when a request
  completes (every asynchronous request: actions, plan, device id, cost center, custom fields),
  retried ``callback_retries`` times ``callback_retry_s`` apart; the registration's ``username`` /
  ``password`` are echoed in each. ``drop_callbacks`` (fault) sends none.

Every M2M call needs ``Authorization: Bearer <access_token>`` (else 401) and ``VZ-M2M-Token``
(else 400 ``...REQUEST_FAILED.SessionToken.Expired``); the session's username is the account the
rate and concurrency limits apply to.

Documented (carrier_apis.md): the two tokens and their lifetimes, request bodies (deactivate needs
``reasonCode`` ``FF``, activate ``servicePlan`` and ``mdnZipCode``), the async ``requestId`` pattern,
the request statuses, the error shape ``{errorCode, errorMessage}`` and the codes
``DeviceAlreadyActive``, ``DeviceState.Invalid``, ``DeviceNotFound``, ``AccountNotFound``,
``SessionToken.Expired``, ``MaxRequestsExceeded``; the callback body of a failure.

**Assumed** (not public, or not pinned down by the docs):

* every error code carries the ``UnifiedWebService.`` prefix the callback examples show;
* per-device outcomes are delivered by callback in the real API; the simulator *also* lists them in
  the request-status answer (``devices: [{deviceIds, status, faultResponse?}]``, ignored by the SDK's
  model): a request is ``Failure`` when every device failed, else ``Success`` once all are done;
* which state each action needs: activate from ``preactive``/``deactive``/``inventory`` (already
  ``active`` -> ``DeviceAlreadyActive``), suspend from ``active``, restore from ``suspend``,
  deactivate from ``active``/``suspend``; anything else ``INPUT_INVALID.DeviceState.Invalid``,
  decided when the request completes; an unknown device is ``DeviceNotFound`` except for activate,
  which adds it (as the API docs say);
* an unknown request id answers 400 ``REQUEST_FAILED.RequestNotFound``;
* the 429 body (``REQUEST_FAILED.RateLimitExceeded``) and its ``Retry-After``;
* a new MDN on every activation from ``deactive`` (the MDN is not held), the existing one otherwise;
* the provisioning history lists an action when it completes (not while it is pending), with
  ``eventType`` the action's name (``Activate``, ``Suspend``, ``Restore``, ``Deactivate``) and
  ``status`` ``Success`` or ``Failed`` (failed events carry the fault string as an extended attribute
  ``faultstring``); ``earliest``/``latest`` are ISO times, both required, compared with
  ``occurredAt``; the answer is one page (``hasMoreData`` false).
"""
from __future__ import annotations

import base64
import binascii
import bisect
import ipaddress
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import requests
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from simulators.core import Call, Knobs, SimulatedCarrier

ROOT = "/api"
DEFAULT_ACCOUNT = "0000000000-00001"
STATES = ("preactive", "active", "suspend", "deactive", "inventory", "pending activation")
KINDS = ("esn", "eid", "iccid", "imei", "mdn", "meid", "msisdn")
ACTIONS = ("activate", "suspend", "restore", "deactivate")
# action -> (states it may start from, state it leaves the line in)
ACTION_RULES: dict[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"preactive", "deactive", "inventory", "pending activation"}), "active"),
    "suspend": (frozenset({"active"}), "suspend"),
    "restore": (frozenset({"suspend"}), "active"),
    "deactivate": (frozenset({"active", "suspend"}), "deactive"),
}
MAX_DEVICES_PER_ACTION = 10_000
CUSTOM_FIELD_KEYS = tuple(f"CustomField{i}" for i in range(1, 6))
MAX_LIST_PAGE = 100
NS = "UnifiedWebService"
# The body fields each request may carry, as the published SDK's request models name them
# (``verizon.models.*._names``; tests/simulators/test_thingspace_strict.py compares the two).
_PLACE = ("primaryPlaceOfUse",)
BODY_FIELDS: dict[str, frozenset[str]] = {
    "activate": frozenset({"devices", "servicePlan", "mdnZipCode", "accountName", "carrierIpPoolName", "carrierName",
                           "costCenterCode", "customFields", "groupName", "leadId", *_PLACE, "publicIpRestriction",
                           "skuNumber"}),                                          # CarrierActivateRequest
    "suspend": frozenset({"accountName", "customFields", "devices", "withBilling", "groupName", "servicePlan"}),
    "restore": frozenset({"accountName", "customFields", "devices", "withBilling", "groupName", "servicePlan"}),
    "deactivate": frozenset({"accountName", "devices", "reasonCode", "customFields", "etfWaiver", "groupName",
                             "servicePlan", "deleteAfterDeactivation"}),           # CarrierDeactivateRequest
    "plan": frozenset({"servicePlan", "accountName", "currentServicePlan", "customFields", "devices", "groupName",
                       "carrierIpPoolName", "takeEffect"}),                       # ServicePlanUpdateRequest
    "deviceId": frozenset({"deviceIds", "assignNonGeoMdn", "change4gOption", "deviceIdsTo", "npaNxx", "servicePlan",
                           "zipCode", "smsrOid"}),                                # ChangeDeviceIdRequest
    "costCenter": frozenset({"accountName", "costCenter", "customFields", "devices", "groupName", *_PLACE,
                             "removeCostCenter", "servicePlan"}),                 # DeviceCostCenterRequest
    "customFields": frozenset({"accountName", "customFields", "customFieldsToUpdate", "devices", "groupName",
                               "servicePlan"}),                                   # CustomFieldsUpdateRequest
    "list": frozenset({"accountName", "deviceId", "filter", "currentState", "customFields", "earliest", "groupName",
                       "latest", "servicePlan", "maxNumberOfDevices", "largestDeviceIdSeen"}),
    "history": frozenset({"deviceId", "earliest", "latest"}),                    # DeviceProvisioningHistoryListRequest
    "login": frozenset({"username", "password"}),                                # LogInRequest
    "add": frozenset({"state", "devicesToAdd", "accountName", "customFields", "groupName", "skuNumber",
                      "smsrOid"}),                                                 # AddDevicesRequest
}
DEVICE_FIELDS = frozenset({"deviceIds", "ipAddress"})                            # AccountDeviceList
DEVICE_ID_FIELDS = frozenset({"id", "kind"})                                     # DeviceId
# JSON types of the fields (the SDK models' declared types)
_STR_FIELDS = frozenset({"accountName", "servicePlan", "mdnZipCode", "carrierIpPoolName", "carrierName",
                         "costCenterCode", "groupName", "leadId", "skuNumber", "reasonCode", "currentServicePlan",
                         "takeEffect", "change4gOption", "npaNxx", "zipCode", "smsrOid", "costCenter",
                         "currentState", "earliest", "latest", "largestDeviceIdSeen", "username", "password"})
_BOOL_FIELDS = frozenset({"withBilling", "etfWaiver", "deleteAfterDeactivation", "assignNonGeoMdn",
                          "removeCostCenter", "publicIpRestriction"})
_LIST_FIELDS = frozenset({"devices", "customFields", "customFieldsToUpdate", "deviceIds", "deviceIdsTo",
                          "devicesToAdd"})
# ``primaryPlaceOfUse`` (SDK ``PlaceOfUse``): both parts required; ``Address`` and ``CustomerName`` with
# their required fields; every value a string (contract rule 21)
PLACE_FIELDS = frozenset({"address", "customerName"})
ADDRESS_FIELDS = frozenset({"addressLine1", "addressLine2", "city", "state", "zip", "zip4", "country", "phone",
                            "phoneType", "emailAddress"})
ADDRESS_REQUIRED = ("addressLine1", "city", "state", "zip", "country")
CUSTOMER_NAME_FIELDS = frozenset({"title", "firstName", "middleName", "lastName", "suffix"})
CUSTOMER_NAME_REQUIRED = ("firstName", "lastName")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# the account's service plans when none are set (GET /m2m/v1/plans/{aname}); seeded devices add theirs
DEFAULT_SERVICE_PLANS = ("M2M-5GB", "M2MPlan5GB", "M2M-1GB", "M2M-UNLIMITED")


def code(specific: str) -> str:
    return f"{NS}.{specific}"


def ts_time(epoch: float | None = None) -> str:
    epoch = time.time() if epoch is None else epoch
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + "Z"


def _parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class ThingSpaceKnobs(Knobs):
    action_delay_s: float = Field(2.0, ge=0, description="seconds from an accepted action to its result")
    token_ttl_s: float = Field(3600.0, gt=0, description="OAuth access token lifetime (expires_in)")
    session_idle_s: float = Field(1200.0, gt=0, description="a session token expires after this long unused")
    callback_retries: int = Field(3, ge=0, description="re-deliveries of a refused callback")
    callback_retry_s: float = Field(300.0, ge=0, description="seconds between callback deliveries")
    drop_callbacks: bool = Field(False, description="fault: completed requests send no callback (lost "
                                 "callbacks; the client must fall back to polling)")
    refuse_unknown_fields: bool = Field(True, description="a body field the SDK's request model does not name, "
                                        "or one of the wrong JSON type, is refused (assumed)")
    require_json_content_type: bool = Field(True, description="an M2M body must be sent as application/json, "
                                            "else 415 (the 415 is assumed)")
    validate_service_plans: bool = Field(True, description="a servicePlan the account does not have is refused "
                                         "(REQUEST_FAILED._servicePlan_.NotFound)")
    require_offsets: bool = Field(True, description="earliest / latest must carry a UTC offset (assumed; "
                                  "takeEffect always must, RFC 3339)")


class ThingSpaceSimulator(SimulatedCarrier):
    name = "thingspace"
    prefix = "/thingspace"
    api_root = ROOT
    knobs_model = ThingSpaceKnobs
    rate_limit_message = ("Rate limit exceeded", code("REQUEST_FAILED.RateLimitExceeded"))
    concurrency_message = ("Too many concurrent requests", code("REQUEST_FAILED.RateLimitExceeded"))

    def __init__(self, accounts: dict[str, str] | None = None, clients: dict[str, str] | None = None,
                 account_names: list[str] | None = None, **knobs: Any):
        # accounts: UWS username -> password (the session login); clients: OAuth key -> secret
        self.clients: dict[str, str] = dict(clients if clients is not None else {"demo-key": "demo-secret"})
        self.account_names: set[str] = set(account_names or [DEFAULT_ACCOUNT])
        self.tokens: dict[str, tuple[str, float]] = {}      # access token -> (client key, expires at)
        self.client_tokens: dict[str, str] = {}             # client key -> its current token
        self.sessions: dict[str, dict] = {}                 # session token -> {user, last_used}
        self.requests: dict[str, dict] = {}                 # requestId -> request record
        self.callbacks: dict[str, dict] = {}                # account name -> CarrierService registration
        self.deliveries: list[dict] = []                    # callback delivery attempts
        self._sorted: list[str] | None = None
        self._by_id: dict[tuple[str, str], str] = {}         # (kind, id) -> iccid
        self._ip_seq = 0
        self._mdn_seq = 0
        self.service_plans: list[str] = list(DEFAULT_SERVICE_PLANS)
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        super().__init__(accounts=accounts if accounts is not None else {"demo-user": "demo-password"}, **knobs)

    @property
    def users(self) -> dict[str, str]:
        return self.accounts

    # ---------------------------------------------------------------- framework hooks
    def reset_state(self) -> None:
        self.tokens.clear()
        self.client_tokens.clear()
        self.sessions.clear()
        self.requests.clear()
        self.callbacks.clear()
        self.deliveries.clear()
        self._sorted = None
        self._by_id.clear()
        self._ip_seq = 0
        self._mdn_seq = 0
        self.service_plans = list(DEFAULT_SERVICE_PLANS)

    def error_body(self, status: int, message: str, code_: str | None) -> Any:
        return {"errorCode": code_ or code(f"REQUEST_FAILED.Http{status}"), "errorMessage": message}

    def bad_json(self):
        return self.error(400, "Request body is not valid JSON", code("INPUT_INVALID.RequestBody.Invalid"))

    def content_type_error(self, request: Request):
        if not self.knobs.require_json_content_type or request.url.path.endswith("/oauth2/token"):
            return None
        return self.media_type_refusal(request, code=code("INPUT_INVALID.ContentType.Invalid"))

    def check_place_of_use(self, place: Any) -> None:
        """``primaryPlaceOfUse`` as the SDK's ``PlaceOfUse`` declares it: an object with ``address``
        (``addressLine1``, ``city``, ``state``, ``zip``, ``country`` required) and ``customerName``
        (``firstName``, ``lastName`` required), every value a non-empty string; else 400."""
        prefix = "primaryPlaceOfUse"

        def part(value: Any, name: str, fields: frozenset[str], required: tuple[str, ...]) -> None:
            where = f"{prefix}.{name}"
            if value is None:
                raise self.error(400, f"{where} is required", code(f"INPUT_INVALID.{where}.Required"))
            if not isinstance(value, dict):
                raise self.error(400, f"{where} must be a JSON object", code(f"INPUT_INVALID.{where}.Invalid"))
            if self.knobs.refuse_unknown_fields:
                self._known(value, fields, f"{where}.")
            for key, item in value.items():
                if item is not None and not isinstance(item, str):
                    raise self.error(400, f"{where}.{key} must be a JSON string",
                                     code(f"INPUT_INVALID.{where}.{key}.Invalid"))
            for key in required:
                if not (value.get(key) or "").strip():
                    raise self.error(400, f"{where}.{key} is required",
                                     code(f"INPUT_INVALID.{where}.{key}.Required"))

        if not isinstance(place, dict):
            raise self.error(400, f"{prefix} must be a JSON object", code(f"INPUT_INVALID.{prefix}.Invalid"))
        if self.knobs.refuse_unknown_fields:
            self._known(place, PLACE_FIELDS, f"{prefix}.")
        part(place.get("address"), "address", ADDRESS_FIELDS, ADDRESS_REQUIRED)
        part(place.get("customerName"), "customerName", CUSTOMER_NAME_FIELDS, CUSTOMER_NAME_REQUIRED)

    def check_body(self, body: Any, kind: str) -> dict:
        """The request body as the SDK's model ``kind`` allows it, else the carrier's 400."""
        if not isinstance(body, dict):
            raise self.error(400, "Request body must be a JSON object", code("INPUT_INVALID.RequestBody.Invalid"))
        if self.knobs.refuse_unknown_fields:
            self._known(body, BODY_FIELDS[kind], "")
            for name, value in body.items():
                expected = (str if name in _STR_FIELDS else bool if name in _BOOL_FIELDS
                            else list if name in _LIST_FIELDS else None)
                if expected and value is not None and not isinstance(value, expected):
                    raise self.error(400, f"{name} must be a JSON {expected.__name__}",
                                     code(f"INPUT_INVALID.{name}.Invalid"))
            devices_key = "devicesToAdd" if kind == "add" else "devices"
            for n, dev in enumerate(body.get(devices_key) or []):
                if isinstance(dev, dict):
                    self._known(dev, DEVICE_FIELDS, f"{devices_key}[{n}].")
                    for m, ident in enumerate(dev.get("deviceIds") or []):
                        if isinstance(ident, dict):
                            self._known(ident, DEVICE_ID_FIELDS, f"{devices_key}[{n}].deviceIds[{m}].")
            for name in ("deviceIds", "deviceIdsTo"):
                for m, ident in enumerate(body.get(name) or [] if kind == "deviceId" else []):
                    if isinstance(ident, dict):
                        self._known(ident, DEVICE_ID_FIELDS, f"{name}[{m}].")
            if isinstance(body.get("deviceId"), dict):
                self._known(body["deviceId"], DEVICE_ID_FIELDS, "deviceId.")
        if "primaryPlaceOfUse" in body:
            self.check_place_of_use(body["primaryPlaceOfUse"])
        when = body.get("takeEffect")
        if when is not None and not (isinstance(when, str) and _RFC3339.match(when)):
            raise self.error(400, f"takeEffect must be an RFC 3339 date-time with an offset, got {when!r}",
                             code("INPUT_INVALID.takeEffect.Invalid"))
        if self.knobs.require_offsets:
            for name in ("earliest", "latest"):
                value = body.get(name)
                if value is not None and not (isinstance(value, str) and _RFC3339.match(value)):
                    raise self.error(400, f"{name} must be an ISO 8601 date-time with an offset, got {value!r}",
                                     code("INPUT_INVALID.DateRange.Invalid"))
        return body

    def _known(self, obj: dict, allowed: frozenset[str], where: str) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.error(400, f"Unrecognized field(s): {', '.join(where + u for u in unknown)}",
                             code(f"INPUT_INVALID.{unknown[0]}.Unrecognized"))

    def check_plan(self, plan: Any) -> None:
        """A servicePlan the account does not have is refused (when the knob is on)."""
        if plan is not None and self.knobs.validate_service_plans and plan not in self.service_plans:
            raise self.error(400, f"Service plan {plan} not found for the account; its plans: "
                                  f"{', '.join(self.service_plans)}", code("REQUEST_FAILED._servicePlan_.NotFound"))

    def normalize_device(self, device: dict) -> dict:
        device = super().normalize_device(device)
        out: dict[str, Any] = {"iccid": device["iccid"], "state": "preactive", "accountName": DEFAULT_ACCOUNT,
                               "imei": None, "msisdn": None, "ipAddress": None, "servicePlan": None,
                               "createdAt": ts_time(), "lastActivationDate": None, "lastActivationBy": None,
                               "customFields": [], "groupNames": None, "connected": False}
        out.update(device)
        out["state"] = str(out["state"]).lower()
        if out["state"] not in STATES:
            raise ValueError(f"{out['iccid']}: state {out['state']!r} is not one of {', '.join(STATES)}")
        if out["groupNames"] is None:
            out["groupNames"] = [f"Default: {out['accountName']}"]
        return out

    def on_devices_seeded(self, devices: list[dict]) -> None:
        self._sorted = None
        for d in devices:
            self.account_names.add(d["accountName"])
            self._index(d)
            if d.get("servicePlan") and d["servicePlan"] not in self.service_plans:
                self.service_plans.append(d["servicePlan"])  # a device's plan is one of its account's

    def _index(self, d: dict) -> None:
        for kind in ("imei", "msisdn"):
            if d.get(kind):
                self._by_id[(kind, str(d[kind]))] = d["iccid"]
        if d.get("msisdn"):
            self._by_id[("mdn", str(d["msisdn"]))] = d["iccid"]

    def control_view(self, device: dict) -> dict:
        return dict(device)

    def identify(self, call: Call) -> None:
        body = call.body if isinstance(call.body, dict) else {}
        wanted = [body["deviceId"]] if isinstance(body.get("deviceId"), dict) else [
            i for d in body.get("devices") or [] if isinstance(d, dict)
            for i in d.get("deviceIds") or [] if isinstance(i, dict)]
        iccids = [str(i.get("id")) for i in wanted if str(i.get("kind", "")).lower() == "iccid" and i.get("id")]
        if len(iccids) == 1:
            call.iccid = iccids[0]
        elif iccids:
            call.iccids = iccids

    # ---------------------------------------------------------------- authentication
    def authenticate(self, request: Request) -> str:
        self._bearer(request)
        session = request.headers.get("vz-m2m-token", "")
        record = self.sessions.get(session)
        now = time.time()
        if record is None or now - record["last_used"] > self.knobs.session_idle_s:
            with self.lock:
                self.sessions.pop(session, None)
            raise self.error(400, "Session token expired or invalid", code("REQUEST_FAILED.SessionToken.Expired"))
        record["last_used"] = now
        return record["user"]

    def _bearer(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        entry = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if entry is None or entry[1] <= time.time():
            raise self.error(401, "Invalid or expired access token", code("AUTH_FAILED.Token.Invalid"))
        return entry[0]

    def _oauth(self, call: Call):
        scheme, _, raw = call.request.headers.get("authorization", "").partition(" ")
        try:
            key, sep, secret = base64.b64decode(raw.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            key, sep, secret = "", "", ""
        if scheme.lower() != "basic" or not sep or self.clients.get(key) != secret:
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed"},
                                status_code=401)
        return key

    def expire_tokens(self) -> None:
        """Forget every access and session token (clients must log in again)."""
        with self.lock:
            self.tokens.clear()
            self.client_tokens.clear()
            self.sessions.clear()

    # ---------------------------------------------------------------- routes
    def add_routes(self) -> None:
        @self.route("POST", "/ts/v1/oauth2/token", auth=False, json_body=False)
        async def token(call: Call):
            form = await call.request.form()
            key = self._oauth(call)
            if not isinstance(key, str):
                return key
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type",
                                     "error_description": "grant_type must be client_credentials"}, status_code=400)
            with self.lock:
                now = time.time()
                current = self.client_tokens.get(key)
                if current and self.tokens.get(current, ("", 0.0))[1] > now:
                    expires = self.tokens[current][1]
                else:
                    current, expires = uuid.uuid4().hex, now + self.knobs.token_ttl_s
                    self.tokens[current] = (key, expires)
                    self.client_tokens[key] = current
            return {"access_token": current, "token_type": "Bearer", "expires_in": max(1, int(expires - now)),
                    "scope": "discovery:read serviceprofile:read serviceprofile:write"}

        @self.route("POST", "/m2m/v1/session/login", auth=False)
        def login(call: Call):
            self._bearer(call.request)
            body = self.check_body(call.body, "login")
            user, password = body.get("username"), body.get("password")
            if not user or self.accounts.get(str(user)) != password:
                raise self.error(400, "Invalid username or password", code("REQUEST_FAILED.Login.Invalid"))
            session = str(uuid.uuid4())
            self.sessions[session] = {"user": str(user), "last_used": time.time()}
            call.account = str(user)
            return {"sessionToken": session}

        @self.route("POST", "/m2m/v1/session/logout")
        def logout(call: Call):
            session = call.request.headers.get("vz-m2m-token", "")
            self.sessions.pop(session, None)
            return {"sessionToken": session}

        for action in ACTIONS:
            self._add_action_route(action)

        @self.route("POST", "/m2m/v1/devices/actions/add", name="thingspace:add")
        def add_devices(call: Call):
            return self._add_devices(call)
        self._add_plan_and_identifier_routes()  # CarrierRatePlanChange, ChangeICCIDAndIMEI
        self._add_field_routes()  # cost center and custom fields (EditUsernameCostCenter)

        @self.route("POST", "/m2m/v1/devices/actions/list")
        def list_devices(call: Call):
            return self._list(call)

        @self.route("POST", "/m2m/v1/devices/history/actions/list")
        def provisioning_history(call: Call):
            return self._history(call)

        @self.route("GET", "/m2m/v1/plans/{aname}")
        def service_plans(call: Call):  # SDK ServicePlansController.list_account_service_plans
            self._account(call.path_params["aname"])
            return [{"name": p, "code": p, "sizeKb": None, "carrierServicePlanCode": p, "extendedAttributes": []}
                    for p in self.service_plans]

        @self.route("GET", "/m2m/v1/accounts/{aname}/requests/{requestId}/status")
        def request_status(call: Call):
            self._account(call.path_params["aname"])
            record = self.requests.get(call.path_params["requestId"])
            if record is None or record["accountName"] != call.path_params["aname"]:
                raise self.error(400, "Request not found", code("REQUEST_FAILED.RequestNotFound"))
            call.iccids = [d["deviceIds"][0]["id"] for d in record["devices"]]
            return {"requestId": record["requestId"], "status": record["status"],
                    "devices": [dict(d) for d in record["devices"]]}

        @self.route("POST", "/m2m/v1/callbacks/{aname}")
        def register_callback(call: Call):
            return self._register_callback(call)

        @self.route("GET", "/m2m/v1/callbacks/{aname}")
        def list_callbacks(call: Call):
            aname = self._account(call.path_params["aname"])
            reg = self.callbacks.get(aname)
            return [{"accountName": aname, "name": reg["name"], "url": reg["url"]}] if reg else []

        @self.route("DELETE", "/m2m/v1/callbacks/{aname}/name/{serviceName}")
        def delete_callback(call: Call):
            aname = self._account(call.path_params["aname"])
            reg = self.callbacks.get(aname)
            if reg is None or reg["name"] != call.path_params["serviceName"]:
                raise self.error(400, "No such callback", code("REQUEST_FAILED.CallbackNotFound"))
            del self.callbacks[aname]
            return {"accountName": aname, "serviceName": reg["name"]}

    def add_control_routes(self, router: APIRouter) -> None:
        @router.post("/expire-tokens")
        async def expire():
            self.expire_tokens()
            return {"ok": True}

        @router.put("/clients")
        async def put_clients(request: Request):
            data = await request.json()
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                return JSONResponse({"error": 'body must be {"client key": "secret", ...}'}, status_code=400)
            with self.lock:
                self.clients.update(data)
            return {"clients": sorted(self.clients)}

        @router.get("/requests/{request_id}")
        async def get_request(request_id: str):
            self.run_due()
            with self.lock:
                record = self.requests.get(request_id)
                if record is None:
                    return JSONResponse({"error": f"no request {request_id}"}, status_code=404)
                return dict(record)

        @router.get("/serviceplans")
        async def get_service_plans():
            return {"servicePlans": list(self.service_plans)}

        @router.put("/serviceplans")
        async def put_service_plans(request: Request):
            plans = await request.json()
            if isinstance(plans, dict):
                plans = plans.get("servicePlans")
            if not isinstance(plans, list) or not all(isinstance(p, str) and p for p in plans):
                return JSONResponse({"error": 'body must be {"servicePlans": ["name", ...]}'}, status_code=400)
            with self.lock:
                self.service_plans = list(dict.fromkeys(plans))
            return {"servicePlans": list(self.service_plans)}

        @router.get("/deliveries")
        async def deliveries():
            self.run_due()
            with self.lock:
                return list(self.deliveries)

    # ---------------------------------------------------------------- behaviour
    def _account(self, name: Any) -> str:
        if not name or str(name) not in self.account_names:
            raise self.error(400, f"Account {name} not found", code("REQUEST_FAILED.AccountNotFound"))
        return str(name)

    def _find(self, ident: Any) -> str | None:
        """ICCID of the device a ``{id, kind}`` names, or None."""
        if not isinstance(ident, dict) or not ident.get("id") or not ident.get("kind"):
            raise self.error(400, "Every device identifier needs id and kind", code("INPUT_INVALID.Device.Identifier.Invalid"))
        kind, value = str(ident["kind"]).lower(), str(ident["id"])
        if kind not in KINDS:
            raise self.error(400, f"Invalid device identifier kind {ident['kind']}",
                             code("INPUT_INVALID.Device.Identifier.Invalid"))
        if kind == "iccid":
            return value if value in self.devices else None
        return self._by_id.get((kind, value))

    # ---------------------------------------------------------------- add devices
    # ``POST /m2m/v1/devices/actions/add`` (SDK AddDevicesRequest ``{state, devicesToAdd, accountName,
    # customFields, groupName, skuNumber, smsrOid}``) answers at once, per device (SDK AddDevicesResult,
    # a list): ``[{deviceIds, response}]``. Documented: at most 200 devices (``INPUT_INVALID.NumberofDevices``),
    # the state the devices start in is pre-active (AMOP sends ``preactive``), the response is
    # ``Success`` or an error. **Assumed** (stricter): ``state`` must be ``preactive``
    # (``INPUT_INVALID.State.Invalid``), ``accountName`` is required, every device names its ICCID and
    # its IMEI (``INPUT_INVALID.Device.Identifier.Invalid``), a device the account already has answers
    # ``Error. Device already exists.`` (the words AMOP compares), an ICCID or IMEI another account or
    # another device holds answers ``Error. Device belongs to another account.``; added devices are
    # ``preactive`` with no MDN.
    MAX_DEVICES_PER_ADD = 200
    ADD_ALREADY_EXISTS = "Error. Device already exists."
    ADD_ELSEWHERE = "Error. Device belongs to another account."

    def _add_devices(self, call: Call):
        body = self.check_body(call.body, "add")
        if not body.get("accountName"):
            raise self.error(400, "accountName is required", code("INPUT_INVALID.accountName.Required"))
        aname = self._account(body.get("accountName"))
        if str(body.get("state") or "").lower() != "preactive":
            raise self.error(400, f"state must be preactive, got {body.get('state')!r}",
                             code("INPUT_INVALID.State.Invalid"))
        devices = body.get("devicesToAdd")
        if not isinstance(devices, list) or not devices:
            raise self.error(400, "devicesToAdd is required", code("INPUT_INVALID.Devices.Required"))
        if len(devices) > self.MAX_DEVICES_PER_ADD:
            raise self.error(400, f"At most {self.MAX_DEVICES_PER_ADD} devices per add request",
                             code("INPUT_INVALID.NumberofDevices"))
        wanted = []
        for entry in devices:
            ids = entry.get("deviceIds") if isinstance(entry, dict) else None
            if not isinstance(ids, list) or not ids:
                raise self.error(400, "Every device needs deviceIds", code("INPUT_INVALID.Device.Identifier.Invalid"))
            by_kind: dict[str, str] = {}
            for ident in ids:
                self._find(ident)  # id and kind present, kind known
                by_kind[str(ident["kind"]).lower()] = str(ident["id"])
            iccid, imei = by_kind.get("iccid", ""), by_kind.get("imei", "")
            if not (iccid.isdigit() and len(iccid) in (19, 20)) or not (imei.isdigit() and len(imei) in (15, 16)):
                raise self.error(400, "Every device to add needs its ICCID (19-20 digits) and its IMEI (15-16 digits)",
                                 code("INPUT_INVALID.Device.Identifier.Invalid"))
            wanted.append((iccid, imei))
        call.iccids = [iccid for iccid, _ in wanted]
        answer = []
        for iccid, imei in wanted:
            dev = self.devices.get(iccid)
            holder = self._by_id.get(("imei", imei))
            if dev is not None and dev["accountName"] == aname and (holder in (None, iccid)):
                response = self.ADD_ALREADY_EXISTS
            elif dev is not None or holder not in (None, iccid):
                response = self.ADD_ELSEWHERE
            else:
                dev = self.normalize_device({"iccid": iccid, "imei": imei, "accountName": aname,
                                             "state": "preactive"})
                self.devices[iccid] = dev
                self._sorted = None
                self._index(dev)
                response = "Success"
            answer.append({"deviceIds": [{"id": iccid, "kind": "iccid"}, {"id": imei, "kind": "imei"}],
                           "response": response})
        return answer

    def _add_action_route(self, action: str) -> None:
        @self.route("POST", f"/m2m/v1/devices/actions/{action}", name=f"thingspace:{action}")
        def act(call: Call):
            return self._action(call, action)

    def _action(self, call: Call, action: str):
        body = self.check_body(call.body, action)
        aname = self._account(body.get("accountName"))
        devices = body.get("devices")
        if action == "activate":
            for field in ("servicePlan", "mdnZipCode"):
                if not body.get(field):
                    raise self.error(400, f"{field} is required", code(f"INPUT_INVALID.{field}.Required"))
            self.check_plan(body["servicePlan"])
        if action == "deactivate" and body.get("reasonCode") != "FF":
            raise self.error(400, "reasonCode must be FF", code("INPUT_INVALID.ReasonCode.Invalid"))
        targets = self._targets(call, devices)
        request_id = str(uuid.uuid4())
        record = {"requestId": request_id, "accountName": aname, "action": action, "status": "Pending",
                  "requestedAt": ts_time(), "user": call.account,
                  "devices": [{"deviceIds": [ident], "status": "Pending"} for ident, _ in targets]}
        self.requests[request_id] = record
        generation = self._generation
        options = {k: body.get(k) for k in ("servicePlan", "mdnZipCode", "reasonCode")}

        def complete() -> None:
            if generation == self._generation:
                self._complete(record, targets, options)

        self.schedule(self.knobs.action_delay_s, complete)
        return {"requestId": request_id}

    def _complete(self, record: dict, targets: list[tuple[dict, str | None]], options: dict) -> None:
        """Apply an accepted action (under ``self.lock``, when its delay has passed)."""
        action = record["action"]
        allowed_from, new_state = ACTION_RULES[action]
        now = time.time()
        failures = 0
        callbacks = []
        for entry, (ident, iccid) in zip(record["devices"], targets):
            dev = self.devices.get(iccid) if iccid else None
            if dev is None and action == "activate" and ident["kind"] == "iccid":
                dev = self.normalize_device({"iccid": ident["id"], "accountName": record["accountName"]})
                self.devices[dev["iccid"]] = dev
                self._sorted = None
            fault = None
            if dev is None or dev["accountName"] != record["accountName"]:
                fault = ("REQUEST_FAILED.DeviceNotFound", f"Device {ident['id']} not found in the account")
            elif action == "activate" and dev["state"] == "active":
                fault = ("REQUEST_FAILED.DeviceAlreadyActive", f"Device {dev['iccid']} is already active")
            elif dev["state"] not in allowed_from:
                fault = ("INPUT_INVALID.DeviceState.Invalid",
                         f"Device {dev['iccid']} is {dev['state']}; {action} needs {' or '.join(sorted(allowed_from))}")
            if fault:
                failures += 1
                entry.update(status="Failed", faultResponse={"faultcode": code(fault[0]), "faultstring": fault[1]})
                if dev is not None:
                    self._event(dev, record, "Failed", now, fault)
                callbacks.append({"requestId": record["requestId"], "deviceIds": [dict(ident)],
                                  "faultResponse": dict(entry["faultResponse"]), "status": "Failed"})
                continue
            if action == "activate":
                if dev["state"] == "deactive" or not dev.get("msisdn"):
                    dev["msisdn"] = self._new_mdn()
                dev["ipAddress"] = dev.get("ipAddress") or self._new_ip()
                dev["servicePlan"] = options.get("servicePlan") or dev.get("servicePlan")
                dev["lastActivationDate"] = ts_time(now)
                dev["lastActivationBy"] = record["user"]
                dev["connected"] = True
                self._index(dev)
            elif action in ("suspend", "deactivate"):
                dev["connected"] = False
            dev["state"] = new_state
            entry["status"] = "Success"
            self._event(dev, record, "Success", now)
            response: dict[str, Any] = {"deviceIds": self._ids(dev)}
            if action == "activate":
                response["ipAddress"] = dev["ipAddress"]
            callbacks.append({"requestId": record["requestId"], "deviceIds": [dict(ident)],
                              "deviceResponse": {f"{action}Response": response}, "status": "Success"})
        record["status"] = "Failure" if failures == len(targets) else "Success"
        record["completedAt"] = ts_time(now)
        self._send_callbacks(record, callbacks)

    def _send_callbacks(self, record: dict, callbacks: list[dict]) -> None:
        """One CarrierService callback per device of a completed request, when the account registered
        one (each POSTed on its own thread); with ``drop_callbacks`` none is sent (recorded as dropped)."""
        reg = self.callbacks.get(record["accountName"])
        if not reg:
            return
        for body in callbacks:
            if self.knobs.drop_callbacks:
                self.deliveries.append({"url": reg["url"], "requestId": body["requestId"], "attempt": 0,
                                        "delivered": False, "dropped": True, "ts": time.time()})
                continue
            self._deliver(reg, body, attempt=1)

    def _event(self, dev: dict, record: dict, status: str, now: float, fault: tuple | None = None) -> None:
        """One provisioning-history entry of a completed action."""
        dev.setdefault("provisioningHistory", []).append({
            "occurredAt": ts_time(now), "status": status, "eventBy": record.get("user"),
            "eventType": record["action"].capitalize(), "servicePlan": dev.get("servicePlan"),
            "mdn": dev.get("msisdn") or "", "msisdn": dev.get("msisdn") or "",
            "extendedAttributes": [{"key": "faultstring", "value": f"{code(fault[0])}: {fault[1]}"}] if fault else []})

    def _history(self, call: Call):
        body = self.check_body(call.body if call.body is not None else {}, "history")
        if not isinstance(body.get("deviceId"), dict):
            raise self.error(400, "deviceId is required", code("INPUT_INVALID.Device.Identifier.Invalid"))
        earliest, latest = body.get("earliest"), body.get("latest")
        if not isinstance(earliest, str) or not isinstance(latest, str) or not earliest or not latest:
            raise self.error(400, "earliest and latest are required", code("INPUT_INVALID.DateRange.Invalid"))
        try:
            lo, hi = _parse_time(earliest), _parse_time(latest)
        except ValueError:
            raise self.error(400, "earliest and latest must be ISO 8601 times",
                             code("INPUT_INVALID.DateRange.Invalid")) from None
        iccid = self._find(body["deviceId"])
        if iccid is None:
            raise self.error(400, f"Device {body['deviceId'].get('id')} not found", code("REQUEST_FAILED.DeviceNotFound"))
        call.iccid = iccid
        events = [dict(e) for e in self.devices[iccid].get("provisioningHistory") or []
                  if lo <= _parse_time(e["occurredAt"]) <= hi]
        return [{"hasMoreData": False, "provisioningHistory": events}]

    def _new_mdn(self) -> str:
        self._mdn_seq += 1
        return f"1470{self._mdn_seq:07d}"

    def _new_ip(self) -> str:
        self._ip_seq += 1
        return str(ipaddress.IPv4Address("10.64.0.0") + self._ip_seq)

    @staticmethod
    def _ids(dev: dict) -> list[dict]:
        ids = [{"id": dev["iccid"], "kind": "iccid"}]
        if dev.get("imei"):
            ids.append({"id": str(dev["imei"]), "kind": "imei"})
        if dev.get("msisdn"):
            ids.append({"id": str(dev["msisdn"]), "kind": "msisdn"})
            ids.append({"id": str(dev["msisdn"]), "kind": "mdn"})
        return ids

    def _view(self, dev: dict) -> dict:
        return {"accountName": dev["accountName"], "billingCycleEndDate": None,
                "carrierInformations": [{"carrierName": "Verizon Wireless", "servicePlan": dev.get("servicePlan"),
                                         "state": dev["state"]}],
                "connected": bool(dev.get("connected")), "createdAt": dev.get("createdAt"),
                "customFields": [dict(f) for f in dev.get("customFields") or []],
                "deviceIds": self._ids(dev), "extendedAttributes": [],
                "groupNames": list(dev.get("groupNames") or []), "ipAddress": dev.get("ipAddress"),
                "lastActivationBy": dev.get("lastActivationBy"), "lastActivationDate": dev.get("lastActivationDate"),
                "lastConnectionDate": None}

    def _list(self, call: Call):
        body = self.check_body(call.body if call.body is not None else {}, "list")
        if body.get("deviceId"):
            iccid = self._find(body["deviceId"])
            if iccid is None:
                raise self.error(400, f"Device {body['deviceId'].get('id')} not found",
                                 code("REQUEST_FAILED.DeviceNotFound"))
            call.iccid = iccid
            return {"hasMoreData": False, "devices": [self._view(self.devices[iccid])]}
        aname = self._account(body.get("accountName"))
        size = body.get("maxNumberOfDevices", MAX_LIST_PAGE)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_LIST_PAGE:
            raise self.error(400, f"maxNumberOfDevices must be between 1 and {MAX_LIST_PAGE}",
                             code("INPUT_INVALID.MaxNumberOfDevices.Invalid"))
        state = str(body.get("currentState") or "").lower() or None
        plan = body.get("servicePlan") or None
        after = str(body.get("largestDeviceIdSeen") or "")
        if self._sorted is None:
            self._sorted = sorted(self.devices)
        order = self._sorted
        page: list[dict] = []
        more = False
        for i in range(bisect.bisect_right(order, after) if after else 0, len(order)):
            dev = self.devices.get(order[i])
            if dev is None or dev["accountName"] != aname or (state and dev["state"] != state) or \
                    (plan and dev.get("servicePlan") != plan):
                continue
            if len(page) == size:
                more = True
                break
            page.append(self._view(dev))
        return {"hasMoreData": more, "devices": page}

    # ---------------------------------------------------------------- cost center and custom fields
    # ``PUT /m2m/v1/devices/costCenter`` ``{accountName, devices, costCenter | removeCostCenter}`` and
    # ``PUT /m2m/v1/devices/actions/customFields`` ``{accountName, devices, customFieldsToUpdate: [{key,
    # value}]}`` (keys ``CustomField1..5``) as the SDK's DeviceCostCenterRequest / CustomFieldsUpdateRequest
    # name them, both answered ``{requestId}`` and applied ``action_delay_s`` later like the actions.
    # **Assumed**: the device record keeps ``costCenterCode`` (shown by the
    # control API, not by the device list), a device of another account or unknown is
    # ``DeviceNotFound``, and these edits need no particular state.
    def _add_field_routes(self) -> None:
        @self.route("PUT", "/m2m/v1/devices/costCenter", name="thingspace:costCenter")
        def cost_center(call: Call):
            return self._field_edit(call, "costCenter")

        @self.route("PUT", "/m2m/v1/devices/actions/customFields", name="thingspace:customFields")
        def custom_fields(call: Call):
            return self._field_edit(call, "customFields")

    def _field_edit(self, call: Call, kind: str):
        body = self.check_body(call.body, kind)
        aname = self._account(body.get("accountName"))
        devices = body.get("devices")
        if kind == "costCenter":
            value = body.get("costCenter")
            if not body.get("removeCostCenter") and not (isinstance(value, str) and value):
                raise self.error(400, "costCenter or removeCostCenter is required",
                                 code("INPUT_INVALID.CostCenter.Required"))
            change: Any = None if body.get("removeCostCenter") else value
        else:
            change = body.get("customFieldsToUpdate")
            if not isinstance(change, list) or not change or not all(
                    isinstance(f, dict) and f.get("key") in CUSTOM_FIELD_KEYS for f in change):
                raise self.error(400, f"customFieldsToUpdate must list {{key, value}} with keys "
                                      f"{', '.join(CUSTOM_FIELD_KEYS)}", code("INPUT_INVALID.CustomFields.Invalid"))
        targets = self._targets(call, devices)

        def apply(dev: dict, ident: dict):
            if kind == "costCenter":
                dev["costCenterCode"] = change
            else:
                fields = {f["key"]: f for f in dev.get("customFields") or []}
                for f in change:
                    fields[f["key"]] = {"key": f["key"], "value": f.get("value")}
                dev["customFields"] = [fields[k] for k in sorted(fields)]
            return None

        return self._accepted(call, aname, kind, targets, apply)

    # ---------------------------------------------------------------- service plan and device id changes
    # ``PUT /m2m/v1/devices/actions/plan`` ``{accountName, devices, servicePlan, currentServicePlan?}``
    # (SDK ServicePlanUpdateRequest) and ``PUT /m2m/v1/devices/{serviceType}/actions/deviceId``
    # ``{deviceIds: [one], deviceIdsTo: [one], change4gOption: ChangeICCID | ChangeIMEI}`` (SDK
    # ChangeDeviceIdRequest), both answered ``{requestId}`` and applied ``action_delay_s`` later, with
    # per-device outcomes in the request status like the actions. Documented: no plan change while
    # suspended, at most 4 plan changes per line per month. **Assumed**: the fault codes
    # (``INPUT_INVALID.DeviceState.Invalid`` for a suspended or deactivated line,
    # ``REQUEST_FAILED.ServicePlanChangeLimitExceeded``, ``REQUEST_FAILED.DeviceAlreadyExists`` for a
    # new ICCID/IMEI another device has), that an identifier change needs a line (``active`` or
    # ``suspend``), that ``currentServicePlan`` filters (a device on another plan fails), that any
    # ``serviceType`` is accepted, and that the CarrierService callback of each device carries only
    # ``{requestId, deviceIds, status}`` (plus ``faultResponse`` on failure): no ``deviceResponse``.
    MAX_PLAN_CHANGES_PER_MONTH = 4

    def _add_plan_and_identifier_routes(self) -> None:
        @self.route("PUT", "/m2m/v1/devices/actions/plan", name="thingspace:plan")
        def change_plan(call: Call):
            return self._plan_change(call)

        @self.route("PUT", "/m2m/v1/devices/{serviceType}/actions/deviceId", name="thingspace:deviceId")
        def change_device_id(call: Call):
            return self._device_id_change(call)

    def _accepted(self, call: Call, aname: str, kind: str, targets: list, apply) -> dict:
        """Record an asynchronous request over ``targets`` [(ident, iccid|None)] and complete it later:
        ``apply(dev, ident)`` returns a fault (code, text) or None after changing the device."""
        request_id = str(uuid.uuid4())
        record = {"requestId": request_id, "accountName": aname, "action": kind, "status": "Pending",
                  "requestedAt": ts_time(), "user": call.account,
                  "devices": [{"deviceIds": [ident], "status": "Pending"} for ident, _ in targets]}
        self.requests[request_id] = record
        generation = self._generation

        def complete() -> None:
            if generation != self._generation:
                return
            failures = 0
            callbacks = []
            for entry, (ident, iccid) in zip(record["devices"], targets):
                dev = self.devices.get(iccid) if iccid else None
                if dev is None or dev["accountName"] != aname:
                    fault = ("REQUEST_FAILED.DeviceNotFound", f"Device {ident['id']} not found in the account")
                else:
                    fault = apply(dev, ident)
                if fault:
                    failures += 1
                    entry.update(status="Failed", faultResponse={"faultcode": code(fault[0]), "faultstring": fault[1]})
                    callbacks.append({"requestId": request_id, "deviceIds": [dict(ident)],
                                      "faultResponse": dict(entry["faultResponse"]), "status": "Failed"})
                else:
                    entry["status"] = "Success"
                    callbacks.append({"requestId": request_id, "deviceIds": [dict(ident)], "status": "Success"})
            record["status"] = "Failure" if failures == len(targets) else "Success"
            record["completedAt"] = ts_time()
            self._send_callbacks(record, callbacks)

        self.schedule(self.knobs.action_delay_s, complete)
        return {"requestId": request_id}

    def _targets(self, call: Call, devices: Any) -> list[tuple[dict, str | None]]:
        """[(identifier, ICCID of the known device or None)] for a request's ``devices`` list."""
        if not isinstance(devices, list) or not devices:
            raise self.error(400, "devices is required", code("INPUT_INVALID.Devices.Required"))
        if len(devices) > MAX_DEVICES_PER_ACTION:
            raise self.error(400, f"At most {MAX_DEVICES_PER_ACTION} devices per request",
                             code("INPUT_INVALID.MaxRequestsExceeded"))
        targets = []
        for entry in devices:
            ids = entry.get("deviceIds") if isinstance(entry, dict) else None
            if not isinstance(ids, list) or not ids:
                raise self.error(400, "Every device needs deviceIds", code("INPUT_INVALID.Device.Identifier.Invalid"))
            found = None
            for ident in ids:
                found = found or self._find(ident)
            # the identifier the request's outcome names: the ICCID when one is given
            named = next(({"id": str(i["id"]), "kind": "iccid"} for i in ids if str(i["kind"]).lower() == "iccid"),
                         {"id": str(ids[0]["id"]), "kind": str(ids[0]["kind"]).lower()})
            targets.append((named, found))
        call.iccids = [found or ident["id"] for ident, found in targets]
        return targets

    def _plan_change(self, call: Call):
        body = self.check_body(call.body, "plan")
        aname = self._account(body.get("accountName"))
        plan = body.get("servicePlan")
        if not isinstance(plan, str) or not plan.strip():
            raise self.error(400, "servicePlan is required", code("INPUT_INVALID.servicePlan.Required"))
        self.check_plan(plan)
        current_plan = body.get("currentServicePlan") or None
        targets = self._targets(call, body.get("devices"))
        month = ts_time()[:7]

        def apply(dev: dict, ident: dict):
            if dev["state"] in ("suspend", "deactive"):
                return ("INPUT_INVALID.DeviceState.Invalid",
                        f"Device {dev['iccid']} is {dev['state']}; the service plan cannot change")
            if current_plan and dev.get("servicePlan") != current_plan:
                return ("INPUT_INVALID.DeviceState.Invalid",
                        f"Device {dev['iccid']} is not on service plan {current_plan}")
            counts = dev.setdefault("planChanges", {})
            if counts.get(month, 0) >= self.MAX_PLAN_CHANGES_PER_MONTH:
                return ("REQUEST_FAILED.ServicePlanChangeLimitExceeded",
                        f"Device {dev['iccid']} already changed plan {self.MAX_PLAN_CHANGES_PER_MONTH} times this month")
            if dev.get("servicePlan") != plan:
                counts[month] = counts.get(month, 0) + 1
                dev["servicePlan"] = plan
            return None

        return self._accepted(call, aname, "plan", targets, apply)

    def _device_id_change(self, call: Call):
        body = self.check_body(call.body, "deviceId")
        self.check_plan(body.get("servicePlan"))
        option = str(body.get("change4gOption") or body.get("change4GOption") or "")
        kind = {"changeiccid": "iccid", "changeimei": "imei"}.get(option.lower())
        if kind is None:
            raise self.error(400, "change4gOption must be ChangeICCID or ChangeIMEI",
                             code("INPUT_INVALID.Change4gOption.Invalid"))
        ids, to = body.get("deviceIds"), body.get("deviceIdsTo")
        if not isinstance(ids, list) or len(ids) != 1 or not isinstance(to, list) or len(to) != 1 \
                or not isinstance(to[0], dict):
            raise self.error(400, "deviceIds and deviceIdsTo must name one device each",
                             code("INPUT_INVALID.Device.Identifier.Invalid"))
        new = str(to[0].get("id") or "")
        digits = (19, 20) if kind == "iccid" else (15,)
        if str(to[0].get("kind", "")).lower() != kind or not new.isdigit() or len(new) not in digits:
            raise self.error(400, f"deviceIdsTo must be one {kind} of {' or '.join(map(str, digits))} digits",
                             code("INPUT_INVALID.Device.Identifier.Invalid"))
        found = self._find(ids[0])
        dev0 = self.devices.get(found) if found else None
        targets = [({"id": str(ids[0]["id"]), "kind": str(ids[0]["kind"]).lower()}, found)]
        call.iccid = found or str(ids[0]["id"])
        aname = dev0["accountName"] if dev0 else DEFAULT_ACCOUNT

        def apply(dev: dict, ident: dict):
            if dev["state"] not in ("active", "suspend"):
                return ("INPUT_INVALID.DeviceState.Invalid",
                        f"Device {dev['iccid']} is {dev['state']}; an identifier change needs a line of service")
            holder = self.devices.get(new) if kind == "iccid" else self.devices.get(self._by_id.get(("imei", new), ""))
            if holder is not None and holder is not dev:
                return ("REQUEST_FAILED.DeviceAlreadyExists", f"{kind.upper()} {new} belongs to another device")
            if kind == "iccid":
                old = dev["iccid"]
                del self.devices[old]
                dev["iccid"] = new
                self.devices[new] = dev
                self._sorted = None
                for key, value in list(self._by_id.items()):
                    if value == old:
                        self._by_id[key] = new
            else:
                if dev.get("imei"):
                    self._by_id.pop(("imei", str(dev["imei"])), None)
                dev["imei"] = new
                self._index(dev)
            return None

        return self._accepted(call, aname, "deviceId", targets, apply)

    # ---------------------------------------------------------------- callbacks
    def _register_callback(self, call: Call):
        aname = self._account(call.path_params["aname"])
        body = call.body if isinstance(call.body, dict) else {}
        name, url = body.get("name"), body.get("url")
        if name != "CarrierService" or not url:
            raise self.error(400, "name CarrierService and url are required", code("INPUT_INVALID.Callback.Invalid"))
        host = urlsplit(str(url)).hostname or ""
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:  # the simulator never sends traffic off this machine
            raise self.error(400, "The simulator only delivers callbacks to loopback URLs",
                             code("INPUT_INVALID.Callback.Url.Invalid"))
        self.callbacks[aname] = {"name": name, "url": str(url), "username": body.get("username"),
                                 "password": body.get("password")}
        self._start_ticker()
        return {"accountName": aname, "serviceName": name}

    def _start_ticker(self) -> None:
        """Completions are applied lazily; with a callback registered, something must apply them."""
        if self._ticker is not None and self._ticker.is_alive():
            return
        self._ticker_stop.clear()

        def tick() -> None:
            while not self._ticker_stop.wait(0.1):
                self.run_due()

        self._ticker = threading.Thread(target=tick, name="thingspace-callback-ticker", daemon=True)
        self._ticker.start()

    def _deliver(self, reg: dict, body: dict, attempt: int) -> None:
        payload = dict(body, callbackCount=attempt, maxCallbackThreshold=self.knobs.callback_retries + 1)
        if reg.get("username"):
            payload.update(username=reg["username"], password=reg.get("password"))
        retries, every = self.knobs.callback_retries, self.knobs.callback_retry_s
        generation = self._generation

        def send() -> None:
            try:
                ok = requests.post(reg["url"], json=payload, timeout=5).status_code < 300
            except requests.RequestException:
                ok = False
            with self.lock:
                if generation != self._generation:
                    return
                self.deliveries.append({"url": reg["url"], "requestId": body["requestId"], "attempt": attempt,
                                        "delivered": ok, "ts": time.time()})
                if not ok and attempt <= retries:
                    self.schedule(every, lambda: self._deliver(reg, body, attempt + 1))

        threading.Thread(target=send, name="thingspace-callback", daemon=True).start()
