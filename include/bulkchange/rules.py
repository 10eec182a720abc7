"""Validation rules and per-carrier status vocabulary and transitions: one table, one place.

Every rule here runs before any carrier call. A device that fails a rule is rejected on its own
(status ERROR with the reason); the rest of the bulk change goes on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from bulkchange.models import Integration

_DIGITS = re.compile(r"^\d+$")


def luhn_check_digit(body: str) -> str:
    """The Luhn digit that makes ``body + digit`` valid."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # the digit left of the (future) check digit is doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return bool(number) and _DIGITS.match(number) is not None and \
        luhn_check_digit(number[:-1]) == number[-1]


def iccid_problem(iccid: str | None) -> str | None:
    """None when the ICCID is valid, else the reason."""
    if not iccid:
        return "ICCID is missing"
    if not _DIGITS.match(iccid):
        return f"ICCID {iccid!r} must contain digits only"
    if not 19 <= len(iccid) <= 20:
        return f"ICCID {iccid} must have 19 or 20 digits, has {len(iccid)}"
    if not luhn_valid(iccid):
        return f"ICCID {iccid} has an invalid check digit"
    return None


# --- status vocabulary -------------------------------------------------------------------
# What a portal may send as UpdateStatus (case-insensitive) -> the carrier's own status value.
# Jasper (Control Center) has no "suspended": DEACTIVATED is the suspended, restorable state;
# RETIRED ends the SIM's life. The carrier's own names are accepted as they are.
STATUS_ALIASES: dict[Integration, dict[str, str]] = {
    Integration.JASPER: {
        "active": "ACTIVATED", "activate": "ACTIVATED", "activated": "ACTIVATED",
        "restore": "ACTIVATED", "restored": "ACTIVATED",
        "suspend": "DEACTIVATED", "suspended": "DEACTIVATED",
        "deactivate": "DEACTIVATED", "deactivated": "DEACTIVATED",
        "inventory": "INVENTORY", "activation_ready": "ACTIVATION_READY",
        "activation ready": "ACTIVATION_READY", "test_ready": "TEST_READY", "test ready": "TEST_READY",
        "retire": "RETIRED", "retired": "RETIRED", "terminate": "RETIRED", "terminated": "RETIRED",
        "purged": "PURGED",
    },
    # ThingSpace states (carrierInformations.state); "restore" is the action back to active.
    Integration.THINGSPACE: {
        "active": "active", "activate": "active", "activated": "active", "restore": "active",
        "resume": "active", "suspend": "suspend", "suspended": "suspend",
        "deactive": "deactive", "deactivate": "deactive", "deactivated": "deactive",
    },
}

# Allowed transitions: target -> the current statuses it may come from. Cisco does not publish
# its matrix (carrier_apis.md: UNVERIFIED); this is our conservative policy, overridable per
# device change with IsIgnoreCurrentStatus.
TRANSITIONS: dict[Integration, dict[str, frozenset[str]]] = {
    Integration.JASPER: {
        "ACTIVATED": frozenset({"ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "TEST_READY"}),
        "DEACTIVATED": frozenset({"ACTIVATED", "ACTIVATION_READY", "INVENTORY", "TEST_READY"}),
        "ACTIVATION_READY": frozenset({"INVENTORY", "TEST_READY", "DEACTIVATED"}),
        "INVENTORY": frozenset({"ACTIVATION_READY", "TEST_READY", "DEACTIVATED"}),
        "TEST_READY": frozenset({"INVENTORY"}),
        "RETIRED": frozenset({"DEACTIVATED", "INVENTORY"}),
        "PURGED": frozenset({"RETIRED"}),
    },
    # ThingSpace provisioning rules (carrier_apis.md): activate from preactive/deactive (restore
    # from suspend), suspend only an active line, deactivate an active or suspended line.
    Integration.THINGSPACE: {
        "active": frozenset({"preactive", "pending activation", "inventory", "deactive", "suspend"}),
        "suspend": frozenset({"active"}),
        "deactive": frozenset({"active", "suspend"}),
    },
}


class RuleError(ValueError):
    """A device change that fails a rule; the message is the reason recorded on the device."""


def carrier_status(integration: Integration, requested: str) -> str:
    """Map a requested status to the carrier's vocabulary or raise RuleError."""
    family = integration.family
    aliases = STATUS_ALIASES.get(family)
    if aliases is None:
        raise RuleError(f"status updates are not supported for {integration.value}")
    key = (requested or "").strip().lower()
    if key in aliases:
        return aliases[key]
    for status in TRANSITIONS[family]:
        if status.lower() == key:
            return status
    allowed = ", ".join(sorted(TRANSITIONS[family]))
    raise RuleError(f"status {requested!r} is not a {family.value} status (allowed: {allowed})")


@dataclass(frozen=True)
class TransitionCheck:
    target: str
    already_there: bool


def check_transition(integration: Integration, current: str | None, requested: str,
                     ignore_current: bool) -> TransitionCheck:
    """Validate moving a device from ``current`` to ``requested`` on this carrier."""
    target = carrier_status(integration, requested)
    cur = (current or "").strip().lower()
    if ignore_current:
        return TransitionCheck(target, False)
    if cur == target.lower():
        return TransitionCheck(target, True)
    allowed_from = TRANSITIONS[integration.family][target]
    if cur not in {s.lower() for s in allowed_from}:
        shown = current if current else "unknown"
        raise RuleError(
            f"cannot change status from {shown} to {target} on {integration.value} "
            f"(allowed from: {', '.join(sorted(allowed_from))}); set IsIgnoreCurrentStatus to force")
    return TransitionCheck(target, False)
