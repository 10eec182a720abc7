"""Rev.io billing REST API simulator; API root ``/revio/v1``.

Shapes follow carrier_apis.md section 6 (developers.rev.io):

* auth: ``Authorization: Basic base64("<user>@<clientcode>:<password>")`` **and** the APIM header
  ``Ocp-Apim-Subscription-Key`` (one key per client code); either missing or wrong -> 401;
* limits: ``calls_per_minute`` (default 500, Rev.io's documented per-account limit) -> 429 with
  ``Retry-After``, on top of the framework's per-second ``rate_limit`` knob;
* lists: ``page_size`` (1-500, default 10) and ``page``, filters as ``search.<field>`` (the bare
  field name is accepted too); answer ``{"ok": true, "records": [...], "has_more", "record_count"}``;
* ``GET /Services``, ``POST /Services`` (``customer_id``, ``provider_id`` required) -> 201 ``{"ok": true,
  "id"}``, ``GET /Services/{id}``, ``PATCH /Services/{id}`` with a JSON Patch list (root fields and
  ``/fields/{index}/value`` of the user-defined ``fields`` array ``[{field_id, label, value}]``);
* ``GET /ServiceProduct``, ``POST /ServiceProduct`` (``service_id``, ``product_id``,
  ``generate_proration`` required) -> 201 ``{"ok": true, "id"}``, ``GET /ServiceProduct/{id}``,
  ``PUT /ServiceProduct/{id}``; statuses PENDING, ACTIVE, DENIED, DISCONNECTED.

**Assumed** (not documented publicly): the error body ``{"ok": false, "message", "code"}``; that any
positive customer, provider and product id exists; the labels of the custom fields every new service
gets (``field_labels``: ``Username``, ``Cost Center 1..3`` by default); record field names in answers
mirror the request fields, with ``service_id`` / ``service_product_id``.

Strict by choice (each switchable in ``RevioKnobs``; contract ``contracts/revio.md``): a body field
other than the documented ones, or an id that is not a JSON integer, is 400 naming it
(``refuse_unknown_fields``); dates are ``yyyy-MM-dd``, ``yyyy-MM-ddZ`` or an ISO date-time with an offset
(``strict_dates``); a PATCH must be sent as ``application/json-patch+json`` and other bodies as
``application/json`` (415, ``require_content_types``; the media types are documented, the 415 is not);
a DISCONNECTED or DENIED service product keeps its status (``final_product_statuses``).

``fail_iccids`` applies to calls that name a device: ``number2`` (the ICCID, as AMOP sends it) of a
service create, or the service of a service-product create.
"""
from __future__ import annotations

import base64
import binascii
import itertools
import time
from collections import defaultdict, deque
import re
from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from simulators.core import Call, Knobs, SimulatedCarrier

ROOT = "/v1"
PRODUCT_STATUSES = ("PENDING", "ACTIVE", "DENIED", "DISCONNECTED")
DEFAULT_FIELD_LABELS = ["Username", "Cost Center 1", "Cost Center 2", "Cost Center 3"]
SERVICE_FIELDS = ("customer_id", "provider_id", "service_type_id", "package_id", "number", "number2",
                  "usage_plan_group_id", "effective_date", "activated_date", "disconnected_date", "description",
                  "address_id")
PATCHABLE_ROOT = frozenset(SERVICE_FIELDS) - {"customer_id"}
PRODUCT_FIELDS = ("customer_id", "product_id", "service_id", "package_id", "description", "code_1", "code_2",
                  "rate", "quantity", "status", "effective_date", "activated_date", "generate_proration",
                  "canceled_date")
DATE_FIELDS = frozenset({"effective_date", "activated_date", "disconnected_date", "canceled_date"})
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(Z|T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))?$")
FINAL_PRODUCT_STATUSES = ("DISCONNECTED", "DENIED")
PATCH_OP_FIELDS = frozenset({"op", "path", "value", "from"})
INT_FIELDS = frozenset({"customer_id", "provider_id", "service_type_id", "package_id", "usage_plan_group_id",
                        "address_id", "product_id", "service_id", "quantity"})


def _real_date(text: str) -> bool:
    """The date (or date-time with its offset) exists: ``2026-02-30`` or ``T25:00`` do not."""
    try:
        if len(text) <= 11:
            date.fromisoformat(text[:10])
        else:
            datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return False
    return True


