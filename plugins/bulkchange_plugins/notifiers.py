"""Failure notification: the SMTP provider's notifier, configured from the environment.

``BULKCHANGE_ALERT_EMAILS`` (comma-separated) names the recipients; the SMTP server comes from the
``smtp_default`` connection. Read at parse time from the environment only (no DB, no network).
"""
from __future__ import annotations

import os

from airflow.providers.smtp.notifications.smtp import SmtpNotifier

FAILURE_SUBJECT = "[bulkchange] {{ dag.dag_id }} failed: {{ ti.task_id if ti else 'run' }}"
FAILURE_HTML = """
<p>Task <b>{{ ti.task_id if ti else '' }}</b> of run <b>{{ run_id }}</b> ({{ dag.dag_id }}) failed.</p>
<p>Bulk change: {{ params.get('bulk_change_id', 'n/a') }}</p>
<p>Error: {{ exception if exception is defined else 'see the task log' }}</p>
<p><a href="{{ ti.log_url if ti else '' }}">Open the log</a></p>
"""


def alert_recipients() -> list[str]:
    raw = os.environ.get("BULKCHANGE_ALERT_EMAILS", "ops@example.com")
    return [a.strip() for a in raw.split(",") if a.strip()]


def failure_notifier() -> SmtpNotifier:
    return SmtpNotifier(to=alert_recipients(), subject=FAILURE_SUBJECT, html_content=FAILURE_HTML,
                        smtp_conn_id=os.environ.get("BULKCHANGE_SMTP_CONN_ID", "smtp_default"))
