"""What the emails and the webhook say (core, no Airflow)."""
from bulkchange import notify
from bulkchange.db import bulk_changes, device_changes, outbox, progress
from bulkchange.models import BulkStatus, DeviceChangeStatus
from tests.notify.test_outbox import _bulk


def _finished(engine, n=5, failed=3):
    bulk_id = _bulk(engine, n=n)
    with engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dcs = device_changes.load_device_changes(conn, bulk)
        device_changes.mark_device_changes(conn, bulk, [d.id for d in dcs[failed:]], DeviceChangeStatus.PROCESSED,
                                           processed_by="t")
        device_changes.reject_device_changes(conn, bulk, [(d.id, f"carrier said <no> #{k}")
                                                          for k, d in enumerate(dcs[:failed])], processed_by="t")
        progress.rollup(conn, bulk)
    return bulk_id, dcs


def test_summary_has_counts_per_status_and_first_failures(sqlite_engine):
    bulk_id, dcs = _finished(sqlite_engine, n=5, failed=3)
    ctx = notify.load_context(sqlite_engine, bulk_id, max_failures=2)
    subject, html = notify.summary_email(ctx, run_url="http://af/dags/bulk_change_process/runs/bulk_change_1")
    assert subject == (f"[bulkchange] bulk change {bulk_id} PROCESSED_WITH_ERRORS: StatusUpdate on Jasper, "
                       f"2 of 5 processed")
    assert "<tr><td>ERROR</td><td align='right'>3</td></tr>" in html
    assert "<tr><td>PROCESSED</td><td align='right'>2</td></tr>" in html
    assert "<th align='right'>5</th>" in html
    assert "First 2 of 3 failures" in html
    assert dcs[0].iccid in html and dcs[1].iccid in html and dcs[2].iccid not in html
    assert "carrier said &lt;no&gt; #0" in html and "<no>" not in html  # escaped
    assert 'href="http://af/dags/bulk_change_process/runs/bulk_change_1"' in html


def test_summary_without_failures(sqlite_engine):
    bulk_id, _ = _finished(sqlite_engine, n=2, failed=0)
    subject, html = notify.summary_email(notify.load_context(sqlite_engine, bulk_id))
    assert "PROCESSED: StatusUpdate on Jasper, 2 of 2 processed" in subject
    assert "No device failed." in html


def test_failure_email_names_bulk_change_carrier_type_error_and_run():
    facts = notify.FailureFacts(dag_id="bulk_change_process", run_id="bulk_change_7", task_id="prepare",
                                bulk_change_id=7, carrier="Jasper", change_type="StatusUpdate",
                                error="HTTPError: 401 Authorization: Basic dXNlcjpzZWNyZXQxMjM= refused",
                                run_url="http://af/dags/bulk_change_process/runs/bulk_change_7")
    subject, html = notify.failure_email(facts)
    assert subject == "[bulkchange] bulk_change_process failed: prepare"
    for text in ("<td>7</td>", "<td>Jasper</td>", "<td>StatusUpdate</td>", "HTTPError: 401",
                 'href="http://af/dags/bulk_change_process/runs/bulk_change_7"'):
        assert text in html, text
    assert "dXNlcjpzZWNyZXQxMjM=" not in html  # scrubbed
    dag_subject, dag_html = notify.failure_email(notify.FailureFacts(dag_id="bulk_change_process", bulk_change_id=7,
                                                                     run_id="r1", error="run failed"))
    assert dag_subject == "[bulkchange] bulk_change_process run failed: bulk change 7"
    assert "<p>Run <b>r1</b> (bulk_change_process) failed.</p>" in dag_html and "<td>unknown</td>" in dag_html


def test_webhook_payload(sqlite_engine):
    bulk_id, _ = _finished(sqlite_engine, n=3, failed=1)
    with sqlite_engine.connect() as conn:
        n = [p for p in outbox.pending_notifications(conn, bulk_ids=[bulk_id]) if p.channel == "webhook"][0]
    body = notify.webhook_payload(notify.load_context(sqlite_engine, bulk_id), n)
    assert body["bulkChangeId"] == bulk_id and body["status"] == BulkStatus.PROCESSED_WITH_ERRORS.value
    assert body["previousStatus"] == "NEW" and body["carrier"] == "Jasper" and body["changeType"] == "StatusUpdate"
    assert body["counts"] == {"ERROR": 1, "PROCESSED": 2} and body["total"] == 3
    assert body["portalType"] == "M2M" and body["notificationId"] == n.id
