"""bulk_change_sqs under dag.test() against a moto SQS server on loopback: legacy messages claim
their bulk change exactly once and launch processing; malformed ones go to the dead-letter queue."""
import json
import random

import pytest
from sqlalchemy import insert, select

from bulkchange.db import bulk_changes, claims as claims_db
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration, utcnow
from tests.dags.conftest import amop_conn_json
from tests.notify.conftest import boto_client, moto_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.airflow


def _attrs(**fields):
    return {k: {"DataType": "String", "StringValue": str(v)} for k, v in fields.items()}


@pytest.fixture
def queues(moto_server, monkeypatch):  # noqa: F811
    sqs = boto_client(moto_server, "sqs")
    suffix = random.randint(0, 10**6)
    dlq = sqs.create_queue(QueueName=f"device-bulk-change-dlq-{suffix}")["QueueUrl"]
    main = sqs.create_queue(QueueName=f"device-bulk-change-{suffix}")["QueueUrl"]
    monkeypatch.setenv("DEVICE_BULK_CHANGE_QUEUE_URL", main)
    monkeypatch.setenv("BULKCHANGE_SQS_DLQ_URL", dlq)
    return sqs, main, dlq


def _seed(engine, n_bulk=3):
    """Bulk changes with ids far from other tests' (run ids bulk_change_<id> live in one metadata DB)."""
    base = random.randint(10**6, 10**8)
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sqs", integration=Integration.JASPER, tenant_id=1)
        conn.execute(insert(t.device_bulk_change).values(
            Id=base, TenantId=1, ServiceProviderId=1, ChangeRequestTypeId=1, PortalTypeId=0, ProcessChanges=True,
            Status="PROCESSED", CreatedDate=utcnow()))
        ids = [seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": seed.make_iccid(80_000 + k),
                                               "ChangeRequest": {"UpdateStatus": "Suspend"}}])
               for k in range(n_bulk)]
    assert ids[0] == base + 1
    return ids


def _drain(sqs, url):
    out = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                  WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return out
        out.extend(got)
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _runs(run_id):
    from airflow.models import DagRun

    return DagRun.find(dag_id="bulk_change_process", run_id=run_id)


