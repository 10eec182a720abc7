"""Rev.io billing REST client (carrier_apis.md section 6).

Auth: ``Authorization: Basic base64("<user>@<clientcode>:<password>")`` plus the API-management
header ``Ocp-Apim-Subscription-Key``; both are secrets (the password, the Basic token and the key are
scrubbed from every log). Limits: 500 calls per minute per account, answered with 429 (retried by
the engine's policy, honouring ``Retry-After``); the connection's ``rate_limit_per_s`` keeps us
below it (docs/carriers/revio.md).

Services (``/Services``) and service products (``/ServiceProduct``) are created, read and searched
(``search.<field>`` filters, ``page_size`` / ``page``, answers ``{"ok", "records", "has_more"}``).
User-defined fields live in a service's ``fields`` array ``[{field_id, label, value}]``: they are
found by label (whitespace-insensitive, case-insensitive, with fallbacks as the legacy code did:
``Cost Center 1`` then ``Cost Center``) and patched by index with JSON Patch
(``application/json-patch+json``).

**Creates are sent once** (``_call(once=True)``): after an answer that may have been lost (5xx,
timeout, unreadable body) the record is looked up by the published search (services: the
customer's live service with the number; service products: the service's live product with the
product id) before it is ever sent again, and a found record is the create's answer.

**Assumed**: the error body (``{"ok": false, "message"}``; Rev.io does not document it), that a create
answers ``{"ok": true, "id"}`` and that search filters compare exact values. Paths are overridable
on the connection extra (``services_path``, ``service_products_path``).
"""
from __future__ import annotations

import base64
from typing import Any, Iterator, Sequence

from bulkchange.carriers.http import path_segment
from bulkchange.carriers.base import CallLog, HttpCarrierClient, PermanentError, TransientError

JSON_PATCH = {"Content-Type": "application/json-patch+json"}
MAX_PAGE_SIZE = 500


def normalize_label(label: str | None) -> str:
    return "".join(str(label or "").split()).lower()


def field_index(service: dict, *labels: str) -> int | None:
    """The index in ``service["fields"]`` of the first label found (tried in order), else None."""
    fields = service.get("fields") or []
    for label in labels:
        wanted = normalize_label(label)
        for i, f in enumerate(fields):
            if isinstance(f, dict) and normalize_label(f.get("label")) == wanted:
                return i
    return None


