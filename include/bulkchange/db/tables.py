"""Where a bulk change's rows live and how ``IN`` lists are cut, shared by the db modules.

``IN`` lists are chunked below SQL Server's 2,100-parameter limit.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from bulkchange.db import schema as t
from bulkchange.models import PortalType

IN_CHUNK = 1000


def chunks(seq: Sequence, size: int = IN_CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def change_table(portal_type: PortalType | int):
    return t.mobility_device_change if int(portal_type) == PortalType.MOBILITY else t.m2m_device_change


def inventory_table(portal_type: PortalType | int):
    """Where the devices of a bulk change live: a Mobility bulk change's lines in the legacy Mobility
    inventory (``MobilityDevice``), an M2M one's SIMs in ``Device``."""
    return t.mobility_device if int(portal_type) == PortalType.MOBILITY else t.device
