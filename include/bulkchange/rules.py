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
    # Telegence subscriberStatus letters: A active, S suspended, C cancelled (only C and A are
    # documented; S is assumed). A SIM never activated is "inventory" in our Device table.
    Integration.TELEGENCE: {
        "a": "A", "active": "A", "activate": "A", "activated": "A", "restore": "A", "resume": "A",
        "s": "S", "suspend": "S", "suspended": "S",
        "c": "C", "cancel": "C", "cancelled": "C", "canceled": "C", "deactivate": "C", "deactivated": "C",
        "terminate": "C", "terminated": "C",
    },
    # Teal deviceStatus values: enable -> ONLINE (or WAITING until it attaches), disable -> STOPPED.
    Integration.TEAL: {
        "online": "ONLINE", "active": "ONLINE", "activate": "ONLINE", "activated": "ONLINE", "enable": "ONLINE",
        "enabled": "ONLINE", "restore": "ONLINE", "waiting": "WAITING",
        "stopped": "STOPPED", "stop": "STOPPED", "disable": "STOPPED", "disabled": "STOPPED",
        "suspend": "STOPPED", "suspended": "STOPPED", "deactivate": "STOPPED", "deactivated": "STOPPED",
    },
    # POND SIMs: ACTIVE = services enabled with one ACTIVE package; SUSPENDED = services disabled;
    # TERMINATED = services disabled and every package terminated. The legacy code only knew
    # "POND_ACTIVE -> enable all services, anything else -> disable all".
    Integration.POND: {
        "active": "ACTIVE", "activate": "ACTIVE", "activated": "ACTIVE", "enable": "ACTIVE",
        "restore": "ACTIVE", "resume": "ACTIVE", "pond_active": "ACTIVE",
        "suspend": "SUSPENDED", "suspended": "SUSPENDED", "disable": "SUSPENDED", "deactivate": "SUSPENDED",
        "deactivated": "SUSPENDED", "inactive": "SUSPENDED",
        "terminate": "TERMINATED", "terminated": "TERMINATED", "retire": "TERMINATED", "retired": "TERMINATED",
    },
}

