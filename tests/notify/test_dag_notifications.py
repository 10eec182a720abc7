"""Notifications through Airflow (dag.test) and real receivers: the SMTP server on loopback
(aiosmtpd) and an HTTP webhook receiver, with the Jasper simulator over HTTP."""
import json
from types import SimpleNamespace

import pytest

from bulkchange.db import bulk_changes, claims
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
KEY = "notify-secret-api-key-7"
N = 6


@pytest.fixture
def wired(sqlite_engine, simulator, smtp_server, webhook_receiver, monkeypatch):
    control = simulator.control("jasper")
    control.reset()
    simulator.set_account("jasper", "notify", KEY)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "notify", "password": KEY}))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.conn_json)
    monkeypatch.setenv("AIRFLOW_CONN_BULKCHANGE_WEBHOOK", webhook_receiver.conn_json)
    monkeypatch.setenv("BULKCHANGE_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("BULKCHANGE_SUMMARY_EMAILS", "summary@example.com")
    monkeypatch.setenv("BULKCHANGE_ALERT_EMAILS", "alerts@example.com")
    return SimpleNamespace(engine=sqlite_engine, control=control, smtp=smtp_server, hook=webhook_receiver)


def _seed(w, bad_iccid="12345"):
    iccids = [seed.make_iccid(60_000 + i) for i in range(N)]
    w.control.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in iccids])
    with w.engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="notify-sp", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=1, tenant_id=1)
        requests = [{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in iccids]
        requests.append({"ICCID": bad_iccid, "ChangeRequest": {"UpdateStatus": "Suspend"}})
        return seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=requests)


def test_processing_sends_each_status_once_and_a_summary(dagbag, wired):
    from airflow.sdk import DagRunState

    bulk_id = _seed(wired)
    assert claims.claim_new_bulk_changes(wired.engine) == [bulk_id]  # as the sensor or the SQS entry would
    wired.hook.script = [503]  # the receiver hiccups once: retried inside the same send
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert run.state == DagRunState.SUCCESS
    assert wired.hook.refused == [503]
    assert wired.hook.statuses(bulk_id) == ["PENDING", "PROCESSING", "PROCESSED_WITH_ERRORS"]
    final = wired.hook.received[-1]["json"]
    assert final["counts"] == {"ERROR": 1, "PROCESSED": N} and final["carrier"] == "Jasper"

    summaries = [(r, m) for r, m in wired.smtp.inbox.messages if r == ["summary@example.com"]]
    assert len(summaries) == 1
    msg = summaries[0][1]
    assert msg["Subject"] == (f"[bulkchange] bulk change {bulk_id} PROCESSED_WITH_ERRORS: StatusUpdate on Jasper, "
                              f"{N} of {N + 1} processed")
    body = msg.get_body(preferencelist=("html",)).get_content()
    assert f"<tr><td>PROCESSED</td><td align='right'>{N}</td></tr>" in body
    assert "12345" in body and "Failures (1)" in body
    assert KEY not in body

    # a re-run of the finished bulk change changes no status: nothing more is sent
    again = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert again.state == DagRunState.SUCCESS
    assert len(wired.hook.received) == 3
    assert len([r for r, _ in wired.smtp.inbox.messages if r == ["summary@example.com"]]) == 1


def test_webhook_down_does_not_fail_the_run(dagbag, wired):
    from airflow.sdk import DagRunState

    bulk_id = _seed(wired)
    wired.hook.script = [500] * 50
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert run.state == DagRunState.SUCCESS
    with wired.engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "PROCESSED_WITH_ERRORS"
    assert wired.hook.received == []
    # the summary email does not depend on the webhook
    assert len([r for r, _ in wired.smtp.inbox.messages if r == ["summary@example.com"]]) == 1
    # once the receiver is back, the next sweep delivers the held statuses in order
    wired.hook.script = []
    from bulkchange_plugins.notifiers import send_pending_notifications

    send_pending_notifications(wired.engine)
    assert wired.hook.statuses(bulk_id) == ["PROCESSING", "PROCESSED_WITH_ERRORS"]


def test_failed_run_emails_at_task_and_dag_level(dagbag, wired):
    from airflow.sdk import DagRunState

    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": 424242})
    assert run.state == DagRunState.FAILED
    alerts = {m["Subject"]: m for r, m in wired.smtp.inbox.messages if r == ["alerts@example.com"]}
    assert "[bulkchange] bulk_change_process failed: prepare" in alerts  # task level
    dag_level = alerts["[bulkchange] bulk_change_process run failed: bulk change 424242"]
    body = dag_level.get_body(preferencelist=("html",)).get_content()
    assert "last failed task: finalize" in body  # prepare and finalize both fail on an unknown bulk change
    assert f"/dags/bulk_change_process/runs/{run.run_id}" in body.replace("%3A", ":").replace("%2B", "+")


def test_failure_email_names_carrier_and_change_type(wired):
    """The task-level notifier with the context Airflow gives it, for a bulk change that exists."""
    from bulkchange_plugins.notifiers import failure_notifier

    bulk_id = _seed(wired)
    ti = SimpleNamespace(task_id="process_batch", run_id="bulk_change_%d" % bulk_id, log_url="http://af/log")
    context = {"dag": SimpleNamespace(dag_id="bulk_change_process"), "ti": ti, "run_id": ti.run_id,
               "params": {"bulk_change_id": bulk_id},
               "exception": RuntimeError(f"carrier said 401 with Authorization: Basic {KEY}")}
    failure_notifier().notify(context)
    (rcpts, msg), = wired.smtp.inbox.messages
    assert rcpts == ["alerts@example.com"]
    assert msg["Subject"] == "[bulkchange] bulk_change_process failed: process_batch"
    body = msg.get_body(preferencelist=("html",)).get_content()
    for text in (f"<td>{bulk_id}</td>", "<td>Jasper</td>", "<td>StatusUpdate</td>", "<td>notify-sp (1)</td>",
                 "RuntimeError: carrier said 401", f"/dags/bulk_change_process/runs/bulk_change_{bulk_id}",
                 'href="http://af/log"'):
        assert text in body, text
    assert KEY not in body
