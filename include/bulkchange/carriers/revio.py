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

**Assumed**: the error body (``{"ok": false, "message"}``; Rev.io does not document it), that a create
answers ``{"ok": true, "id"}`` and that search filters compare exact values. Paths are overridable
on the connection extra (``services_path``, ``service_products_path``).
"""
from __future__ import annotations

import base64
import time
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
        # Creates are never replayed on an ambiguous failure (5xx, timeout, lost answer): the caller
        # searches Rev.io first (bulkchange.changes.revio_service). Only 429s, which Rev.io answers
        # before doing anything, are waited out here.
        self._once = None
        if self.policy is not None:
            from bulkchange.engine import CallPolicy, RetryPolicy

            self._once = CallPolicy(getattr(self.policy, "rate_limiter", None), RetryPolicy(max_attempts=1))
        self.max_429_waits = 5

    def _auth_headers(self) -> dict[str, str]:
        return dict(self._headers)

    # -- services ---------------------------------------------------------------------------------
    def create_service(self, body: dict[str, Any], *, log: CallLog | None = None) -> int:
        answer = self._create(self.services_path, body, "Create Rev.io Service: Rev.io API", log)
        return _created_id(answer, "service")

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
        answer = self._create(self.service_products_path, body, "Create Rev.io Service Product: Rev.io API", log)
        return _created_id(answer, "service product")

    def get_service_product(self, service_product_id: int | str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"{self.service_products_path}/{path_segment(service_product_id)}", log=log,
                          description="Get Rev.io Service Product: Rev.io API") or {}

    def find_service_products(self, *, log: CallLog | None = None, page_size: int = 100,
                              **search: Any) -> list[dict]:
        return list(self._search(self.service_products_path, search, page_size,
                                 "Find Rev.io Service Products: Rev.io API", log))

    # -- plumbing ---------------------------------------------------------------------------------
    def _create(self, path: str, body: dict[str, Any], description: str, log: CallLog | None) -> Any:
        """POST once; wait out and repeat only 429s (nothing was created). Any other failure is
        raised: the create may or may not have happened."""
        waits = 0
        while True:
            try:
                if self._once is None:
                    return self._call("POST", path, json_body=body, description=description, log=log)
                return self._call("POST", path, json_body=body, description=description, log=log, policy=self._once)
            except TransientError as exc:
                if exc.status_code != 429 or waits >= self.max_429_waits:
                    raise
                waits += 1
                time.sleep(min(60.0, exc.retry_after or 0.5 * 2 ** waits))

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