class RevioClient(HttpCarrierClient):
    carrier_name = "Rev.io"

    def __init__(self, base_url: str, username: str, client_code: str, password: str, subscription_key: str, *,
                 services_path: str = "/Services", service_products_path: str = "/ServiceProduct", **kw: Any):
        super().__init__(base_url, **kw)
        if username and "@" in username and not client_code:
            username, _, client_code = username.partition("@")
        missing = [n for n, v in (("a user (login)", username), ("a client code (login user@clientcode or "
                                                                  "extra.client_code)", client_code),
                                  ("a password", password), ("extra.subscription_key", subscription_key)) if not v]
        if missing:
            raise ValueError(f"Rev.io needs {', '.join(missing)}")
        token = base64.b64encode(f"{username}@{client_code}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Ocp-Apim-Subscription-Key": subscription_key}
        self.services_path = services_path.rstrip("/")
        self.service_products_path = service_products_path.rstrip("/")
        for secret in (password, token, subscription_key):
            self.add_secret(secret)

    def _auth_headers(self) -> dict[str, str]:
        return dict(self._headers)

    # -- services ---------------------------------------------------------------------------------
    def create_service(self, body: dict[str, Any], *, log: CallLog | None = None) -> int:
        """POST /Services once; after an unknown outcome the service is looked up (``find_service``:
        the customer's live service with this number) before it is ever sent again."""
        answer = self._create(self.services_path, body, "Create Rev.io Service: Rev.io API", log,
                              find=lambda: self.find_service(body.get("customer_id"), body.get("number"), log=log),
                              id_key="service_id")
        return _created_id(answer, "service")

    def find_service(self, customer_id: Any, number: Any, *, log: CallLog | None = None) -> dict | None:
        """The customer's newest service with this number that is not disconnected, else None."""
        found = [s for s in self.find_services(customer_id=customer_id, number=number, log=log)
                 if not s.get("disconnected_date")]
        return max(found, key=lambda s: _record_id(s, "service_id", "id") or 0) if found else None

    def get_service(self, service_id: int | str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"{self.services_path}/{path_segment(service_id)}", log=log,
                          description="Get Rev.io Service: Rev.io API") or {}

    def find_services(self, *, log: CallLog | None = None, page_size: int = 100, **search: Any) -> list[dict]:
        """Every service matching ``search`` (e.g. ``customer_id=…, number=…``), all pages."""
        return list(self._search(self.services_path, search, page_size, "Find Rev.io Services: Rev.io API", log))

    def patch_service(self, service_id: int | str, operations: Sequence[dict], *,
                      log: CallLog | None = None, log_operations: Sequence[dict] | None = None) -> dict:
        """PATCH with a JSON Patch document, e.g. ``[{"op": "replace", "path": "/fields/2/value", "value": "x"}]``.
        ``log_operations``: the same operations as the log shows them (e.g. with the field's label)."""
        return self._call("PATCH", f"{self.services_path}/{path_segment(service_id)}", json_body=list(operations), log=log,
                          log_body=list(log_operations) if log_operations is not None else None,
                          headers=JSON_PATCH, description="Update Rev.io Service: Rev.io API") or {}

    def update_custom_field(self, service_id: int | str, labels: str | Sequence[str], value: Any, *,
                            service: dict | None = None, log: CallLog | None = None) -> int:
        """Set the user-defined field found by label (first of ``labels`` present) to ``value``;
        returns its index. Raises PermanentError when the service has no such field."""
        candidates = [labels] if isinstance(labels, str) else list(labels)
        service = service if service is not None else self.get_service(service_id, log=log)
        index = field_index(service, *candidates)
        if index is None:
            raise PermanentError(f"Rev.io service {service_id} has no custom field labelled "
                                 f"{' / '.join(candidates)}")
        operation = {"op": "replace", "path": f"/fields/{index}/value", "value": value}
        # the log names the field, so the scrubber masks a personal one (a user's name) by its label
        label = next((c for c in candidates if field_index(service, c) == index), candidates[0])
        self.patch_service(service_id, [operation], log=log, log_operations=[{**operation, "field": label}])
        return index

    # -- service products -------------------------------------------------------------------------
    def create_service_product(self, body: dict[str, Any], *, log: CallLog | None = None) -> int:
        """POST /ServiceProduct once; after an unknown outcome the service's live product with this
        product id is looked up (``find_service_product``) before it is ever sent again."""
        answer = self._create(self.service_products_path, body, "Create Rev.io Service Product: Rev.io API", log,
                              find=lambda: self.find_service_product(body.get("service_id"), body.get("product_id"),
                                                                     log=log),
                              id_key="service_product_id")
        return _created_id(answer, "service product")

    def find_service_product(self, service_id: Any, product_id: Any, *, log: CallLog | None = None) -> dict | None:
        """The service's first product with this product id that is not DISCONNECTED / DENIED, else None."""
        live = [p for p in self.find_service_products(service_id=service_id, product_id=product_id, log=log)
                if str(p.get("status") or "").upper() not in GONE]
        return live[0] if live else None

    def get_service_product(self, service_product_id: int | str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"{self.service_products_path}/{path_segment(service_product_id)}", log=log,
                          description="Get Rev.io Service Product: Rev.io API") or {}

    def find_service_products(self, *, log: CallLog | None = None, page_size: int = 100,
                              **search: Any) -> list[dict]:
        return list(self._search(self.service_products_path, search, page_size,
                                 "Find Rev.io Service Products: Rev.io API", log))

    # -- plumbing ---------------------------------------------------------------------------------
    def _create(self, path: str, body: dict[str, Any], description: str, log: CallLog | None,
                find: Any, id_key: str) -> Any:
        """POST a create as a non-idempotent call (``_call(once=True)``): 429s, which Rev.io answers
        before doing anything, are retried by the policy; after an unknown outcome (5xx, timeout,
        lost answer) ``find`` looks the record up and a found one is the answer (sent again once only
        when Rev.io shows nothing)."""
        def verify() -> dict | None:
            record = find()
            if record is None:
                return None
            own = _record_id(record, id_key, "id")
            if own is None:
                raise PermanentError(f"Rev.io listed a record without an id: {record!r:.200}")
            return {"ok": True, "id": own, "found": True}

        return self._call("POST", path, json_body=body, description=description, log=log, once=True, verify=verify)

    def _search(self, path: str, search: dict[str, Any], page_size: int, description: str,
                log: CallLog | None) -> Iterator[dict]:
        size = max(1, min(MAX_PAGE_SIZE, int(page_size)))
        page = 1
        while True:
            params: dict[str, Any] = {f"search.{k}": v for k, v in search.items() if v is not None}
            params.update({"page_size": size, "page": page})
            body = self._call("GET", path, params=params, description=description, log=log) or {}
            if isinstance(body, dict) and body.get("ok") is False:
                raise PermanentError(f"Rev.io refused the search: {body.get('message')}")
            records = body.get("records") or [] if isinstance(body, dict) else []
            yield from records
            if not (isinstance(body, dict) and body.get("has_more")) or not records:
                return
            page += 1


GONE = ("DISCONNECTED", "DENIED")  # service product statuses that no longer count


def _record_id(record: dict, *keys: str) -> int | None:
    for key in keys:
        if record.get(key) not in (None, ""):
            try:
                return int(record[key])
            except (TypeError, ValueError):
                return None
    return None


def _created_id(answer: Any, what: str) -> int:
    if isinstance(answer, dict):
        if answer.get("ok") is False:
            raise PermanentError(f"Rev.io refused the {what}: {answer.get('message')}")
        for key in ("id", "service_id", "service_product_id"):
            if answer.get(key) not in (None, ""):
                try:
                    return int(answer[key])
                except (TypeError, ValueError):
                    break
    raise TransientError(f"Rev.io created a {what} but its answer has no id")
