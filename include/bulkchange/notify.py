"""Notifications about bulk changes: what they say and when they are sent. Airflow-free.

Every bulk change status change queues its notifications in the ``DeviceBulkChangeNotification``
outbox, in the same transaction as the change (``bulk_changes.set_bulk_status`` and
``claim_bulk_change``): a webhook POST for every change (the legacy "ADM webhook", but one message
per status change instead of the first 100 rows on every pass) and a completion summary email
when the status is final (plus, for EditUsernameCostCenter, the username-updated report,
``username_report_email``). ``dispatch`` sends what is pending: whichever process runs it
first (the processing run's finalize, the reconciliation run) claims each row with one
conditional UPDATE, so each notification goes out once even when both places roll the same bulk
change up.

A failed send never fails the bulk change: the row goes back to PENDING with the error and is
retried by the next ``dispatch`` (up to ``max_rounds``), then FAILED. A bulk change's webhooks
are sent in order: one that failed holds back that bulk change's later ones in the same round.

This module builds the content (failure email, completion summary, username report, webhook
payload) and posts webhooks with ``requests``; the Airflow side (``bulkchange_plugins.notifiers``)
picks the email backend (SMTP or SES) and the webhook connection.

Assumed (the legacy AdmWebhookService is not public): the webhook body is the JSON documented in
``webhook_payload``; the receiver answers 2xx on success; 5xx, 408, 425, 429, timeouts and
connection errors are transient and retried (``WebhookSender``), other 4xx are permanent.
``X-Bulkchange-Notification-Id`` lets a receiver drop the rare duplicate of a send whose outcome
was lost.
"""
from __future__ import annotations

import html
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

import requests
from sqlalchemy.engine import Engine

from bulkchange.carriers.base import CarrierError, NextStep, TransientError, classify_response, next_step
from bulkchange.db import bulk_changes, outbox, progress
from bulkchange.db.username_changes import applied_username_changes
from bulkchange.engine import CallPolicy, RetryPolicy
from bulkchange.models import (
    FAILED_DEVICE_STATUSES,
    BulkChange,
    EditUsernameRequest,
    PortalType,
    utcnow,
)
from bulkchange.sanitize import mask_name, sanitize_text, sanitize_value

log = logging.getLogger(__name__)

DEFAULT_MAX_FAILURES = 20
DEFAULT_MAX_ROUNDS = 5
SUBJECT_PREFIX = "[bulkchange]"

EmailSender = Callable[[Sequence[str], str, str], None]  # (to, subject, html)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


# --- failure email -------------------------------------------------------------------------------
@dataclass
class FailureFacts:
    """What the ops team needs to act on a failed task or run."""

    dag_id: str
    run_id: str | None = None
    task_id: str | None = None  # None: the whole run failed (DAG-level callback)
    bulk_change_id: int | None = None
    carrier: str | None = None
    change_type: str | None = None
    service_provider: str | None = None
    error: str | None = None
    run_url: str | None = None
    log_url: str | None = None
    secrets: Sequence[str] = ()