def test_messages_claim_once_launch_and_dead_letter(dagbag, sqlite_engine, queues, monkeypatch):
    from airflow.sdk import DagRunState

    sqs, main, dlq = queues
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    a, b, c = _seed(sqlite_engine)
    with sqlite_engine.begin() as conn:
        assert claims_db.claim_bulk_change(conn, c)  # the sensor got to c first
    legacy = dict(RetryNumber=0, IsRetryNewActivateThingSpaceDevice="False",
                  IsFromAutomatedUpdateDeviceStatusLambda="False")
    sqs.send_message(QueueUrl=main, MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId=a, RequestId="r-a", **legacy))
    sqs.send_message(QueueUrl=main, MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId=a, RequestId="r-a2", **legacy))
    sqs.send_message(QueueUrl=main, MessageBody=json.dumps({"BulkChangeId": b, "M2MDeviceChangeId": 5, "RetryNumber": 1}))
    sqs.send_message(QueueUrl=main, MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId=c))
    malformed = {
        "no id": dict(MessageBody="Not used", MessageAttributes=_attrs(RetryNumber=0)),
        "bad id": dict(MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId="abc")),
        "bad flag": dict(MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId=a,
                                                                           IsRetryNewActivateThingSpaceDevice="maybe")),
        "unknown": dict(MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId=a + 500)),
        "not json": dict(MessageBody="{not json"),
    }
    for m in malformed.values():
        sqs.send_message(QueueUrl=main, **m)

    run = dagbag.dags["bulk_change_sqs"].test()
    assert run.state == DagRunState.SUCCESS
    report = run.get_task_instance("handle_messages").xcom_pull(task_ids="handle_messages", key="report")
    assert sorted(e["bulk_change_id"] for e in report["launched"]) == [a, b]
    assert sorted(report["launch"]) == [a, b, c]  # c: claimed earlier and still PENDING, see below
    assert sorted(e["bulk_change_id"] for e in report["acknowledged"]) == [a, c]
    assert len(report["dead_lettered"]) == len(malformed) and report["left_on_queue"] == []

    with sqlite_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, a).status.value == "PENDING"
        assert bulk_changes.load_bulk_change(conn, b).status.value == "PENDING"
        n = t.device_bulk_change_notification
        claims = conn.execute(select(n.c.BulkChangeId).where(n.c.ToStatus == "PENDING",
                                                             n.c.BulkChangeId.in_([a, b, c]))).scalars().all()
    assert sorted(claims) == [a, b, c]  # one claim each (c by the sensor), never two
    assert len(_runs(f"bulk_change_{a}")) == 1 and len(_runs(f"bulk_change_{b}")) == 1
    # the sensor's launch of c is not part of this test (as if it was lost): started here, once
    assert len(_runs(f"bulk_change_{c}")) == 1
    assert _runs(f"bulk_change_{a}")[0].conf == {"bulk_change_id": a}

    assert _drain(sqs, main) == []  # every message was handled and deleted
    dead = [json.loads(m["Body"]) for m in _drain(sqs, dlq)]
    reasons = sorted(d["reason"] for d in dead)
    assert len(dead) == len(malformed)
    assert any("BulkChangeId is missing" in r for r in reasons)
    assert any("BulkChangeId must be an integer, got 'abc'" in r for r in reasons)
    assert any("IsRetryNewActivateThingSpaceDevice must be true or false, got 'maybe'" in r for r in reasons)
    assert any(f"bulk change {a + 500} does not exist" in r for r in reasons)
    assert any("not valid JSON" in r for r in reasons)
    assert any(d["originalAttributes"].get("BulkChangeId") == "abc" for d in dead)  # the original, whole
    assert any(d["originalBody"] == "{not json" for d in dead)

    # the same message again, later: acknowledged, no second run
    sqs.send_message(QueueUrl=main, MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId=a, **legacy))
    again = dagbag.dags["bulk_change_sqs"].test()
    assert again.state == DagRunState.SUCCESS
    report = again.get_task_instance("handle_messages").xcom_pull(task_ids="handle_messages", key="report")
    assert report["launched"] == [] and [e["bulk_change_id"] for e in report["acknowledged"]] == [a]
    assert report["launch"] == [a]  # still PENDING: launched again, and the existing run makes it a no-op
    assert again.get_task_instance("launch_processing", map_index=0).state == "skipped"
    assert len(_runs(f"bulk_change_{a}")) == 1
    assert _drain(sqs, main) == []


def test_without_dead_letter_queue_malformed_messages_stay_on_the_queue(dagbag, sqlite_engine, queues, monkeypatch):
    from airflow.sdk import DagRunState

    sqs, main, _ = queues
    monkeypatch.delenv("BULKCHANGE_SQS_DLQ_URL")
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    _seed(sqlite_engine, n_bulk=1)
    sqs.send_message(QueueUrl=main, MessageBody="Not used", MessageAttributes=_attrs(BulkChangeId="x1"))
    run = dagbag.dags["bulk_change_sqs"].test()
    assert run.state == DagRunState.SUCCESS
    report = run.get_task_instance("handle_messages").xcom_pull(task_ids="handle_messages", key="report")
    assert len(report["left_on_queue"]) == 1
    # not deleted: it comes back after its visibility timeout (shortened here) for the queue's redrive policy
    attrs = sqs.get_queue_attributes(QueueUrl=main, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
    assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"


def test_sqs_dag_shape(dagbag):
    dag = dagbag.dags["bulk_change_sqs"]
    assert set(dag.task_ids) == {"read_queue", "handle_messages", "launch_processing"}
    sensor = dag.task_dict["read_queue"]
    assert sensor.mode == "reschedule" and sensor.delete_message_on_reception is False
    assert dag.on_failure_callback and all(task.on_failure_callback for task in dag.tasks)
    assert dag.task_dict["launch_processing"].partial_kwargs["skip_when_already_exists"] is True
