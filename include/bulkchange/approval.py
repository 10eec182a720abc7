"""Which bulk changes need a second pair of eyes, what the portal's words really do, and what a "no"
does to the bulk change.

A portal sends a word ("Deactivate", "Suspend", "Cancel"...) that ``rules.carrier_status`` maps
to the carrier's own status. The same word does very different things per carrier: "Deactivate" is
a restorable state on Jasper (DEACTIVATED), POND (SUSPENDED) and Teal (STOPPED), but a final cancel
on Telegence (C) and a released line on ThingSpace (deactive). ``ACTIONS`` says, per carrier
status, what happens and whether it can be undone; dry-run reports and approval requests name the
irreversible ones.

The rule (``ApprovalRule.from_env``): a run must be approved in the Airflow UI (or the Bulk changes
page) before any carrier call when it would do something irreversible
(``BULKCHANGE_APPROVAL_IRREVERSIBLE``, default on) or change more than
``BULKCHANGE_APPROVAL_MAX_DEVICES`` devices (default 1,000; 0 turns the size rule off). A rejection
or no answer within ``BULKCHANGE_APPROVAL_TIMEOUT_HOURS`` marks every open device change and the
bulk change ERROR with who said no and why (``reject``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Engine

from bulkchange.models import BulkChange, ChangeType, DeviceChangeStatus, Integration
from bulkchange.rules import RuleError, carrier_status
from bulkchange.settings import Settings, get_settings

# XCom key under which the approval task keeps the answer (chosen_options, params_input,
# responded_by_user) for finalize: a Reject skips the tasks after it, so its return value is never stored
ANSWER_KEY = "answer"


@dataclass(frozen=True)
class Action:
    description: str
    reversible: bool


# carrier status (rules.STATUS_ALIASES' targets) -> what it does at that carrier
ACTIONS: dict[Integration, dict[str, Action]] = {
    Integration.JASPER: {
        "ACTIVATED": Action("activate the SIM (billing starts)", True),
        "DEACTIVATED": Action("deactivate the SIM (suspended, can be activated again)", True),
        "INVENTORY": Action("move the SIM to inventory", True),
        "ACTIVATION_READY": Action("make the SIM activation-ready", True),
        "TEST_READY": Action("make the SIM test-ready", True),
        "RETIRED": Action("retire the SIM (final: it cannot be activated again)", False),
        "PURGED": Action("purge the SIM (final: removed from the account)", False),
    },
    Integration.THINGSPACE: {
        "active": Action("activate or restore the line", True),
        "suspend": Action("suspend the line (can be restored)", True),
        "deactive": Action("deactivate the line (final: the line and its number are released)", False),
    },
    Integration.TELEGENCE: {
        "A": Action("activate or restore the line", True),
        "S": Action("suspend the line (can be restored)", True),
        "C": Action("cancel the line (final: the subscriber number is released)", False),
    },
    Integration.TEAL: {
        "ONLINE": Action("enable the eSIM", True),
        "WAITING": Action("enable the eSIM (waiting to attach)", True),
        "STOPPED": Action("disable the eSIM (can be enabled again)", True),
    },
    Integration.POND: {
        "ACTIVE": Action("enable the SIM's services", True),
        "SUSPENDED": Action("disable the SIM's services (can be enabled again)", True),
        "TERMINATED": Action("terminate the SIM and its packages (final)", False),
    },
}


@dataclass(frozen=True)
class Effect:
    word: str
    carrier_status: str
    action: str
    reversible: bool

    def as_dict(self) -> dict[str, Any]:
        return {"word": self.word, "carrier_status": self.carrier_status, "action": self.action,
                "reversible": self.reversible}


def effect(integration: Integration, word: str) -> Effect | None:
    """What the portal's status word does on this carrier; None when it is not a status there."""
    try:
        target = carrier_status(integration, word)
    except RuleError:
        return None
    action = ACTIONS.get(integration.family, {}).get(target) or Action(f"set status {target}", True)
    return Effect(word, target, f"{action.description} [{target}]", action.reversible)


def status_words(change_requests: Iterable[str | None]) -> dict[str, int]:
    """UpdateStatus words of these ChangeRequest JSON texts, with how many devices ask for each."""
    out: dict[str, int] = {}
    for text in change_requests:
        try:
            word = (json.loads(text or "{}") or {}).get("UpdateStatus")
        except (ValueError, AttributeError):
            continue
        if isinstance(word, str) and word.strip():
            out[word.strip()] = out.get(word.strip(), 0) + 1
    return out


def irreversible_actions(integration: Integration, words: dict[str, int]) -> list[dict[str, Any]]:
    """``[{"action", "word", "carrier_status", "devices"}]`` for the words that cannot be undone."""
    merged: dict[str, dict[str, Any]] = {}
    for word, n in sorted(words.items()):
        eff = effect(integration, word)
        if eff is None or eff.reversible:
            continue
        entry = merged.setdefault(eff.action, {"action": eff.action, "carrier_status": eff.carrier_status,
                                               "words": [], "devices": 0})
        entry["words"].append(word)
        entry["devices"] += n
    return [{**e, "word": ", ".join(e.pop("words"))} for e in merged.values()]


