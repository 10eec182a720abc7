"""Telegence and Teal status vocabulary and transitions (rules.STATUS_ALIASES / TRANSITIONS)."""
import pytest

from bulkchange.changes.status_update.teal import reached, teal_operation
from bulkchange.changes.status_update.telegence import telegence_action
from bulkchange.models import Integration
from bulkchange.rules import TRANSITIONS, RuleError, carrier_status, check_transition

TG, TEAL = Integration.TELEGENCE, Integration.TEAL


@pytest.mark.parametrize("word,letter", [
    ("Active", "A"), ("restore", "A"), ("a", "A"), ("Suspend", "S"), ("suspended", "S"),
    ("Deactivate", "C"), ("cancel", "C"), ("Terminate", "C"), ("C", "C"),
])
def test_telegence_words_map_to_subscriber_status_letters(word, letter):
    assert carrier_status(TG, word) == letter


@pytest.mark.parametrize("word,status", [
    ("Active", "ONLINE"), ("enable", "ONLINE"), ("online", "ONLINE"), ("waiting", "WAITING"),
    ("Suspend", "STOPPED"), ("disable", "STOPPED"), ("Deactivate", "STOPPED"), ("stopped", "STOPPED"),
])
def test_teal_words_map_to_device_statuses(word, status):
    assert carrier_status(TEAL, word) == status


def test_unknown_words_name_the_carrier_and_its_statuses():
    with pytest.raises(RuleError, match=r"not a Telegence status \(allowed: A, C, S\)"):
        carrier_status(TG, "inventory")
    with pytest.raises(RuleError, match=r"not a Teal status \(allowed: ONLINE, STOPPED, WAITING\)"):
        carrier_status(TEAL, "purged")


@pytest.mark.parametrize("current,requested,target", [
    ("inventory", "Active", "A"), ("S", "Restore", "A"), ("A", "Suspend", "S"), ("A", "Deactivate", "C"),
    ("S", "Cancel", "C"),
])
def test_telegence_allowed_transitions(current, requested, target):
    check = check_transition(TG, current, requested, False)
    assert check.target == target and not check.already_there


@pytest.mark.parametrize("current,requested", [("C", "Active"), ("C", "Suspend"), ("inventory", "Suspend"),
                                               ("inventory", "Cancel"), (None, "Active"), ("S", "Suspend!")])
def test_telegence_refused_transitions(current, requested):
    with pytest.raises(RuleError):
        check_transition(TG, current, requested, False)


def test_telegence_same_status_is_already_there_and_ignore_forces():
    assert check_transition(TG, "S", "Suspend", False).already_there
    assert check_transition(TG, "a", "Active", False).already_there  # case-insensitive
    forced = check_transition(TG, "inventory", "Suspend", True)  # our table refuses it, the carrier decides
    assert forced.target == "S" and not forced.already_there
    # a cancelled line stays cancelled at the carrier: forcing cannot help, refused before any call
    with pytest.raises(RuleError, match="cancelled .*IsIgnoreCurrentStatus cannot force it"):
        check_transition(TG, "C", "Active", True)


@pytest.mark.parametrize("current,requested,target", [
    ("STOPPED", "Active", "ONLINE"), ("WAITING", "Active", "ONLINE"), ("ONLINE", "Suspend", "STOPPED"),
    ("WAITING", "Disable", "STOPPED"), ("STOPPED", "Waiting", "WAITING"),
])
def test_teal_allowed_transitions(current, requested, target):
    assert check_transition(TEAL, current, requested, False).target == target


def test_teal_current_status_must_be_a_teal_status():
    with pytest.raises(RuleError, match="cannot change status from ACTIVATED to STOPPED on Teal"):
        check_transition(TEAL, "ACTIVATED", "Suspend", False)
    with pytest.raises(RuleError, match="from unknown"):
        check_transition(TEAL, None, "Active", False)
    assert check_transition(TEAL, "STOPPED", "disable", False).already_there


def test_every_target_of_the_new_tables_is_reachable_from_somewhere():
    for family in (TG, TEAL):
        for target, sources in TRANSITIONS[family].items():
            assert sources and target not in sources


def test_operation_and_action_choice():
    assert teal_operation("STOPPED") == "disable"
    assert teal_operation("ONLINE") == teal_operation("WAITING") == "enable"
    assert reached({"deviceStatus": "WAITING"}, "ONLINE") and not reached({"deviceStatus": "STOPPED"}, "ONLINE")
    assert reached({"deviceStatus": "STOPPED"}, "STOPPED") and not reached({}, "STOPPED")
    assert telegence_action("inventory", False, "A") == "activate"
    assert telegence_action("S", True, "A") == "restore"
    assert telegence_action("C", True, "A") == "activate"  # a cancelled line needs a new activation
    assert telegence_action("A", True, "S") == "suspend" and telegence_action("S", True, "C") == "cancel"