def failure_email(f: FailureFacts) -> tuple[str, str]:
    """(subject, html) of the failure email."""
    if f.task_id:
        subject = f"{SUBJECT_PREFIX} {f.dag_id} failed: {f.task_id}"
    else:
        subject = f"{SUBJECT_PREFIX} {f.dag_id} run failed"
        if f.bulk_change_id:
            subject += f": bulk change {f.bulk_change_id}"
    error = sanitize_text(f.error or "see the task log", list(f.secrets))
    if len(error) > 2000:
        error = error[:2000] + " ..."
    what = f"Task <b>{_e(f.task_id)}</b> of run" if f.task_id else "Run"
    rows = [
        ("Bulk change", f.bulk_change_id if f.bulk_change_id else "n/a"),
        ("Carrier", f.carrier or "unknown"),
        ("Change type", f.change_type or "unknown"),
        ("Service provider", f.service_provider or "unknown"),
        ("DAG", f.dag_id),
        ("Run", f.run_id or ""),
    ]
    table = "".join(f"<tr><th align='left'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    links = []
    if f.run_url:
        links.append(f'<a href="{_e(f.run_url)}">Open the run</a>')
    if f.log_url:
        links.append(f'<a href="{_e(f.log_url)}">Open the log</a>')
    body = (f"<p>{what} <b>{_e(f.run_id)}</b> ({_e(f.dag_id)}) failed.</p>"
            f"<table>{table}</table>"
            f"<p>Error: {_e(error)}</p>"
            f"<p>{' | '.join(links)}</p>")
    return subject, body


# --- completion summary --------------------------------------------------------------------------
@dataclass
class BulkContext:
    bulk: BulkChange
    row: dict
    counts: dict[str, int]
    failures: list[tuple[int, str | None, str, str | None]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def load_context(engine: Engine, bulk_id: int, max_failures: int = DEFAULT_MAX_FAILURES) -> BulkContext:
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return BulkContext(bulk, bulk_changes.bulk_change_summary_row(conn, bulk_id) or {},
                           progress.status_counts(conn, bulk), bulk_changes.first_failures(conn, bulk, max_failures))


def summary_email(ctx: BulkContext, status: str | None = None, *, run_url: str | None = None) -> tuple[str, str]:
    """(subject, html): counts per status as a table and the first failures with their reasons."""
    bulk = ctx.bulk
    status = status or ctx.row.get("Status") or bulk.status.value
    processed = ctx.counts.get("PROCESSED", 0)
    subject = (f"{SUBJECT_PREFIX} bulk change {bulk.id} {status}: {bulk.change_type.value} on "
               f"{bulk.integration.value}, {processed} of {ctx.total} processed")
    facts = [
        ("Bulk change", bulk.id), ("Status", status), ("Carrier", bulk.integration.value),
        ("Change type", bulk.change_type.value),
        ("Service provider", f"{bulk.service_provider_name} ({bulk.service_provider_id})"),
        ("Tenant", bulk.tenant_id), ("Portal", PortalType(bulk.portal_type).name),
        ("Created by", bulk.created_by or ""), ("Created", ctx.row.get("CreatedDate") or ""),
        ("Finished", ctx.row.get("ProcessedDate") or ""),
    ]
    if ctx.row.get("ErrorMessage"):
        facts.append(("Message", ctx.row["ErrorMessage"]))
    head = "".join(f"<tr><th align='left'>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    counts = "".join(f"<tr><td>{_e(s)}</td><td align='right'>{n}</td></tr>"
                     for s, n in sorted(ctx.counts.items()))
    counts += f"<tr><th align='left'>Total</th><th align='right'>{ctx.total}</th></tr>"
    parts = [f"<h3>Bulk change {bulk.id}: {_e(status)}</h3>", f"<table>{head}</table>",
             "<h4>Device changes per status</h4>",
             f"<table border='1' cellpadding='4'><tr><th>Status</th><th>Devices</th></tr>{counts}</table>"]
    failed_statuses = {s.value for s in FAILED_DEVICE_STATUSES}
    failed = sum(n for s, n in ctx.counts.items() if s in failed_statuses)
    if ctx.failures:
        shown = len(ctx.failures)
        title = (f"First {shown} of {failed} failures" if failed > shown else f"Failures ({failed})")
        rows = "".join(f"<tr><td>{i}</td><td>{_e(iccid)}</td><td>{_e(st)}</td><td>{_e(reason)}</td></tr>"
                       for i, iccid, st, reason in ctx.failures)
        parts.append(f"<h4>{title}</h4><table border='1' cellpadding='4'><tr><th>Device change</th>"
                     f"<th>ICCID</th><th>Status</th><th>Reason</th></tr>{rows}</table>")
    else:
        parts.append("<p>No device failed.</p>")
    if run_url:
        parts.append(f'<p><a href="{_e(run_url)}">Open the run</a></p>')
    return subject, "".join(parts)


def username_report_email(engine: Engine, bulk: BulkChange, max_rows: int = 500) -> tuple[str, str]:
    """(subject, html) of the username-updated report (legacy "Username Update Report"): the devices
    whose username or cost centers this bulk change set, with the new values."""
    with engine.connect() as conn:
        rows = applied_username_changes(conn, bulk)
    lines = []
    for iccid, msisdn, raw, status, when in rows[:max_rows]:
        try:
            req = EditUsernameRequest.model_validate(json.loads(raw) if raw else {})
        except ValueError:
            continue
        centers = ", ".join(f"{k}={v}" for k, v in req.cost_centers().items()) if status == "PROCESSED" else \
            "(Rev.io failed)"
        lines.append(f"<tr><td>{_e(iccid)}</td><td>{_e(msisdn or '')}</td><td>{_e(mask_name(req.ContactName))}</td>"
                     f"<td>{_e(centers)}</td><td>{_e(when or '')}</td></tr>")
    subject = (f"{SUBJECT_PREFIX} Username Update Report: bulk change {bulk.id}, {len(rows)} device(s) on "
               f"{bulk.integration.value}")
    more = f"<p>First {max_rows} of {len(rows)} shown.</p>" if len(rows) > max_rows else ""
    body = (f"<h3>Username Update Report, bulk change {bulk.id}</h3>"
            f"<p>Service provider {_e(bulk.service_provider_name)} ({bulk.service_provider_id}), tenant "
            f"{bulk.tenant_id}, changed by {_e(bulk.created_by or '')}.</p>"
            "<table border='1' cellpadding='4'><tr><th>ICCID</th><th>MSISDN</th><th>New username</th>"
            f"<th>Cost centers</th><th>Date</th></tr>{''.join(lines)}</table>{more}")
    return subject, body


# --- webhook -------------------------------------------------------------------------------------
def webhook_payload(ctx: BulkContext, n: outbox.Notification) -> dict[str, Any]:
    """The JSON posted for one status change. ``status`` is the change being notified;
    ``counts`` are the device change counts when the message is sent."""
    bulk = ctx.bulk
    return {
        "event": "bulk_change.status_changed",
        "notificationId": n.id,
        "bulkChangeId": bulk.id,
        "status": n.to_status,
        "previousStatus": n.from_status,
        "changedAt": n.created.isoformat() if isinstance(n.created, datetime) else n.created,
        "currentStatus": ctx.row.get("Status"),
        "changeType": bulk.change_type.value,
        "carrier": bulk.integration.value,
        "serviceProviderId": bulk.service_provider_id,
        "serviceProvider": bulk.service_provider_name,
        "tenantId": bulk.tenant_id,
        "portalType": PortalType(bulk.portal_type).name,
        "counts": dict(sorted(ctx.counts.items())),
        "total": ctx.total,
        "errorMessage": ctx.row.get("ErrorMessage"),
    }


class WebhookError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass
class WebhookSender:
    """POSTs JSON to one URL. An answer is classified like a carrier's (``carriers.base.classify_response``
    and ``next_step``): 5xx, 408, 425, 429, timeouts and connection errors are retried by the engine's
    ``CallPolicy`` (full jitter over ``backoff_s * 2**(n-1)``, at most ``max_backoff_s``, the
    receiver's Retry-After as a floor); any other 4xx (a 401 included: there is nothing to log in
    again with) is a refusal and is not sent again."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    timeout_s: float = 10.0
    attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    sleep: Callable[[float], None] = time.sleep

    def send(self, payload: dict, *, notification_id: int | None = None) -> int:
        """Returns the HTTP status of the accepted POST; raises WebhookError."""
        headers = {"Content-Type": "application/json", "X-Bulkchange-Event": str(payload.get("event", ""))}
        if notification_id is not None:
            headers["X-Bulkchange-Notification-Id"] = str(notification_id)
        headers.update(self.headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        secrets = [self.token] if self.token else []

        def post() -> int:
            try:
                resp = requests.post(self.url, json=payload, headers=headers, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            classify_response(resp)
            return resp.status_code

        attempts = max(1, self.attempts)
        policy = CallPolicy(None, RetryPolicy(max_attempts=attempts, base_delay=self.backoff_s, rate_limited_waits=0,
                                              max_delay=max(self.max_backoff_s, self.backoff_s)), sleep=self.sleep)
        try:
            status, _ = policy.execute(post)
        except CarrierError as exc:
            last = f"{exc}: {exc.response_text[:300]}" if exc.status_code and exc.status_code >= 500 else str(exc)
            if next_step(exc) in (NextStep.RETRY, NextStep.WAIT_OUT):
                raise WebhookError(sanitize_text(f"webhook failed after {attempts} attempts: {last}", secrets)) from exc
            raise WebhookError(sanitize_text(f"webhook refused: {last}", secrets), permanent=True) from exc
        return status


# --- dispatch ------------------------------------------------------------------------------------
@dataclass
class DispatchResult:
    sent: list[tuple[int, str, str]] = field(default_factory=list)  # (bulk id, channel, status)
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    failed: list[tuple[int, str, str, str]] = field(default_factory=list)  # (..., error)

    def as_dict(self) -> dict[str, Any]:
        return {"sent": [list(x) for x in self.sent], "skipped": [list(x) for x in self.skipped],
                "failed": [list(x) for x in self.failed]}


def dispatch(engine: Engine, *, bulk_ids: Sequence[int] | None = None, webhook: WebhookSender | None = None,
             send_email: EmailSender | None = None, recipients: Sequence[str] = (),
             max_failures: int = DEFAULT_MAX_FAILURES, max_rounds: int = DEFAULT_MAX_ROUNDS,
             stale_after: timedelta = timedelta(minutes=10), limit: int = 200,
             run_url: Callable[[int], str | None] | None = None) -> DispatchResult:
    """Send the pending notifications (of these bulk changes, or all). Never raises for a failed send."""
    stale = utcnow() - stale_after
    with engine.connect() as conn:
        pending = outbox.pending_notifications(conn, bulk_ids=bulk_ids, stale_before=stale, limit=limit)
    result = DispatchResult()
    contexts: dict[int, BulkContext | None] = {}
    held: set[int] = set()
    if send_email is not None:
        raw_send = send_email

        def send_email(to, subject, body):  # noqa: F811  every mail leaves through the scrubber
            raw_send(to, sanitize_text(subject), sanitize_text(body))
    for n in pending:
        key = (n.bulk_change_id, n.channel, n.to_status)
        if n.channel == outbox.NOTIFY_WEBHOOK and n.bulk_change_id in held:
            continue
        with engine.begin() as conn:
            if not outbox.claim_notification(conn, n.id, stale_before=stale):
                continue  # another sender has it
        if n.channel == outbox.NOTIFY_WEBHOOK and webhook is None:
            _finish(engine, n.id, "SKIPPED", "no webhook configured")
            result.skipped.append(key)
            continue
        if n.channel in (outbox.NOTIFY_EMAIL, outbox.NOTIFY_USERNAME) and (send_email is None or not recipients):
            _finish(engine, n.id, "SKIPPED", "no summary email recipients configured")
            result.skipped.append(key)
            continue
        try:
            if n.bulk_change_id not in contexts:
                contexts[n.bulk_change_id] = load_context(engine, n.bulk_change_id, max_failures)
            ctx = contexts[n.bulk_change_id]
            if n.channel == outbox.NOTIFY_WEBHOOK:
                webhook.send(sanitize_value(webhook_payload(ctx, n)), notification_id=n.id)
            elif n.channel == outbox.NOTIFY_USERNAME:  # EditUsernameCostCenter's username-updated report
                subject, body = username_report_email(engine, ctx.bulk)
                send_email(list(recipients), subject, body)
            else:
                subject, body = summary_email(ctx, n.to_status,
                                              run_url=run_url(n.bulk_change_id) if run_url else None)
                send_email(list(recipients), subject, body)
        except Exception as exc:  # noqa: BLE001  a notification never fails the bulk change
            permanent = (isinstance(exc, WebhookError) and exc.permanent) or isinstance(exc, bulk_changes.BulkChangeNotFound)
            state = "FAILED" if permanent or n.attempts + 1 >= max_rounds else "PENDING"
            error = sanitize_text(f"{type(exc).__name__}: {exc}")[:2000]
            _finish(engine, n.id, state, error)
            result.failed.append(key + (error,))
            if n.channel == outbox.NOTIFY_WEBHOOK:
                held.add(n.bulk_change_id)
            log.warning("%s notification %s of bulk change %s (%s) not sent, now %s: %s", n.channel, n.id,
                        n.bulk_change_id, n.to_status, state, error)
            continue
        _finish(engine, n.id, "SENT", None)
        result.sent.append(key)
        log.info("%s notification of bulk change %s -> %s sent", n.channel, n.bulk_change_id, n.to_status)
    return result


def _finish(engine: Engine, notification_id: int, state: str, error: str | None) -> None:
    with engine.begin() as conn:
        outbox.finish_notification(conn, notification_id, state, error=error)
