"""Rev.io after a status change: create the billing service and its service products.

When a StatusUpdate request carries ``RevService`` (the portal's "associate customer" block) or
``RevServiceProductCreateModel`` and the carrier change succeeded (``PROCESSED``, whatever the
carrier), the device gets one Rev.io service (``POST /Services``: customer, provider, service type,
number = MSISDN or ICCID, number2 = ICCID, ...) and, unless a Rev.io package was named, one service
product per product id and rate (``POST /ServiceProduct``). Both blocks are merged into one service
per device change (the legacy code created one per block, so a request with both got two).

**Exactly once.** A retried task reaches this step again for a device whose earlier attempt may
already have created the service before the task died. So before every create the step searches
Rev.io (services of the customer with the same number, not disconnected; service products of the
service with the same product) and uses what it finds. A create is never replayed on an ambiguous
failure (5xx, timeout, lost answer): the step searches again first (``RevioClient._create``).

**Failure** never undoes the carrier change: the device change becomes ``REV_IO_FAILED`` with the
carrier outcome and the Rev.io reason in its details; ``Device`` and ``DeviceStatusHistory`` are
written as for ``PROCESSED``. Ids of what was created (even a service whose products then failed)
are stored in ``Rev_Service`` / ``Rev_ServiceProduct``.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError, PermanentError
from bulkchange.db.carrier_records import RevServiceProductRecord, RevServiceRecord, save_rev_services
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest, utcnow
from bulkchange.rules import RuleError



def _lookup(block: dict[str, Any] | None, *names: str) -> Any:
    if not block:
        return None
    lowered = {str(k).lower(): v for k, v in block.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, "", []):
            return value
    return None


def _as_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise RuleError(f"Rev.io {name} must be a whole number, got {value!r}") from None
    if number <= 0:
        raise RuleError(f"Rev.io {name} must be positive, got {value!r}")
    return number


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class RevPlan:
    """What to create in Rev.io for one device change (from the request's blocks)."""

    customer_id: int
    provider_id: int
    service_type_id: int | None = None
    usage_plan_group_id: int | None = None
    package_id: int | None = None
    number: str | None = None
    description: str | None = None
    prorate: bool = False
    effective_date: str | None = None
    activated_date: str | None = None
    integration_authentication_id: int | None = None
    products: list[tuple[int, Decimal | None]] = field(default_factory=list)


def rev_date(value: Any, name: str) -> str | None:
    """A Rev.io date as AMOP sends it, ``yyyy-MM-ddZ``: the UTC day of the value. The value is a date
    (``yyyy-MM-dd``, optionally ``Z``) or a date-time; a date-time with an offset is converted to UTC first
    (its local date may be the day before or after), one without is taken as UTC (as every EffectiveDate
    of the pipeline). Anything else is a RuleError before any carrier call."""
    from datetime import date, datetime, timezone

    if value in (None, ""):
        return None
    text = str(value).strip()
    try:
        if len(text) in (10, 11) and text[:10].count("-") == 2 and text[10:] in ("", "Z"):
            day = date.fromisoformat(text[:10])
        else:
            when = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            day = (when.astimezone(timezone.utc) if when.tzinfo else when).date()
    except ValueError:
        raise RuleError(f"Rev.io {name} {text!r} is not a date (yyyy-MM-dd) or an ISO date-time") from None
    return f"{day.isoformat()}Z"


def rev_plan(request: StatusUpdateRequest) -> RevPlan | None:
    """The Rev.io work a request asks for, None when it asks for none; RuleError when it is unusable."""
    blocks = [b for b in (request.RevService, request.RevServiceProductCreateModel) if b]
    # the associate-customer block may say "don't create a service"
    blocks = [b for b in blocks if _lookup(b, "CreateRevService") not in (False, "false", "False", 0)]
    if not blocks:
        return None

    def first(*names: str) -> Any:
        for b in blocks:
            value = _lookup(b, *names)
            if value is not None:
                return value
        return None

    customer = _as_int(first("RevCustomerId", "CustomerId", "customer_id"), "customer id")
    provider = _as_int(first("ProviderId", "RevProviderId", "provider_id"), "provider id")
    if customer is None:
        raise RuleError("Rev.io service requested but RevCustomerId is missing")
    if provider is None:
        raise RuleError("Rev.io service requested but ProviderId is missing")
    product_ids = _as_list(first("RevProductIdList", "ProductIdList"))
    rates = _as_list(first("RateList"))
    if not product_ids:
        single = first("RevProductId", "ProductId", "product_id")
        product_ids = [single] if single is not None else []
        rate = first("Rate", "rate")
        rates = [rate] if rate is not None and product_ids else []
    if rates and len(rates) != len(product_ids):
        raise RuleError(f"Rev.io RevProductIdList has {len(product_ids)} products but RateList {len(rates)} rates")
    products = []
    for i, pid in enumerate(product_ids):
        rate = None
        if rates:
            try:
                rate = Decimal(str(rates[i]))
            except InvalidOperation:
                raise RuleError(f"Rev.io rate {rates[i]!r} is not a number") from None
        products.append((_as_int(pid, "product id"), rate))
    prorate = first("Prorate", "GenerateProration") in (True, "true", "True", 1)
    return RevPlan(
        customer_id=customer, provider_id=provider,
        service_type_id=_as_int(first("ServiceTypeId", "RevServiceTypeId"), "service type id"),
        usage_plan_group_id=_as_int(first("UsagePlanGroupId", "RevUsagePlanGroupId"), "usage plan group id"),
        package_id=_as_int(first("RevPackageId", "PackageId"), "package id"),
        number=str(first("Number", "ServiceNumber")) if first("Number", "ServiceNumber") else None,
        description=first("Description"), prorate=prorate,
        effective_date=rev_date(first("EffectiveDate"), "EffectiveDate"),
        activated_date=rev_date(first("ActivatedDate"), "ActivatedDate"),
        integration_authentication_id=_as_int(first("IntegrationAuthenticationId"), "integration authentication id")
        or request.IntegrationAuthenticationId,
        products=products)


def check_rev_request(request: Any) -> None:
    """Validation before any carrier call: a Rev.io block must be usable (RuleError says why)."""
    if isinstance(request, StatusUpdateRequest):
        rev_plan(request)


def _id_of(record: dict, *keys: str) -> int | None:
    for k in keys:
        if record.get(k) not in (None, ""):
            try:
                return int(record[k])
            except (TypeError, ValueError):
                return None
    return None


class RevioServiceStep:
    """The post-step of one batch. ``after`` runs in worker threads (no DB); ``record`` writes the ids."""

    def __init__(self, bulk: BulkChange, client: Any, problem: str | None = None):
        self.bulk = bulk
        self.client = client
        self.problem = problem or ("no Rev.io connection configured for service provider "
                                   f"{bulk.service_provider_id} (revio_sp_{bulk.service_provider_id})")
        self._lock = threading.Lock()
        self.records: dict[int, RevServiceRecord] = {}

    def after(self, dc: DeviceChange, request: Any, device: DeviceRow | None, result: DeviceResult,
              log: CallLog) -> DeviceResult:
        if result.status != DeviceChangeStatus.PROCESSED or not isinstance(request, StatusUpdateRequest):
            return result
        try:
            plan = rev_plan(request)
        except RuleError as exc:
            return self._failed(result, f"Rev.io request unusable: {exc}")
        if plan is None:
            return result
        ok, text = self.ensure(dc, plan, device, msisdn=result.msisdn, device_id=result.device_id, log=log)
        if not ok:
            return self._failed(result, text)
        result.details = f"{result.details}; {text}"
        return result

    def ensure(self, dc: DeviceChange, plan: RevPlan, device: DeviceRow | None, *, msisdn: str | None = None,
               device_id: int | None = None, log: CallLog) -> tuple[bool, str]:
        """Find or create the plan's service and service products for one device change (also used
        by the change types whose main work is the Rev.io service). (True, what was found/created) or
        (False, why not); ids of what exists are kept for ``record``."""
        if self.client is None:
            return False, f"Rev.io service not created: {self.problem}"
        iccid = dc.iccid or (device.iccid if device else None)
        number = plan.number or msisdn or (device.msisdn if device else None) or iccid
        record = RevServiceRecord(device_change_id=dc.id, service_id=0, customer_id=str(plan.customer_id),
                                  device_id=device_id or (device.id if device else None), number=number,
                                  number2=iccid, service_type_id=plan.service_type_id, provider_id=plan.provider_id,
                                  usage_plan_group_id=plan.usage_plan_group_id, package_id=plan.package_id,
                                  integration_authentication_id=plan.integration_authentication_id)
        step = "Create Rev.io Service"
        try:
            record.service_id, found = self._ensure_service(plan, number, iccid, log)
            with self._lock:
                self.records[dc.id] = record
            if plan.package_id is None:
                step = "Create Rev.io Service Product"
                for product_id, rate in plan.products:
                    record.products.append(self._ensure_product(plan, record.service_id, product_id, rate, log))
        except CarrierError as exc:
            attempts = getattr(exc, "attempts", 1)
            checked = getattr(exc, "checked", None)  # the look-up after an unknown outcome, as evidence
            return False, (f"{step} failed{f' after {attempts} attempt(s)' if attempts > 1 else ''}: {exc}"
                           + (f"; {checked}" if checked else ""))
        products = f" and {len(record.products)} service product(s)" if record.products else ""
        how = "found" if found else "created"
        return True, f"Rev.io service {record.service_id} {how}{products}"

    def _failed(self, result: DeviceResult, reason: str) -> DeviceResult:
        return result.model_copy(update={
            "status": DeviceChangeStatus.REV_IO_FAILED,
            "details": f"carrier change applied ({result.details}), but {reason}"})

    # -- find or create -----------------------------------------------------------------------------
    def _ensure_service(self, plan: RevPlan, number: str | None, iccid: str | None,
                        log: CallLog) -> tuple[int, bool]:
        body: dict[str, Any] = {"customer_id": plan.customer_id, "provider_id": plan.provider_id, "number": number,
                                "number2": iccid}
        optional = {"service_type_id": plan.service_type_id, "usage_plan_group_id": plan.usage_plan_group_id,
                    "package_id": plan.package_id, "description": plan.description,
                    "activated_date": plan.activated_date or utcnow().strftime("%Y-%m-%dZ"),
                    "effective_date": plan.effective_date if plan.prorate else None}
        body.update({k: v for k, v in optional.items() if v is not None})
        # a retried task may find what its earlier attempt created; a lost answer is looked up by the client
        existing = self.client.find_service(plan.customer_id, number, log=log)
        if existing is not None:
            found_id = _id_of(existing, "service_id", "id")
            if found_id is None:
                raise PermanentError(f"Rev.io listed a service without an id: {existing!r:.200}")
            return found_id, True
        return self.client.create_service(body, log=log), False

    def _ensure_product(self, plan: RevPlan, service_id: int, product_id: int, rate: Decimal | None,
                        log: CallLog) -> RevServiceProductRecord:
        body: dict[str, Any] = {"service_id": service_id, "product_id": product_id, "customer_id": plan.customer_id,
                                "quantity": 1, "generate_proration": plan.prorate, "status": "ACTIVE"}
        if rate is not None:
            body["rate"] = float(rate)
        if plan.effective_date and plan.prorate:
            body["effective_date"] = plan.effective_date
        existing = self.client.find_service_product(service_id, product_id, log=log)
        if existing is not None:
            spid = _id_of(existing, "service_product_id", "id")
            if spid is None:
                raise PermanentError(f"Rev.io listed a service product without an id: {existing!r:.200}")
        else:
            spid = self.client.create_service_product(body, log=log)
        return RevServiceProductRecord(service_product_id=spid, product_id=product_id, rate=rate, quantity=1,
                                       status="ACTIVE")

    # -- DB ---------------------------------------------------------------------------------------------
    def record(self, conn: Connection, results: list[DeviceResult]) -> None:
        rows = [self.records[r.device_change_id] for r in results if r.device_change_id in self.records]
        save_rev_services(conn, self.bulk, rows)
