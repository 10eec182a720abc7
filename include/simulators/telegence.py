"""AT&T Telegence (APEX Mobility line-config and activation APIs) simulator; prefix ``/telegence``.

Shapes follow ``carrier_apis.md`` section 3. The API root is the host itself (``api_root`` is
empty), so a client's base URL is ``<server>/telegence`` and the paths are the real ones:

* ``GET   /sp/mobility/lineconfig/api/v1/service/{subscriberNumber}`` -> the line:
  ``{"subscriberNumber", "serviceCharacteristic": [{"name", "value"}, ...]}``
* ``PATCH /sp/mobility/lineconfig/api/v1/service/{subscriberNumber}`` with
  ``{"effectiveDate"?, "serviceCharacteristic": [{"name", "value"}, ...]}`` -> the updated line
* ``GET   /sp/mobility/lineconfig/api/v1/service`` (request headers ``current-page`` (1-based) and
  ``page-size``; response header ``page-total``) -> a JSON list of lines
* ``POST  /sp/mobility/activation/api/v1/service`` with a list of up to 200
  ``{"service": {"serviceCharacteristic": [...]}, "relatedParty": [...]}`` -> one
  ``{"id", "service": {"status", "serviceCharacteristic"}}`` per line, in order
* ``GET   /sp/mobility/activation/api/v1/service/{id}`` -> the activation request with its status
  ``pending`` / ``reserved`` / ``active`` (with ``subscriberNumber``) / ``rejected`` (with ``statusReason``)

Auth: headers ``app-id`` and ``app-secret`` against ``accounts`` (default ``demo-app`` /
``demo-app-secret``); the app id is the account the limits apply to.

Documented (carrier_apis.md): the headers, the line-config path and its ``serviceCharacteristic``
name/value pairs and characteristic names, ``C`` = cancelled and ``A`` used to activate, activation
lists of at most 200 lines answered with ids and statuses pending / reserved / rejected / active, the
404 body ``{"id", "description": "/service/"}``, paging header names.

**Assumed** (NOT FOUND / UNVERIFIED in carrier_apis.md):

* suspend / restore / cancel are a PATCH of the characteristic ``subscriberStatus`` (``S`` suspended,
  ``A`` active, ``C`` cancelled) with an optional ``statusReasonCode``; the change is immediate;
  ``C`` is final; setting the current status again is a no-op;
* ``effectiveDate`` (``yyyy-MM-dd``, a date that exists) after today is read as a UTC day: the PATCH is
  validated at once, answered with the line as it is, and takes effect at 00:00 UTC of that date
  (``schedule_future_dates``; listed by control ``GET /pending_changes``); today or earlier is immediate;
* the activation paths ``/sp/mobility/activation/api/v1/service[/{id}]`` and their bodies: the line is
  named by the characteristics ``sim`` (ICCID), ``singleUserCode`` (plan SOC) and ``serviceZipCode``;
  an item missing one of them is ``rejected`` at once; otherwise it is ``pending``, ``reserved`` after
  half of ``activation_delay_s`` and ``active`` (a new subscriber number; the line then carries the
  request's ``IMEI`` and ``offeringCodeN`` features, listed as characteristics of the line) after all of it, or
  ``rejected`` then when the SIM is unknown, already has a line, or is listed in ``reject_iccids``;
  a line also carries the SOCs ``plan_offerings`` lists for its plan (the plan's bundled features);
* a PATCH item ``{"name": "removeOfferingCode", "value": <SOC>}`` (one per SOC, as the legacy sent
  them after an activation) takes that offering code off the line; a SOC the line does not carry is
  refused (400) and nothing of the PATCH is applied;
* error bodies ``{"id": <uuid>, "description": <message>}`` for every error (401, 400, 404, 429);
* no rate limit is documented; the framework's knobs apply;
* strict by choice (unpublished; each switchable in ``TelegenceKnobs``): a JSON body must be sent as
  ``application/json`` (else 415, ``require_json_content_type``); a PATCH body has only
  ``effectiveDate`` and ``serviceCharacteristic``, an activation item only ``service``,
  ``relatedParty`` and ``billingAccount``, and ``effectiveDate`` is ``yyyy-MM-dd``; anything else is a
  400 naming the field (``refuse_unknown_fields``). Unknown characteristics and status letters are
  always refused.
"""
from __future__ import annotations

