"""What a new Telegence line (ActivateNewService) leaves in the Mobility tables besides the inventory
row: its carrier rate pool and data group on ``TelegenceDevice`` (legacy
``TelegenceNewServiceActivation_Staging`` -> ``usp_Telegence_Update_NewServiceActivations_FromStaging``),
its mobility features (``TelegenceDeviceMobilityFeature``), and the customer assignment bulk change
linked to the activation (numbers filled in, failed SIMs refused, then released)."""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from bulkchange.db import claims, tables
from bulkchange.db import schema as t
from bulkchange.models import SETTLED_DEVICE_STATUSES, BulkChange, DeviceChangeStatus


def store_carrier_pool_and_group(conn: Connection, service_provider_id: int,
                                 lines: Sequence[tuple[str, str | None, str | None]], *, modified_by: str,
                                 now: datetime) -> None:
    """(subscriber number, CarrierRatePool, CarrierDataGroup) onto the lines' ``TelegenceDevice`` rows
    (written when the line's status was recorded). A value the request left out is stored as NULL,
    like the legacy's staging row; the legacy took the bulk change's last request's values for every
    line, here each line gets its own request's."""
    if not lines:
        return
    td = t.telegence_device
    conn.execute(update(td).where(td.c.ServiceProviderId == service_provider_id,
                                  td.c.SubscriberNumber == bindparam("b_number"))
                 .values(CarrierRatePool=bindparam("b_pool"), CarrierDataGroup=bindparam("b_group"),
                         ModifiedBy=modified_by[:128], ModifiedDate=now),
                 [{"b_number": number, "b_pool": pool or None, "b_group": group or None}
                  for number, pool, group in lines])


def replace_line_features(conn: Connection, bulk: BulkChange, device_ids: Sequence[int],
                          features: Sequence[tuple[int, str | None, str | None, str]], *, now: datetime) -> None:
    """Nothing: the lines' ``TelegenceDeviceMobilityFeature`` rows become (device id, ICCID, number, offering code)."""
    f = t.telegence_device_mobility_feature
    conn.execute(delete(f).where(f.c.DeviceId.in_(device_ids), f.c.ServiceProviderId == bulk.service_provider_id))
    rows = [{"DeviceId": device_id, "ICCID": iccid, "SubscriberNumber": number, "OfferingCode": code,
             "ServiceProviderId": bulk.service_provider_id, "BulkChangeId": bulk.id, "CreatedDate": now}
            for device_id, iccid, number, code in features]
    if rows:
        conn.execute(insert(f), rows)


def change_requests(conn: Connection, bulk: BulkChange, ids: Sequence[int]) -> list[tuple[int, str | None]]:
    """(device change id, raw ChangeRequest JSON) of these device changes of the bulk change's portal type."""
    tbl = tables.change_table(bulk.portal_type)
    return [(int(dc_id), raw) for dc_id, raw in
            conn.execute(select(tbl.c.Id, tbl.c.ChangeRequest).where(tbl.c.Id.in_(ids)))]


def count_unsettled(conn: Connection, bulk: BulkChange) -> int:
    """The number of the bulk change's device changes not yet in a settled status."""
    tbl = tables.change_table(bulk.portal_type)
    return conn.execute(select(func.count()).select_from(tbl).where(
        tbl.c.BulkChangeId == bulk.id, tbl.c.Status.not_in([s.value for s in SETTLED_DEVICE_STATUSES]))).scalar()


def failed_activations(conn: Connection, bulk: BulkChange) -> list[tuple[str, str | None]]:
    """(ICCID, StatusDetails) of the bulk change's API_FAILED or ERROR device changes that name an ICCID."""
    tbl = tables.change_table(bulk.portal_type)
    failed_statuses = [DeviceChangeStatus.API_FAILED.value, DeviceChangeStatus.ERROR.value]
    return [(iccid, details) for iccid, details in conn.execute(select(tbl.c.ICCID, tbl.c.StatusDetails).where(
        tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(failed_statuses), tbl.c.ICCID.is_not(None)))]


def set_linked_numbers(conn: Connection, linked: BulkChange, numbers: Sequence[tuple[str, str]], *,
                       now: datetime) -> None:
    """Nothing: the linked bulk change's NEW device changes of these ICCIDs get these MSISDNs: (ICCID, MSISDN)."""
    otbl = tables.change_table(linked.portal_type)
    conn.execute(update(otbl).where(and_(otbl.c.BulkChangeId == linked.id, otbl.c.ICCID == bindparam("b_iccid"),
                                         otbl.c.Status == DeviceChangeStatus.NEW.value))
                 .values(MSISDN=bindparam("b_msisdn"), LastModified=now),
                 [{"b_iccid": iccid, "b_msisdn": msisdn} for iccid, msisdn in numbers])


def refuse_linked_changes(conn: Connection, linked: BulkChange, refusals: Sequence[tuple[str, str]], *,
                          now: datetime) -> None:
    """Nothing: the linked bulk change's NEW device changes of these ICCIDs become ERROR: (ICCID, details)."""
    otbl = tables.change_table(linked.portal_type)
    conn.execute(update(otbl).where(and_(otbl.c.BulkChangeId == linked.id, otbl.c.ICCID == bindparam("b_iccid"),
                                         otbl.c.Status == DeviceChangeStatus.NEW.value))
                 .values(Status=DeviceChangeStatus.ERROR.value, StatusDetails=bindparam("b_details"),
                         IsProcessed=True, ProcessedDate=now, LastModified=now),
                 [{"b_iccid": iccid, "b_details": details} for iccid, details in refusals])


def release_held_bulk_change(conn: Connection, bulk_id: int) -> None:
    """Nothing: the bulk change, if no one started it, is released as NEW (ProcessChanges) for the sensor."""
    b = t.device_bulk_change
    conn.execute(update(b).where(b.c.Id == bulk_id, claims.never_started(b))
                 .values(ProcessChanges=True, Status="NEW"))