# Allowed transitions: target -> the current statuses it may come from. Cisco does not publish
# its full matrix (carrier_apis.md: UNVERIFIED); this is our conservative policy, overridable per
# device change with IsIgnoreCurrentStatus, and never looser than CARRIER_REFUSED below (a SIM past
# activation never returns to INVENTORY, TEST_READY or ACTIVATION_READY).
TRANSITIONS: dict[Integration, dict[str, frozenset[str]]] = {
    Integration.JASPER: {
        "ACTIVATED": frozenset({"ACTIVATION_READY", "DEACTIVATED", "INVENTORY", "TEST_READY"}),
        "DEACTIVATED": frozenset({"ACTIVATED", "ACTIVATION_READY", "INVENTORY", "TEST_READY"}),
        "ACTIVATION_READY": frozenset({"INVENTORY", "TEST_READY"}),
        "INVENTORY": frozenset({"ACTIVATION_READY", "TEST_READY"}),
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
    # Telegence (assumed; AT&T publishes no matrix): activation of a SIM in inventory or a
    # restore of a suspended line, suspend an active line, cancel an active or suspended line.
    Integration.TELEGENCE: {
        "A": frozenset({"inventory", "S"}),
        "S": frozenset({"A"}),
        "C": frozenset({"A", "S"}),
    },
    # Teal (legacy rule): the current status must be ONLINE, WAITING or STOPPED; enable an eSIM
    # that is stopped (or waiting), disable one that is online or waiting.
    Integration.TEAL: {
        "ONLINE": frozenset({"STOPPED", "WAITING"}),
        "WAITING": frozenset({"STOPPED", "ONLINE"}),
        "STOPPED": frozenset({"ONLINE", "WAITING"}),
    },
    # POND (assumed; no public matrix): activate a new or suspended SIM, suspend an active one,
    # terminate an active or suspended one; a terminated SIM stays terminated.
    Integration.POND: {
        "ACTIVE": frozenset({"INVENTORY", "SUSPENDED"}),
        "SUSPENDED": frozenset({"ACTIVE"}),
        "TERMINATED": frozenset({"ACTIVE", "SUSPENDED"}),
    },
}


# Transitions the carrier itself refuses: (current, target) -> the reason. IsIgnoreCurrentStatus
# overrides our policy above, not these: sending them can only earn the carrier's refusal.
_JASPER_PRE_ACTIVATION = ("INVENTORY", "TEST_READY", "ACTIVATION_READY")
_JASPER_POST_ACTIVATION = ("ACTIVATED", "DEACTIVATED", "RETIRED", "PURGED", "REPLACED")
_JASPER_END_OF_LIFE = {"PURGED": ("PURGED",), "RETIRED": ("RETIRED", "PURGED"),
                       "REPLACED": ("REPLACED", "RETIRED", "PURGED")}
_JASPER_STATUSES = _JASPER_PRE_ACTIVATION + _JASPER_POST_ACTIVATION
CARRIER_REFUSED: dict[Integration, dict[tuple[str, str], str]] = {
    Integration.JASPER: {
        # published: Control Center refuses a return to a pre-activation state (error 10000029)
        **{(cur, target): (f"Control Center refuses a return from {cur} to the pre-activation state {target} "
                           "(error 10000029)")
           for cur in _JASPER_POST_ACTIVATION for target in _JASPER_PRE_ACTIVATION},
        # assumed (the simulator's knob enforce_terminal_statuses): PURGED is terminal, RETIRED and
        # REPLACED only go on to RETIRED/PURGED
        **{(cur, target): f"a {cur} SIM cannot become {target} on Control Center (end of life)"
           for cur, allowed in _JASPER_END_OF_LIFE.items() for target in _JASPER_STATUSES
           if target not in allowed and target not in _JASPER_PRE_ACTIVATION},
    },
    # ThingSpace (published: a non-active device for suspend etc. -> INPUT_INVALID.DeviceState.Invalid):
    # suspend needs an active line, deactivate an active or suspended one; "active" is reached by
    # activate or (from suspend) restore, which the carrier accepts from every other state.
    Integration.THINGSPACE: {
        **{(cur.upper(), "SUSPEND"): f"ThingSpace suspends only an active line, not a {cur} one "
                                     "(INPUT_INVALID.DeviceState.Invalid)"
           for cur in ("preactive", "pending activation", "inventory", "deactive")},
        **{(cur.upper(), "DEACTIVE"): f"ThingSpace deactivates only an active or suspended line, not a {cur} one "
                                      "(INPUT_INVALID.DeviceState.Invalid)"
           for cur in ("preactive", "pending activation", "inventory")},
    },
    # Telegence (assumed, as the simulator): a cancelled line stays cancelled
    Integration.TELEGENCE: {("C", target): f"a cancelled (C) Telegence line cannot become {target}"
                            for target in ("A", "S")},
}


def carrier_refusal(integration: Integration, current: str | None, target: str) -> str | None:
    """The reason the carrier refuses ``current -> target`` whatever we ask, or None."""
    refused = CARRIER_REFUSED.get(integration.family)
    if not refused or not current:
        return None
    return refused.get(((current or "").strip().upper(), target.upper()))


class RuleError(ValueError):
    """A device change that fails a rule; the message is the reason recorded on the device."""


# --- ThingSpace onboarding (legacy_behaviour.md 3.1 and 4) ----------------------------------------
# "pending activation" adds the device at the carrier (devices/actions/add, preactive) and to our
# inventory; "inventory" adds it to our inventory only. Neither is a state change of a line, so
# neither is in STATUS_ALIASES / TRANSITIONS: the portal's ICCID/IMEI pair rules below decide.
TS_PENDING_ACTIVATION = "pending activation"
TS_INVENTORY = "inventory"
_TS_ONBOARDING = {"pendingactivation": TS_PENDING_ACTIVATION, "pendingactivate": TS_PENDING_ACTIVATION,
                  "inventory": TS_INVENTORY}
# device statuses the portal's pair rules do not count as "known" (M2MController: unknown, inventory)
_TS_NOT_KNOWN = ("unknown", "inventory")


def thingspace_onboarding(requested: str | None) -> str | None:
    """``pending activation`` / ``inventory`` when a ThingSpace UpdateStatus asks for onboarding, else None."""
    return _TS_ONBOARDING.get(re.sub(r"[\s_\-]+", "", requested or "").lower())


def thingspace_pair_problem(target: str, iccid: str, imei: str | None, by_iccid, by_imei) -> str | None:
    """The legacy portal's ThingSpace rules for an ICCID/IMEI line (M2MController
    BuildStatusUpdateChangeDetailsThingSpace), with its messages; None when the line may go on.

    ``by_iccid``: the tenant's device with this ICCID (or None); ``by_imei``: the tenant's device
    with this IMEI (or None). Each has ``iccid``, ``imei``, ``status``.

    * inventory: the device must not be in the inventory yet ("Invalid ICCID");
    * pending activation, ICCID only: the device must be known with an IMEI (that IMEI is used),
      else "ICCID: <iccid> does not pending activate.";
    * pending activation, ICCID and IMEI: a known device (status other than unknown / inventory)
      holding the IMEI or the ICCID must be that same pair and not active, else
      "IMEI: <imei> already exists." / "ICCID: <iccid> already exists." (the legacy's substring test:
      "deactive" contains "active", so a deactivated pair is refused too).
    """
    if target == TS_INVENTORY:
        if by_iccid is not None:
            return (f"Invalid ICCID: device {iccid} is already in the inventory (status {by_iccid.status}); "
                    "inventory adds new devices only")
        return None
    if not imei:
        if by_iccid is not None and (by_iccid.imei or "").strip():
            return None
        return f"ICCID: {iccid} does not pending activate."

    def known(dev) -> bool:
        return dev is not None and (dev.status or "").strip().lower() not in _TS_NOT_KNOWN

    def active(dev) -> bool:
        return "active" in (dev.status or "").lower()

    problems = []
    if known(by_imei) and (active(by_imei) or iccid not in (by_imei.iccid or "")):
        problems.append(f"IMEI: {imei} already exists.")
    if known(by_iccid) and (active(by_iccid) or imei not in (by_iccid.imei or "")):
        problems.append(f"ICCID: {iccid} already exists.")
    return " ".join(problems) or None


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
    if cur != target.lower():
        refusal = carrier_refusal(integration, current, target)
        if refusal:
            forced = "; IsIgnoreCurrentStatus cannot force it" if ignore_current else ""
            raise RuleError(f"cannot change status from {current} to {target} on {integration.value}: "
                            f"{refusal}{forced}")
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
