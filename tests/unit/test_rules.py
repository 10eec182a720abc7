import pytest

from bulkchange.db.seed import make_iccid
from bulkchange.models import ChangeType, Integration, RequestParseError, StatusUpdateRequest, parse_change_request
from bulkchange.rules import RuleError, carrier_status, check_transition, iccid_problem, luhn_check_digit, luhn_valid


def test_luhn_known_numbers():
    # 79927398713 is the textbook valid Luhn number; a real-world ICCID format below
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert luhn_check_digit("7992739871") == "3"


@pytest.mark.parametrize("n", [1, 42, 999, 123456])
def test_generated_iccids_are_valid(n):
    iccid = make_iccid(n)
    assert len(iccid) == 19 and iccid_problem(iccid) is None


@pytest.mark.parametrize("iccid,needle", [
    (None, "missing"), ("", "missing"), ("89012600000000000A1", "digits only"),
    ("890126000000000001", "19 or 20"), ("891", "19 or 20"),
])
def test_iccid_problems(iccid, needle):
    assert needle in iccid_problem(iccid)


def test_iccid_bad_check_digit_names_the_iccid():
    good = make_iccid(7)
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    assert iccid_problem(bad) == f"ICCID {bad} has an invalid check digit"


def test_jasper_aliases_map_to_carrier_vocabulary():
    assert carrier_status(Integration.JASPER, "Suspend") == "DEACTIVATED"
    assert carrier_status(Integration.JASPER, " restore ") == "ACTIVATED"
    assert carrier_status(Integration.POD19, "ACTIVATED") == "ACTIVATED"  # Jasper family
    assert carrier_status(Integration.JASPER, "retired") == "RETIRED"
    with pytest.raises(RuleError, match="not a Jasper status"):
        carrier_status(Integration.JASPER, "Hibernate")


def test_transitions():
    assert check_transition(Integration.JASPER, "ACTIVATED", "Suspend", False).target == "DEACTIVATED"
    assert check_transition(Integration.JASPER, "DEACTIVATED", "Suspend", False).already_there
    with pytest.raises(RuleError, match="cannot change status from RETIRED to ACTIVATED"):
        check_transition(Integration.JASPER, "RETIRED", "Active", False)
    # IsIgnoreCurrentStatus forces the call where our table would refuse but the carrier accepts
    with pytest.raises(RuleError, match="from ACTIVATION_READY to TEST_READY"):
        check_transition(Integration.JASPER, "ACTIVATION_READY", "test_ready", False)
    forced = check_transition(Integration.JASPER, "ACTIVATION_READY", "test_ready", True)
    assert forced.target == "TEST_READY" and not forced.already_there


@pytest.mark.parametrize("current,requested", [("ACTIVATED", "TEST_READY"), ("ACTIVATED", "inventory"),
                                               ("DEACTIVATED", "ACTIVATION_READY"), ("DEACTIVATED", "INVENTORY"),
                                               ("RETIRED", "TEST_READY")])
@pytest.mark.parametrize("ignore", [False, True])
def test_jasper_never_returns_to_a_pre_activation_state(current, requested, ignore):
    """Control Center refuses it (10000029): refused before any call, even with IsIgnoreCurrentStatus."""
    with pytest.raises(RuleError, match=r"pre-activation state .*10000029") as info:
        check_transition(Integration.JASPER, current, requested, ignore)
    assert f"from {current} to {requested.upper()}" in str(info.value)
    if ignore:
        assert "IsIgnoreCurrentStatus cannot force it" in str(info.value)


def test_jasper_end_of_life_cannot_be_forced():
    with pytest.raises(RuleError, match="cannot change status from RETIRED to ACTIVATED"):
        check_transition(Integration.JASPER, "RETIRED", "Active", True)
    assert check_transition(Integration.JASPER, "RETIRED", "purged", True).target == "PURGED"
    # an unknown current status cannot be judged: forcing sends it and the carrier decides
    assert check_transition(Integration.JASPER, None, "TEST_READY", True).target == "TEST_READY"


def test_status_updates_refused_for_carriers_without_a_table(monkeypatch):
    from bulkchange import rules

    monkeypatch.delitem(rules.STATUS_ALIASES, Integration.TEAL)
    with pytest.raises(RuleError, match="not supported for Teal"):
        carrier_status(Integration.TEAL, "Active")


def test_parse_change_request_reports_field_and_value():
    req = parse_change_request(ChangeType.STATUS_UPDATE, '{"UpdateStatus": "Suspend", "Extra": 1}')
    assert isinstance(req, StatusUpdateRequest) and req.UpdateStatus == "Suspend"
    with pytest.raises(RequestParseError, match=r"UpdateStatus: .*got ''"):
        parse_change_request(ChangeType.STATUS_UPDATE, '{"UpdateStatus": ""}')
    with pytest.raises(RequestParseError, match="not valid JSON"):
        parse_change_request(ChangeType.STATUS_UPDATE, "{nope")
    with pytest.raises(RequestParseError, match="empty"):
        parse_change_request(ChangeType.STATUS_UPDATE, None)
    with pytest.raises(RequestParseError, match="IsIgnoreCurrentStatus"):
        parse_change_request(ChangeType.STATUS_UPDATE, {"UpdateStatus": "x", "IsIgnoreCurrentStatus": "maybe"})


def test_change_type_and_integration_dispatch_on_names():
    assert ChangeType.from_code("statusupdate") is ChangeType.STATUS_UPDATE
    assert Integration.from_name("TMOBILEJASPER").family is Integration.JASPER
    with pytest.raises(ValueError):
        ChangeType.from_code("Teleport")


def test_thingspace_vocabulary_and_transitions():
    assert carrier_status(Integration.THINGSPACE, "Restore") == "active"
    assert carrier_status(Integration.THINGSPACE, "Deactivate") == "deactive"
    assert check_transition(Integration.THINGSPACE, "suspend", "Active", False).target == "active"
    assert check_transition(Integration.THINGSPACE, "ACTIVE", "active", False).already_there
    with pytest.raises(RuleError, match="cannot change status from preactive to suspend"):
        check_transition(Integration.THINGSPACE, "preactive", "Suspend", False)
