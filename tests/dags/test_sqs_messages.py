"""Parsing the legacy queue messages and deciding what each one does (core, real SQLite/PostgreSQL)."""
import json

import pytest

from bulkchange import legacy_queue as lq
from bulkchange.db import bulk_changes, claims
from bulkchange.models import BulkStatus
from tests.notify.test_outbox import _bulk


def _msg(body="Not used", **attrs):
    return {"MessageId": "m1", "Body": body,
            "MessageAttributes": {k: {"DataType": "String", "StringValue": str(v)} for k, v in attrs.items()}}


def test_attributes_as_the_legacy_lambda_sends_them():
    m = lq.parse_message(_msg(BulkChangeId="42", M2MDeviceChangeId="7", RetryNumber="2",
                              IsRetryNewActivateThingSpaceDevice="True",
                              IsFromAutomatedUpdateDeviceStatusLambda="false", RequestId="req-1",
                              NewServiceActivations="False"))  # other legacy attributes are ignored
    assert m == lq.LegacyMessage(42, 7, 2, True, False, "req-1")


def test_json_body_and_attributes_win():
    m = lq.parse_message({"Body": json.dumps({"BulkChangeId": 5, "RetryNumber": None})})
    assert m.bulk_change_id == 5 and m.retry_number == 0 and m.request_id is None
    both = _msg(body=json.dumps({"BulkChangeId": 5}), BulkChangeId="6")
    assert lq.parse_message(both).bulk_change_id == 6


@pytest.mark.parametrize("message, reason", [
    (_msg(RetryNumber="1"), "BulkChangeId is missing"),
    (_msg(BulkChangeId="0"), "BulkChangeId must be a positive integer"),
    (_msg(BulkChangeId="4.5"), "BulkChangeId must be an integer, got '4.5'"),
    (_msg(BulkChangeId="4", RetryNumber="-1"), "RetryNumber must not be negative"),
    (_msg(BulkChangeId="4", M2MDeviceChangeId="x"), "M2MDeviceChangeId must be an integer"),
    (_msg(BulkChangeId="4", IsFromAutomatedUpdateDeviceStatusLambda="yes please"),
     "IsFromAutomatedUpdateDeviceStatusLambda must be true or false"),
    ({"Body": "[1, 2]"}, "BulkChangeId is missing"),
    ({"Body": '{"BulkChangeId": '}, "body is not valid JSON"),
    ({"Body": json.dumps([{"BulkChangeId": 1}])}, "BulkChangeId is missing"),
])
def test_malformed_messages_name_the_field(message, reason):
    with pytest.raises(lq.MalformedMessage, match=reason.replace("(", r"\(")):
        lq.parse_message(message)


def test_decide_claims_once(amop_engine):
    bulk_id = _bulk(amop_engine, n=1)
    with amop_engine.begin() as conn:
        assert lq.decide(conn, lq.LegacyMessage(bulk_id)).action == lq.LAUNCH
    with amop_engine.begin() as conn:
        again = lq.decide(conn, lq.LegacyMessage(bulk_id))
    assert again.action == lq.ACK and "already PENDING" in again.reason and again.relaunch
    with amop_engine.begin() as conn:
        missing = lq.decide(conn, lq.LegacyMessage(bulk_id + 100))
    assert missing.action == lq.DEAD_LETTER and "does not exist" in missing.reason
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.WAITING_FOR_CARRIER)
    with amop_engine.begin() as conn:
        follow_up = lq.decide(conn, lq.LegacyMessage(bulk_id, retry_number=1,
                                                     is_retry_new_activate_thingspace_device=True))
    assert follow_up.action == lq.ACK and "device_status_reconcile" in follow_up.reason and not follow_up.relaunch


def test_dead_letter_body_keeps_the_original():
    body = json.loads(lq.dead_letter_body(_msg(BulkChangeId="abc", RequestId="r"), "malformed message: x"))
    assert body == {"reason": "malformed message: x", "messageId": "m1", "originalBody": "Not used",
                    "originalAttributes": {"BulkChangeId": "abc", "RequestId": "r"}}


def _as_the_portal_enqueues(engine, bulk_id):
    """The legacy portal sets PROCESSING when it puts the bulk change on the queue; it does not know
    our ModifiedDate column."""
    from sqlalchemy import update

    from bulkchange.db import schema as t

    with engine.begin() as conn:
        conn.execute(update(t.device_bulk_change).where(t.device_bulk_change.c.Id == bulk_id)
                     .values(Status="PROCESSING", ModifiedDate=None))


