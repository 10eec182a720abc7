"""Identifiers the inventory holds for a bulk change's devices that its device changes left out."""
from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.tables import change_table
from bulkchange.models import BulkChange


def inventory_eids(conn: Connection, bulk: BulkChange) -> dict[str, str]:
    """ICCID -> EID from the tenant's live Device rows, for the bulk change's device changes that carry no EID."""
    tbl, d = change_table(bulk.portal_type), t.device
    q = (select(d.c.ICCID, d.c.EID)
         .select_from(tbl.join(d, and_(d.c.ICCID == tbl.c.ICCID, d.c.ServiceProviderId == bulk.service_provider_id,
                                       d.c.TenantId == bulk.tenant_id)))
         .where(tbl.c.BulkChangeId == bulk.id, tbl.c.EID.is_(None), d.c.EID.is_not(None),
                d.c.IsDeleted == False))  # noqa: E712
    return {iccid: eid for iccid, eid in conn.execute(q)}
