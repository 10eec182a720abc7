"""What the inventory and the local Rev.io copy (``Rev_Service``) hold for a bulk change's live
devices: their usage and their active Rev.io services (read by Archival and CustomerAssignment)."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.tables import change_table, inventory_table
from bulkchange.models import BulkChange


def bulk_device_ids(bulk: BulkChange):
    """A subquery: ids of the tenant's live devices named by this bulk change's device changes."""
    tbl = change_table(bulk.portal_type)
    d = inventory_table(bulk.portal_type)
    return select(d.c.Id).where(
        d.c.ServiceProviderId == bulk.service_provider_id, d.c.TenantId == bulk.tenant_id,
        d.c.IsDeleted == False,  # noqa: E712
        d.c.ICCID.in_(select(tbl.c.ICCID).where(tbl.c.BulkChangeId == bulk.id)))


def device_usage(conn: Connection, bulk: BulkChange) -> dict[int, tuple[datetime | None, Decimal | None]]:
    """Device id -> (LastUsageDate, DataUsageMB) of the bulk change's live devices."""
    d = inventory_table(bulk.portal_type)
    return {int(r.Id): (r.LastUsageDate, r.DataUsageMB) for r in conn.execute(
        select(d.c.Id, d.c.LastUsageDate, d.c.DataUsageMB).where(d.c.Id.in_(bulk_device_ids(bulk))))}


def active_rev_services(conn: Connection, bulk: BulkChange) -> dict[int, list[tuple[int, str]]]:
    """Device id -> [(Rev.io service id, customer id)] of its active services (IsActive, not disconnected)."""
    s = t.rev_service
    out: dict[int, list[tuple[int, str]]] = {}
    for dev_id, service_id, customer in conn.execute(select(s.c.DeviceId, s.c.ServiceId, s.c.CustomerId).where(
            s.c.DeviceId.in_(bulk_device_ids(bulk)), s.c.IsActive == True,  # noqa: E712
            s.c.DisconnectedDate.is_(None))):
        out.setdefault(int(dev_id), []).append((int(service_id), str(customer)))
    return out