def test_a_bulk_change_the_portal_set_processing_is_processed_once(amop_engine):
    from bulkchange import processing

    bulk_id = _bulk(amop_engine, n=2)
    _as_the_portal_enqueues(amop_engine, bulk_id)
    message = _msg(BulkChangeId=str(bulk_id))  # body "Not used", string attributes: as the portal sends it
    assert claims.claim_new_bulk_changes(amop_engine) == []  # the sensor takes NEW only
    with amop_engine.begin() as conn:
        first = lq.decide(conn, lq.parse_message(message))
    assert first.action == lq.LAUNCH and "PROCESSING as the portal enqueued it -> PENDING" in first.reason
    with amop_engine.begin() as conn:  # the same message again
        again = lq.decide(conn, lq.parse_message(message))
    assert again.action == lq.ACK and "already PENDING" in again.reason
    assert processing.prepare(amop_engine, bulk_id).queued == 2
    with amop_engine.begin() as conn:  # PROCESSING now, set by us: never taken again
        late = lq.decide(conn, lq.parse_message(message))
    assert late.action == lq.ACK and "already PROCESSING" in late.reason and not late.relaunch


def test_addition_bulk_change_id_is_honoured(amop_engine):
    from sqlalchemy import select

    from bulkchange.db import schema as t
    from bulkchange.db import seed
    from bulkchange.models import ChangeType, Integration

    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_service_provider(conn, sp_id=7, name="other", integration=Integration.TELEGENCE, tenant_id=2)
        iccid = seed.make_iccid(33)
        assignment = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.CUSTOMER_ASSIGNMENT,
                                          portal_type=2, requests=[{"ICCID": iccid, "ChangeRequest": {"SiteId": 7}}])
        foreign = seed.add_bulk_change(conn, sp_id=7, tenant_id=2, change_type=ChangeType.CUSTOMER_ASSIGNMENT,
                                       portal_type=2, requests=[{"ICCID": iccid, "ChangeRequest": {"SiteId": 7}}])
        activation = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                          portal_type=2, requests=[{"ICCID": iccid, "ChangeRequest": {
                                              "TelegenceActivationRequest": {}}}])
    for b in (assignment, activation):
        _as_the_portal_enqueues(amop_engine, b)
    with amop_engine.begin() as conn:
        decision = lq.decide(conn, lq.parse_message(_msg(BulkChangeId=str(activation),
                                                         AdditionBulkChangeId=str(assignment))))
    assert decision.action == lq.LAUNCH
    assert f"linked customer assignment {assignment} held until the activation is over" in decision.reason
    bc, dc = t.device_bulk_change, t.mobility_device_change
    with amop_engine.connect() as conn:
        held = conn.execute(select(bc.c.ProcessChanges, bc.c.Status).where(bc.c.Id == assignment)).one()
        request = json.loads(conn.execute(select(dc.c.ChangeRequest).where(dc.c.BulkChangeId == activation)).scalar())
    assert tuple(held) in ((False, "PROCESSING"), (0, "PROCESSING"))
    assert request == {"TelegenceActivationRequest": {}, "AdditionBulkChangeId": assignment}
    with amop_engine.begin() as conn:
        second = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                      portal_type=2, requests=[{"ICCID": iccid, "ChangeRequest": {}}])
        third = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                     portal_type=2, requests=[{"ICCID": iccid, "ChangeRequest": {}}])
    with amop_engine.begin() as conn:  # another tenant's bulk change is never touched
        other = lq.decide(conn, lq.LegacyMessage(second, addition_bulk_change_id=foreign))
        missing = lq.decide(conn, lq.LegacyMessage(third, addition_bulk_change_id=foreign + 1000))
    assert other.action == lq.LAUNCH and "another service provider or tenant: ignored" in other.reason
    assert missing.action == lq.LAUNCH and "does not exist: ignored" in missing.reason
    with amop_engine.connect() as conn:
        assert conn.execute(select(bc.c.ProcessChanges).where(bc.c.Id == foreign)).scalar() in (True, 1)
        assert json.loads(conn.execute(select(dc.c.ChangeRequest).where(dc.c.BulkChangeId == second)).scalar()) == {}
