"""What the carriers and Rev.io hold for a device beyond the inventory: POND packages
(``PondDeviceCarrierRatePlan``) and Rev.io services (``Rev_Service``, ``Rev_ServiceProduct``).
Written in the transaction that records a batch's results (``ChangeHandler.record``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Sequence

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.tables import chunks
from bulkchange.models import BulkChange, utcnow


# --- POND packages (PondDeviceCarrierRatePlan) ------------------------------------------------
@dataclass(frozen=True)
class PondPackage:
    iccid: str
    package_id: str
    package_type_id: str | None
    status: str
    data_remaining_bytes: int | None = None


def save_pond_packages(conn: Connection, service_provider_id: int, packages: Sequence[PondPackage], *,
                       processed_by: str) -> None:
    """Upsert one row per (service provider, ICCID, package): one SELECT per 1,000 ICCIDs, then one
    executemany INSERT for new packages and one executemany UPDATE for known ones."""
    if not packages:
        return
    p = t.pond_device_carrier_rate_plan
    latest: dict[tuple[str, str], PondPackage] = {}
    for pkg in packages:  # the last word on a package wins
        latest[(pkg.iccid, str(pkg.package_id))] = pkg
    known: set[tuple[str, str]] = set()
    for chunk in chunks(sorted({k[0] for k in latest})):
        known.update((i, str(pid)) for i, pid in conn.execute(
            select(p.c.ICCID, p.c.PackageId).where(p.c.ServiceProviderId == service_provider_id,
                                                   p.c.ICCID.in_(list(chunk)))))
    now = utcnow()
    new = [{"ICCID": k[0], "PackageId": k[1], "PackageTypeId": pkg.package_type_id, "Status": pkg.status,
            "DataUsageRemainingInBytes": pkg.data_remaining_bytes, "ServiceProviderId": service_provider_id,
            "ProcessedBy": processed_by, "CreatedDate": now, "ModifiedDate": now}
           for k, pkg in latest.items() if k not in known]
    old = [{"b_iccid": k[0], "b_pid": k[1], "b_status": pkg.status, "b_type": pkg.package_type_id,
            "b_remaining": pkg.data_remaining_bytes}
           for k, pkg in latest.items() if k in known]
    for chunk in chunks(new, 200):
        conn.execute(insert(p), list(chunk))
    if old:
        conn.execute(update(p).where(p.c.ServiceProviderId == service_provider_id, p.c.ICCID == bindparam("b_iccid"),
                                     p.c.PackageId == bindparam("b_pid"))
                     .values(Status=bindparam("b_status"),
                             PackageTypeId=func.coalesce(bindparam("b_type"), p.c.PackageTypeId),
                             DataUsageRemainingInBytes=func.coalesce(bindparam("b_remaining"),
                                                                     p.c.DataUsageRemainingInBytes),
                             ProcessedBy=processed_by, ModifiedDate=now), old)


# --- Rev.io services (Rev_Service, Rev_ServiceProduct) ------------------------------------------
@dataclass
class RevServiceProductRecord:
    service_product_id: int
    product_id: int
    rate: Decimal | None = None
    quantity: int = 1
    description: str | None = None
    status: str | None = "ACTIVE"
    package_id: int | None = None


@dataclass
class RevServiceRecord:
    device_change_id: int
    service_id: int
    customer_id: str
    device_id: int | None = None
    number: str | None = None
    number2: str | None = None
    service_type_id: int | None = None
    provider_id: int | None = None
    usage_plan_group_id: int | None = None
    package_id: int | None = None
    activated_date: datetime | None = None
    integration_authentication_id: int | None = None
    products: list[RevServiceProductRecord] = field(default_factory=list)


def save_rev_services(conn: Connection, bulk: BulkChange, records: Sequence[RevServiceRecord]) -> None:
    """Store the Rev.io services and service products of a batch; ids already stored are skipped
    (a retried task may report a service found at Rev.io that an earlier attempt stored)."""
    if not records:
        return
    s, sp = t.rev_service, t.rev_service_product
    service_ids = sorted({int(r.service_id) for r in records})
    product_ids = sorted({int(p.service_product_id) for r in records for p in r.products})
    have_s: set[int] = set()
    for chunk in chunks(service_ids):
        have_s.update(int(i) for i in conn.execute(select(s.c.ServiceId).where(s.c.ServiceId.in_(list(chunk))))
                      .scalars())
    have_p: set[int] = set()
    for chunk in chunks(product_ids):
        have_p.update(int(i) for i in conn.execute(
            select(sp.c.ServiceProductId).where(sp.c.ServiceProductId.in_(list(chunk)))).scalars())
    now = utcnow()
    services, products = [], []
    for r in records:
        if int(r.service_id) not in have_s:
            have_s.add(int(r.service_id))
            services.append({
                "ServiceId": int(r.service_id), "CustomerId": str(r.customer_id), "Number": r.number,
                "Number2": r.number2, "ServiceTypeId": r.service_type_id, "ProviderId": r.provider_id,
                "UsagePlanGroupId": r.usage_plan_group_id, "PackageId": r.package_id,
                "ActivatedDate": r.activated_date or now, "DeviceId": r.device_id,
                "ServiceProviderId": bulk.service_provider_id,
                "IntegrationAuthenticationId": r.integration_authentication_id, "BulkChangeId": bulk.id,
                "DeviceChangeId": r.device_change_id, "IsActive": True, "CreatedDate": now})
        for p in r.products:
            if int(p.service_product_id) in have_p:
                continue
            have_p.add(int(p.service_product_id))
            products.append({
                "ServiceProductId": int(p.service_product_id), "ServiceId": int(r.service_id),
                "CustomerId": str(r.customer_id), "ProductId": int(p.product_id), "PackageId": p.package_id,
                "Rate": p.rate, "Quantity": p.quantity, "Description": p.description, "Status": p.status,
                "DeviceId": r.device_id, "BulkChangeId": bulk.id, "DeviceChangeId": r.device_change_id,
                "CreatedDate": now})
    for chunk in chunks(services, 200):
        conn.execute(insert(s), list(chunk))
    for chunk in chunks(products, 200):
        conn.execute(insert(sp), list(chunk))
