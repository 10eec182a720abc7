"""What a new Telegence line (ActivateNewService) leaves in the Mobility tables besides the inventory
row: its carrier rate pool and data group on ``TelegenceDevice`` (legacy
``TelegenceNewServiceActivation_Staging`` -> ``usp_Telegence_Update_NewServiceActivations_FromStaging``)."""
from __future__ import annotations

from datetime import datetime
from typing import Sequence

from sqlalchemy import bindparam, update
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t


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
