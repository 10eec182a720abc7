"""One handler per (change type, carrier family). Adding a pair is one line in HANDLERS."""
from __future__ import annotations

from bulkchange.changes.base import ChangeHandler
from bulkchange.changes.status_update import JasperStatusUpdate, ThingSpaceStatusUpdate
from bulkchange.changes.status_update_pond import PondStatusUpdate
from bulkchange.changes.status_update_teal import TealStatusUpdate
from bulkchange.changes.status_update_telegence import TelegenceStatusUpdate
from bulkchange.models import ChangeType, Integration

HANDLERS: dict[tuple[ChangeType, Integration], type[ChangeHandler]] = {
    (ChangeType.STATUS_UPDATE, Integration.JASPER): JasperStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.THINGSPACE): ThingSpaceStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.POND): PondStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.TELEGENCE): TelegenceStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.TEAL): TealStatusUpdate,
}


class UnsupportedChange(LookupError):
    pass


def get_handler(change_type: ChangeType, integration: Integration) -> type[ChangeHandler]:
    handler = HANDLERS.get((change_type, integration.family))
    if handler is None:
        raise UnsupportedChange(
            f"change type {change_type.value} is not supported on carrier {integration.value}")
    return handler


def supported_pairs() -> list[tuple[ChangeType, Integration]]:
    return sorted(HANDLERS, key=lambda p: (p[0].value, p[1].value))
