"""device_status_reconcile: settle asynchronous carrier work and reconcile device statuses.

Scheduled (default every 15 minutes) and triggerable by hand with conf, e.g.
``{"service_provider_ids": [3], "dry_run": true}``. One mapped task per service provider:

1. settles its device changes waiting on the carrier (ThingSpace activations: active with an
   MSISDN -> PROCESSED with MSISDN and IP written; Telegence activations: active -> PROCESSED with
   the new subscriber number; Teal operation results; ``max_checks`` polls without success or a
   carrier failure -> API_FAILED with the reason) and rolls their bulk changes up;
2. compares the carrier's device states and carrier rate plans with the inventory (POND: each SIM on
   record is read); every status difference becomes a DeviceStatusHistory row (source
   Reconciliation), every rate plan difference a DeviceRatePlanHistory row, and updates the device,
   so a drift is recorded once.

Its carrier calls share the account's rate limit with running batches: with the shared (Redis)
bucket they draw from the same bucket as the batch tasks (same connection, same key); without it a
service provider whose bulk change is being processed is skipped until the next run ("waiting for
its turn"), since each task's in-process limiter knows nothing of the others.

``summarize`` returns the drift summary (carrier status -> our status counts, and carrier plan -> our
plan counts) as XCom and logs it.
Idempotent: a second run right after the first changes nothing. ``dry_run`` writes nothing.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

import bulkchange_plugins  # noqa: F401
from bulkchange_plugins.dag_common import dag_args
from bulkchange_plugins.timeouts import BATCH_TIMEOUT
from bulkchange.settings import get_settings

EVERY_MINUTES = get_settings().reconcile_every_minutes


@dag(
    dag_id="device_status_reconcile",
    description="Settle asynchronous carrier work and record device status drift per service provider",
    **dag_args(every_minutes=EVERY_MINUTES, retries=2, retry_delay=timedelta(seconds=60)),
    doc_md=__doc__,
    params={
        "service_provider_ids": Param([], type="array", items={"type": "integer"},
                                      title="Service providers", description="Empty = every active one"),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Report only; write nothing"),
        "max_checks": Param(6, type="integer", minimum=1, maximum=100,
                            title="Activation checks", description="Polls before a waiting device fails"),
    },
)
def device_status_reconcile():
    # each task calls its step of bulkchange.reconcile_run (bulkchange_plugins.tasks)
    @task
    def scope(params=None) -> list[dict]:
        from bulkchange_plugins import tasks

        return tasks.reconcile_scope(params)

    @task(map_index_template="service provider {{ task.op_kwargs['service_provider_id'] }}",
          execution_timeout=BATCH_TIMEOUT)
    def reconcile_provider(service_provider_id: int, params=None) -> dict:
        from bulkchange_plugins import tasks

        return tasks.reconcile_provider(service_provider_id, params)

    @task
    def summarize(results, params=None) -> dict:
        from bulkchange_plugins import tasks

        return tasks.reconcile_summary(results, params)

    summarize(reconcile_provider.expand_kwargs(scope()))


device_status_reconcile()
