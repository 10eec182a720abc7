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

import bulkchange_plugins  # noqa: F401  (puts include/ on sys.path when PYTHONPATH lacks it)
from bulkchange.batch_sizing import MAX_BATCH_SIZE
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
        # validate and plan (bulkchange.process_run.prepare); a dry run plans only
        from bulkchange_plugins import tasks

        return tasks.prepare(params, ti, dag_run, batch_concurrency=BATCH_CONCURRENCY,
                                     approval_timeout_hours=APPROVAL_TIMEOUT_HOURS)

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
        from bulkchange_plugins import tasks

        return tasks.wait_for_carrier(params, ti)

    @task(trigger_rule="all_done", retries=3)
    def finalize(params=None, ti=None, dag_run=None) -> dict:
        # sweep, roll up, notify (bulkchange.process_run.finalize); a dry run returns its report
        from bulkchange_plugins import tasks

        return tasks.finalize(params, ti, dag_run, approval_timeout_hours=APPROVAL_TIMEOUT_HOURS)

    batches >> approve >> processed
    processed >> wait_for_carrier() >> finalize()


bulk_change_process()
