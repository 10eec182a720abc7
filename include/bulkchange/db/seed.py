"""A development/test AMOP database: ``create_schema`` (migrated, lookups seeded), the lookup rows
every AMOP database has, and demo/test data builders."""
from __future__ import annotations

import json
from typing import Iterable

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from bulkchange.db import schema as t
from bulkchange.db.device_status import DEV_DEVICE_STATUSES, device_status_ids
from bulkchange.db.migrate import ensure_schema
from bulkchange.db.bulk_changes import insert_bulk_change
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


def create_schema(bind: Engine | Connection) -> None:
    """Bring a development/test database to the current schema through the migrations (idempotent:
    an empty database is built from the legacy baseline up, a migrated one upgraded) and seed the
    lookups. Production is migrated by a DBA instead (docs/database.md)."""
    ensure_schema(bind)
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            seed_lookups(conn)
    else:
        seed_lookups(bind)


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
    seed_device_statuses(conn)


def seed_device_statuses(conn: Connection) -> None:
    """The DeviceStatus lookup of a development / test database (bulkchange.db.device_status), when
    it has none: production keeps its own rows and ids."""
    if conn.execute(select(t.device_status.c.Id).limit(1)).first() is not None:
        return
    fixed = {i for rows in DEV_DEVICE_STATUSES.values() for _, i in rows if i is not None}
    numbers = (n for n in range(100, 10_000) if n not in fixed)
    rows = [{"Id": i if i is not None else next(numbers), "IntegrationId": INTEGRATION_IDS[integ],
             "Status": status, "DisplayName": status}
            for integ, statuses in DEV_DEVICE_STATUSES.items() for status, i in statuses]
    conn.execute(insert(t.device_status), rows)


def make_iccid(n: int, prefix: str = "8901260") -> str:
    """A valid 19-digit ICCID (Luhn check digit) numbered n."""
    body = f"{prefix}{n:011d}"[:18]
    return body + luhn_check_digit(body)


def add_service_provider(conn: Connection, *, sp_id: int, name: str, integration: Integration,
                         tenant_id: int, write_enabled: bool = True) -> None:
    conn.execute(insert(t.service_provider).values(
        Id=sp_id, Name=name, IntegrationId=INTEGRATION_IDS[integration], TenantId=tenant_id,
        WriteIsEnabled=write_enabled, IsActive=True))


def add_devices(conn: Connection, devices: Iterable[dict], *, sp_id: int, tenant_id: int,
                mobility: bool | None = None) -> list[int]:
    """Devices as the legacy inventory keeps them: a Telegence service provider's lines in the Mobility
    inventory (``MobilityDevice``, with their ``TelegenceDevice`` row when they have a number), every
    other carrier's SIMs in ``Device`` (``mobility`` overrides). ``DeviceStatusId`` is filled from
    ``Status`` (bulkchange.db.device_status). Returns the new rows' ids, in order."""
    now = utcnow()
    integration_id = conn.execute(select(t.service_provider.c.IntegrationId)
                                  .where(t.service_provider.c.Id == sp_id)).scalar_one()
    if mobility is None:
        mobility = integration_id == INTEGRATION_IDS[Integration.TELEGENCE]
    table = t.mobility_device if mobility else t.device
    rows = [{"ServiceProviderId": sp_id, "TenantId": tenant_id, "IsActive": True, "IsDeleted": False,
             "CreatedDate": now, "ModifiedDate": now, **d} for d in devices]
    ids = device_status_ids(conn, integration_id, [r.get("Status") for r in rows])
    for r in rows:
        r.setdefault("DeviceStatusId", ids.get(r.get("Status")))
    # (a Mobility line has no M2M-only column such as EID or CommunicationPlan: those keys are not kept)
    columns = sorted({k for r in rows for k in r if k in table.c})
    conn.execute(insert(table), [{c: r.get(c) for c in columns} for r in rows])
    if mobility:
        lines = [{"SubscriberNumber": r["MSISDN"], "SubscriberNumberStatus": r.get("Status"),
                  "DeviceStatusId": r.get("DeviceStatusId"), "ServiceProviderId": sp_id, "CreatedBy": "seed",
                  "CreatedDate": now, "IsActive": True, "IsDeleted": False} for r in rows if r.get("MSISDN")]
        if lines:
            conn.execute(insert(t.telegence_device), lines)
    key = "ICCID" if all(r.get("ICCID") for r in rows) else "MSISDN"
    found = dict(conn.execute(select(table.c[key], table.c.Id).where(table.c.ServiceProviderId == sp_id)).all())
    return [found[r[key]] for r in rows]


def add_bulk_change(conn: Connection, *, sp_id: int, tenant_id: int, change_type: ChangeType,
                    requests: list[dict], portal_type: int = 0, process_changes: bool = True,
                    created_by: str = "demo", status: str = "NEW") -> int:
    """Insert a bulk change and one device change per request dict.

    Each request dict carries the identifiers (ICCID, MSISDN, IMEI, EID, DeviceId) and
    ``ChangeRequest`` (a dict, stored as JSON), like the portal writes them.
    """
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
