"""Notifications: failure emails, completion summaries and the status webhook, configured from the
environment through ``bulkchange.settings`` (read when used: no DB, no network at import).

* Email backend: ``BULKCHANGE_EMAIL_BACKEND`` = ``smtp`` (default; the SMTP provider's
  ``SmtpNotifier`` through connection ``BULKCHANGE_SMTP_CONN_ID``, default ``smtp_default``) or
  ``ses`` (the amazon provider's ``SesNotifier`` through AWS connection ``BULKCHANGE_AWS_CONN_ID``,
  default ``aws_default``; the sender address ``BULKCHANGE_EMAIL_FROM`` must be verified in SES).
* Failure email recipients: ``BULKCHANGE_ALERT_EMAILS``; completion summary recipients:
  ``BULKCHANGE_SUMMARY_EMAILS`` (default: the alert recipients; ``none`` turns summaries off).
* Webhook: HTTP connection ``BULKCHANGE_WEBHOOK_CONN_ID`` (default ``bulkchange_webhook``): host =
  full URL (or extra ``url``), password = optional bearer token, extra ``headers``, ``timeout_s``,
  ``attempts``. Without the connection webhooks are recorded as SKIPPED.

The content comes from the Airflow-free core, ``bulkchange.notify``.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from bulkchange.settings import get_settings

log = logging.getLogger(__name__)


def alert_recipients() -> list[str]:
    raw = get_settings().alert_emails
    return [a.strip() for a in raw.split(",") if a.strip()]


def summary_recipients() -> list[str]:
    raw = get_settings().summary_emails
    if raw.strip().lower() == "none":
        return []
    return [a.strip() for a in raw.split(",") if a.strip()] or alert_recipients()


def email_backend() -> str:
    backend = get_settings().email_backend.lower()
    if backend not in ("smtp", "ses"):
        raise ValueError(f"BULKCHANGE_EMAIL_BACKEND must be smtp or ses, got {backend!r}")
    return backend


def smtp_conn_id() -> str:
    return get_settings().smtp_conn_id


def aws_conn_id() -> str:
    return get_settings().aws_conn_id


def email_notifier(to: Sequence[str], subject: str, html_content: str) -> BaseNotifier:
    """The provider notifier of the configured backend, with finished (not templated) content."""
    if email_backend() == "ses":
        from airflow.providers.amazon.aws.notifications.ses import SesNotifier

        return SesNotifier(aws_conn_id=aws_conn_id(), to=list(to), subject=subject, html_content=html_content,
                           mail_from=get_settings().email_from or "bulkchange@example.com")
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(to=list(to), subject=subject, html_content=html_content, smtp_conn_id=smtp_conn_id(),
                        from_email=get_settings().email_from or None)


def send_email(to: Sequence[str], subject: str, html_content: str) -> None:
    # notify() directly, not __call__: the content is final, an error text must not be rendered as Jinja
    email_notifier(to, subject, html_content).notify({})


def run_url(dag_id: str, run_id: str | None) -> str | None:
    if not run_id:
        return None
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="http://localhost:8080") or "http://localhost:8080"
    except Exception:  # noqa: BLE001
        base = "http://localhost:8080"
    return f"{base.rstrip('/')}/dags/{quote(dag_id)}/runs/{quote(run_id, safe='')}"


class BulkChangeFailureNotifier(BaseNotifier):
    """Failure email for a task (``level="task"``) or a whole run (``level="dag"``): bulk change id,
    carrier, change type, error summary and a link to the run, sent through the configured backend."""

    def __init__(self, level: str = "task", **kwargs: Any):
        super().__init__(**kwargs)
        if level not in ("task", "dag"):
            raise ValueError(f"level must be task or dag, got {level!r}")
        self.level = level

    def render_template_fields(self, context, jinja_env=None) -> None:
        """Nothing is templated (the content is built in ``notify``). Skipping the render also keeps
        DAG-level callbacks working where the context's dag is a serialized one without a Jinja env."""

    def facts(self, context) -> Any:
        from bulkchange.notify import FailureFacts

        dag = context.get("dag")
        dag_id = getattr(dag, "dag_id", None) or str(context.get("dag_id", "unknown"))
        ti = context.get("ti") or context.get("task_instance")
        run_id = context.get("run_id") or getattr(ti, "run_id", None)
        params = context.get("params") or {}
        dag_run = context.get("dag_run")
        conf = getattr(dag_run, "conf", None) or {}
        bulk_id = params.get("bulk_change_id") or conf.get("bulk_change_id")
        exception = context.get("exception")
        if exception is not None:
            error = f"{type(exception).__name__}: {exception}"
        elif self.level == "dag":
            reason = context.get("reason") or "failed"
            error = f"run failed ({reason})" + (f"; last failed task: {ti.task_id}" if ti is not None else "")
        else:
            error = None
        facts = FailureFacts(dag_id=dag_id, run_id=run_id, task_id=ti.task_id if (ti is not None and
                                                                                 self.level == "task") else None,
                             bulk_change_id=int(bulk_id) if str(bulk_id or "").isdigit() else None, error=error,
                             run_url=run_url(dag_id, run_id), log_url=getattr(ti, "log_url", None) if ti else None)
        if facts.bulk_change_id:
            try:
                from bulkchange.db import bulk_changes
                from bulkchange_plugins.hooks import AmopHook

                with AmopHook().get_engine().connect() as conn:
                    bulk = bulk_changes.load_bulk_change(conn, facts.bulk_change_id)
                facts.carrier = bulk.integration.value
                facts.change_type = bulk.change_type.value
                facts.service_provider = f"{bulk.service_provider_name} ({bulk.service_provider_id})"
            except Exception as exc:  # noqa: BLE001  the email goes out anyway
                log.warning("failure email: bulk change %s details unavailable: %s", facts.bulk_change_id, exc)
        return facts

    def notify(self, context) -> None:
        from bulkchange.notify import failure_email

        subject, body = failure_email(self.facts(context))
        send_email(alert_recipients(), subject, body)


