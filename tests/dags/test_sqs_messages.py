"""Parsing the legacy queue messages and deciding what each one does (core, real SQLite/PostgreSQL)."""
import json

import pytest

from bulkchange import legacy_queue as lq
from bulkchange.db import repository as repo
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
        repo.set_bulk_status(conn, bulk_id, BulkStatus.WAITING_FOR_CARRIER)
    with amop_engine.begin() as conn:
        follow_up = lq.decide(conn, lq.LegacyMessage(bulk_id, retry_number=1,
                                                     is_retry_new_activate_thingspace_device=True))
    assert follow_up.action == lq.ACK and "device_status_reconcile" in follow_up.reason and not follow_up.relaunch


def test_dead_letter_body_keeps_the_original():
    body = json.loads(lq.dead_letter_body(_msg(BulkChangeId="abc", RequestId="r"), "malformed message: x"))
    assert body == {"reason": "malformed message: x", "messageId": "m1", "originalBody": "Not used",
                    "originalAttributes": {"BulkChangeId": "abc", "RequestId": "r"}}
