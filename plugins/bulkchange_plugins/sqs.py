"""The legacy SQS entry point: read the device bulk change queue with the amazon provider's
SqsSensor, claim each named bulk change once, acknowledge or dead-letter every message.

Messages are received without deleting them (``delete_message_on_reception=False``) and deleted
one by one only after their outcome is recorded: a claimed bulk change is committed in the AMOP DB
before its message is deleted (a crash in between re-delivers the message, which is then a
duplicate and only acknowledged). A message for a claim still PENDING launches its run again with
the same run id ``bulk_change_<id>``: a no-op when the run exists, a recovery when its launch was
lost (``bulk_change_sensor``'s stale-claim check is the other one). A malformed message is first sent to the dead-letter
queue with the reason, then deleted; without a dead-letter queue configured it stays on the queue
(the queue's own redrive policy moves it after its maxReceiveCount).
"""
from __future__ import annotations

import logging
from typing import Any

from airflow.providers.amazon.aws.sensors.sqs import SqsSensor
from airflow.sdk.exceptions import AirflowSkipException

from bulkchange.settings import get_settings

log = logging.getLogger(__name__)


def queue_url() -> str:
    return get_settings().device_bulk_change_queue_url


def dead_letter_url() -> str:
    return get_settings().sqs_dlq_url


class LegacyQueueSensor(SqsSensor):
    """SqsSensor that also receives the message attributes, where the legacy fields travel. Without
    an explicit ``sqs_queue`` it reads DEVICE_BULK_CHANGE_QUEUE_URL when it runs (not at parse time)."""

    def __init__(self, *, sqs_queue: str = "", **kwargs):
        super().__init__(sqs_queue=sqs_queue, **kwargs)

    def poll_sqs(self, sqs_conn):
        kwargs = {"QueueUrl": self.sqs_queue, "MaxNumberOfMessages": self.max_messages,
                  "WaitTimeSeconds": self.wait_time_seconds, "MessageAttributeNames": ["All"]}
        if self.visibility_timeout is not None:
            kwargs["VisibilityTimeout"] = self.visibility_timeout
        return sqs_conn.receive_message(**kwargs)

    def poke(self, context):
        self.sqs_queue = self.sqs_queue or queue_url()
        if not self.sqs_queue:
            raise AirflowSkipException("DEVICE_BULK_CHANGE_QUEUE_URL is not set: no legacy queue to read")
        return super().poke(context)


def handle_messages(engine, sqs_client, queue_url: str, dlq_url: str | None, messages: list[dict]) -> dict[str, Any]:
    """Claim, acknowledge or dead-letter each message; returns the report and ``launch``, the bulk
    change ids to launch (claimed now, or claimed earlier and still PENDING: the deterministic run id
    makes a second launch a no-op). One message's SQS failure does not stop the others."""
    from bulkchange import legacy_queue as lq

    report: dict[str, Any] = {"launched": [], "acknowledged": [], "dead_lettered": [], "left_on_queue": [],
                              "launch": []}
    for message in messages:
        mid = message.get("MessageId")
        try:
            parsed = lq.parse_message(message)
        except lq.MalformedMessage as exc:
            decision = lq.Decision(lq.DEAD_LETTER, f"malformed message: {exc}")
            parsed = None
        else:
            with engine.begin() as conn:
                decision = lq.decide(conn, parsed)
        entry = {"message_id": mid, "bulk_change_id": decision.bulk_change_id, "reason": decision.reason,
                 "request_id": parsed.request_id if parsed else None}
        if decision.action == lq.LAUNCH or decision.relaunch:
            if decision.bulk_change_id not in report["launch"]:
                report["launch"].append(decision.bulk_change_id)
        if decision.action == lq.DEAD_LETTER:
            if not dlq_url:
                log.error("message %s: %s; no dead-letter queue configured (BULKCHANGE_SQS_DLQ_URL): left on "
                          "the queue for its redrive policy", mid, decision.reason)
                report["left_on_queue"].append(entry)
                continue
            try:
                sqs_client.send_message(QueueUrl=dlq_url, MessageBody=lq.dead_letter_body(message, decision.reason))
            except Exception as exc:  # noqa: BLE001  not deleted: it comes back and is tried again
                log.error("message %s could not be dead-lettered (%s): left on the queue", mid, exc)
                report["left_on_queue"].append({**entry, "error": str(exc)})
                continue
            log.error("message %s moved to the dead-letter queue: %s", mid, decision.reason)
            report["dead_lettered"].append(entry)
        elif decision.action == lq.LAUNCH:
            report["launched"].append(entry)
        else:
            report["acknowledged"].append(entry)
        try:
            sqs_client.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        except Exception as exc:  # noqa: BLE001  redelivered later, then only acknowledged
            log.warning("message %s handled but not deleted (%s): it will be delivered again", mid, exc)
            entry["not_deleted"] = str(exc)
    for kind in ("launched", "acknowledged", "dead_lettered", "left_on_queue"):
        for e in report[kind]:
            print(f"{kind}: message {e['message_id']} bulk change {e['bulk_change_id']}: {e['reason']}")
    print(f"launching bulk_change_process for {report['launch']}")
    return report