import itertools
import re
import time
import uuid
from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field

from simulators.core import Call, Knobs, SimulatedCarrier

LINECONFIG = "/sp/mobility/lineconfig/api/v1/service"
ACTIVATION = "/sp/mobility/activation/api/v1/service"
MAX_ACTIVATIONS = 200
IPPROVISIONING = "/sp/mobility/ipprovisioning/api/v1"
STATUSES = ("A", "S", "C")
PATCH_FIELDS = frozenset({"effectiveDate", "serviceCharacteristic"})
ACTIVATION_ITEM_FIELDS = frozenset({"service", "relatedParty", "billingAccount"})
REMOVE_SOC = "removeOfferingCode"  # legacy PNSA: a PATCH item per SOC to take off a line (may repeat)
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# current -> statuses a PATCH may set (assumed)
ALLOWED = {"A": frozenset({"A", "S", "C"}), "S": frozenset({"S", "A", "C"}), "C": frozenset({"C"})}
EDITABLE = frozenset({"subscriberStatus", "statusReasonCode", "singleUserCode", "contactName", "IMEI",
                      "serviceZipCode", "technologyType", "reasonCode", "sim", REMOVE_SOC})
LINE_FIELDS = ("subscriberStatus", "statusEffectiveDate", "statusReasonCode", "subscriberActivationDate",
               "singleUserCode", "serviceZipCode", "billingAccountNumber", "contactName", "sim", "IMEI",
               "staticIPAddress")


class TelegenceKnobs(Knobs):
    activation_delay_s: float = Field(1.0, ge=0, description="pending -> active after this many seconds")
    reject_iccids: list[str] = Field(default_factory=list, description="activations of these SIMs are rejected")
    ip_pool_size: int = Field(1000, ge=0, description="static IP addresses available per PDP name")
    require_json_content_type: bool = Field(True, description="a JSON body must be sent as application/json, "
                                            "else 415 (assumed)")
    refuse_unknown_fields: bool = Field(True, description="unknown top-level body fields and a malformed "
                                        "effectiveDate are refused (assumed)")
    plan_offerings: dict[str, list[str]] = Field(
        default_factory=dict, description="SOCs (offering codes) a line activated on this plan (singleUserCode) "
        "carries besides the request's own offeringCodeN: the plan's bundled features (assumed)")
    schedule_future_dates: bool = Field(True, description="a PATCH whose effectiveDate is after today (UTC) takes "
                                        "effect at 00:00 UTC of that date, not at once (assumed)")


def _today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def _day_start(day: str) -> float:
    """Epoch seconds of 00:00 UTC of ``yyyy-MM-dd`` (ValueError for a date that does not exist)."""
    return datetime.combine(date.fromisoformat(day), datetime.min.time(), timezone.utc).timestamp()


def characteristics(items: Any) -> dict[str, Any]:
    """``[{"name", "value"}, ...]`` -> dict; raises ValueError on another shape."""
    if not isinstance(items, list):
        raise ValueError("serviceCharacteristic must be a list of {name, value}")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError("serviceCharacteristic must be a list of {name, value}")
        out[item["name"]] = item.get("value")
    return out


