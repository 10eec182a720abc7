"""Devices a bulk change brings into the inventory (ThingSpace "pending activation" / "inventory")
and the service provider's default site (legacy ``usp_DeviceBulkChange_AddToDeviceInventory``,
the Device part of the ThingSpace add, and ``usp_Device_Bulk_Change_Set_Default_Site``;
legacy_behaviour.md 3.1). SQLAlchemy Core only: each statement compiles for SQL Server,
PostgreSQL and SQLite."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db.inventory import DeviceRow, _device_row, _inventory_select
from bulkchange.db.tables import change_table, chunks as _chunks
from bulkchange.models import BulkChange, utcnow


def load_devices_by_imei(conn: Connection, bulk: BulkChange, imeis: Sequence[str]) -> dict[str, DeviceRow]:
    """IMEI -> the device holding it, among the bulk change's service provider and tenant's devices
    (the legacy portal's GetDeviceByICCIDOrIMEI, kept within the tenant)."""
    d = t.device
    out: dict[str, DeviceRow] = {}
    for chunk in _chunks(sorted({i for i in imeis if i})):
        q = _inventory_select(d).where(d.c.IMEI.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
                                       d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)  # noqa: E712
        for r in conn.execute(q.order_by(d.c.Id)):
            out.setdefault(r.IMEI, _device_row(r))
    return out


@dataclass(frozen=True)
class OnboardedDevice:
    device_change_id: int
    iccid: str
    imei: str | None
    status: str  # the ThingSpace status the device is recorded with ("pending activation", "inventory")


def add_to_inventory(conn: Connection, bulk: BulkChange, devices: Sequence[OnboardedDevice], *,
                     processed_by: str) -> dict[str, int]:
    """Insert the devices the tenant's inventory does not have yet (status, its DeviceStatusId, IMEI)
    with a status history row, and link each device change to its device. Devices already there
    are left to ``record_results`` (status, IMEI). Returns ICCID -> Device.Id of the inserted ones."""
    if not devices:
        return {}
    d = t.device
    have = {r.ICCID for chunk in _chunks(sorted({x.iccid for x in devices}))
            for r in conn.execute(select(d.c.ICCID).where(
                d.c.ICCID.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
                d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False))}  # noqa: E712
    new = {x.iccid: x for x in devices if x.iccid not in have}
    if not new:
        return {}
    now = utcnow()
    ids = device_status_ids(conn, bulk.integration, [x.status for x in new.values()])
    conn.execute(insert(d), [
        {"ICCID": x.iccid, "IMEI": x.imei or None, "ServiceProviderId": bulk.service_provider_id,
         "TenantId": bulk.tenant_id, "Status": x.status, "DeviceStatusId": ids.get(x.status),
         "LastStatusChange": now, "IsActive": True, "IsDeleted": False, "CreatedDate": now, "ModifiedDate": now}
        for x in new.values()])
    added: dict[str, int] = {}
    for chunk in _chunks(sorted(new)):
        added.update((r.ICCID, int(r.Id)) for r in conn.execute(select(d.c.ICCID, d.c.Id).where(
            d.c.ICCID.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
            d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)))  # noqa: E712
    conn.execute(insert(t.device_status_history), [
        {"DeviceId": added[i], "ICCID": i, "PreviousStatus": None, "CurrentStatus": x.status,
         "ChangedBy": processed_by, "BulkChangeId": bulk.id, "Source": "BulkChange", "ChangedDate": now}
        for i, x in new.items()])
    tbl = change_table(bulk.portal_type)
    conn.execute(update(tbl).where(tbl.c.Id == bindparam("dc_id")).values(DeviceId=bindparam("device_id")),
                 [{"dc_id": x.device_change_id, "device_id": added[i]} for i, x in new.items()])
    return added


def default_site_id(conn: Connection, bulk: BulkChange) -> int | None:
    """The service provider's default site when it is an active site of the bulk change's tenant, else None."""
    sp, site = t.service_provider, t.site
    return conn.execute(select(site.c.Id).select_from(sp.join(site, site.c.Id == sp.c.DefaultSiteId)).where(
        sp.c.Id == bulk.service_provider_id, site.c.TenantId == bulk.tenant_id,
        site.c.IsActive == True)).scalar()  # noqa: E712


def set_default_site(conn: Connection, bulk: BulkChange, iccids: Sequence[str]) -> int:
    """Give these devices of the bulk change's service provider and tenant the service provider's
    default site (legacy ``usp_Device_Bulk_Change_Set_Default_Site``) where they have no site yet: a
    device already assigned to a customer keeps it. Returns the number of devices changed."""
    site_id = default_site_id(conn, bulk)
    if site_id is None or not iccids:
        return 0
    d = t.device
    changed = 0
    now = utcnow()
    for chunk in _chunks(sorted(set(iccids))):
        changed += conn.execute(update(d).where(
            d.c.ICCID.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
            d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False, d.c.SiteId.is_(None))  # noqa: E712
            .values(SiteId=site_id, ModifiedDate=now)).rowcount
    return changed


def record_place_of_use(conn: Connection, bulk: BulkChange, devices: Sequence[tuple[int, str, str]]) -> None:
    """``[(device id, username, description)]``: a ThingSpace activation with the subscriber's name
    writes "First Last" in ``Username`` and the primary place of use (JSON) in ``DeviceDescription``
    (legacy ``UpdateThingSpaceDeviceInformation`` / ``usp_DeviceBulkChange_ThingSpace_InformationChange``)."""
    if not devices:
        return
    d = t.device
    conn.execute(update(d).where(d.c.Id == bindparam("d_id"), d.c.ServiceProviderId == bulk.service_provider_id)
                 .values(Username=bindparam("v_username"), DeviceDescription=bindparam("v_description"),
                         ModifiedDate=utcnow()),
                 [{"d_id": device_id, "v_username": username, "v_description": description}
                  for device_id, username, description in devices])
