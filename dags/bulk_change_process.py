"""bulk_change_process: apply one bulk change (prepare -> process_batch x N -> finalize).

Launched by bulk_change_sensor with conf {"bulk_change_id": N}, or by hand from the UI form /
``airflow dags trigger bulk_change_process -c '{"bulk_change_id": N}'``. Re-running it for the
same bulk change only touches device changes that are not settled yet.

``dry_run``: validate and plan only (batches, carrier calls, estimated duration); no carrier call
and no change to the bulk change, only the report (``DeviceBulkChangeDryRun``, the task log, and
XCom ``dry_run_report`` of ``prepare`` / the return value of ``finalize``).
``retry_failed``: queue the API_FAILED / ERROR device changes of a finished bulk change again and
process only those; earlier log rows are kept.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowFailException

import bulkchange_plugins  # noqa: F401  (puts include/ on sys.path when PYTHONPATH lacks it)
from bulkchange.batch_sizing import MAX_BATCH_SIZE, override_from_conf
from bulkchange_plugins.approval import ANSWER_KEY as APPROVAL_ANSWER_KEY
from bulkchange_plugins.approval import BulkChangeApprovalOperator
from bulkchange_plugins.dag_common import dag_args
from bulkchange_plugins.timeouts import BATCH_TIMEOUT
from bulkchange_plugins.operators import CarrierBatchOperator
from bulkchange.settings import get_settings

# How many batch tasks of one run may call the carrier at once (each gets 1/N of the account's rate
# limit so one run never exceeds the account's requests/s); how long a run waits for asynchronous
# carrier requests before leaving them to reconciliation; an approval request not answered within
# this long is rejected (docs/operations.md, approvals).
BATCH_CONCURRENCY, WAIT_FOR_CARRIER_S, APPROVAL_TIMEOUT_HOURS = (
    get_settings().batch_concurrency, get_settings().wait_for_carrier_seconds, get_settings().approval_timeout_hours)


@dag(
    dag_id="bulk_change_process",
    description="Apply one bulk change: validate, call the carrier in batches, roll up (conf: bulk_change_id)",
    schedule=None,
    max_active_runs=16,
    **dag_args(retries=2, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True),
    render_template_as_native_obj=True,
    doc_md=__doc__,
    params={
        "bulk_change_id": Param(None, type="integer", minimum=1, title="Bulk change id",
                                description="DeviceBulkChange.Id to process"),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=MAX_BATCH_SIZE, title="Batch size",
                            description="Optional override: devices per mapped task (1 = one task per device). "
                                        "Empty: chosen from the account's rate limit, about a minute of "
                                        "carrier work per task (bulkchange.batch_sizing)"),
        "max_parallel": Param(10, type="integer", minimum=1, maximum=100, title="Parallel requests",
                              description="Carrier requests in flight at once inside one batch task"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Validate and plan only: no carrier call, nothing changed but the report"),
        "retry_failed": Param(False, type="boolean", title="Retry failed devices",
                              description="Process again only the API_FAILED / ERROR devices of a finished "
                                          "bulk change"),
    },
)
def bulk_change_process():
    @task
    def prepare(params=None, ti=None, dag_run=None) -> list[dict]:
        from bulkchange import processing
        from bulkchange.db import bulk_changes, progress
        from bulkchange.limits import LimitError, check_conf
        from bulkchange_plugins.hooks import AmopHook, carrier_hook

        try:  # a huge conf field is refused by name before anything is read or written
            check_conf(getattr(dag_run, "conf", None) or {}, known={})
        except LimitError as exc:
            raise AirflowFailException(f"refused: {exc}") from exc
        bulk_id = params["bulk_change_id"]
        if not bulk_id:
            raise AirflowFailException("conf must name a bulk change: {\"bulk_change_id\": N}")
        engine = AmopHook().get_engine()
        with engine.connect() as conn:
            try:
                bulk = bulk_changes.load_bulk_change(conn, int(bulk_id))
            except bulk_changes.BulkChangeNotFound as exc:
                raise AirflowFailException(str(exc)) from exc
        from bulkchange import authz

        user = getattr(dag_run, "triggering_user_name", None)
        print(f"bulk change {bulk.id} (CreatedBy {bulk.created_by}): run {ti.run_id} triggered by "
              f"{user or 'Airflow (sensor / SQS / submit)'}")
        refused = authz.service_provider_problem(user, bulk.service_provider_id, authz.load_allowed())
        if refused:
            raise AirflowFailException(f"refused: {refused}")
        from bulkchange.changes import needs_carrier

        carrier = carrier_hook(bulk.service_provider_id, bulk.integration)
        uses_carrier = needs_carrier(bulk.change_type, bulk.integration)
        # DB-only change types (no carrier call) need no carrier connection
        problem = carrier.credentials_problem(bulk.integration) if uses_carrier else None
        # what sizes the batches (bulkchange.batch_sizing): the account's rate and Airflow's map limit
        rate = None if problem or not uses_carrier else carrier.get_settings().rate_limit_per_s
        from airflow.configuration import conf

        max_map_length = conf.getint("core", "max_map_length", fallback=1024)
        from bulkchange import run_notes
        from bulkchange_plugins.airflow_api import write_run_note

        with engine.connect() as conn:
            head = run_notes.head_for(bulk, progress.load_progress(conn, bulk.id)["TotalCount"], params)
        ti.xcom_push(key="run_note_head", value=head)
        write_run_note(ti.dag_id, ti.run_id, head)  # the grid shows what this run is
        if params.get("dry_run"):
            from bulkchange import dryrun

            report = dryrun.dry_run_bulk_change(
                engine, bulk.id, batch_size=override_from_conf(params.get("batch_size")),
                max_parallel=int(params["max_parallel"]), batch_concurrency=BATCH_CONCURRENCY,
                rate_limit_per_s=rate, credentials_problem=problem, retry_failed=bool(params.get("retry_failed")),
                requested_by=f"bulk_change_process:{ti.run_id}", max_batches=max_map_length)
            print(report.text())
            ti.xcom_push(key="dry_run_report", value=report.as_dict())
            return []  # nothing to process: the batch tasks are skipped
        if not bulk.process_changes:  # held by the portal: a manual run, the sensor and SQS all stop here
            raise AirflowFailException(processing.held_message(bulk.id))
        # one run per bulk change: a second run stops here, before any write (docs/operations.md)
        owner = processing.run_owner(ti.run_id)
        try:
            processing.take_ownership(engine, bulk.id, owner)
        except processing.NotOwner as exc:
            write_run_note(ti.dag_id, ti.run_id, f"{head}\nREFUSED: {exc}")
            raise AirflowFailException(str(exc)) from exc
        ti.xcom_push(key="owner", value=owner)  # the later tasks act only for a run that owns it
        if params.get("retry_failed"):
            try:
                again = processing.reset_failed(engine, bulk.id, processed_by=f"bulk_change_process:{ti.run_id}")
            except processing.RetryRefused as exc:
                if ti.try_number > 1 and bulk.status.value == "PROCESSING":
                    again = []  # an earlier attempt of this task already queued them and started
                else:
                    raise AirflowFailException(str(exc)) from exc
            print(f"retry: {len(again)} failed device changes of bulk change {bulk.id} queued again")
        try:
            result = processing.prepare(engine, bulk.id, batch_size=override_from_conf(params.get("batch_size")),
                                        credentials_problem=problem, owner=owner, max_batches=max_map_length,
                                        rate_limit_per_s=rate, batch_concurrency=BATCH_CONCURRENCY)
        except (processing.BulkChangeHeld, processing.NotOwner) as exc:
            raise AirflowFailException(str(exc)) from exc
        for note in result.notes:  # the batch size chosen and why (rate limit, bounds, max_map_length)
            print(note)
        ti.xcom_push(key="batch_size", value={"batch_size": result.batch_size, "reason": result.notes[0]}
                     if result.notes else {"batch_size": result.batch_size})
        print(f"bulk change {bulk.id} ({bulk.change_type.value} on {bulk.integration.value}, "
              f"{bulk.service_provider_name}): {result.queued} queued, {result.rejected} rejected, "
              f"{len(result.batches)} batches")
        if result.preflight_error:
            print(f"stopped before any carrier call: {result.preflight_error}")
        from bulkchange import approval  # irreversible or large: held at the approval gate

        queued, words = approval.queued_words(engine, bulk)
        check = approval.assess(bulk, queued, words, approval.ApprovalRule.from_settings(get_settings()))
        if check.required and result.batches:
            print("waiting for approval: " + "; ".join(check.reasons))
            # nobody renews the hold while a person decides: hold it for the whole approval window
            from bulkchange.models import utcnow

            processing.take_ownership(engine, bulk.id, owner, until=utcnow() + processing.LEASE_TTL
                                      + timedelta(hours=APPROVAL_TIMEOUT_HOURS))
            ti.xcom_push(key="approval", value={
                **check.as_dict(), "subject": f"Approve {head}",
                "body": approval.request_body(bulk, check, queued=queued, rejected=result.rejected,
                                              batches=len(result.batches))})
            write_run_note(ti.dag_id, ti.run_id, f"{head}\nWAITING FOR APPROVAL: " + "; ".join(check.reasons))
        else:
            ti.xcom_push(key="approval", value={**check.as_dict(), "required": False,
                                                "why_not": "no approval needed: reversible and within the size limit"})
        return [{"bulk_change_id": b.bulk_change_id, "device_change_ids": b.device_change_ids,
                 "batch_label": b.label} for b in result.batches]

    batches = prepare()
    # held only when prepare says so (bulkchange.approval); Reject or a timeout skips the batches
    approve = BulkChangeApprovalOperator(task_id="approve", response_timeout=timedelta(hours=APPROVAL_TIMEOUT_HOURS))

    processed = CarrierBatchOperator.partial(
        task_id="process_batch",
        trigger_rule="none_failed",  # runs when the approval gate was skipped (not needed)
        max_parallel="{{ params.max_parallel }}",
        rate_share=BATCH_CONCURRENCY,
        max_active_tis_per_dagrun=BATCH_CONCURRENCY,
        execution_timeout=BATCH_TIMEOUT,
        map_index_template="{{ task.batch_label }}",
    ).expand_kwargs(batches)

    @task.sensor(poke_interval=15, timeout=WAIT_FOR_CARRIER_S, mode="reschedule", soft_fail=True,
                 trigger_rule="all_done")
    def wait_for_carrier(params=None, ti=None) -> PokeReturnValue:
        """Asynchronous carriers (ThingSpace suspend/restore/deactivate): poll their requests without
        holding a worker slot. Activations are left to device_status_reconcile."""
        from bulkchange import processing, reconcile
        from bulkchange.db import bulk_changes, device_changes
        from bulkchange.models import DeviceChangeStatus
        from bulkchange_plugins.hooks import AmopHook, carrier_clients

        owner = ti.xcom_pull(task_ids="prepare", key="owner")
        if params.get("dry_run") or owner is None:  # a dry run, or a run that never took the bulk change
            return PokeReturnValue(is_done=True)
        engine = AmopHook().get_engine()
        try:  # each poll renews the hold; a run whose bulk change was taken over stops polling
            processing.take_ownership(engine, int(params["bulk_change_id"]), owner)
        except (processing.NotOwner, bulk_changes.BulkChangeNotFound) as exc:
            print(f"not waiting: {exc}")
            return PokeReturnValue(is_done=True)
        with engine.connect() as conn:
            try:
                bulk = bulk_changes.load_bulk_change(conn, int(params["bulk_change_id"] or 0))
            except bulk_changes.BulkChangeNotFound:
                return PokeReturnValue(is_done=True)
            waiting = device_changes.load_device_changes(conn, bulk,
                                                         statuses=[DeviceChangeStatus.PENDING_CARRIER.value])
        if not waiting:
            return PokeReturnValue(is_done=True)
        with carrier_clients(bulk.service_provider_id, bulk.integration) as clients:
            summary = reconcile.settle_bulk(engine, bulk.id, clients.carrier, include_activations=False,
                                            count_checks=False, revio_client=clients.revio,
                                            revio_problem=clients.revio_problem)
        print(f"carrier requests: settled {summary.settled}, still waiting {summary.still_waiting}")
        # changes scheduled for a later date at the carrier are left to device_status_reconcile
        return PokeReturnValue(is_done=summary.still_waiting <= summary.not_due)

    @task(trigger_rule="all_done", retries=3)
    def finalize(params=None, ti=None, dag_run=None) -> dict:
        from bulkchange import processing, run_notes
        from bulkchange.models import utcnow
        from bulkchange_plugins.airflow_api import write_run_note
        from bulkchange_plugins.hooks import AmopHook

        head = ti.xcom_pull(task_ids="prepare", key="run_note_head") or f"Bulk change {params['bulk_change_id']}"
        started = dag_run.start_date if dag_run is not None else None
        took = (utcnow() - started.replace(tzinfo=None)).total_seconds() if started else None
        if params.get("dry_run"):  # a dry run changes nothing: no sweep, no roll-up, no notification
            report = ti.xcom_pull(task_ids="prepare", key="dry_run_report")
            if report is None:
                raise AirflowFailException("dry run: prepare produced no report (see its log)")
            write_run_note(ti.dag_id, ti.run_id, run_notes.dry_run(head, report, took))
            return report

        from bulkchange import approval
        from bulkchange.db.bulk_changes import BulkChangeNotFound
        from bulkchange_plugins.notifiers import send_pending_notifications

        engine = AmopHook().get_engine()
        bulk_id = int(params["bulk_change_id"] or 0)
        owner = ti.xcom_pull(task_ids="prepare", key="owner")
        if owner is None:  # prepare stopped before taking the bulk change (its log says why)
            raise AirflowFailException(f"this run did not take bulk change {bulk_id} (see the log of prepare): "
                                       f"nothing swept, nothing rolled up")
        try:  # taken over by another run after this one's hold expired: that run finalizes
            processing.take_ownership(engine, bulk_id, owner)
        except (processing.NotOwner, BulkChangeNotFound) as exc:
            raise AirflowFailException(str(exc)) from exc
        answer = ti.xcom_pull(task_ids="approve", key=APPROVAL_ANSWER_KEY) or ti.xcom_pull(task_ids="approve")
        refused = approval.rejection_reason(answer, APPROVAL_TIMEOUT_HOURS)
        if refused:  # rejected or timed out: nothing was sent; every open device change records who and why
            n = approval.reject(engine, int(params["bulk_change_id"]), refused,
                                processed_by=f"bulk_change_process:{ti.run_id}")
            print(f"{refused}: {n} device changes marked ERROR")
        try:
            summary = processing.finalize(engine, bulk_id, owner=owner, outcome_message=refused)
        except (BulkChangeNotFound, processing.NotOwner) as exc:  # nothing to settle; retrying cannot help
            raise AirflowFailException(str(exc)) from exc
        # status webhooks and the completion summary; a failed send never fails the run
        summary["notifications"] = send_pending_notifications(engine, [summary["bulk_change_id"]])
        print(f"bulk change {summary['bulk_change_id']} -> {summary['status']}: "
              f"{processing.summary_line(summary['counts'])}")
        write_run_note(ti.dag_id, ti.run_id, run_notes.outcome(head, summary["status"], summary["counts"], took))
        if summary["swept"]:
            raise AirflowFailException(
                f"{summary['swept']} device changes were left unprocessed and are now ERROR ("
                + "; ".join(f"{n}: {reason}" for reason, n in summary["swept_by_reason"].items())
                + f"); bulk change is {summary['status']}")
        return summary

    batches >> approve >> processed
    processed >> wait_for_carrier() >> finalize()


bulk_change_process()
