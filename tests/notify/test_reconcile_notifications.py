"""A bulk change that finishes in device_status_reconcile (ThingSpace activations, simulator over
HTTP): the processing run notifies up to WAITING_FOR_CARRIER, the reconciliation run notifies the
final status and sends the summary, each exactly once, whichever place runs again afterwards."""
import json
import time

import pytest

from bulkchange.db import bulk_changes
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json
from tests.integration.test_thingspace_status_update import ACCOUNT, SECRETS

pytestmark = pytest.mark.airflow


def test_final_status_from_reconciliation_is_notified_once(dagbag, sqlite_engine, simulator, smtp_server,
                                                           webhook_receiver, monkeypatch):
    from airflow.sdk import DagRunState

    from bulkchange_plugins.notifiers import send_pending_notifications

    ts = simulator.control("thingspace")
    ts.reset()
    ts.configure(action_delay_s=0.3)
    carrier = simulator.carrier("thingspace")
    carrier.clients["ts-key"] = SECRETS[0]
    carrier.users["ts-user"] = SECRETS[1]
    iccids = [seed.make_iccid(61_000 + i) for i in range(4)]
    ts.seed_devices([{"iccid": i, "state": "preactive", "accountName": ACCOUNT, "imei": f"35{61_010 + k:013d}"}
                     for k, i in enumerate(iccids)])
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "preactive"} for i in iccids], sp_id=4, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, requests=[
            {"ICCID": i, "ChangeRequest": {"UpdateStatus": "Active",
                                           "Request": {"servicePlan": "M2M-5GB", "mdnZipCode": "30004"}}}
            for i in iccids])
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_4", json.dumps({
        "conn_type": "http", "host": simulator.url_for("thingspace"), "login": "ts-key", "password": SECRETS[0],
        "extra": {"uws_username": "ts-user", "uws_password": SECRETS[1], "account_name": ACCOUNT}}))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.conn_json)
    monkeypatch.setenv("AIRFLOW_CONN_BULKCHANGE_WEBHOOK", webhook_receiver.conn_json)
    monkeypatch.setenv("BULKCHANGE_EMAIL_BACKEND", "smtp")
    monkeypatch.setenv("BULKCHANGE_SUMMARY_EMAILS", "summary@example.com")

    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert run.state == DagRunState.SUCCESS
    assert webhook_receiver.statuses(bulk_id) == ["PROCESSING", "WAITING_FOR_CARRIER"]
    assert smtp_server.inbox.messages == []  # not final yet: no summary

    time.sleep(0.5)  # the simulator activates after action_delay_s
    reconcile = dagbag.dags["device_status_reconcile"]
    for _ in range(5):
        assert reconcile.test(run_conf={"service_provider_ids": [4], "dry_run": False}).state == DagRunState.SUCCESS
        with sqlite_engine.connect() as conn:
            if bulk_changes.load_bulk_change(conn, bulk_id).status.value == "PROCESSED":
                break
        time.sleep(0.5)
    assert webhook_receiver.statuses(bulk_id) == ["PROCESSING", "WAITING_FOR_CARRIER", "PROCESSED"]
    summaries = [m for r, m in smtp_server.inbox.messages if r == ["summary@example.com"]]
    assert [m["Subject"] for m in summaries] == [
        f"[bulkchange] bulk change {bulk_id} PROCESSED: StatusUpdate on ThingSpace, 4 of 4 processed"]

    # both places run again: nothing is sent twice
    assert dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id}).state == DagRunState.SUCCESS
    reconcile.test(run_conf={"service_provider_ids": [4], "dry_run": False})
    send_pending_notifications(sqlite_engine)
    assert len(webhook_receiver.received) == 3
    assert len([m for r, m in smtp_server.inbox.messages if r == ["summary@example.com"]]) == 1
