"""Rev.io customers of a tenant, as AMOP keeps them (``RevCustomer``, and the ``Site`` each belongs to).

Read by the StatusUpdate ``AccountNumber`` step (legacy ``usp_DeviceBulkChange_UpdateRevCustomer``):
the account number must be one of the tenant's Rev.io customers, and the device takes that
customer and, when the tenant has one, the customer's site.
"""
from __future__ import annotations

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t


def tenant_rev_customer_sites(conn: Connection, tenant_id: int) -> dict[str, int | None]:
    """``{RevCustomerId: SiteId or None}`` for the tenant's active Rev.io customers (the lowest
    active site of the tenant linked to the customer, when there is one)."""
    rc, s = t.rev_customer, t.site
    q = (select(rc.c.RevCustomerId, s.c.Id)
         .select_from(rc.outerjoin(s, and_(s.c.RevCustomerId == rc.c.RevCustomerId, s.c.TenantId == tenant_id,
                                           s.c.IsActive == True)))  # noqa: E712
         .where(rc.c.TenantId == tenant_id, rc.c.IsActive == True)  # noqa: E712
         .order_by(rc.c.RevCustomerId, s.c.Id))
    out: dict[str, int | None] = {}
    for customer, site in conn.execute(q):
        key = str(customer).strip()
        if out.get(key) is None:
            out[key] = int(site) if site is not None else None
    return out
