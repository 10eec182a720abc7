"""Every StatusUpdate handler goes through the one opening of ``changes/status_update/common.py``:
a device missing from the inventory is refused by name, a device at its target already is PROCESSED
without any carrier call (the handlers are built without a client: a call would fail)."""
import pytest

from bulkchange.changes import HANDLERS
from bulkchange.changes.status_update.common import StatusUpdateHandler
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import (
    BulkChange,
    BulkStatus,
    ChangeType,
    DeviceChange,
    DeviceChangeStatus,
    PortalType,
    StatusUpdateRequest,
)
from bulkchange.rules import TRANSITIONS, RuleError

STATUS_HANDLERS = sorted(((family, handler) for (change_type, family), handler in HANDLERS.items()
                          if change_type == ChangeType.STATUS_UPDATE), key=lambda p: p[0].value)


def _bulk(integration) -> BulkChange:
    return BulkChange(id=1, tenant_id=2, service_provider_id=3, service_provider_name="SP", integration=integration,
                      change_type=ChangeType.STATUS_UPDATE, portal_type=PortalType.M2M, status=BulkStatus.PROCESSING)


def test_every_carrier_has_a_status_handler_on_the_shared_base():
    assert {family for family, _ in STATUS_HANDLERS} == set(TRANSITIONS)
    for family, handler in STATUS_HANDLERS:
        assert issubclass(handler, StatusUpdateHandler), family


@pytest.mark.parametrize("family,handler", STATUS_HANDLERS, ids=[f.value for f, _ in STATUS_HANDLERS])
def test_a_device_at_its_target_is_processed_without_a_carrier_call(family, handler):
    target = sorted(TRANSITIONS[family])[0]
    device = DeviceRow(id=7, iccid="8901260000000000008", msisdn="5550100", status=target, communication_plan="CP",
                       carrier_rate_plan="RP", data_usage_mb=None, eid="E1")
    dc = DeviceChange(id=11, bulk_change_id=1, iccid=device.iccid, status=DeviceChangeStatus.PROCESSING)
    request = StatusUpdateRequest(UpdateStatus=target)
    h = handler(_bulk(family), None, {})
    h.validate(dc, request, device)
    result = h.apply(dc, request, device, verify_first=True, log=None)
    assert result.status == DeviceChangeStatus.PROCESSED
    assert result.details == f"already {target}; no carrier call needed"
    assert (result.device_change_id, result.device_id, result.iccid) == (11, 7, device.iccid)
    assert (result.previous_device_status, result.new_device_status) == (target, target)


@pytest.mark.parametrize("family,handler", STATUS_HANDLERS, ids=[f.value for f, _ in STATUS_HANDLERS])
def test_a_device_missing_from_the_inventory_is_refused_by_name(family, handler):
    target = sorted(TRANSITIONS[family])[0]
    dc = DeviceChange(id=11, bulk_change_id=1, iccid="8901260000000000008", status=DeviceChangeStatus.PENDING)
    with pytest.raises(RuleError, match="device 8901260000000000008 not found for service provider 3"):
        handler(_bulk(family), None, {}).validate(dc, StatusUpdateRequest(UpdateStatus=target), None)
