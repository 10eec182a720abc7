"""customer_rate_plan_scheduler: apply future-dated customer rate plan changes on their date.

A CustomerRatePlanChange (or a CustomerAssignment's rate plan) whose ``EffectiveDate`` lies in the
future is stored in ``Device_CustomerRatePlanOrRatePool_Queue`` and its device change waits as
``SCHEDULED``. Every run (hourly by default, env ``BULKCHANGE_CUSTOMER_RATE_PLAN_EVERY_MINUTES``)
applies every queued change whose date has come (all of them, in chunks; the legacy queue took only
the first 100), marks the device changes ``PROCESSED``, rolls their bulk changes up and sends the
status notifications. Idempotent; trigger it by hand to apply due changes now.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

import bulkchange_plugins  # noqa: F401
from bulkchange_plugins.timeouts import TASK_TIMEOUT
from bulkchange_plugins.notifiers import dag_failure_notifier, failure_notifier

EVERY_MINUTES = int(os.environ.get("BULKCHANGE_CUSTOMER_RATE_PLAN_EVERY_MINUTES", "60"))


@dag(
    dag_id="customer_rate_plan_scheduler",
    description="Apply future-dated customer rate plan changes when their effective date comes",
    schedule=timedelta(minutes=EVERY_MINUTES),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "bulkchange", "execution_timeout": TASK_TIMEOUT,
                  "retries": 2, "retry_delay": timedelta(seconds=60),
                  "on_failure_callback": failure_notifier()},
    on_failure_callback=dag_failure_notifier(),
    tags=["bulkchange"],
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
