"""Completion summaries through the configured email backend: SMTP (a real aiosmtpd server on
loopback) or SES (a moto server on loopback, through the amazon provider)."""
import pytest

from bulkchange.db import bulk_changes
from tests.notify.conftest import boto_client
from tests.notify.test_content import _finished
from tests.notify.test_outbox import _outbox


@pytest.fixture
def no_webhook(monkeypatch):
    monkeypatch.setenv("BULKCHANGE_WEBHOOK_CONN_ID", "bulkchange_webhook_absent")
    monkeypatch.delenv("AIRFLOW_CONN_BULKCHANGE_WEBHOOK_ABSENT", raising=False)


def test_summary_email_reaches_the_smtp_server(sqlite_engine, smtp_server, monkeypatch, no_webhook):
    from bulkchange_plugins.notifiers import send_pending_notifications

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.conn_json)
    monkeypatch.setenv("BULKCHANGE_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("BULKCHANGE_SUMMARY_EMAILS", "lead@example.com, noc@example.com")
    bulk_id, dcs = _finished(sqlite_engine, n=4, failed=1)
    summary = send_pending_notifications(sqlite_engine, [bulk_id])
    assert summary["sent"] == [[bulk_id, "email", "PROCESSED_WITH_ERRORS"]]
    assert len(smtp_server.inbox.messages) == 1
    rcpts, msg = smtp_server.inbox.messages[0]
    assert sorted(rcpts) == ["lead@example.com", "noc@example.com"]
    assert msg["Subject"] == (f"[bulkchange] bulk change {bulk_id} PROCESSED_WITH_ERRORS: StatusUpdate on Jasper, "
                              f"3 of 4 processed")
    assert msg["From"] == "bulkchange@example.com"  # the connection's from_email
    body = msg.get_body(preferencelist=("html",)).get_content()
    assert "<tr><td>PROCESSED</td><td align='right'>3</td></tr>" in body
    assert dcs[0].iccid in body and "carrier said &lt;no&gt; #0" in body
    assert "/dags/bulk_change_process/runs/bulk_change_%s" % bulk_id in body
    # sent once: another dispatch finds nothing pending
    assert send_pending_notifications(sqlite_engine, [bulk_id])["sent"] == []
    assert len(smtp_server.inbox.messages) == 1


def test_smtp_down_keeps_the_summary_pending(sqlite_engine, monkeypatch, no_webhook):
    import json
    import socket

    from bulkchange_plugins.notifiers import send_pending_notifications

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "b@example.com", "retry_limit": 1,
                  "timeout": 2}}))
    bulk_id, _ = _finished(sqlite_engine, n=2, failed=0)
    summary = send_pending_notifications(sqlite_engine, [bulk_id])  # does not raise
    assert summary["failed"][0][:3] == [bulk_id, "email", "PROCESSED"]
    email_rows = [r for r in _outbox(sqlite_engine, bulk_id) if r[0] == "email"]
    assert email_rows == [("email", "NEW", "PROCESSED", "PENDING")]  # retried by the next dispatch


def test_summary_email_through_ses(sqlite_engine, moto_server, monkeypatch, no_webhook):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from bulkchange_plugins.notifiers import send_pending_notifications

    monkeypatch.setenv("BULKCHANGE_EMAIL_BACKEND", "ses")
    monkeypatch.setenv("BULKCHANGE_EMAIL_FROM", "bulkchange@ops.example.com")
    monkeypatch.setenv("BULKCHANGE_SUMMARY_EMAILS", "lead@example.com")
    boto_client(moto_server, "ses").verify_email_identity(EmailAddress="bulkchange@ops.example.com")
    bulk_id, _ = _finished(sqlite_engine, n=3, failed=3)
    summary = send_pending_notifications(sqlite_engine, [bulk_id])
    assert summary["sent"] == [[bulk_id, "email", "ERROR"]]
    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert len(sent) == 1
    raw = sent[0].raw_data
    assert sent[0].source == "bulkchange@ops.example.com" and set(sent[0].destinations) == {"lead@example.com"}
    assert f"bulk change {bulk_id} ERROR" in raw
    with sqlite_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "ERROR"


def test_ses_refusal_does_not_raise(sqlite_engine, moto_server, monkeypatch, no_webhook):
    from bulkchange_plugins.notifiers import send_pending_notifications

    monkeypatch.setenv("BULKCHANGE_EMAIL_BACKEND", "ses")
    monkeypatch.setenv("BULKCHANGE_EMAIL_FROM", "unverified@ops.example.com")  # SES refuses it
    bulk_id, _ = _finished(sqlite_engine, n=1, failed=0)
    summary = send_pending_notifications(sqlite_engine, [bulk_id])
    assert summary["sent"] == [] and "MessageRejected" in summary["failed"][0][3]


def test_failure_email_through_ses(sqlite_engine, moto_server, monkeypatch):
    from types import SimpleNamespace

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    from bulkchange_plugins.notifiers import dag_failure_notifier

    monkeypatch.setenv("BULKCHANGE_EMAIL_BACKEND", "ses")
    monkeypatch.setenv("BULKCHANGE_EMAIL_FROM", "alerts@ops.example.com")
    monkeypatch.setenv("BULKCHANGE_ALERT_EMAILS", "oncall@example.com")
    boto_client(moto_server, "ses").verify_email_identity(EmailAddress="alerts@ops.example.com")
    context = {"dag": SimpleNamespace(dag_id="bulk_change_sqs"), "run_id": "scheduled__x", "reason": "task_failure",
               "params": {}}
    dag_failure_notifier().notify(context)
    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert len(sent) == 1 and set(sent[0].destinations) == {"oncall@example.com"}
    assert "[bulkchange] bulk_change_sqs run failed" in sent[0].raw_data
    from email import message_from_string, policy

    body = message_from_string(sent[0].raw_data, policy=policy.default).get_body(("html",)).get_content()
    assert "run failed (task_failure)" in body and "/dags/bulk_change_sqs/runs/scheduled__x" in body