def failure_notifier() -> BulkChangeFailureNotifier:
    """For ``default_args["on_failure_callback"]``: one email per failed task."""
    return BulkChangeFailureNotifier(level="task")


def dag_failure_notifier() -> BulkChangeFailureNotifier:
    """For the DAG's ``on_failure_callback``: one email per failed run."""
    return BulkChangeFailureNotifier(level="dag")


# --- completion summaries and webhooks ------------------------------------------------------------
def webhook_sender():
    """The webhook sender from connection ``bulkchange_webhook``, or None when it is not configured."""
    from airflow.sdk import BaseHook

    from bulkchange.notify import WebhookSender

    conn_id = get_settings().webhook_conn_id
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001  not configured
        return None
    extra = conn.extra_dejson or {}
    url = extra.get("url") or conn.host
    if not url:
        return None
    if "://" not in url:
        url = f"{conn.schema or 'https'}://{url}" + (f":{conn.port}" if conn.port else "")
    return WebhookSender(url=url, headers=dict(extra.get("headers") or {}), token=conn.password or None,
                         timeout_s=float(extra.get("timeout_s", 10)), attempts=int(extra.get("attempts", 3)),
                         backoff_s=float(extra.get("backoff_s", 0.5)))


def send_pending_notifications(engine, bulk_ids: Sequence[int] | None = None) -> dict:
    """Send the pending webhooks and completion summaries (of these bulk changes, or all).
    Never raises: a notification failure never fails the bulk change or its run."""
    from bulkchange import notify

    try:
        settings = get_settings()
        result = notify.dispatch(
            engine, bulk_ids=bulk_ids, webhook=webhook_sender(), send_email=send_email,
            recipients=summary_recipients(),
            max_failures=settings.summary_max_failures, max_rounds=settings.notify_max_rounds,
            run_url=lambda bulk_id: run_url("bulk_change_process", f"bulk_change_{bulk_id}"))
    except Exception as exc:  # noqa: BLE001
        log.exception("sending notifications failed; they stay pending")
        return {"error": f"{type(exc).__name__}: {exc}"}
    summary = result.as_dict()
    print(f"notifications: sent {summary['sent']}, skipped {summary['skipped']}, failed {summary['failed']}")
    return summary