class TelegenceSimulator(SimulatedCarrier):
    name = "telegence"
    prefix = "/telegence"
    api_root = ""
    knobs_model = TelegenceKnobs

    def __init__(self, accounts: dict[str, str] | None = None, **knobs: Any):
        self.by_number: dict[str, str] = {}         # subscriber number -> ICCID
        self.activations: dict[str, dict] = {}
        self.ip_batches: dict[str, dict] = {}     # static IP provisioning batches
        self.ips_given: set[str] = set()
        self._numbers = itertools.count(1)
        self.pending_changes: list[dict] = []      # future-dated PATCHes (control GET /pending_changes)
        super().__init__(accounts=accounts if accounts is not None else {"demo-app": "demo-app-secret"}, **knobs)

    # ---------------------------------------------------------------- framework hooks
    def reset_state(self) -> None:
        self.pending_changes = []
        self.by_number.clear()
        self.activations.clear()
        self.ip_batches: dict[str, dict] = {}
        self.ips_given: set[str] = set()
        self._numbers = itertools.count(1)

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        body: dict[str, Any] = {"id": str(uuid.uuid4()), "description": message}
        if code is not None:
            body["code"] = code
        return body

    def content_type_error(self, request):
        if not self.knobs.require_json_content_type:
            return None
        return self.media_type_refusal(request)

    def normalize_device(self, device: dict) -> dict:
        device = super().normalize_device(device)
        status = device.pop("status", None) or device.get("subscriberStatus")
        out: dict[str, Any] = dict.fromkeys(LINE_FIELDS)
        out.update({"msisdn": None, "billingAccountNumber": "287000000001", "singleUserCode": "IOTSOC1",
                    "serviceZipCode": "30004"})
        out.update(device)
        out["sim"] = out["iccid"]
        if out.get("msisdn"):
            out["msisdn"] = str(out["msisdn"])
            out["subscriberStatus"] = status or "A"
            if out["subscriberStatus"] not in STATUSES:
                raise ValueError(f"{out['iccid']}: subscriberStatus {status!r} is not one of {', '.join(STATUSES)}")
            out["subscriberActivationDate"] = out.get("subscriberActivationDate") or _today()
        else:
            out["subscriberStatus"] = None  # a SIM in inventory: no line yet
        return out

    def on_devices_seeded(self, devices: list[dict]) -> None:
        seeded = {d["iccid"] for d in devices}
        if self.by_number:
            self.by_number = {n: i for n, i in self.by_number.items() if i not in seeded}
        for d in devices:
            if d.get("msisdn"):
                self.by_number[d["msisdn"]] = d["iccid"]

    def authenticate(self, request) -> str:
        app_id = request.headers.get("app-id", "")
        secret = request.headers.get("app-secret", "")
        if not app_id or not secret:
            raise self.error(401, "Missing app-id or app-secret header")
        if self.accounts.get(app_id) != secret:
            raise self.error(401, "Invalid app-id or app-secret")
        return app_id

    # ---------------------------------------------------------------- routes
    def add_routes(self) -> None:
        self._add_ip_routes()  # static IP provisioning (ActivateNewService)

        @self.route("GET", LINECONFIG)
        def list_lines(call: Call):
            return self._list(call)

        @self.route("GET", LINECONFIG + "/{subscriberNumber}")
        def get_line(call: Call):
            return self._line_json(self._line(call))

        @self.route("PATCH", LINECONFIG + "/{subscriberNumber}")
        def patch_line(call: Call):
            return self._patch(call)

        @self.route("POST", ACTIVATION)
        def activate(call: Call):
            return self._activate(call)

        @self.route("GET", ACTIVATION + "/{activationId}")
        def activation_status(call: Call):
            record = self.activations.get(call.path_params["activationId"])
            if record is None:
                raise self.error(404, "/activation/")
            call.iccid = record["iccid"]
            return self._activation_json(record)

    def add_control_routes(self, router: APIRouter) -> None:
        @router.get("/pending_changes")
        async def pending_changes():
            with self.lock:
                return [dict(c) for c in self.pending_changes]

        @router.get("/activations")
        async def activations():
            self.run_due()
            with self.lock:
                return [dict(r) for r in self.activations.values()]

        @router.get("/lines/{number}")
        async def line(number: str):
            self.run_due()
            with self.lock:
                iccid = self.by_number.get(number)
                if iccid is None:
                    return JSONResponse({"error": f"no line {number}"}, status_code=404)
                return dict(self.devices[iccid])

    # ---------------------------------------------------------------- behaviour
    def _line(self, call: Call) -> dict:
        number = call.path_params["subscriberNumber"]
        iccid = self.by_number.get(number)
        if iccid is None or iccid not in self.devices:
            raise self.error(404, "/service/")
        call.iccid = iccid
        failing = self.knobs.fail_iccids.get(iccid)
        if failing:
            raise self.error(int(failing), f"Injected failure for {number}")
        return self.devices[iccid]

    @staticmethod
    def _line_json(dev: dict) -> dict:
        chars = [{"name": k, "value": dev.get(k)} for k in LINE_FIELDS if dev.get(k) is not None]
        chars += [{"name": k, "value": v} for k, v in sorted(dev.items()) if k.startswith("offeringCode") and v]
        return {"subscriberNumber": dev["msisdn"], "serviceCharacteristic": chars}

    def _patch(self, call: Call):
        dev = self._line(call)
        body = call.body
        if not isinstance(body, dict) or "serviceCharacteristic" not in body:
            raise self.error(400, "serviceCharacteristic is required")
        if self.knobs.refuse_unknown_fields:
            unknown_fields = sorted(set(body) - PATCH_FIELDS)
            if unknown_fields:
                raise self.error(400, f"unrecognized field(s): {', '.join(unknown_fields)}")
            effective = body.get("effectiveDate")
            if effective is not None and not (isinstance(effective, str) and DATE_RE.match(effective)):
                raise self.error(400, f"effectiveDate must be yyyy-MM-dd, got {effective!r}")
        effective = body.get("effectiveDate")
        starts = None
        if isinstance(effective, str) and DATE_RE.match(effective):
            try:
                starts = _day_start(effective)
            except ValueError:
                raise self.error(400, f"effectiveDate {effective!r} is not a date") from None
        try:
            changes = characteristics(body["serviceCharacteristic"])
        except ValueError as exc:
            raise self.error(400, str(exc)) from None
        unknown = sorted(set(changes) - EDITABLE)
        if unknown or not changes:
            raise self.error(400, f"characteristics not editable: {', '.join(unknown) or '(none given)'}")
        removed = [str(i.get("value") or "") for i in body["serviceCharacteristic"] if i.get("name") == REMOVE_SOC]
        changes.pop(REMOVE_SOC, None)
        on_line = {v: k for k, v in dev.items() if k.startswith("offeringCode") and v}
        missing = [code for code in removed if code not in on_line]
        if missing:  # assumed (AT&T publishes no error list): removing a SOC the line lacks is refused
            raise self.error(400, f"offering code(s) {', '.join(repr(c) for c in missing)} not on line "
                                  f"{dev.get('msisdn')}")
        target = changes.get("subscriberStatus")
        if target is not None:
            if target not in STATUSES:
                raise self.error(400, f"Invalid subscriberStatus {target!r}")
            if target not in ALLOWED[dev["subscriberStatus"]]:
                raise self.error(400, f"subscriberStatus cannot change from {dev['subscriberStatus']} to {target}")

        def apply() -> None:
            if target is not None and target != dev["subscriberStatus"]:
                if target not in ALLOWED[dev["subscriberStatus"]]:
                    return  # the line changed meanwhile (a scheduled change lands on the line as it is then)
                dev["statusEffectiveDate"] = body.get("effectiveDate") or _today()
            for k, v in changes.items():
                if k == "reasonCode":
                    continue
                dev[k] = v if v is None else str(v)
            for code in removed:
                key = next((k for k, v in dev.items() if k.startswith("offeringCode") and v == code), None)
                if key is not None:
                    del dev[key]

        if starts is not None and starts > time.time() and self.knobs.schedule_future_dates:
            # a future effectiveDate: the change takes effect at 00:00 UTC of that date; the answer is the
            # line as it is until then (assumed: AT&T does not say in which zone its dates are read)
            self.pending_changes.append({"subscriberNumber": dev.get("msisdn"), "effectiveDate": effective,
                                         "changes": {k: v for k, v in changes.items()}})
            self.schedule_at(starts, apply)
            return self._line_json(dev)
        apply()
        return self._line_json(dev)

    def _list(self, call: Call):
        try:
            page = int(call.request.headers.get("current-page") or 1)
            size = int(call.request.headers.get("page-size") or 100)
        except ValueError:
            raise self.error(400, "current-page and page-size must be integers") from None
        if page < 1 or not 1 <= size <= 500:
            raise self.error(400, "current-page must be 1 or more and page-size between 1 and 500")
        numbers = sorted(self.by_number)
        total_pages = max(1, -(-len(numbers) // size))
        chunk = numbers[(page - 1) * size: page * size]
        lines = [self._line_json(self.devices[self.by_number[n]]) for n in chunk]
        return JSONResponse(lines, headers={"page-total": str(total_pages)})

    def _activate(self, call: Call):
        body = call.body
        if not isinstance(body, list) or not body:
            raise self.error(400, "body must be a non-empty list of activation requests")
        if len(body) > MAX_ACTIVATIONS:
            raise self.error(400, f"at most {MAX_ACTIVATIONS} services per activation request, got {len(body)}")
        if self.knobs.refuse_unknown_fields:
            for n, item in enumerate(body):
                extra = sorted(set(item) - ACTIVATION_ITEM_FIELDS) if isinstance(item, dict) else []
                if extra:
                    raise self.error(400, f"item {n}: unrecognized field(s): {', '.join(extra)}")
        answers, iccids = [], []
        for item in body:
            record = {"id": str(uuid.uuid4()), "iccid": None, "status": "pending", "statusReason": None,
                      "subscriberNumber": None, "created": time.time()}
            try:
                service = item.get("service") if isinstance(item, dict) else None
                chars = characteristics((service or {}).get("serviceCharacteristic"))
            except ValueError as exc:
                chars, record["status"], record["statusReason"] = {}, "rejected", str(exc)
            record["iccid"] = str(chars.get("sim") or "") or None
            missing = [n for n in ("sim", "singleUserCode", "serviceZipCode") if not chars.get(n)]
            if record["status"] == "pending" and missing:
                record["status"], record["statusReason"] = "rejected", f"missing {', '.join(missing)}"
            record["singleUserCode"] = chars.get("singleUserCode")
            record["offerings"] = {k: str(v) for k, v in chars.items() if k.startswith("offeringCode") and v}
            record["IMEI"] = chars.get("IMEI")
            record["serviceZipCode"] = chars.get("serviceZipCode")
            self.activations[record["id"]] = record
            if record["iccid"]:
                iccids.append(record["iccid"])
            if record["status"] == "pending":
                self._schedule_activation(record)
            answers.append(self._activation_json(record))
        call.iccids = iccids
        return 201, answers

    def _schedule_activation(self, record: dict) -> None:
        delay = self.knobs.activation_delay_s
        generation = self._generation

        def reserve() -> None:
            if generation == self._generation and record["status"] == "pending":
                record["status"] = "reserved"

        def finish() -> None:
            if generation != self._generation or record["status"] not in ("pending", "reserved"):
                return
            dev = self.devices.get(record["iccid"])
            if dev is None:
                record["status"], record["statusReason"] = "rejected", f"SIM {record['iccid']} not found"
            elif dev.get("msisdn") and dev.get("subscriberStatus") != "C":
                record["status"] = "rejected"
                record["statusReason"] = f"SIM {record['iccid']} already has subscriber {dev['msisdn']}"
            elif record["iccid"] in self.knobs.reject_iccids:
                record["status"], record["statusReason"] = "rejected", "Activation rejected (injected)"
            else:
                number = self._new_number()
                offerings = dict(record.get("offerings", {}))
                for code in self.knobs.plan_offerings.get(str(record["singleUserCode"]), []):
                    if code not in offerings.values():
                        offerings[f"offeringCode{len(offerings) + 1}"] = code
                dev.update(msisdn=number, subscriberStatus="A", subscriberActivationDate=_today(),
                           statusEffectiveDate=_today(), singleUserCode=record["singleUserCode"],
                           serviceZipCode=record["serviceZipCode"], **offerings)
                if record.get("IMEI"):
                    dev["IMEI"] = str(record["IMEI"])
                self.by_number[number] = dev["iccid"]
                record["status"], record["subscriberNumber"] = "active", number

        self.schedule(delay / 2, reserve)
        self.schedule(delay, finish)

    # ---------------------------------------------------------------- static IP provisioning
    # Legacy AMOP calls three URLs it reads from settings (TelegenceIPAddressesURL,
    # TelegenceIPProvisioningURL, TelegenceIPProvisionRequestStatusURL); AT&T does not publish them.
    # **Assumed** paths and bodies:
    # * ``POST /sp/mobility/ipprovisioning/api/v1/ipaddresses`` ``{pdpName, ipQuantity}`` ->
    #   ``{pdpName, ipAddresses: [...]}`` (free addresses of the PDP's pool, ``ip_pool_size`` each;
    #   fewer than asked when the pool runs out);
    # * ``POST /sp/mobility/ipprovisioning/api/v1/provisioning`` ``{pdpName, billingAccountNumber,
    #   subscriber: [{subscriberNumber, ipAddressRecord, lteIndicator, defaultAPNIndicator,
    #   accessPointName, effectiveDate}]}`` -> ``{batchId}``; done ``activation_delay_s`` later;
    # * ``POST /sp/mobility/ipprovisioning/api/v1/provisioning/status`` ``{batchId}`` -> ``{batchId,
    #   subscriber: [{subscriberNumber, ipAddressRecord, ProfileCheck, IPReservation, ProfileUpdate}]}``:
    #   ``Pending`` x3 while running, then ``Success`` / ``Reserved`` / ``Complete`` (the line gets
    #   ``staticIPAddress``), or ``ProfileCheck: Failed`` for a number without an active line.
    def _add_ip_routes(self) -> None:
        @self.route("POST", IPPROVISIONING + "/ipaddresses")
        def ip_addresses(call: Call):
            body = call.body if isinstance(call.body, dict) else {}
            pdp, quantity = body.get("pdpName"), body.get("ipQuantity")
            if not pdp or not isinstance(quantity, int) or not 1 <= quantity <= 10:
                raise self.error(400, "pdpName and ipQuantity (1-10) are required")
            free = [f"10.{200 + sum(map(ord, str(pdp))) % 50}.{i // 250}.{i % 250 + 1}"
                    for i in range(self.knobs.ip_pool_size)]
            out = [ip for ip in free if ip not in self.ips_given][:quantity]
            self.ips_given.update(out)
            return {"pdpName": pdp, "ipAddresses": out}

        @self.route("POST", IPPROVISIONING + "/provisioning")
        def provision(call: Call):
            body = call.body if isinstance(call.body, dict) else {}
            subs = body.get("subscriber")
            if not body.get("pdpName") or not isinstance(subs, list) or not subs or not all(
                    isinstance(x, dict) and x.get("subscriberNumber") and x.get("ipAddressRecord") for x in subs):
                raise self.error(400, "pdpName and subscriber [{subscriberNumber, ipAddressRecord}] are required")
            batch = {"batchId": str(uuid.uuid4()), "done": False,
                     "subscriber": [{"subscriberNumber": str(x["subscriberNumber"]),
                                     "ipAddressRecord": str(x["ipAddressRecord"]), "ProfileCheck": "Pending",
                                     "IPReservation": "Pending", "ProfileUpdate": "Pending"} for x in subs]}
            call.iccids = [self.by_number[x["subscriberNumber"]] for x in batch["subscriber"]
                           if x["subscriberNumber"] in self.by_number]
            self.ip_batches[batch["batchId"]] = batch
            generation = self._generation

            def finish() -> None:
                if generation != self._generation:
                    return
                for x in batch["subscriber"]:
                    dev = self.devices.get(self.by_number.get(x["subscriberNumber"], ""))
                    if dev is None or dev.get("subscriberStatus") != "A":
                        x["ProfileCheck"] = "Failed"
                        continue
                    dev["staticIPAddress"] = x["ipAddressRecord"]
                    x.update(ProfileCheck="Success", IPReservation="Reserved", ProfileUpdate="Complete")
                batch["done"] = True

            self.schedule(self.knobs.activation_delay_s, finish)
            return {"batchId": batch["batchId"]}

        @self.route("POST", IPPROVISIONING + "/provisioning/status")
        def provision_status(call: Call):
            body = call.body if isinstance(call.body, dict) else {}
            batch = self.ip_batches.get(str(body.get("batchId") or ""))
            if batch is None:
                raise self.error(404, "/provisioning/")
            return {"batchId": batch["batchId"], "subscriber": [dict(x) for x in batch["subscriber"]]}

    def _new_number(self) -> str:
        while True:
            number = f"1470{next(self._numbers):07d}"
            if number not in self.by_number:
                return number

    @staticmethod
    def _activation_json(record: dict) -> dict:
        chars = [{"name": "sim", "value": record["iccid"]}]
        if record.get("subscriberNumber"):
            chars.append({"name": "subscriberNumber", "value": record["subscriberNumber"]})
        service: dict[str, Any] = {"status": record["status"], "serviceCharacteristic": chars}
        if record.get("subscriberNumber"):
            service["subscriberNumber"] = record["subscriberNumber"]
        if record.get("statusReason"):
            service["statusReason"] = record["statusReason"]
        return {"id": record["id"], "service": service}