def revio_ts(epoch: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class RevioKnobs(Knobs):
    calls_per_minute: int | None = Field(500, ge=0, description="admitted calls per account per 60 s; 0/None = off")
    refuse_unknown_fields: bool = Field(True, description="undocumented body fields and ids that are not JSON "
                                        "integers are refused with 400 (assumed)")
    strict_dates: bool = Field(True, description="dates must be yyyy-MM-dd, yyyy-MM-ddZ or an ISO date-time with "
                               "an offset (assumed)")
    require_content_types: bool = Field(True, description="PATCH as application/json-patch+json, other bodies as "
                                        "application/json, else 415 (the 415 is assumed)")
    final_product_statuses: bool = Field(True, description="a DISCONNECTED or DENIED service product keeps its "
                                         "status (assumed)")


class RevioSimulator(SimulatedCarrier):
    name = "revio"
    prefix = "/revio"
    api_root = ROOT
    knobs_model = RevioKnobs
    rate_limit_message = ("Rate limit is exceeded. Try again later.", "429")
    concurrency_message = ("Too many concurrent requests", "429")

    def __init__(self, accounts: dict[str, str] | None = None, subscription_keys: dict[str, str] | None = None,
                 field_labels: list[str] | None = None, **knobs: Any):
        """``accounts``: ``"user@clientcode"`` -> password; ``subscription_keys``: clientcode -> APIM key."""
        self.subscription_keys = dict(subscription_keys if subscription_keys is not None
                                      else {"demo": "demo-subscription-key"})
        self._base_labels = list(field_labels or DEFAULT_FIELD_LABELS)
        self.field_labels = list(self._base_labels)
        self.services: dict[int, dict] = {}
        self.service_products: dict[int, dict] = {}
        self._ids = itertools.count(10_001)
        self._minute: dict[str, deque] = defaultdict(deque)
        super().__init__(accounts=accounts if accounts is not None else {"api@demo": "demo-password"}, **knobs)

    # ---------------------------------------------------------------- framework hooks
    def reset_state(self) -> None:
        self.services.clear()
        self.service_products.clear()
        self._ids = itertools.count(10_001)
        self._minute.clear()
        self.field_labels = list(self._base_labels)

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        return {"ok": False, "message": message, "code": code or str(status)}

    def bad_json(self):
        return self.error(400, "The request body is not valid JSON.", "400")

    def content_type_error(self, request: Request):
        if not self.knobs.require_content_types:
            return None
        wanted = "application/json-patch+json" if request.method == "PATCH" else "application/json"
        return self.media_type_refusal(request, wanted, "415")

    def set_subscription_keys(self, keys: dict[str, str]) -> None:
        with self.lock:
            self.subscription_keys.update(keys)

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            raise self.error(401, "Authorization has been denied for this request.", "401")
        try:
            login, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise self.error(401, "Authorization has been denied for this request.", "401") from None
        user, at, client_code = login.partition("@")
        if not sep or not at or not user or not client_code or self.accounts.get(login) != password:
            raise self.error(401, "Authorization has been denied for this request.", "401")
        key = request.headers.get("ocp-apim-subscription-key", "")
        if not key or self.subscription_keys.get(client_code) != key:
            raise self.error(401, "Access denied due to invalid subscription key. Make sure to provide a valid key "
                                  "for an active subscription.", "401")
        return login

    def _admit(self, account: str, now: float, knobs: Knobs) -> tuple[float, str] | None:
        per_minute = getattr(knobs, "calls_per_minute", None)
        if per_minute:
            with self.lock:
                window = self._minute[account]
                while window and window[0] <= now - 60.0:
                    window.popleft()
                if len(window) >= per_minute:
                    return max(0.01, window[len(window) - per_minute] + 60.0 - now), "rate_limit"
        refused = super()._admit(account, now, knobs)
        if refused is None and per_minute:
            with self.lock:
                self._minute[account].append(now)
        return refused

    def identify(self, call: Call) -> None:
        body = call.body if isinstance(call.body, dict) else {}
        if body.get("number2"):
            call.iccid = str(body["number2"])
        elif body.get("service_id") is not None:
            service = self.services.get(_int_or_none(body.get("service_id")) or -1)
            if service and service.get("number2"):
                call.iccid = str(service["number2"])

    # ---------------------------------------------------------------- routes
    def add_routes(self) -> None:
        @self.route("GET", "/Services")
        def list_services(call: Call):
            return self._list(call, self.services, ("customer_id", "number", "number2", "provider_id",
                                                    "service_type_id"))

        @self.route("POST", "/Services")
        def create_service(call: Call):
            return self._create_service(call)

        @self.route("GET", "/Services/{service_id}")
        def get_service(call: Call):
            return {"ok": True, **_copy(self._service(call.path_params["service_id"]))}

        @self.route("PATCH", "/Services/{service_id}")
        def patch_service(call: Call):
            return self._patch_service(call)

        @self.route("GET", "/ServiceProduct")
        def list_products(call: Call):
            return self._list(call, self.service_products, ("customer_id", "service_id", "product_id", "status"))

        @self.route("POST", "/ServiceProduct")
        def create_product(call: Call):
            return self._create_product(call)

        @self.route("GET", "/ServiceProduct/{service_product_id}")
        def get_product(call: Call):
            return {"ok": True, **dict(self._product(call.path_params["service_product_id"]))}

        @self.route("PUT", "/ServiceProduct/{service_product_id}")
        def put_product(call: Call):
            product = self._product(call.path_params["service_product_id"])
            body = self._body(call)
            values = self._fields(body, PRODUCT_FIELDS)
            if "status" in values and values["status"] not in PRODUCT_STATUSES:
                raise self.error(400, f"status must be one of {', '.join(PRODUCT_STATUSES)}", "400")
            if (self.knobs.final_product_statuses and product.get("status") in FINAL_PRODUCT_STATUSES
                    and values.get("status", product["status"]) != product["status"]):
                raise self.error(400, f"Service product {product['service_product_id']} is {product['status']}; "
                                      f"its status cannot change.", "400")
            values.pop("service_id", None)
            product.update(values)
            return {"ok": True, **dict(product)}

    def add_control_routes(self, router: APIRouter) -> None:
        @router.get("/services")
        async def services(number2: str | None = None, customer_id: int | None = None):
            with self.lock:
                return [_copy(s) for s in self.services.values()
                        if (number2 is None or s.get("number2") == number2)
                        and (customer_id is None or s.get("customer_id") == customer_id)]

        @router.get("/service_products")
        async def service_products(service_id: int | None = None):
            with self.lock:
                return [dict(p) for p in self.service_products.values()
                        if service_id is None or p.get("service_id") == service_id]

        @router.put("/subscription_keys")
        async def put_keys(request: Request):
            data = await request.json()
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                return {"error": 'body must be {"clientcode": "key", ...}'}
            self.set_subscription_keys(data)
            return {"client_codes": sorted(self.subscription_keys)}

    # ---------------------------------------------------------------- behaviour
    def _body(self, call: Call) -> dict:
        if not isinstance(call.body, dict):
            raise self.error(400, "The request body must be a JSON object.", "400")
        return call.body

    def _fields(self, body: dict, allowed: tuple[str, ...]) -> dict:
        out: dict[str, Any] = {}
        unknown = sorted(set(body) - set(allowed))
        if unknown and self.knobs.refuse_unknown_fields:
            raise self.error(400, f"The request contains unrecognized field(s): {', '.join(unknown)}.", "400")
        for k in allowed:
            if k not in body:
                continue
            v = body[k]
            if k in INT_FIELDS and v is not None and self.knobs.refuse_unknown_fields and (
                    isinstance(v, bool) or not isinstance(v, int)):
                raise self.error(400, f"{k} must be an integer", "400")
            if k in DATE_FIELDS and v is not None and self.knobs.strict_dates and not (
                    isinstance(v, str) and DATE_RE.match(v) and _real_date(v)):
                raise self.error(400, f"{k} must be a date (yyyy-MM-dd) or an ISO date-time with an offset, "
                                      f"got {v!r}", "400")
            if k in INT_FIELDS and v is not None:
                iv = _int_or_none(v)
                if iv is None or iv < 0:
                    raise self.error(400, f"{k} must be a non-negative integer", "400")
                v = iv
            out[k] = v
        return out

    def _create_service(self, call: Call):
        body = self._body(call)
        values = self._fields(body, SERVICE_FIELDS)
        for required in ("customer_id", "provider_id"):
            if not values.get(required):
                raise self.error(400, f"{required} is required.", "400")
        service_id = next(self._ids)
        record = {"service_id": service_id, **dict.fromkeys(SERVICE_FIELDS), **values,
                  "activated_date": values.get("activated_date") or revio_ts(),
                  "created_date": revio_ts(),
                  "fields": [{"field_id": i + 1, "label": label, "value": None}
                             for i, label in enumerate(self.field_labels)]}
        self.services[service_id] = record
        return 201, {"ok": True, "id": service_id}

    def _service(self, raw_id: Any) -> dict:
        service = self.services.get(_int_or_none(raw_id) or -1)
        if service is None:
            raise self.error(404, f"Service {raw_id} was not found.", "404")
        return service

    def _product(self, raw_id: Any) -> dict:
        product = self.service_products.get(_int_or_none(raw_id) or -1)
        if product is None:
            raise self.error(404, f"Service product {raw_id} was not found.", "404")
        return product

    def _patch_service(self, call: Call):
        service = self._service(call.path_params["service_id"])
        ops = call.body
        if not isinstance(ops, list) or not ops:
            raise self.error(400, "The request body must be a JSON Patch document (a non-empty list).", "400")
        staged = _copy(service)
        for op in ops:
            if not isinstance(op, dict) or op.get("op") not in ("replace", "add") or not isinstance(op.get("path"), str):
                raise self.error(400, "Only 'replace' and 'add' operations with a path are supported.", "400")
            if self.knobs.refuse_unknown_fields and set(op) - PATCH_OP_FIELDS:
                raise self.error(400, f"Unrecognized JSON Patch member(s): {', '.join(sorted(set(op) - PATCH_OP_FIELDS))}.",
                                 "400")
            parts = op["path"].strip("/").split("/")
            if len(parts) == 3 and parts[0] == "fields" and parts[2] == "value":
                index = _int_or_none(parts[1])
                if index is None or not 0 <= index < len(staged["fields"]):
                    raise self.error(400, f"Invalid path {op['path']}: no custom field at index {parts[1]}.", "400")
                staged["fields"][index]["value"] = op.get("value")
            elif len(parts) == 1 and parts[0] in PATCHABLE_ROOT:
                staged.update(self._fields({parts[0]: op.get("value")}, (parts[0],)))
            else:
                raise self.error(400, f"Invalid path {op['path']}.", "400")
        service.clear()
        service.update(staged)
        return {"ok": True}

    def _create_product(self, call: Call):
        body = self._body(call)
        values = self._fields(body, PRODUCT_FIELDS)
        for required in ("service_id", "product_id"):
            if not values.get(required):
                raise self.error(400, f"{required} is required.", "400")
        if not isinstance(values.get("generate_proration"), bool):
            raise self.error(400, "generate_proration is required (true or false).", "400")
        service = self.services.get(values["service_id"])
        if service is None:
            raise self.error(400, f"Service {values['service_id']} was not found.", "400")
        status = values.get("status") or "ACTIVE"
        if status not in PRODUCT_STATUSES:
            raise self.error(400, f"status must be one of {', '.join(PRODUCT_STATUSES)}", "400")
        product_id = next(self._ids)
        self.service_products[product_id] = {
            "service_product_id": product_id, **dict.fromkeys(PRODUCT_FIELDS), **values, "status": status,
            "customer_id": values.get("customer_id") or service["customer_id"],
            "quantity": values.get("quantity") or 1, "created_date": revio_ts()}
        return 201, {"ok": True, "id": product_id}

    def _list(self, call: Call, table: dict[int, dict], filters: tuple[str, ...]):
        size = self.int_param(call, "page_size", 10, 1, 500, "page_size must be between 1 and 500", "400")
        if call.q("search.page_size"):
            size = self.int_param(call, "search.page_size", 10, 1, 500, "page_size must be between 1 and 500", "400")
        page = self.int_param(call, "page", 1, 1, 10 ** 9, "page must be 1 or more", "400")
        if call.q("search.page"):
            page = self.int_param(call, "search.page", 1, 1, 10 ** 9, "page must be 1 or more", "400")
        wanted = {}
        for f in filters:
            value = call.q(f"search.{f}", call.q(f))
            if value not in (None, ""):
                wanted[f] = value
        rows = [r for r in table.values() if all(str(r.get(f)) == v for f, v in wanted.items())]
        start = (page - 1) * size
        return {"ok": True, "records": [_copy(r) for r in rows[start:start + size]],
                "has_more": start + size < len(rows), "record_count": len(rows)}


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _copy(record: dict) -> dict:
    out = dict(record)
    if "fields" in out:
        out["fields"] = [dict(f) for f in out["fields"]]
    return out
