"""What each task of a ``bulk_change_process`` run decides: ``prepare`` (conf check, dry run, hold,
ownership, retry of failed devices, batch planning and sizing, the approval request),
``wait_for_carrier`` (poll asynchronous carrier requests) and ``finalize`` (approval answer,
sweep and roll-up, notifications, the run note).

Plain Python: what Airflow provides (XCom, the run note, the triggering user, the AMOP engine, the
carrier hooks, the Variable of allowed service providers) comes through a ``RunContext``, which
``bulkchange_plugins.tasks`` builds from the task's context; the tests give a plain object.
A ``TaskFailed`` ends the task at once, without retries (the plugin raises
``AirflowFailException`` with its message); any other exception is retried as before.

The XCom keys ``prepare`` pushes are part of the run's interface (the approval gate, the Bulk
changes page and the tests read them): ``run_note_head``, ``dry_run_report``, ``owner``,
``batch_size`` and ``approval``; its return value is the list of batches ``process_batch`` maps over.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ContextManager, Mapping, Protocol

from sqlalchemy.engine import Engine

from bulkchange import approval, authz, processing, run_notes
from bulkchange.batch_sizing import override_from_conf
from bulkchange.changes import needs_carrier
from bulkchange.db import bulk_changes, device_changes, progress
from bulkchange.id_runs import id_runs
from bulkchange.limits import LimitError, check_conf
from bulkchange.models import BulkChange, DeviceChangeStatus, utcnow
from bulkchange.settings import get_settings

PROCESSED_BY = "bulk_change_process"
NO_APPROVAL_NEEDED = "no approval needed: reversible and within the size limit"


class TaskFailed(RuntimeError):
    """The task stops here and a retry cannot help: it fails without retrying, with this message."""


class RunContext(Protocol):
    """What a task of the run gets from Airflow."""

    run_id: str
    try_number: int
    user: str | None  # who triggered the run (None: the sensor, SQS or submit launched it)
    conf: Mapping[str, Any]  # the run's conf as given (before params defaults)
    started: datetime | None  # when the run started
    max_batches: int  # Airflow's [core] max_map_length: no more batch tasks than this

    def say(self, text: str) -> None: ...  # a line of the task log
    def push(self, key: str, value: Any) -> None: ...  # XCom of this task
    def pull(self, task_id: str, key: str | None = None) -> Any: ...  # XCom of a task of this run
    def note(self, text: str) -> None: ...  # the run's note in the grid
    def engine(self) -> Engine: ...  # the AMOP database
    def carrier(self, service_provider_id: int, integration: Any) -> Any: ...  # the account's carrier hook
    def clients(self, service_provider_id: int, integration: Any) -> ContextManager[Any]: ...  # carrier + Rev.io
    def allowed_service_providers(self) -> Mapping[str, Any] | None: ...  # authz.load_allowed
    def notify(self, engine: Engine, bulk_ids: list[int]) -> Any: ...  # send the pending notifications


def processed_by(run: RunContext) -> str:
    return f"{PROCESSED_BY}:{run.run_id}"


# --- prepare ---------------------------------------------------------------------------------------

def requested_bulk_id(conf: Mapping[str, Any] | None, params: Mapping[str, Any]) -> int:
    """The bulk change the run is for; a huge conf field is refused by name before anything is read."""
    try:
        check_conf(conf or {}, known={})
    except LimitError as exc:
        raise TaskFailed(f"refused: {exc}") from exc
    bulk_id = params["bulk_change_id"]
    if not bulk_id:
        raise TaskFailed("conf must name a bulk change: {\"bulk_change_id\": N}")
    return int(bulk_id)


def carrier_access(run: RunContext, bulk: BulkChange) -> tuple[str | None, float | None]:
    """(why the carrier cannot be called, or None; the account's requests/s, or None).

    DB-only change types (no carrier call) need no carrier connection; the rate sizes the batches
    (``bulkchange.batch_sizing``) only when the carrier is called and its connection is usable."""
    carrier = run.carrier(bulk.service_provider_id, bulk.integration)
    uses_carrier = needs_carrier(bulk.change_type, bulk.integration)
    problem = carrier.credentials_problem(bulk.integration) if uses_carrier else None
    rate = None if problem or not uses_carrier else carrier.get_settings().rate_limit_per_s
    return problem, rate


def batch_size_xcom(result: processing.PrepareResult) -> dict[str, Any]:
    """XCom ``batch_size``: the size planned and, when prepare said why, the first reason."""
    if result.notes:
        return {"batch_size": result.batch_size, "reason": result.notes[0]}
    return {"batch_size": result.batch_size}


def batch_mappings(result: processing.PrepareResult) -> list[dict[str, Any]]:
    """prepare's return value: one ``process_batch`` task per planned batch, its device change ids as
    runs of consecutive ids (``bulkchange.id_runs``: a few bytes however large the batch)."""
    return [{"bulk_change_id": b.bulk_change_id, "device_change_id_runs": id_runs(b.device_change_ids),
             "batch_label": b.label} for b in result.batches]


def prepare(run: RunContext, params: Mapping[str, Any], *, batch_concurrency: int,
            approval_timeout_hours: float) -> list[dict[str, Any]]:
    """The ``prepare`` task: the batches to process (none for a dry run)."""
    bulk_id = requested_bulk_id(run.conf, params)
    engine = run.engine()
    with engine.connect() as conn:
        try:
            bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        except bulk_changes.BulkChangeNotFound as exc:
            raise TaskFailed(str(exc)) from exc
    run.say(f"bulk change {bulk.id} (CreatedBy {bulk.created_by}): run {run.run_id} triggered by "
            f"{run.user or 'Airflow (sensor / SQS / submit)'}")
    refused = authz.service_provider_problem(run.user, bulk.service_provider_id, run.allowed_service_providers())
    if refused:
        raise TaskFailed(f"refused: {refused}")
    problem, rate = carrier_access(run, bulk)
    max_batches = run.max_batches
    with engine.connect() as conn:
        head = run_notes.head_for(bulk, progress.load_progress(conn, bulk.id)["TotalCount"], params)
    run.push("run_note_head", head)
    run.note(head)  # the grid shows what this run is
    if params.get("dry_run"):
        return _dry_run(run, engine, bulk, params, problem=problem, rate=rate, max_batches=max_batches,
                        batch_concurrency=batch_concurrency)
    if not bulk.process_changes:  # held by the portal: a manual run, the sensor and SQS all stop here
        raise TaskFailed(processing.held_message(bulk.id))
    # one run per bulk change: a second run stops here, before any write (docs/operations.md)
    owner = processing.run_owner(run.run_id)
    try:
        processing.take_ownership(engine, bulk.id, owner)
    except processing.NotOwner as exc:
        run.note(f"{head}\nREFUSED: {exc}")
        raise TaskFailed(str(exc)) from exc
    run.push("owner", owner)  # the later tasks act only for a run that owns it
    if params.get("retry_failed"):
        again = queue_failed_again(run, engine, bulk)
        run.say(f"retry: {len(again)} failed device changes of bulk change {bulk.id} queued again")
    try:
        result = processing.prepare(engine, bulk.id, batch_size=override_from_conf(params.get("batch_size")),
                                    credentials_problem=problem, owner=owner, max_batches=max_batches,
                                    rate_limit_per_s=rate, batch_concurrency=batch_concurrency)
    except (processing.BulkChangeHeld, processing.NotOwner) as exc:
        raise TaskFailed(str(exc)) from exc
    for note in result.notes:  # the batch size chosen and why (rate limit, bounds, max_map_length)
        run.say(note)
    run.push("batch_size", batch_size_xcom(result))
    run.say(f"bulk change {bulk.id} ({bulk.change_type.value} on {bulk.integration.value}, "
            f"{bulk.service_provider_name}): {result.queued} queued, {result.rejected} rejected, "
            f"{len(result.batches)} batches")
    if result.preflight_error:
        run.say(f"stopped before any carrier call: {result.preflight_error}")
    request_approval(run, engine, bulk, result, head=head, owner=owner, approval_timeout_hours=approval_timeout_hours)
    return batch_mappings(result)


def _dry_run(run: RunContext, engine: Engine, bulk: BulkChange, params: Mapping[str, Any], *,
             problem: str | None, rate: float | None, max_batches: int, batch_concurrency: int) -> list:
    """Validate and plan only: the report is printed and pushed (XCom ``dry_run_report``); no batch."""
    from bulkchange import dryrun

    report = dryrun.dry_run_bulk_change(
        engine, bulk.id, batch_size=override_from_conf(params.get("batch_size")),
        max_parallel=int(params["max_parallel"]), batch_concurrency=batch_concurrency,
        rate_limit_per_s=rate, credentials_problem=problem, retry_failed=bool(params.get("retry_failed")),
        requested_by=processed_by(run), max_batches=max_batches)
    run.say(report.text())
    run.push("dry_run_report", report.as_dict())
    return []  # nothing to process: the batch tasks are skipped


def queue_failed_again(run: RunContext, engine: Engine, bulk: BulkChange) -> list[int]:
    """``retry_failed``: the failed device changes queued again. A retried attempt of the task finds
    them already queued and the bulk change PROCESSING: nothing more to queue, not a refusal."""
    try:
        return processing.reset_failed(engine, bulk.id, processed_by=processed_by(run))
    except processing.RetryRefused as exc:
        if run.try_number > 1 and bulk.status.value == "PROCESSING":
            return []  # an earlier attempt of this task already queued them and started
        raise TaskFailed(str(exc)) from exc


def request_approval(run: RunContext, engine: Engine, bulk: BulkChange, result: processing.PrepareResult, *,
                     head: str, owner: str, approval_timeout_hours: float) -> approval.Assessment:
    """XCom ``approval`` for the gate: held (irreversible or large, and something to send) with the
    request's subject and body, the hold extended over the whole approval window; or not needed."""
    queued, words = approval.queued_words(engine, bulk)
    check = approval.assess(bulk, queued, words, approval.ApprovalRule.from_settings(get_settings()))
    if check.required and result.batches:
        run.say("waiting for approval: " + "; ".join(check.reasons))
        # nobody renews the hold while a person decides: hold it for the whole approval window
        processing.take_ownership(engine, bulk.id, owner, until=utcnow() + processing.LEASE_TTL
                                  + timedelta(hours=approval_timeout_hours))
        run.push("approval", {
            **check.as_dict(), "subject": f"Approve {head}",
            "body": approval.request_body(bulk, check, queued=queued, rejected=result.rejected,
                                          batches=len(result.batches))})
        run.note(f"{head}\nWAITING FOR APPROVAL: " + "; ".join(check.reasons))
    else:
        run.push("approval", {**check.as_dict(), "required": False, "why_not": NO_APPROVAL_NEEDED})
    return check


# --- wait_for_carrier ------------------------------------------------------------------------------

def carrier_done(run: RunContext, params: Mapping[str, Any]) -> bool:
    """The ``wait_for_carrier`` poke: True when nothing this run sent is still waiting on the carrier
    (changes scheduled for a later date at the carrier are left to device_status_reconcile)."""
    owner = run.pull("prepare", "owner")
    if params.get("dry_run") or owner is None:  # a dry run, or a run that never took the bulk change
        return True
    engine = run.engine()
    try:  # each poll renews the hold; a run whose bulk change was taken over stops polling
        processing.take_ownership(engine, int(params["bulk_change_id"]), owner)
    except (processing.NotOwner, bulk_changes.BulkChangeNotFound) as exc:
        run.say(f"not waiting: {exc}")
        return True
    with engine.connect() as conn:
        try:
            bulk = bulk_changes.load_bulk_change(conn, int(params["bulk_change_id"] or 0))
        except bulk_changes.BulkChangeNotFound:
            return True
        waiting = device_changes.load_device_changes(conn, bulk, statuses=[DeviceChangeStatus.PENDING_CARRIER.value])
    if not waiting:
        return True
    from bulkchange import reconcile

    with run.clients(bulk.service_provider_id, bulk.integration) as clients:
        summary = reconcile.settle_bulk(engine, bulk.id, clients.carrier, include_activations=False,
                                        count_checks=False, revio_client=clients.revio,
                                        revio_problem=clients.revio_problem)
    run.say(f"carrier requests: settled {summary.settled}, still waiting {summary.still_waiting}")
    return summary.still_waiting <= summary.not_due


# --- finalize --------------------------------------------------------------------------------------

def swept_message(summary: Mapping[str, Any]) -> str:
    return (f"{summary['swept']} device changes were left unprocessed and are now ERROR ("
            + "; ".join(f"{n}: {reason}" for reason, n in summary["swept_by_reason"].items())
            + f"); bulk change is {summary['status']}")


def finalize(run: RunContext, params: Mapping[str, Any], *, approval_timeout_hours: float) -> dict[str, Any]:
    """The ``finalize`` task: the dry run's report, or the bulk change rolled up after the approval
    answer (a rejection recorded on every open device change) with its notifications sent."""
    head = run.pull("prepare", "run_note_head") or f"Bulk change {params['bulk_change_id']}"
    started = run.started
    took = (utcnow() - started.replace(tzinfo=None)).total_seconds() if started else None
    if params.get("dry_run"):  # a dry run changes nothing: no sweep, no roll-up, no notification
        report = run.pull("prepare", "dry_run_report")
        if report is None:
            raise TaskFailed("dry run: prepare produced no report (see its log)")
        run.note(run_notes.dry_run(head, report, took))
        return report
    engine = run.engine()
    bulk_id = int(params["bulk_change_id"] or 0)
    owner = run.pull("prepare", "owner")
    if owner is None:  # prepare stopped before taking the bulk change (its log says why)
        raise TaskFailed(f"this run did not take bulk change {bulk_id} (see the log of prepare): "
                         f"nothing swept, nothing rolled up")
    try:  # taken over by another run after this one's hold expired: that run finalizes
        processing.take_ownership(engine, bulk_id, owner)
    except (processing.NotOwner, bulk_changes.BulkChangeNotFound) as exc:
        raise TaskFailed(str(exc)) from exc
    answer = run.pull("approve", approval.ANSWER_KEY) or run.pull("approve")
    refused = approval.rejection_reason(answer, approval_timeout_hours)
    if refused:  # rejected or timed out: nothing was sent; every open device change records who and why
        n = approval.reject(engine, int(params["bulk_change_id"]), refused, processed_by=processed_by(run))
        run.say(f"{refused}: {n} device changes marked ERROR")
    try:
        summary = processing.finalize(engine, bulk_id, owner=owner, outcome_message=refused)
    except (bulk_changes.BulkChangeNotFound, processing.NotOwner) as exc:  # nothing to settle; retrying cannot help
        raise TaskFailed(str(exc)) from exc
    # status webhooks and the completion summary; a failed send never fails the run
    summary["notifications"] = run.notify(engine, [summary["bulk_change_id"]])
    run.say(f"bulk change {summary['bulk_change_id']} -> {summary['status']}: "
            f"{processing.summary_line(summary['counts'])}")
    run.note(run_notes.outcome(head, summary["status"], summary["counts"], took))
    if summary["swept"]:
        raise TaskFailed(swept_message(summary))
    return summary
