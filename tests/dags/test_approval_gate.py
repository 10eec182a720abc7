"""The approval gate: a 1,500-device Telegence cancel ("Deactivate" is a final cancel there) waits for a
person before any carrier call; approving on the Bulk changes page runs it, rejecting records who and
why on every device change. bulk_change_process runs under dag.test() in a thread while the answer
goes through the page's API and Airflow's own HITL REST API (in process, same metadata DB)."""
from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select

from bulkchange import approval
from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from bulkchange_demo.demo import wait_for
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
N = 1500
TG = ("approval-tg-app", "approval-tg-secret-61")


def test_what_each_portal_word_does_per_carrier():
    deactivate = {integ: approval.effect(integ, "Deactivate") for integ in
                  (Integration.JASPER, Integration.POND, Integration.TEAL, Integration.TELEGENCE,
                   Integration.THINGSPACE)}
    assert {i.value: e.reversible for i, e in deactivate.items()} == {
        "Jasper": True, "Pond": True, "Teal": True, "Telegence": False, "ThingSpace": False}
    assert deactivate[Integration.TELEGENCE].carrier_status == "C"
    assert not approval.effect(Integration.JASPER, "Retired").reversible
    assert not approval.effect(Integration.POD19, "PURGED").reversible  # Jasper family
    assert approval.effect(Integration.TELEGENCE, "Suspend").reversible
    assert approval.effect(Integration.JASPER, "Teleport") is None


def _bulk(integration=Integration.TELEGENCE):
    from types import SimpleNamespace

    return SimpleNamespace(id=1, integration=integration, change_type=ChangeType.STATUS_UPDATE)


def test_the_rule_irreversible_or_more_than_the_limit():
    rule = approval.ApprovalRule()
    assert approval.assess(_bulk(), 10, {"Deactivate": 10}, rule).required
    assert approval.assess(_bulk(), 1001, {"Suspend": 1001}, rule).required
    assert not approval.assess(_bulk(), 1000, {"Suspend": 1000}, rule).required
    assert not approval.assess(_bulk(Integration.JASPER), 10, {"Deactivate": 10}, rule).required
    off = approval.ApprovalRule.from_env({"BULKCHANGE_APPROVAL_IRREVERSIBLE": "false",
                                          "BULKCHANGE_APPROVAL_MAX_DEVICES": "0"})
    assert not approval.assess(_bulk(), 5000, {"Deactivate": 5000}, off).required


@pytest.fixture
def gate_on(monkeypatch):
    monkeypatch.setenv("BULKCHANGE_APPROVAL_IRREVERSIBLE", "true")
    monkeypatch.setenv("BULKCHANGE_APPROVAL_MAX_DEVICES", "1000")


@pytest.fixture(scope="module")
def page_api(dagbag):
    """Airflow's api-server app (all users admins, as `./run airflow`) with the Bulk changes plugin."""
    from airflow.configuration import conf
    from fastapi.testclient import TestClient

    old = conf.get("core", "simple_auth_manager_all_admins", fallback="False")
    conf.set("core", "simple_auth_manager_all_admins", "True")
    try:
        from airflow.api_fastapi.app import create_app, purge_cached_app

        purge_cached_app()
        with TestClient(create_app()) as client:
            client.headers["Authorization"] = f"Bearer {client.get('/auth/token').json()['access_token']}"
            yield client
    finally:
        conf.set("core", "simple_auth_manager_all_admins", old)


@pytest.fixture
def telegence(simulator, monkeypatch, sqlite_engine, gate_on):
    tg = simulator.control("telegence")
    tg.reset()
    tg.set_accounts({TG[0]: TG[1]})
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_6", json.dumps({
        "conn_type": "http", "host": simulator.url_for("telegence"), "login": TG[0], "password": TG[1]}))
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="AT&T fleet", integration=Integration.TELEGENCE, tenant_id=1)
    return tg


def _cancel(engine, tg, offset: int) -> int:
    iccids = [seed.make_iccid(offset + i) for i in range(N)]
    numbers = {i: f"1404{offset + n:07d}" for n, i in enumerate(iccids)}
    tg.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "A"} for i in iccids])
    with engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": "A"} for i in iccids], sp_id=6,
                         tenant_id=1)
        return seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, portal_type=2,
                                    created_by="portal-user", requests=[
                                        {"ICCID": i, "ChangeRequest": {"UpdateStatus": "Deactivate"}} for i in iccids])


def _run(dagbag, bulk_id):
    """dag.test() must run in the main thread (tasks use signals)."""
    return dagbag.dags["bulk_change_process"].test(
        run_conf={"bulk_change_id": bulk_id, "batch_size": 500, "dry_run": False, "retry_failed": False})


