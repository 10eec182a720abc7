"""The device inventory (``Device``, ``MobilityDevice``, Telegence's line table) and the carrier rate
plans: the devices of a bulk change, found by ICCID or number within its service provider and
tenant; a service provider's devices and the drift reconciliation writes back to them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Sequence

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db.tables import chunks, inventory_table
from bulkchange.models import (
    BulkChange,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    Integration,
    PortalType,
    utcnow,
)


def msisdn_key(value: str | None) -> str:
    """A phone number compared by its digits (as bulkchange.tenancy compares it)."""
    return "".join(ch for ch in str(value or "") if ch.isdigit())


@dataclass(frozen=True)
class DeviceRow:
    id: int
    iccid: str | None  # a Mobility line may be known by its number only
    msisdn: str | None
    status: str | None
    communication_plan: str | None
    carrier_rate_plan: str | None
    data_usage_mb: Decimal | None
    # the other carrier identifiers of the tenant's device: every carrier call takes them from here
    eid: str | None = None
    imei: str | None = None

    @property
    def label(self) -> str:
        """How a message names the device: its ICCID, else its number."""
        return self.iccid or f"MSISDN {self.msisdn}"


class DeviceIndex(dict):
    """The devices of some device changes, found by ICCID, or (Mobility lines) by MSISDN when the
    device change carries no ICCID. ``find(dc)`` is the device change's device or None."""

    def find(self, dc: DeviceChange) -> DeviceRow | None:
        if dc.iccid:
            return self.get(dc.iccid)
        if dc.msisdn:
            return self.get(("MSISDN", msisdn_key(dc.msisdn)))
        return None


def _device_row(r) -> DeviceRow:
    m = r._mapping
    return DeviceRow(int(m["Id"]), m["ICCID"], m["MSISDN"], m["Status"], m.get("CommunicationPlan"),
                     m["CarrierRatePlan"], m["DataUsageMB"], eid=m.get("EID"), imei=m["IMEI"])


def _inventory_select(d):
    cols = [d.c.Id, d.c.ICCID, d.c.MSISDN, d.c.Status, d.c.CarrierRatePlan, d.c.DataUsageMB, d.c.IMEI]
    cols += [d.c[c] for c in ("CommunicationPlan", "EID") if c in d.c]
    return select(*cols)


def load_devices(conn: Connection, bulk: BulkChange, changes: Sequence[DeviceChange]) -> DeviceIndex:
    """The devices of these device changes, in the bulk change's inventory (``inventory_table``),
    of its service provider and tenant only (multi-tenant guard). Mobility device changes without an
    ICCID are found by their MSISDN."""
    out = DeviceIndex(load_devices_by_iccid(conn, bulk, [dc.iccid for dc in changes if dc.iccid]))
    if int(bulk.portal_type) != PortalType.MOBILITY:
        return out
    numbers = sorted({dc.msisdn for dc in changes if not dc.iccid and dc.msisdn})
    if not numbers:
        return out
    d = inventory_table(bulk.portal_type)
    keys = {msisdn_key(n) for n in numbers}
    # the number as written and its digits only
    variants = sorted({v for n in numbers for v in (n, msisdn_key(n))})
    for chunk in chunks(variants):
        q = _inventory_select(d).where(
            d.c.MSISDN.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
            d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False).order_by(d.c.Id)  # noqa: E712
        for r in conn.execute(q):
            key = msisdn_key(r.MSISDN)
            if key in keys:
                out.setdefault(("MSISDN", key), _device_row(r))
    return out


def load_devices_by_iccid(conn: Connection, bulk: BulkChange, iccids: Sequence[str]) -> dict[str, DeviceRow]:
    """Devices of the bulk change's service provider and tenant only (multi-tenant guard), in its
    inventory (``inventory_table``)."""
    d = inventory_table(bulk.portal_type)
    out: dict[str, DeviceRow] = {}
    wanted = sorted({i for i in iccids if i})
    for chunk in chunks(wanted):
        q = _inventory_select(d).where(
            d.c.ICCID.in_(chunk), d.c.ServiceProviderId == bulk.service_provider_id,
            d.c.TenantId == bulk.tenant_id, d.c.IsDeleted == False)  # noqa: E712
        for r in conn.execute(q):
            out[r.ICCID] = _device_row(r)
    return out


