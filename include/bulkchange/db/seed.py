"""Lookup rows every AMOP database has, and demo/test data builders."""
from __future__ import annotations

import json
from typing import Iterable

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.models import CHANGE_TYPE_IDS, INTEGRATION_IDS, ChangeType, Integration, utcnow
from bulkchange.rules import luhn_check_digit

DISPLAY_NAMES = {
    ChangeType.STATUS_UPDATE: "Update Device Status",
    ChangeType.CARRIER_RATE_PLAN_CHANGE: "Change Carrier Rate Plan",
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: "Change Customer Rate Plan",
    ChangeType.CUSTOMER_ASSIGNMENT: "Assign Customer",
    ChangeType.ARCHIVAL: "Archive",
    ChangeType.ACTIVATE_NEW_SERVICE: "Activate New Service",
    ChangeType.CREATE_REV_SERVICE: "Create Rev Service",
    ChangeType.CHANGE_ICCID_AND_IMEI: "Change ICCID/IMEI",
    ChangeType.EDIT_USERNAME_COST_CENTER: "Edit Username / Cost Center",
}


def seed_lookups(conn: Connection) -> None:
    """Insert the change-type and integration lookups that are missing (idempotent)."""
    have = set(conn.execute(select(t.device_change_request_type.c.Id)).scalars())
    rows = [{"Id": i, "Code": ct.value, "DisplayName": DISPLAY_NAMES[ct]}
            for ct, i in CHANGE_TYPE_IDS.items() if i not in have]
    if rows:
        conn.execute(insert(t.device_change_request_type), rows)
    have = set(conn.execute(select(t.integration.c.Id)).scalars())
    rows = [{"Id": i, "Name": integ.value} for integ, i in INTEGRATION_IDS.items() if i not in have]
    if rows:
        conn.execute(insert(t.integration), rows)


def make_iccid(n: int, prefix: str = "8901260") -> str:
    """A valid 19-digit ICCID (Luhn check digit) numbered n."""
    body = f"{prefix}{n:011d}"[:18]
    return body + luhn_check_digit(body)


def add_service_provider(conn: Connection, *, sp_id: int, name: str, integration: Integration,
                         tenant_id: int, write_enabled: bool = True) -> None:
    conn.execute(insert(t.service_provider).values(
        Id=sp_id, Name=name, IntegrationId=INTEGRATION_IDS[integration], TenantId=tenant_id,
        WriteIsEnabled=write_enabled, IsActive=True))


def add_devices(conn: Connection, devices: Iterable[dict], *, sp_id: int, tenant_id: int) -> list[int]:
    now = utcnow()
    rows = [{"ServiceProviderId": sp_id, "TenantId": tenant_id, "IsActive": True, "IsDeleted": False,
             "CreatedDate": now, "ModifiedDate": now, **d} for d in devices]
    conn.execute(insert(t.device), rows)
    iccids = [r["ICCID"] for r in rows]
    found = dict(conn.execute(select(t.device.c.ICCID, t.device.c.Id)
                              .where(t.device.c.ServiceProviderId == sp_id)).all())
    return [found[i] for i in iccids]


def add_bulk_change(conn: Connection, *, sp_id: int, tenant_id: int, change_type: ChangeType,
                    requests: list[dict], portal_type: int = 0, process_changes: bool = True,
                    created_by: str = "demo", status: str = "NEW") -> int:
    """Insert a bulk change and one device change per request dict.

    Each request dict carries the identifiers (ICCID, MSISDN, IMEI, EID, DeviceId) and
    ``ChangeRequest`` (a dict, stored as JSON), like the portal writes them.
    """
    from bulkchange.db.repository import insert_bulk_change

    rows = []
    for r in requests:
        cr = r.get("ChangeRequest")
        rows.append({**{k: r.get(k) for k in ("ICCID", "MSISDN", "IMEI", "EID", "DeviceId", "DeviceIdentifier")},
                     "ChangeRequest": json.dumps(cr) if isinstance(cr, dict) else cr})
    return insert_bulk_change(conn, sp_id=sp_id, tenant_id=tenant_id, change_type=change_type, rows=rows,
                              portal_type=portal_type, process_changes=process_changes, created_by=created_by,
                              status=status)


def add_tenant_references(conn: Connection, *, tenant_id: int, sites: Iterable[int] = (),
                          rate_plans: Iterable[int] = (), rate_pools: Iterable[int] = (),
                          rev_customers: Iterable[str] = ()) -> None:
    """Ids the tenant owns (Site, CustomerRatePlan, CustomerRatePool, RevCustomer), as the portal
    keeps them: a change request may only name these (bulkchange.tenancy)."""
    for table, ids in ((t.site, sites), (t.customer_rate_plan, rate_plans), (t.customer_rate_pool, rate_pools)):
        rows = [{"Id": int(i), "TenantId": tenant_id, "IsActive": True} for i in ids]
        if rows:
            conn.execute(insert(table), rows)
    rows = [{"RevCustomerId": str(c), "TenantId": tenant_id, "IsActive": True} for c in rev_customers]
    if rows:
        conn.execute(insert(t.rev_customer), rows)


TEST_REV_CUSTOMERS = ("1", "9", "900", "4711", "4712", "abc", "rev-1", "C-100")


def add_test_references(conn: Connection, *, tenant_id: int, upto: int = 1000) -> None:
    """Demo and test data: the tenant owns sites, customer rate plans and pools 0..upto-1 and a few
    Rev.io customers (change requests naming them pass the tenant check)."""
    if conn.execute(select(t.site.c.Id).where(t.site.c.Id == 0)).first() is not None:
        return  # already there (ids are unique across tenants: the first tenant keeps them)
    add_tenant_references(conn, tenant_id=tenant_id, sites=range(upto), rate_plans=range(upto),
                          rate_pools=range(upto), rev_customers=TEST_REV_CUSTOMERS)