def _answer_when_asked(page_api, bulk_id, decision, seen: dict, reason: str = "", before=None):
    """In the background: wait until the bulk change waits for approval, note what was there, answer on
    the Bulk changes page. If anything goes wrong it still answers Reject, so the run never hangs; a
    run that ends without ever asking (``seen["run_over"]`` set by the test) ends the wait."""

    def work():
        try:
            def waiting():
                if seen.get("run_over"):
                    raise AssertionError(f"bulk change {bulk_id}'s run ended without waiting for approval")
                return page_api.get(f"/bulkchange/api/bulk-changes/{bulk_id}").json()["approvals"]

            seen["approvals"] = wait_for(waiting, 900, 2, f"bulk change {bulk_id} to wait for approval")
            if before:
                seen.update(before())
            seen["answer"] = page_api.post(f"/bulkchange/api/bulk-changes/{bulk_id}/approval",
                                           json={"decision": decision, "reason": reason})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            seen["error"] = exc
            page_api.post(f"/bulkchange/api/bulk-changes/{bulk_id}/approval",
                          json={"decision": "Reject", "reason": "test error"})

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _statuses(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return bulk, progress.status_counts(conn, bulk)


def test_a_1500_device_telegence_cancel_waits_for_approval_then_runs(dagbag, page_api, telegence, sqlite_engine):
    from airflow.sdk import DagRunState

    bulk_id = _cancel(sqlite_engine, telegence, 810_000)
    seen = {}
    thread = _answer_when_asked(page_api, bulk_id, "Approve", seen, before=lambda: {
        "carrier_calls": telegence.calls(method="PATCH", limit=10),
        "statuses": _statuses(sqlite_engine, bulk_id)[1]})
    run = _run(dagbag, bulk_id)
    seen["run_over"] = True
    thread.join(timeout=60)
    assert "error" not in seen, seen["error"]
    (request,) = seen["approvals"]
    assert "cancel the line" in request["body"] and "Irreversible" in request["body"]
    assert "1,500 device changes would be sent" in request["body"]
    # nothing reached the carrier while it waited
    assert seen["carrier_calls"] == [] and seen["statuses"] == {"PENDING": N}
    assert seen["answer"].status_code == 200, seen["answer"].text

    assert run.state == DagRunState.SUCCESS
    bulk, counts = _statuses(sqlite_engine, bulk_id)
    assert bulk.status.value == "PROCESSED" and counts == {"PROCESSED": N}
    with sqlite_engine.connect() as conn:  # every line cancelled, as the carrier now reports it
        h = t.device_status_history
        assert conn.execute(select(h.c.PreviousStatus, h.c.CurrentStatus, func.count())
                            .where(h.c.BulkChangeId == bulk_id)
                            .group_by(h.c.PreviousStatus, h.c.CurrentStatus)).all() == [("A", "C", N)]
    assert len(telegence.calls(method="PATCH", limit=5000)) >= N


def test_rejecting_records_who_and_why_on_every_device_change(dagbag, page_api, telegence, sqlite_engine):
    bulk_id = _cancel(sqlite_engine, telegence, 820_000)
    seen = {}
    thread = _answer_when_asked(page_api, bulk_id, "Reject", seen, reason="wrong fleet: these lines stay")
    _run(dagbag, bulk_id)
    seen["run_over"] = True
    thread.join(timeout=60)
    assert "error" not in seen, seen["error"]
    assert seen["answer"].status_code == 200, seen["answer"].text
    bulk, counts = _statuses(sqlite_engine, bulk_id)
    assert bulk.status.value == "ERROR" and counts == {"ERROR": N}
    tbl = t.mobility_device_change
    with sqlite_engine.connect() as conn:
        reasons = conn.execute(select(tbl.c.StatusDetails, func.count()).where(tbl.c.BulkChangeId == bulk_id)
                               .group_by(tbl.c.StatusDetails)).all()
        message = conn.execute(select(t.device_bulk_change.c.ErrorMessage)
                               .where(t.device_bulk_change.c.Id == bulk_id)).scalar_one()
    (reason, n), = reasons
    assert n == N and reason.startswith("not approved: rejected by ") and reason.endswith(": wrong fleet: these lines stay")
    assert message == reason
    assert telegence.calls(method="PATCH", limit=10) == []  # no carrier call at all


def test_the_recorded_reason_names_who_and_why_or_the_timeout():
    assert approval.rejection_reason(None, 72) is None  # the gate was skipped: not needed
    assert approval.rejection_reason({"chosen_options": ["Approve"], "responded_by_user": {"name": "ops"}}, 72) is None
    assert approval.rejection_reason({"chosen_options": ["Reject"], "params_input": {"reason": "wrong fleet"},
                                      "responded_by_user": {"id": "7", "name": "ops"}}, 72) \
        == "not approved: rejected by ops: wrong fleet"
    assert approval.rejection_reason({"chosen_options": ["Reject"], "responded_by_user": None}, 72) \
        == "not approved: no answer within 72 hours (approval timed out)"


def test_a_dry_run_names_the_irreversible_actions(sqlite_engine):
    from bulkchange import dryrun

    iccids = [seed.make_iccid(830_000 + i) for i in range(3)]
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="AT&T fleet", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": f"1404{n:07d}", "Status": "A"} for n, i in enumerate(iccids)],
                         sp_id=6, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, portal_type=2,
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": w}}
                                                 for i, w in zip(iccids, ["Deactivate", "Cancel", "Suspend"])])
    report = dryrun.dry_run_bulk_change(sqlite_engine, bulk_id)
    (action,) = report.as_dict()["irreversible"]
    assert action["carrier_status"] == "C" and action["devices"] == 2 and action["word"] == "Cancel, Deactivate"
    assert "IRREVERSIBLE: cancel the line" in report.text()