@dataclass(frozen=True)
class RatePlan:
    code: str
    communication_plan: str | None
    plan_mb: Decimal
    base_rate: Decimal


def load_rate_plans(conn: Connection, service_provider_id: int) -> list[RatePlan]:
    rp = t.jasper_carrier_rate_plan
    q = select(rp.c.RatePlanCode, rp.c.CommunicationPlan, rp.c.PlanMB, rp.c.BaseRate).where(
        rp.c.ServiceProviderId == service_provider_id, rp.c.IsActive == True)  # noqa: E712
    return [RatePlan(r[0], r[1], Decimal(r[2]), Decimal(r[3])) for r in conn.execute(q)]


def mobility_numbers(conn: Connection, ids: Sequence[int]) -> dict[int, str | None]:
    m = t.mobility_device
    out: dict[int, str | None] = {}
    for chunk in chunks(sorted(set(ids))):
        out.update((int(i), n) for i, n in conn.execute(select(m.c.Id, m.c.MSISDN).where(m.c.Id.in_(chunk))))
    return out


def mirror_telegence_lines(conn: Connection, service_provider_id: int, integration: Integration,
                            results: Sequence[DeviceResult], *, processed_by: str, now: datetime) -> None:
    """A Telegence status the pipeline changed, in Telegence's own line table (legacy TelegenceDevice,
    by subscriber number, as the legacy sync keeps it): the letter, its DeviceStatusId and the previous
    id. A line the table does not have yet (a new activation) is added."""
    numbers = mobility_numbers(conn, [r.device_id for r in results])
    lines = {}
    for r in results:
        number = r.msisdn or numbers.get(r.device_id)
        if number:
            lines[number] = r.new_device_status
    if not lines:
        return
    ids = device_status_ids(conn, integration, lines.values())
    td = t.telegence_device
    have: set[str] = set()
    for chunk in chunks(sorted(lines)):
        have.update(conn.execute(select(td.c.SubscriberNumber).where(
            td.c.ServiceProviderId == service_provider_id, td.c.SubscriberNumber.in_(chunk))).scalars())
    known = [n for n in sorted(lines) if n in have]
    if known:
        conn.execute(update(td).where(td.c.ServiceProviderId == service_provider_id,
                                      td.c.SubscriberNumber == bindparam("number")).values(
            OldDeviceStatusId=td.c.DeviceStatusId, DeviceStatusId=bindparam("status_id"),
            SubscriberNumberStatus=bindparam("status"), ModifiedBy=processed_by[:128], ModifiedDate=now),
            [{"number": n, "status": lines[n], "status_id": ids.get(lines[n])} for n in known])
    new = [n for n in sorted(lines) if n not in have]
    if new:
        conn.execute(insert(td), [
            {"SubscriberNumber": n, "SubscriberNumberStatus": lines[n], "DeviceStatusId": ids.get(lines[n]),
             "ServiceProviderId": service_provider_id, "CreatedBy": processed_by[:128], "CreatedDate": now,
             "IsActive": True, "IsDeleted": False} for n in new])


def provider_inventory(integration: Integration):
    """The inventory reconciliation reads for a service provider: Telegence lines are Mobility lines
    (``MobilityDevice``), every other carrier's SIMs are in ``Device``."""
    return t.mobility_device if integration.family == Integration.TELEGENCE else t.device