@dataclass(frozen=True)
class ApprovalRule:
    max_devices: int = 1000  # 0: no size rule
    irreversible: bool = True
    timeout_hours: float = 72.0

    @classmethod
    def from_settings(cls, settings: Settings) -> "ApprovalRule":
        return cls(max_devices=settings.approval_max_devices, irreversible=settings.approval_irreversible,
                   timeout_hours=settings.approval_timeout_hours)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "ApprovalRule":
        """The rule of the settings (``env``: variables to read instead of the process environment)."""
        return cls.from_settings(get_settings() if env is None else Settings.from_env(env))


@dataclass
class Assessment:
    required: bool
    reasons: list[str]
    devices: int
    irreversible: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"required": self.required, "reasons": self.reasons, "devices": self.devices,
                "irreversible": self.irreversible}


def assess(bulk: BulkChange, devices: int, words: dict[str, int], rule: ApprovalRule) -> Assessment:
    """Whether a run that would send ``devices`` device changes (asking for ``words``) needs approval."""
    irreversible = irreversible_actions(bulk.integration, words) if bulk.change_type == ChangeType.STATUS_UPDATE \
        else []
    reasons = []
    if rule.irreversible and irreversible:
        reasons.append("irreversible: " + "; ".join(f"{i['action']} for {i['devices']:,} devices "
                                                     f"(asked as \"{i['word']}\")" for i in irreversible))
    if rule.max_devices and devices > rule.max_devices:
        reasons.append(f"{devices:,} devices, more than the {rule.max_devices:,} allowed without approval")
    return Assessment(bool(reasons) and devices > 0, reasons, devices, irreversible)


def queued_words(engine: Engine, bulk: BulkChange, chunk: int = 5000) -> tuple[int, dict[str, int]]:
    """(device changes queued for this run, their UpdateStatus words), read in keyset chunks."""
    from bulkchange.db.tables import change_table

    tbl = change_table(bulk.portal_type)
    queued = [DeviceChangeStatus.PENDING.value, DeviceChangeStatus.PROCESSING.value]
    total, words, after = 0, {}, 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(select(tbl.c.Id, tbl.c.ChangeRequest)
                                .where(tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(queued), tbl.c.Id > after)
                                .order_by(tbl.c.Id).limit(chunk)).all()
            total += len(rows)
            for word, n in status_words(r[1] for r in rows).items():
                words[word] = words.get(word, 0) + n
            if len(rows) < chunk:
                return total, words
            after = int(rows[-1][0])


def request_body(bulk: BulkChange, assessment: Assessment, *, queued: int, rejected: int, batches: int,
                 estimate: str | None = None) -> str:
    """The approval request (Markdown): what would happen, why it waits, the dry-run figures."""
    lines = [f"**Bulk change {bulk.id}**: {bulk.change_type.value} on {bulk.integration.value} "
             f"({bulk.service_provider_name}), created by {bulk.created_by or 'unknown'}", "",
             "Waits for approval because:"]
    lines += [f"- {r}" for r in assessment.reasons]
    lines += ["", "Plan (validated like a dry run; no carrier has been called yet):",
              f"- {queued:,} device changes would be sent to {bulk.integration.value} in {batches} batches",
              f"- {rejected:,} device changes were rejected by validation (ERROR, with the reason)"]
    if assessment.irreversible:
        lines.append("- **Irreversible**: " + "; ".join(f"{i['action']}: {i['devices']:,} devices "
                                                         f"(portal word \"{i['word']}\")"
                                                         for i in assessment.irreversible))
    if estimate:
        lines.append(f"- estimated duration: {estimate}")
    lines += ["", "Approve to run it. Reject (give a reason) to mark every device change ERROR with your name "
                  "and reason; nothing is sent to the carrier."]
    return "\n".join(lines)


def rejection_reason(answer: dict[str, Any] | None, timeout_hours: float) -> str | None:
    """The reason recorded on the device changes when the approval answer is not Approve, else None.

    ``answer`` is the approval task's XCom (``chosen_options``, ``params_input``, ``responded_by_user``);
    no responder means the request timed out and its default (Reject) applied."""
    if not answer:
        return None
    chosen = answer.get("chosen_options") or []
    if "Approve" in chosen:
        return None
    user = answer.get("responded_by_user") or {}
    who = user.get("name") or user.get("id") if isinstance(user, dict) else user
    why = str((answer.get("params_input") or {}).get("reason") or "").strip()
    if not who:
        return f"not approved: no answer within {timeout_hours:g} hours (approval timed out)"
    return f"not approved: rejected by {who}" + (f": {why}" if why else " (no reason given)")


def reject(engine: Engine, bulk_id: int, reason: str, *, processed_by: str) -> int:
    """Every device change the run would have sent becomes ERROR with ``reason`` (and a log row);
    the bulk change rolls up (ERROR when nothing else was processed) with the reason. Returns how many."""
    from bulkchange.db import bulk_changes, device_changes, progress, tables
    from bulkchange.models import BulkStatus

    with engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        tbl = tables.change_table(bulk.portal_type)
        ids = [int(i) for i in conn.execute(select(tbl.c.Id).where(
            tbl.c.BulkChangeId == bulk.id, tbl.c.Status.in_(list(device_changes.UNSETTLED)))).scalars()]
        device_changes.reject_device_changes(conn, bulk, [(i, reason) for i in ids], processed_by=processed_by,
                                             description="Approval: not approved")
        status, counts = progress.rollup(conn, bulk)
        if status in (BulkStatus.ERROR, BulkStatus.PROCESSED_WITH_ERRORS):
            bulk_changes.set_bulk_status(conn, bulk.id, status, error_message=reason[:1000])
    return len(ids)
