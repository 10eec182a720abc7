"""What an EditUsernameCostCenter bulk change reads and writes besides the device changes: the
devices' current username and cost centers, their active Rev.io services (``Rev_Service``), the
service provider's push setting, and the applied changes its report lists."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import bindparam, select, update
from sqlalchemy.engine import Connection, Row

from bulkchange.db import tables
from bulkchange.db import schema as t
from bulkchange.models import BulkChange, DeviceChangeStatus


def _bulk_iccids(bulk: BulkChange):
    tbl = tables.change_table(bulk.portal_type)
    return select(tbl.c.ICCID).where(tbl.c.BulkChangeId == bulk.id)


def current_usernames(conn: Connection, bulk: BulkChange) -> list[Row]:
    """Rows (Id, ICCID, Username, CostCenter1..3) of the tenant's live devices this bulk change names."""
    d = tables.inventory_table(bulk.portal_type)
    return list(conn.execute(select(d.c.Id, d.c.ICCID, d.c.Username, d.c.CostCenter1, d.c.CostCenter2,
                                    d.c.CostCenter3)
                             .where(d.c.ICCID.in_(_bulk_iccids(bulk)),
                                    d.c.ServiceProviderId == bulk.service_provider_id,
                                    d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)))  # noqa: E712


def active_rev_services(conn: Connection, bulk: BulkChange) -> list[tuple[int, int]]:
    """(device id, Rev.io service id) of the active Rev.io services of the bulk change's devices, oldest first."""
    d, s = tables.inventory_table(bulk.portal_type), t.rev_service
    device_ids = select(d.c.Id).where(d.c.ICCID.in_(_bulk_iccids(bulk)),
                                      d.c.ServiceProviderId == bulk.service_provider_id,
                                      d.c.TenantId == bulk.tenant_id)
    return [(int(r.DeviceId), int(r.ServiceId)) for r in conn.execute(
        select(s.c.DeviceId, s.c.ServiceId).where(
            s.c.DeviceId.in_(device_ids), s.c.IsActive == True, s.c.DisconnectedDate.is_(None))  # noqa: E712
        .order_by(s.c.Id))]


def service_provider_settings(conn: Connection, service_provider_id: int) -> str | None:
    """The service provider's raw ``Settings`` JSON text (None when unset or unknown)."""
    sp = t.service_provider
    return conn.execute(select(sp.c.Settings).where(sp.c.Id == service_provider_id)).scalar()


def update_rev_service_columns(conn: Connection, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Nothing: writes ``columns`` onto local Rev_Service rows given as {"s_id": id, "v_<column>": value}."""
    s = t.rev_service
    conn.execute(update(s).where(s.c.ServiceId == bindparam("s_id"))
                 .values(**{c: bindparam(f"v_{c}") for c in columns}), list(rows))


def applied_username_changes(conn: Connection, bulk: BulkChange) -> list[Row]:
    """Rows (ICCID, MSISDN, ChangeRequest, Status, ProcessedDate) of the PROCESSED / REV_IO_FAILED changes, by Id."""
    tbl = tables.change_table(bulk.portal_type)
    applied = [DeviceChangeStatus.PROCESSED.value, DeviceChangeStatus.REV_IO_FAILED.value]
    return list(conn.execute(select(tbl.c.ICCID, tbl.c.MSISDN, tbl.c.ChangeRequest, tbl.c.Status, tbl.c.ProcessedDate)
                             .where(tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(applied))
                             .order_by(tbl.c.Id)).all())
