"""One handler per (change type, carrier family). Adding a pair is one line in HANDLERS.

Layout: a change type with work per carrier is a package ``changes/<change_type>/`` with one module
per carrier family (``jasper.py``, ``thingspace.py``, ``telegence.py``, ``teal.py``, ``pond.py``) and
what the carriers share in ``common.py``; a change type that is the same on every carrier is one
module ``changes/<change_type>.py``. ``base.py`` holds the handler contract, ``revio_service.py``
the Rev.io step several change types end with, ``teal_common.py`` and ``pond_common.py`` the base
every Teal (EIDs, operation results) and every POND (the package flow) handler builds on.

Change types that never call a carrier (DB only, or Rev.io only) are registered once for every
carrier under ``(ChangeType.X, None)``; such handlers set ``needs_carrier = False`` and the
pipeline then neither checks the carrier connection nor builds a carrier client for them."""
from __future__ import annotations

from bulkchange.changes.activate_new_service.telegence import TelegenceActivateNewService
from bulkchange.changes.archival import Archival
from bulkchange.changes.base import ChangeHandler
from bulkchange.changes.carrier_rate_plan.jasper import JasperCarrierRatePlan
from bulkchange.changes.carrier_rate_plan.pond import PondCarrierRatePlan
from bulkchange.changes.carrier_rate_plan.teal import TealCarrierRatePlan
from bulkchange.changes.carrier_rate_plan.telegence import TelegenceCarrierRatePlan
from bulkchange.changes.carrier_rate_plan.thingspace import ThingSpaceCarrierRatePlan
from bulkchange.changes.change_identifier.jasper import JasperChangeIdentifier
from bulkchange.changes.change_identifier.telegence import TelegenceChangeIdentifier
from bulkchange.changes.change_identifier.thingspace import ThingSpaceChangeIdentifier
from bulkchange.changes.customer_assignment import CreateRevService, CustomerAssignment
from bulkchange.changes.customer_rate_plan import CustomerRatePlanChange
from bulkchange.changes.edit_username.jasper import JasperEditUsername
from bulkchange.changes.edit_username.telegence import TelegenceEditUsername
from bulkchange.changes.edit_username.thingspace import ThingSpaceEditUsername
from bulkchange.changes.status_update.jasper import JasperStatusUpdate
from bulkchange.changes.status_update.pond import PondStatusUpdate
from bulkchange.changes.status_update.teal import TealStatusUpdate
from bulkchange.changes.status_update.telegence import TelegenceStatusUpdate
from bulkchange.changes.status_update.thingspace import ThingSpaceStatusUpdate
from bulkchange.models import ChangeType, Integration

HANDLERS: dict[tuple[ChangeType, Integration | None], type[ChangeHandler]] = {
    (ChangeType.STATUS_UPDATE, Integration.JASPER): JasperStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.THINGSPACE): ThingSpaceStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.POND): PondStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.TELEGENCE): TelegenceStatusUpdate,
    (ChangeType.STATUS_UPDATE, Integration.TEAL): TealStatusUpdate,
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.JASPER): JasperCarrierRatePlan,
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.THINGSPACE): ThingSpaceCarrierRatePlan,
    (ChangeType.CHANGE_ICCID_AND_IMEI, Integration.JASPER): JasperChangeIdentifier,
    (ChangeType.CHANGE_ICCID_AND_IMEI, Integration.THINGSPACE): ThingSpaceChangeIdentifier,
    (ChangeType.EDIT_USERNAME_COST_CENTER, Integration.JASPER): JasperEditUsername,
    (ChangeType.EDIT_USERNAME_COST_CENTER, Integration.TELEGENCE): TelegenceEditUsername,
    (ChangeType.EDIT_USERNAME_COST_CENTER, Integration.THINGSPACE): ThingSpaceEditUsername,
    (ChangeType.ACTIVATE_NEW_SERVICE, Integration.TELEGENCE): TelegenceActivateNewService,
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.TELEGENCE): TelegenceCarrierRatePlan,
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.TEAL): TealCarrierRatePlan,
    (ChangeType.CARRIER_RATE_PLAN_CHANGE, Integration.POND): PondCarrierRatePlan,
    (ChangeType.CHANGE_ICCID_AND_IMEI, Integration.TELEGENCE): TelegenceChangeIdentifier,
    (ChangeType.CUSTOMER_RATE_PLAN_CHANGE, None): CustomerRatePlanChange,
    (ChangeType.ARCHIVAL, None): Archival,
    (ChangeType.CUSTOMER_ASSIGNMENT, None): CustomerAssignment,
    (ChangeType.CREATE_REV_SERVICE, None): CreateRevService,
}


class UnsupportedChange(LookupError):
    pass


# Carriers whose carrier-side flows are deliberately not ported: a bulk change that would call them is
# refused at pre-flight (and at submission) with this reason; DB-only change types still run.
OUT_OF_SCOPE: dict[Integration, str] = {
    Integration.EBONDING: (
        "eBonding bulk changes that reach the carrier are not processed by this pipeline: the legacy handed "
        "an eBonding status update on to the eBonding service's own queue (eBondingDeviceStatusChangeQueueUrl) "
        "and sent rate plan changes over the eBonding SOAP router, neither of which is ported; submit it "
        "through the eBonding integration. Nothing was sent to the carrier"),
}


def get_handler(change_type: ChangeType, integration: Integration) -> type[ChangeHandler]:
    if integration in OUT_OF_SCOPE and (change_type, None) not in HANDLERS:
        raise UnsupportedChange(f"change type {change_type.value} on carrier {integration.value}: "
                                f"{OUT_OF_SCOPE[integration]}")
    handler = HANDLERS.get((change_type, integration.family)) or HANDLERS.get((change_type, None))
    if handler is None:
        raise UnsupportedChange(
            f"change type {change_type.value} is not supported on carrier {integration.value}")
    return handler


def needs_carrier(change_type: ChangeType, integration: Integration) -> bool:
    """False when the pair's handler never calls the carrier (no carrier connection needed).
    An unsupported pair counts as needing one: pre-flight refuses it anyway."""
    try:
        return get_handler(change_type, integration).needs_carrier
    except UnsupportedChange:
        return True


def supported_pairs() -> list[tuple[ChangeType, Integration | None]]:
    """(change type, carrier family) pairs; carrier None = every carrier (no carrier call)."""
    return sorted(HANDLERS, key=lambda p: (p[0].value, p[1].value if p[1] is not None else ""))
