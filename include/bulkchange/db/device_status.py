"""The one place a device status becomes its ``DeviceStatusId``.

AMOP keeps both on an inventory row (``Device``, ``MobilityDevice``, Telegence's ``TelegenceDevice``):
the status text the carrier uses and the id of its row in the legacy ``DeviceStatus`` lookup
(``Id``, ``IntegrationId``, ``Status``; e.g. ThingSpace "active" = 8, "pending activation" = 15,
Telegence "a" for integration 6). The portal and the legacy stored procedures read the id, the
pipeline compares the text: the two must never disagree. Every writer of a status therefore takes
the id from ``device_status_ids`` (never from the change request's ``PostUpdateStatusId``); a status
``DeviceStatus`` does not know gets NULL, not a stale id. ``status_id_mismatches`` lists rows where
they disagree (tests; an operator's check).

Statuses match case-insensitively and ignoring spaces, ``_`` and ``-`` (the legacy Telegence sync
matches ``LOWER(Status)``: the carrier's ``A`` is the lookup's ``a``).
"""
from __future__ import annotations

import re
from typing import Iterable

from sqlalchemy import or_, select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.models import INTEGRATION_IDS, Integration


def status_key(status: str | None) -> str:
    return re.sub(r"[\s_\-]+", "", status or "").lower()


def _integration_ids(integration: Integration | int) -> list[int]:
    """The integration's own DeviceStatus rows first, then its family's (POD19 -> Jasper)."""
    if isinstance(integration, Integration):
        ids = [INTEGRATION_IDS[integration], INTEGRATION_IDS[integration.family]]
    else:
        ids = [int(integration)]
        for integ, i in INTEGRATION_IDS.items():
            if i == int(integration):
                ids.append(INTEGRATION_IDS[integ.family])
    return list(dict.fromkeys(ids))


def device_status_ids(conn: Connection, integration: Integration | int,
                      statuses: Iterable[str | None]) -> dict[str, int | None]:
    """status -> its DeviceStatus id for this integration (None: unknown to the lookup)."""
    wanted = {s for s in statuses if s}
    if not wanted:
        return {}
    ds = t.device_status
    order = _integration_ids(integration)
    rows = conn.execute(select(ds.c.Id, ds.c.IntegrationId, ds.c.Status)
                        .where(ds.c.IntegrationId.in_(order))).all()
    by_key: dict[str, int] = {}
    for dev_id, integ, status in sorted(rows, key=lambda r: (order.index(r[1]), r[0])):
        by_key.setdefault(status_key(status), int(dev_id))
    return {s: by_key.get(status_key(s)) for s in wanted}


def status_id_mismatches(conn: Connection, table) -> list[tuple[int, str | None, int | None, int | None]]:
    """(row id, Status, DeviceStatusId, expected id) of the rows of an inventory table whose two
    status columns disagree. ``table``: ``Device`` or ``MobilityDevice`` (Status) or
    ``TelegenceDevice`` (SubscriberNumberStatus)."""
    status_col = table.c.Status if "Status" in table.c else table.c.SubscriberNumberStatus
    sp = t.service_provider
    rows = conn.execute(select(table.c.Id, status_col, table.c.DeviceStatusId, sp.c.IntegrationId)
                        .select_from(table.join(sp, sp.c.Id == table.c.ServiceProviderId))
                        .where(or_(status_col.is_not(None), table.c.DeviceStatusId.is_not(None)))).all()
    cache: dict[int, dict[str, int | None]] = {}
    out = []
    for row_id, status, status_id, integ in rows:
        if integ not in cache:
            cache[integ] = device_status_ids(conn, int(integ), {r[1] for r in rows if r[3] == integ})
        expected = cache[integ].get(status) if status else None
        if expected != status_id:
            out.append((int(row_id), status, status_id, expected))
    return out


# DeviceStatus rows for a development / test database (production has its own, read as they are).
# ThingSpace 8 and 15 are the legacy ids (legacy_behaviour.md); the others are numbered from 100.
DEV_DEVICE_STATUSES: dict[Integration, list[tuple[str, int | None]]] = {
    Integration.JASPER: [(s, None) for s in ("ACTIVATED", "ACTIVATION_READY", "DEACTIVATED", "INVENTORY",
                                              "PURGED", "RETIRED", "TEST_READY")],
    Integration.THINGSPACE: [("active", 8), ("pending activation", 15), ("suspend", None), ("deactive", None),
                             ("preactive", None), ("inventory", None)],
    Integration.TELEGENCE: [("a", None), ("s", None), ("c", None), ("inventory", None), ("Unknown", None)],
    Integration.TEAL: [(s, None) for s in ("ONLINE", "STOPPED", "WAITING")],
    Integration.POND: [(s, None) for s in ("ACTIVE", "SUSPENDED", "TERMINATED")],
}
