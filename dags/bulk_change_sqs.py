"""bulk_change_sqs: the legacy portals' entry point. Reads the queue named by
DEVICE_BULK_CHANGE_QUEUE_URL, claims each named bulk change exactly once and launches
bulk_change_process for it (run id ``bulk_change_<id>``, as bulk_change_sensor does).

A message naming a bulk change that is already claimed (a duplicate, or one the sensor took first)
is acknowledged without a second claim; while that claim is still PENDING its run is launched again
under the same run id, which Airflow skips when the run exists. A malformed message (no or bad
BulkChangeId, bad flags, unknown bulk change) is moved to the dead-letter queue
BULKCHANGE_SQS_DLQ_URL with the reason. The report of each run is in the log and in the
``handle_messages`` XCom ``report``.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

import bulkchange_plugins  # noqa: F401
from bulkchange_plugins.dag_common import dag_args, launch_processing, processing_launch
from bulkchange_plugins.sqs import LegacyQueueSensor
from bulkchange.settings import get_settings

AWS_CONN_ID, EVERY_MINUTES = get_settings().aws_conn_id, get_settings().sqs_every_minutes


@dag(
    dag_id="bulk_change_sqs",
    description="Legacy portals' SQS queue: claim each named bulk change once and launch its processing",
    **dag_args(every_minutes=EVERY_MINUTES, retries=1, retry_delay=timedelta(seconds=20)),
    doc_md=__doc__,
)
def bulk_change_sqs():
    read_queue = LegacyQueueSensor(  # the queue: DEVICE_BULK_CHANGE_QUEUE_URL, read when it runs
        task_id="read_queue",
        aws_conn_id=AWS_CONN_ID,
        max_messages=10,
        num_batches=5,
        wait_time_seconds=1,
        visibility_timeout=300,  # handled and deleted well within; otherwise delivered again
        delete_message_on_reception=False,  # deleted one by one once the outcome is recorded
        mode="reschedule",
        poke_interval=15,
        timeout=max(EVERY_MINUTES * 60 - 10, 30),
        soft_fail=True,
    )

    @task
    def handle_messages(ti=None) -> list[dict]:
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        from bulkchange_plugins.hooks import AmopHook
        from bulkchange_plugins.sqs import dead_letter_url, queue_url
        from bulkchange_plugins.sqs import handle_messages as handle

        messages = ti.xcom_pull(task_ids="read_queue", key="messages") or []
        client = SqsHook(aws_conn_id=AWS_CONN_ID).get_conn()
        report = handle(AmopHook().get_engine(), client, queue_url(), dead_letter_url() or None, messages)
        ti.xcom_push(key="report", value=report)
        return [processing_launch(i) for i in report["launch"]]

    launches = handle_messages()
    read_queue >> launches
    launch_processing(launches)


bulk_change_sqs()
