"""Messages legacy portals put on the device bulk change queue (SQS), and what to do with each.

A legacy message names a bulk change to process. Its fields travel as SQS string message
attributes with the body "Not used" (the legacy Lambda's convention), or, from newer senders, as
a JSON body; attributes win when both are present:

``BulkChangeId`` (required, positive integer), ``M2MDeviceChangeId``, ``RetryNumber`` (integers),
``IsRetryNewActivateThingSpaceDevice``, ``IsFromAutomatedUpdateDeviceStatusLambda`` (booleans:
true/false/1/0), ``RequestId`` (text).

``decide`` claims the bulk change with the same conditional UPDATE the sensor uses (NEW ->
PENDING), or, for a bulk change the legacy portal set PROCESSING when it enqueued it and that no
one has started (``claims.claim_portal_enqueued``), PROCESSING -> PENDING; so a message that arrives
twice, or a bulk change the sensor already claimed, launches processing once.
``AdditionBulkChangeId`` (an ActivateNewService's linked customer assignment, as the legacy
portal sends it) is honoured: the assignment is held (``ProcessChanges = 0``) and named in each
device change's request, so it is released, with the new numbers, once the activation is over
(changes/activate_new_service.py). The legacy follow-up messages (``IsRetryNewActivateThingSpaceDevice``,
re-queues with a ``RetryNumber``) name bulk changes that are already claimed: their work is done
by ``device_status_reconcile`` here, so they are acknowledged with that reason.

A message that cannot be parsed, or names a bulk change that does not exist, is malformed: the
caller moves it to the dead-letter queue with the reason (see ``dead_letter_body``), never drops it.
Airflow-free: the DAG ``bulk_change_sqs`` does the SQS calls.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.db import bulk_changes, claims, tables
from bulkchange.models import BulkStatus

LAUNCH = "launch"
ACK = "ack"
DEAD_LETTER = "dead_letter"

_INT_FIELDS = ("BulkChangeId", "M2MDeviceChangeId", "RetryNumber", "AdditionBulkChangeId")
_BOOL_FIELDS = ("IsRetryNewActivateThingSpaceDevice", "IsFromAutomatedUpdateDeviceStatusLambda")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


class MalformedMessage(ValueError):
    pass


@dataclass(frozen=True)
class LegacyMessage:
    bulk_change_id: int
    m2m_device_change_id: int | None = None
    retry_number: int = 0
    is_retry_new_activate_thingspace_device: bool = False
    is_from_automated_update_device_status_lambda: bool = False
    request_id: str | None = None
    addition_bulk_change_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def message_fields(message: dict) -> dict[str, str]:
    """Field name -> text, from the SQS message attributes or else a JSON object body."""
    attrs = message.get("MessageAttributes") or {}
    fields: dict[str, str] = {}
    body = message.get("Body")
    if body and str(body).strip().startswith("{"):
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            if not attrs:
                raise MalformedMessage(f"body is not valid JSON ({exc}) and the message has no attributes") from exc
            parsed = {}
        if not isinstance(parsed, dict):
            raise MalformedMessage("JSON body is not an object")
        fields.update({k: "" if v is None else str(v) for k, v in parsed.items()})
    for name, value in attrs.items():
        if isinstance(value, dict):
            text = value.get("StringValue")
            if text is None and value.get("BinaryValue") is not None:
                raise MalformedMessage(f"attribute {name} is binary; expected a string")
            fields[name] = "" if text is None else str(text)
        else:
            fields[name] = str(value)
    return fields


def parse_message(message: dict) -> LegacyMessage:
    """The legacy message in an SQS message (as boto3 returns it), or MalformedMessage naming the field."""
    fields = message_fields(message)
    if "BulkChangeId" not in fields:
        raise MalformedMessage("BulkChangeId is missing")
    ints: dict[str, int | None] = {}
    for name in _INT_FIELDS:
        raw = fields.get(name, "").strip()
        if raw == "":
            ints[name] = None
            continue
        try:
            ints[name] = int(raw)
        except ValueError:
            raise MalformedMessage(f"{name} must be an integer, got {raw[:50]!r}") from None
    if not ints["BulkChangeId"] or ints["BulkChangeId"] < 1:
        raise MalformedMessage(f"BulkChangeId must be a positive integer, got {fields['BulkChangeId'][:50]!r}")
    if ints["RetryNumber"] is not None and ints["RetryNumber"] < 0:
        raise MalformedMessage(f"RetryNumber must not be negative, got {ints['RetryNumber']}")
    bools: dict[str, bool] = {}
    for name in _BOOL_FIELDS:
        raw = fields.get(name, "").strip().lower()
        if raw in _TRUE:
            bools[name] = True
        elif raw in _FALSE:
            bools[name] = False
        else:
            raise MalformedMessage(f"{name} must be true or false, got {fields[name][:50]!r}")
    return LegacyMessage(
        bulk_change_id=ints["BulkChangeId"], m2m_device_change_id=ints["M2MDeviceChangeId"],
        retry_number=ints["RetryNumber"] or 0,
        is_retry_new_activate_thingspace_device=bools["IsRetryNewActivateThingSpaceDevice"],
        is_from_automated_update_device_status_lambda=bools["IsFromAutomatedUpdateDeviceStatusLambda"],
        request_id=fields.get("RequestId") or None,
        addition_bulk_change_id=ints["AdditionBulkChangeId"] or None)


@dataclass(frozen=True)
class Decision:
    action: str  # launch | ack | dead_letter
    reason: str
    bulk_change_id: int | None = None
    # an acknowledged message of a claim still PENDING: launching again is harmless (the run id
    # bulk_change_<id> exists at most once) and recovers a launch that was lost after the claim
    relaunch: bool = False


def decide(conn: Connection, msg: LegacyMessage) -> Decision:
    """Claim the bulk change (inside the caller's transaction) or say why not."""
    bulk_id = msg.bulk_change_id
    row = bulk_changes.bulk_change_summary_row(conn, bulk_id)
    if row is None:
        return Decision(DEAD_LETTER, f"bulk change {bulk_id} does not exist", bulk_id)
    if claims.claim_bulk_change(conn, bulk_id):
        return Decision(LAUNCH, f"bulk change {bulk_id} claimed (NEW -> PENDING)" + _addition(conn, msg), bulk_id)
    if claims.claim_portal_enqueued(conn, bulk_id):
        return Decision(LAUNCH, f"bulk change {bulk_id} claimed (PROCESSING as the portal enqueued it -> PENDING)"
                        + _addition(conn, msg), bulk_id)
    if not bulk_changes.load_bulk_change(conn, bulk_id).process_changes:
        # acknowledged, not launched: the sensor picks it up once the portal releases it
        from bulkchange.processing import held_message

        return Decision(ACK, held_message(bulk_id), bulk_id)
    status = bulk_changes.bulk_change_summary_row(conn, bulk_id)["Status"]
    if msg.is_retry_new_activate_thingspace_device or status == BulkStatus.WAITING_FOR_CARRIER.value:
        return Decision(ACK, f"bulk change {bulk_id} is {status}: follow-ups are done by "
                             f"device_status_reconcile", bulk_id)
    if status == BulkStatus.PENDING.value:
        return Decision(ACK, f"bulk change {bulk_id} is already PENDING: claimed earlier (duplicate message or "
                             f"the sensor); its run bulk_change_{bulk_id} is started if it does not exist yet",
                        bulk_id, relaunch=True)
    return Decision(ACK, f"bulk change {bulk_id} is already {status}: claimed earlier (duplicate message "
                         f"or the sensor), not launched again", bulk_id)


def _addition(conn: Connection, msg: LegacyMessage) -> str:
    """Honour the message's AdditionBulkChangeId for the bulk change just claimed; the reason's tail."""
    addition_id = msg.addition_bulk_change_id
    if not addition_id:
        return ""
    from sqlalchemy import select, update

    from bulkchange.db import schema as t
    from bulkchange.models import ChangeType

    bulk = bulk_changes.load_bulk_change(conn, msg.bulk_change_id)
    try:
        addition = bulk_changes.load_bulk_change(conn, addition_id)
    except bulk_changes.BulkChangeNotFound:
        return f"; AdditionBulkChangeId {addition_id} does not exist: ignored"
    if (addition.service_provider_id, addition.tenant_id) != (bulk.service_provider_id, bulk.tenant_id):
        return f"; AdditionBulkChangeId {addition_id} belongs to another service provider or tenant: ignored"
    if bulk.change_type != ChangeType.ACTIVATE_NEW_SERVICE:
        return f"; AdditionBulkChangeId {addition_id} ignored: only an ActivateNewService has a linked assignment"
    bc = t.device_bulk_change
    held = conn.execute(update(bc).where(bc.c.Id == addition_id, claims.never_started(bc))
                        .values(ProcessChanges=False)).rowcount
    tbl = tables.change_table(bulk.portal_type)
    linked = []
    for dc_id, raw in conn.execute(select(tbl.c.Id, tbl.c.ChangeRequest).where(tbl.c.BulkChangeId == bulk.id)):
        try:
            request = json.loads(raw) if raw else {}
        except ValueError:
            continue  # refused by validation with its own reason
        if isinstance(request, dict) and not request.get("AdditionBulkChangeId"):
            linked.append({"dc_id": dc_id, "cr": json.dumps({**request, "AdditionBulkChangeId": addition_id})})
    if linked:
        from sqlalchemy import bindparam

        conn.execute(update(tbl).where(tbl.c.Id == bindparam("dc_id")).values(ChangeRequest=bindparam("cr")), linked)
    state = "held until the activation is over" if held else "already started: not held"
    return f"; linked customer assignment {addition_id} {state}"


def dead_letter_body(message: dict, reason: str) -> str:
    """The dead-letter message: the reason and the original message, whole."""
    return json.dumps({
        "reason": reason,
        "messageId": message.get("MessageId"),
        "originalBody": message.get("Body"),
        "originalAttributes": {k: (v.get("StringValue") if isinstance(v, dict) else v)
                               for k, v in (message.get("MessageAttributes") or {}).items()},
    })