def record_reconciled_statuses(conn: Connection, changes: Sequence[tuple[int, str, str | None, str]], *,
                               changed_by: str, integration: Integration, service_provider_id: int) -> None:
    """Device status drift found at the carrier: (device id, ICCID or number, our status, carrier
    status), written to the provider's inventory (``provider_inventory``) with its DeviceStatusId."""
    if not changes:
        return
    now = utcnow()
    d = provider_inventory(integration)
    mobility = d is t.mobility_device
    ids = device_status_ids(conn, integration, [new for *_, new in changes])
    conn.execute(update(d).where(d.c.Id == bindparam("d_id")).values(
        Status=bindparam("new_status"), DeviceStatusId=bindparam("new_status_id"), LastStatusChange=now,
        ModifiedDate=now),
        [{"d_id": dev_id, "new_status": new, "new_status_id": ids.get(new)} for dev_id, _, _, new in changes])
    numbers = mobility_numbers(conn, [c[0] for c in changes]) if mobility else {}
    conn.execute(insert(t.device_status_history), [
        {"DeviceId": None if mobility else dev_id, "MobilityDeviceId": dev_id if mobility else None,
         "ICCID": iccid if not mobility or iccid != numbers.get(dev_id) else None,
         "MSISDN": numbers.get(dev_id), "PreviousStatus": old, "CurrentStatus": new, "ChangedBy": changed_by,
         "BulkChangeId": None, "Source": "Reconciliation", "ChangedDate": now}
        for dev_id, iccid, old, new in changes])
    if mobility and integration.family == Integration.TELEGENCE:
        mirror_telegence_lines(conn, service_provider_id, integration, [
            DeviceResult(device_change_id=0, status=DeviceChangeStatus.PROCESSED, details="", device_id=dev_id,
                         new_device_status=new) for dev_id, _, _, new in changes],
            processed_by=changed_by, now=now)


def provider_devices(conn: Connection, service_provider_id: int, integration: Integration | None = None, *,
                     rate_plans: bool = False) -> list[tuple]:
    """(id, ICCID, MSISDN, status) of the provider's live devices in its inventory; with
    ``rate_plans`` (id, ICCID, MSISDN, status, carrier rate plan)."""
    d = provider_inventory(integration) if integration is not None else t.device
    cols = [d.c.Id, d.c.ICCID, d.c.MSISDN, d.c.Status] + ([d.c.CarrierRatePlan] if rate_plans else [])
    q = select(*cols).where(d.c.ServiceProviderId == service_provider_id, d.c.IsDeleted == False)  # noqa: E712
    return [(int(row[0]), *row[1:]) for row in conn.execute(q)]


def record_reconciled_rate_plans(conn: Connection, changes: Sequence[tuple[int, str, str | None, str]], *,
                                 changed_by: str, integration: Integration) -> None:
    """Carrier rate plan drift found at the carrier: (device id, ICCID or number, our plan, carrier
    plan), written to the provider's inventory (``CarrierRatePlan``) with a DeviceRatePlanHistory row
    each, as ``record_reconciled_statuses`` does for statuses: the inventory then agrees with the
    carrier, so the next run records nothing again while the plan stays."""
    if not changes:
        return
    now = utcnow()
    d = provider_inventory(integration)
    mobility = d is t.mobility_device
    conn.execute(update(d).where(d.c.Id == bindparam("d_id")).values(
        CarrierRatePlan=bindparam("new_plan"), ModifiedDate=now),
        [{"d_id": dev_id, "new_plan": new} for dev_id, _, _, new in changes])
    numbers = mobility_numbers(conn, [c[0] for c in changes]) if mobility else {}
    conn.execute(insert(t.device_rate_plan_history), [
        {"DeviceId": None if mobility else dev_id, "MobilityDeviceId": dev_id if mobility else None,
         "ICCID": iccid if not mobility or iccid != numbers.get(dev_id) else None,
         "MSISDN": numbers.get(dev_id), "PreviousRatePlan": old, "CurrentRatePlan": new, "ChangedBy": changed_by,
         "Source": "Reconciliation", "ChangedDate": now}
        for dev_id, iccid, old, new in changes])
