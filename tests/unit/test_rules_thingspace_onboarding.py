"""The legacy portal's ThingSpace ICCID/IMEI pair rules (legacy_behaviour.md 4; M2MController
BuildStatusUpdateChangeDetailsThingSpace), with the legacy messages."""
from types import SimpleNamespace

import pytest

from bulkchange.db.seed import make_iccid
from bulkchange.rules import (
    TS_INVENTORY,
    TS_PENDING_ACTIVATION,
    carrier_status,
    thingspace_onboarding,
    thingspace_pair_problem,
)
from bulkchange.models import Integration

ICCID, OTHER = make_iccid(1), make_iccid(2)
IMEI, OTHER_IMEI = "350000000000001", "350000000000002"


def dev(iccid=ICCID, imei=IMEI, status="preactive"):
    return SimpleNamespace(iccid=iccid, imei=imei, status=status)


@pytest.mark.parametrize("asked,target", [("Pending Activation", TS_PENDING_ACTIVATION),
                                          ("pending_activation", TS_PENDING_ACTIVATION),
                                          ("INVENTORY", TS_INVENTORY), ("Active", None), ("suspend", None)])
def test_onboarding_targets(asked, target):
    assert thingspace_onboarding(asked) == target


def test_onboarding_targets_are_not_line_states():
    # a "pending activation" is not an action on a line: never mapped to activate
    with pytest.raises(ValueError):
        carrier_status(Integration.THINGSPACE, "pending activation")


def pending(imei, by_iccid=None, by_imei=None):
    return thingspace_pair_problem(TS_PENDING_ACTIVATION, ICCID, imei, by_iccid, by_imei)


def test_new_pair_is_accepted():
    assert pending(IMEI) is None


def test_iccid_only_needs_a_known_device_with_an_imei():
    assert pending(None, by_iccid=dev()) is None
    assert pending(None) == f"ICCID: {ICCID} does not pending activate."
    assert pending(None, by_iccid=dev(imei=None)) == f"ICCID: {ICCID} does not pending activate."


def test_known_non_active_same_pair_is_accepted():
    assert pending(IMEI, by_iccid=dev(status="pending activation"), by_imei=dev(status="pending activation")) is None


def test_imei_of_another_device_is_refused():
    assert pending(IMEI, by_imei=dev(iccid=OTHER)) == f"IMEI: {IMEI} already exists."


def test_iccid_known_with_another_imei_is_refused():
    assert pending(IMEI, by_iccid=dev(imei=OTHER_IMEI)) == f"ICCID: {ICCID} already exists."


def test_active_pair_is_refused_both_ways():
    active = dev(status="active")
    assert pending(IMEI, by_iccid=active, by_imei=active) == \
        f"IMEI: {IMEI} already exists. ICCID: {ICCID} already exists."


def test_legacy_substring_test_refuses_a_deactivated_pair_too():
    assert pending(IMEI, by_iccid=dev(status="deactive")) == f"ICCID: {ICCID} already exists."


@pytest.mark.parametrize("status", ["inventory", "Unknown"])
def test_devices_in_inventory_or_unknown_do_not_count(status):
    assert pending(IMEI, by_iccid=dev(imei=OTHER_IMEI, status=status),
                   by_imei=dev(iccid=OTHER, status=status)) is None


def test_inventory_needs_a_device_not_in_the_inventory():
    assert thingspace_pair_problem(TS_INVENTORY, ICCID, None, None, None) is None
    problem = thingspace_pair_problem(TS_INVENTORY, ICCID, None, dev(status="active"), None)
    assert problem.startswith("Invalid ICCID") and ICCID in problem
