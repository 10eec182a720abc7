"""customer_rate_plan_scheduler: apply future-dated customer rate plan changes on their date.

A CustomerRatePlanChange (or a CustomerAssignment's rate plan) whose ``EffectiveDate`` lies in the
future is stored in ``Device_CustomerRatePlanOrRatePool_Queue`` and its device change waits as
``SCHEDULED``. Every run (hourly by default, env ``BULKCHANGE_CUSTOMER_RATE_PLAN_EVERY_MINUTES``)
applies every queued change whose date has come (all of them, in chunks; the legacy queue took only
the first 100), marks the device changes ``PROCESSED``, rolls their bulk changes up and sends the
status notifications. Idempotent; trigger it by hand to apply due changes now.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

import bulkchange_plugins  # noqa: F401
from bulkchange_plugins.dag_common import dag_args
from bulkchange.settings import get_settings

EVERY_MINUTES = get_settings().customer_rate_plan_every_minutes


@dag(
    dag_id="customer_rate_plan_scheduler",
    description="Apply future-dated customer rate plan changes when their effective date comes",
    **dag_args(every_minutes=EVERY_MINUTES, retries=2, retry_delay=timedelta(seconds=60)),
    doc_md=__doc__,
)
def customer_rate_plan_scheduler():
    @task
    def apply_due_changes() -> dict:
        from bulkchange.changes.customer_rate_plan import apply_due
        from bulkchange_plugins.hooks import AmopHook
        from bulkchange_plugins.notifiers import send_pending_notifications

        engine = AmopHook().get_engine()
        summary = apply_due(engine).as_dict()
        print(f"customer rate plans applied: {summary['applied']}, failed: {summary['failed']}, "
              f"bulk changes now {summary['bulk_changes']}")
        if summary["bulk_changes"]:
            summary["notifications"] = send_pending_notifications(engine, list(summary["bulk_changes"]))
        return summary

    apply_due_changes()


customer_rate_plan_scheduler()
