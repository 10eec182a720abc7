"""SIM swaps (ChangeICCIDAndIMEI) and the spare SIMs of a service provider's inventory.

The legacy portal did not count a known identifier whose device is in status *unknown* or
*inventory* (M2MC L1816-1930, legacy_behaviour.md section 4): such a row is a SIM in stock, not a
device in service. A swap may therefore take over a spare SIM of the same service provider and
tenant; once the carrier confirms the swap, the device's own row carries the ICCID and the spare's
row is retired (soft-deleted, as an archived device), so one ICCID never names two live devices.
"""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection

from bulkchange.db.tables import change_table, inventory_table
from bulkchange.models import BulkChange, utcnow

# Statuses of a SIM in stock: the legacy's ThingSpace "unknown" / "inventory", and Jasper's names for
# a SIM never activated (Control Center INVENTORY, TEST_READY, ACTIVATION_READY); no status = unknown.
SPARE_STATUSES = ("unknown", "inventory", "test_ready", "activation_ready")


def is_spare_status(status: str | None) -> bool:
    return (status or "").strip().lower() in SPARE_STATUSES + ("",)


def _spare(column):
    # equalities, not IN: the statement runs as an executemany (no expanding parameters there)
    status = func.lower(func.trim(column))
    return or_(column.is_(None), *(status == s for s in SPARE_STATUSES + ("",)))


def identifier_holders(conn: Connection, bulk: BulkChange, kind: str,
                       values: Sequence[str]) -> dict[str, list[tuple[int, bool]]]:
    """``{value: [(device id, is a spare of this bulk change's service provider and tenant)]}`` for the
    live inventory rows (any service provider: identifiers are global) holding these ICCIDs / IMEIs."""
    d = inventory_table(bulk.portal_type)
    column = d.c.ICCID if kind == "ICCID" else d.c.IMEI
    out: dict[str, list[tuple[int, bool]]] = {}
    values = sorted(set(values))
    for i in range(0, len(values), 500):
        q = select(d.c.Id, column, d.c.ServiceProviderId, d.c.TenantId, d.c.Status).where(
            column.in_(values[i:i + 500]), d.c.IsDeleted == False)  # noqa: E712
        for dev_id, value, sp, tenant, status in conn.execute(q):
            own = int(sp) == bulk.service_provider_id and int(tenant) == bulk.tenant_id
            out.setdefault(value, []).append((int(dev_id), own and is_spare_status(status)))
    return out


def retire_taken_over_spares(conn: Connection, bulk: BulkChange, moved: Sequence[tuple[int, str]]) -> int:
    """After swaps the carrier confirmed (``moved``: (device id, its new ICCID)): the spare rows of the
    service provider and tenant that held those ICCIDs are retired. Returns how many."""
    if not moved:
        return 0
    d = inventory_table(bulk.portal_type)
    stmt = (update(d).where(and_(d.c.ICCID == bindparam("iccid"), d.c.Id != bindparam("device_id"),
                                 d.c.ServiceProviderId == bulk.service_provider_id, d.c.TenantId == bulk.tenant_id,
                                 d.c.IsDeleted == False, _spare(d.c.Status)))  # noqa: E712
            .values(IsActive=False, IsDeleted=True, ModifiedDate=utcnow()))
    params = [{"iccid": iccid, "device_id": device_id} for device_id, iccid in moved]
    if conn.dialect.supports_sane_multi_rowcount:
        return max(conn.execute(stmt, params).rowcount or 0, 0)
    # a driver sending the rows in pages reports only a page's last statement (db.connect)
    return sum(max(conn.execute(stmt, p).rowcount or 0, 0) for p in params)


def change_requests_in_order(conn: Connection, bulk: BulkChange) -> list[tuple[int, str | None, str | None]]:
    """(device change id, ICCID, raw ChangeRequest JSON) of every device change of the bulk change, by Id."""
    tbl = change_table(bulk.portal_type)
    return [(int(dc_id), iccid, raw) for dc_id, iccid, raw in
            conn.execute(select(tbl.c.Id, tbl.c.ICCID, tbl.c.ChangeRequest)
                         .where(tbl.c.BulkChangeId == bulk.id).order_by(tbl.c.Id))]


def device_imeis(conn: Connection, bulk: BulkChange, iccids: Sequence[str],
                 chunk_size: int = 500) -> dict[str, str | None]:
    """ICCID -> IMEI of the tenant's live devices among ``iccids`` (one SELECT per ``chunk_size`` ICCIDs)."""
    d = inventory_table(bulk.portal_type)
    imeis: dict[str, str | None] = {}
    values = list(iccids)
    for i in range(0, len(values), chunk_size):
        for iccid, imei in conn.execute(select(d.c.ICCID, d.c.IMEI).where(
                d.c.ICCID.in_(values[i:i + chunk_size]), d.c.ServiceProviderId == bulk.service_provider_id,
                d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)):  # noqa: E712
            imeis[iccid] = imei
    return imeis
