"""The status webhook against a real HTTP receiver on loopback: one POST per status change, retries
of transient failures, and a failing receiver never fails the bulk change."""
import socket

import pytest

from bulkchange import notify
from bulkchange.db import bulk_changes, claims
from bulkchange.models import BulkStatus
from tests.notify.test_outbox import _bulk, _outbox


def _sender(receiver, **kw):
    kw.setdefault("attempts", 3)
    return notify.WebhookSender(url=receiver.url, token="hook-token-123", backoff_s=0.01, **kw)


def _walk(engine, bulk_id, *statuses):
    for s in statuses:  # one transaction each, as the processing steps do
        with engine.begin() as conn:
            bulk_changes.set_bulk_status(conn, bulk_id, s)


def test_one_post_per_status_change_in_order(sqlite_engine, webhook_receiver):
    bulk_id = _bulk(sqlite_engine)
    with sqlite_engine.begin() as conn:
        claims.claim_bulk_change(conn, bulk_id)
    _walk(sqlite_engine, bulk_id, BulkStatus.PROCESSING, BulkStatus.ERROR)
    result = notify.dispatch(sqlite_engine, webhook=_sender(webhook_receiver))
    assert webhook_receiver.statuses(bulk_id) == ["PENDING", "PROCESSING", "ERROR"]
    first = webhook_receiver.received[0]
    assert first["path"] == "/adm/bulk-change-status"
    assert first["headers"]["Authorization"] == "Bearer hook-token-123"
    assert first["headers"]["X-Bulkchange-Notification-Id"] == str(first["json"]["notificationId"])
    assert first["json"]["previousStatus"] == "NEW"
    # the summary email has no sender here: recorded as skipped, not left pending forever
    assert [s[1] for s in result.skipped] == ["email"]
    # a second dispatch (the other roll-up place) sends nothing again
    notify.dispatch(sqlite_engine, webhook=_sender(webhook_receiver))
    assert len(webhook_receiver.received) == 3


def test_transient_failures_are_retried(sqlite_engine, webhook_receiver):
    bulk_id = _bulk(sqlite_engine)
    _walk(sqlite_engine, bulk_id, BulkStatus.PROCESSING)
    webhook_receiver.script = [503, 429]  # fails twice, then accepts
    result = notify.dispatch(sqlite_engine, webhook=_sender(webhook_receiver))
    assert webhook_receiver.refused == [503, 429]
    assert webhook_receiver.statuses(bulk_id) == ["PROCESSING"]
    assert result.sent == [(bulk_id, "webhook", "PROCESSING")]
    assert _outbox(sqlite_engine, bulk_id)[0][3] == "SENT"


def test_receiver_down_never_fails_and_is_retried_later_in_order(sqlite_engine, webhook_receiver):
    bulk_id = _bulk(sqlite_engine)
    _walk(sqlite_engine, bulk_id, BulkStatus.PROCESSING, BulkStatus.PROCESSED)
    webhook_receiver.script = [500, 500, 500]  # one round's attempts all fail
    result = notify.dispatch(sqlite_engine, webhook=_sender(webhook_receiver))  # does not raise
    assert [f[2] for f in result.failed] == ["PROCESSING"]
    assert "HTTP 500" in result.failed[0][3]
    # the later status of the same bulk change waited, so the receiver sees them in order
    assert webhook_receiver.received == []
    states = _outbox(sqlite_engine, bulk_id)
    assert [s[3] for s in states if s[0] == "webhook"] == ["PENDING", "PENDING"]
    with sqlite_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status == BulkStatus.PROCESSED  # untouched
    notify.dispatch(sqlite_engine, webhook=_sender(webhook_receiver))  # next round: receiver is back
    assert webhook_receiver.statuses(bulk_id) == ["PROCESSING", "PROCESSED"]


def test_permanent_refusal_and_unreachable_receiver(sqlite_engine, webhook_receiver):
    bulk_id = _bulk(sqlite_engine)
    _walk(sqlite_engine, bulk_id, BulkStatus.PROCESSING)
    webhook_receiver.script = [400]
    result = notify.dispatch(sqlite_engine, webhook=_sender(webhook_receiver))
    assert webhook_receiver.refused == [400]  # a 4xx is not retried
    assert result.failed[0][2] == "PROCESSING"
    assert _outbox(sqlite_engine, bulk_id)[0][3] == "FAILED"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    sender = notify.WebhookSender(url=f"http://127.0.0.1:{dead_port}/x", attempts=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(notify.WebhookError, match="after 2 attempts"):
        sender.send({"event": "x"})
    _walk(sqlite_engine, bulk_id, BulkStatus.ERROR)
    result = notify.dispatch(sqlite_engine, webhook=sender, max_rounds=1)
    assert [f[2] for f in result.failed] == ["ERROR"]
    assert [s[3] for s in _outbox(sqlite_engine, bulk_id) if s[0] == "webhook"] == ["FAILED", "FAILED"]


def test_no_webhook_configured_is_recorded_as_skipped(sqlite_engine):
    bulk_id = _bulk(sqlite_engine)
    _walk(sqlite_engine, bulk_id, BulkStatus.PROCESSING)
    result = notify.dispatch(sqlite_engine, webhook=None)
    assert result.skipped == [(bulk_id, "webhook", "PROCESSING")]
    assert _outbox(sqlite_engine, bulk_id)[0][3] == "SKIPPED"


def test_retry_after_is_a_floor_of_the_wait_and_jitter_stays_within_the_backoff(webhook_receiver):
    sleeps = []
    webhook_receiver.script = [(429, {"Retry-After": "0.3"}), 503, 503]
    sender = _sender(webhook_receiver, attempts=4, sleep=sleeps.append)  # backoff 0.01, 0.02, 0.04
    assert sender.send({"event": "x", "status": "PROCESSING", "bulkChangeId": 1}) == 200
    assert webhook_receiver.refused == [429, 503, 503] and len(webhook_receiver.received) == 1
    assert sleeps[0] >= 0.3                      # the receiver's Retry-After, not our 0.01 s backoff
    assert 0 <= sleeps[1] <= 0.02 and 0 <= sleeps[2] <= 0.04  # full jitter: never above the backoff


def test_a_huge_retry_after_is_capped(webhook_receiver):
    sleeps = []
    webhook_receiver.script = [(503, {"Retry-After": "3600"})]
    _sender(webhook_receiver, attempts=2, max_backoff_s=2, sleep=sleeps.append).send({"event": "x"})
    assert sleeps == [2]


def test_a_401_is_a_refusal_not_retried(webhook_receiver):
    webhook_receiver.script = [401, 401]
    with pytest.raises(notify.WebhookError, match="refused") as err:
        _sender(webhook_receiver, attempts=3).send({"event": "x"})
    assert err.value.permanent and webhook_receiver.refused == [401]
    assert "hook-token-123" not in str(err.value)
