"""bulk_change_submit and the dry-run / retry flags of bulk_change_process under dag.test().

Real parts: Airflow's in-process runner (params, XCom, mapping, TriggerDagRunOperator), the
Jasper simulator over HTTP and the AMOP DB (SQLite; PostgreSQL too for the submit-to-processed
path)."""
import json

import pytest
from sqlalchemy import func, select, text

from bulkchange.db import bulk_changes, claims, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import Integration
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow
KEY = "submit-dag-key-77"
ICCIDS = [seed.make_iccid(62_000 + i) for i in range(12)]
OFF = {"dry_run": False, "retry_failed": False}  # dag.test() conf is per run; be explicit anyway


@pytest.fixture
def jasper(simulator):
    control = simulator.control("jasper")
    control.reset()
    simulator.set_account("jasper", "submit", KEY)
    return control


@pytest.fixture
def env(monkeypatch, simulator, jasper):
    def setup(engine, rate_limit=None):
        monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(engine))
        extra = {"rate_limit_per_s": rate_limit} if rate_limit else {}
        monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_2", json.dumps({
            "conn_type": "http", "host": simulator.url_for("jasper"), "login": "submit", "password": KEY,
            "extra": extra}))
        jasper.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in ICCIDS])
        with engine.begin() as conn:
            seed.add_service_provider(conn, sp_id=2, name="ops team", integration=Integration.JASPER, tenant_id=4)
            # the CSV below names ICCIDS[6]'s MSISDN: it must be the device's own (bulkchange.tenancy)
            seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED", "MSISDN": "15550001" if i == ICCIDS[6] else None}
                                    for i in ICCIDS], sp_id=2, tenant_id=4)
    return setup


def _form(**over):
    conf = {"service_provider_id": 2, "change_type": "StatusUpdate", "change_request": {"UpdateStatus": "Suspend"},
            "devices": ICCIDS[:6], "devices_csv": "", "portal_type": "M2M", "process_now": True, "dry_run": False,
            "batch_size": 4, "max_parallel": 4, "created_by": "ops-test"}
    conf.update(over)
    return conf


def _snapshot(engine):
    names = [n for n in t.metadata.tables if n != "DeviceBulkChangeDryRun"]
    with engine.connect() as conn:
        return {n: sorted(tuple(map(str, r)) for r in conn.execute(text(f'SELECT * FROM "{n}"'))) for n in names}


def test_submit_then_process_end_to_end(dagbag, amop_engine, env, jasper, capfd):
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DagRunState

    env(amop_engine)
    unknown = seed.make_iccid(99_444)
    csv_text = f"ICCID,MSISDN\n{ICCIDS[6]},15550001\n{ICCIDS[0]},\n{unknown},\n"
    run = dagbag.dags["bulk_change_submit"].test(run_conf=_form(devices_csv=csv_text))
    assert run.state == DagRunState.SUCCESS
    out = run.get_task_instance("submit").xcom_pull(task_ids="submit")
    bulk_id = out["bulk_change_id"]
    assert out["devices"] == 9 and out["claimed"] is True
    problems = {p["device"]: p["reason"] for p in out["problems"]}
    assert set(problems) == {f"{ICCIDS[0]} (devices_csv line 3)", f"{unknown} (devices_csv line 4)"}
    assert "duplicate" in problems[f"{ICCIDS[0]} (devices_csv line 3)"] and "not found" in problems[f"{unknown} (devices_csv line 4)"]
    with amop_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "PENDING"  # claimed: the sensor leaves it
        # CreatedBy is the user who triggered the run (dag.test's), the form's name kept beside it
        assert bulk_changes.load_bulk_change(conn, bulk_id).created_by == "dag_test (for ops-test)"
    launched = DagRun.find(dag_id="bulk_change_process", run_id=f"bulk_change_{bulk_id}")
    assert len(launched) == 1 and launched[0].conf["bulk_change_id"] == bulk_id

    # what the launched run does (dag.test() does not execute triggered runs itself)
    done = dagbag.dags["bulk_change_process"].test(run_conf={**launched[0].conf, **OFF})
    assert done.state == DagRunState.SUCCESS
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "PROCESSED_WITH_ERRORS"
        assert progress.status_counts(conn, bulk) == {"PROCESSED": 7, "ERROR": 2}
        assert progress.load_progress(conn, bulk_id) == {"TotalCount": 9, "ProcessedCount": 7, "ErrorCount": 2,
                                                         "PendingCount": 0}
        msisdn = {c.iccid: c.msisdn for c in device_changes.load_device_changes(conn, bulk)}[ICCIDS[6]]
        assert msisdn == "15550001"
    assert sorted(c["iccid"] for c in jasper.calls(method="PUT")) == sorted(ICCIDS[:7])
    # each batch task logs the bulk change's progress; the last one sees it complete
    logged = capfd.readouterr().out
    assert f"bulk change {bulk_id} progress: " in logged
    assert f"bulk change {bulk_id} progress: 9 of 9 settled (7 processed, 2 failed), 0 open" in logged
    # the mapped tasks' names in the UI: carrier and device range
    names = sorted(ti.rendered_map_index for ti in done.get_task_instances() if ti.task_id == "process_batch")
    assert names[0] == "Jasper devices 1-4 of 7", names


def test_submit_without_process_now_leaves_it_new_for_the_sensor(dagbag, sqlite_engine, env, jasper):
    from airflow.sdk import DagRunState

    env(sqlite_engine)
    run = dagbag.dags["bulk_change_submit"].test(run_conf=_form(process_now=False))
    assert run.state == DagRunState.SUCCESS
    assert run.get_task_instance("launch_processing", map_index=-1).state == "skipped"
    bulk_id = run.get_task_instance("submit").xcom_pull(task_ids="submit")["bulk_change_id"]
    with sqlite_engine.connect() as conn:
        assert claims.find_new_bulk_change_ids(conn) == [bulk_id]
    assert jasper.calls() == []


def test_submit_dry_run_inserts_nothing_and_reports(dagbag, sqlite_engine, env, jasper):
    from airflow.sdk import DagRunState

    env(sqlite_engine, rate_limit=2)
    before = _snapshot(sqlite_engine)
    run = dagbag.dags["bulk_change_submit"].test(run_conf=_form(dry_run=True, devices=ICCIDS[:10]))
    assert run.state == DagRunState.SUCCESS
    out = run.get_task_instance("submit").xcom_pull(task_ids="submit")
    assert out["bulk_change_id"] is None and out["claimed"] is False
    report = out["dry_run"]
    assert report["would_process"] == 10 and report["batch_count"] == 3
    assert report["carrier_calls"] == {"Jasper": 10} and report["estimated_seconds"] == 5.0
    assert _snapshot(sqlite_engine) == before
    with sqlite_engine.connect() as conn:
        assert len(progress.load_dry_run_reports(conn)) == 1
    assert jasper.calls() == []


def test_submit_refusal_names_field_and_value(dagbag, sqlite_engine, env, smtp_server, monkeypatch):
    """What the schema cannot know (the provider does not exist) fails the first task, naming it."""
    from airflow.sdk import DagRunState

    env(sqlite_engine)
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.conn_json)
    run = dagbag.dags["bulk_change_submit"].test(run_conf=_form(service_provider_id=4242))
    assert run.state == DagRunState.FAILED
    assert run.get_task_instance("submit").state == "failed"
    bodies = [m.get_body(preferencelist=("html",)).get_content() for _, m in smtp_server.inbox.messages]
    assert any("service_provider_id: no such service provider (got 4242)" in b for b in bodies), bodies
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.device_bulk_change)).scalar_one() == 0


def test_process_dry_run_changes_nothing_and_calls_no_carrier(dagbag, sqlite_engine, env, jasper):
    from airflow.sdk import DagRunState

    env(sqlite_engine, rate_limit=4)
    with sqlite_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=2, tenant_id=4, change_type=seed.ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                 for i in ICCIDS[:8] + ["12"]])
    before = _snapshot(sqlite_engine)
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 3,
                                                            "dry_run": True, "retry_failed": False})
    assert run.state == DagRunState.SUCCESS
    report = run.get_task_instance("prepare").xcom_pull(task_ids="prepare", key="dry_run_report")
    assert report["would_process"] == 8 and report["rejected_count"] == 1 and report["batch_count"] == 3
    assert report["carrier_calls"] == {"Jasper": 8} and report["rate_limit_per_s"] == 4
    assert run.get_task_instance("finalize").xcom_pull(task_ids="finalize") == report  # no roll-up either
    assert _snapshot(sqlite_engine) == before  # status NEW, device changes NEW, no log rows
    assert jasper.calls() == []
    with sqlite_engine.connect() as conn:
        stored = progress.load_dry_run_reports(conn, bulk_change_id=bulk_id)
    assert len(stored) == 1 and stored[0]["report"]["batch_count"] == 3


def test_retry_failed_end_to_end(dagbag, sqlite_engine, env, jasper):
    from airflow.sdk import DagRunState

    env(sqlite_engine)
    with sqlite_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=2, tenant_id=4, change_type=seed.ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                 for i in ICCIDS[:5]])
    jasper.configure(fail_iccids={ICCIDS[1]: 400, ICCIDS[3]: 404})
    dag = dagbag.dags["bulk_change_process"]
    first = dag.test(run_conf={"bulk_change_id": bulk_id, "batch_size": 2, **OFF})
    assert first.state == DagRunState.SUCCESS
    with sqlite_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "PROCESSED_WITH_ERRORS"
        logs_before = conn.execute(select(t.device_bulk_change_log.c.Id)).scalars().all()
    jasper.configure(fail_iccids={})
    puts_before = len(jasper.calls(method="PUT"))

    again = dag.test(run_conf={"bulk_change_id": bulk_id, "batch_size": 2, "dry_run": False, "retry_failed": True})
    assert again.state == DagRunState.SUCCESS
    with sqlite_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "PROCESSED" and progress.status_counts(conn, bulk) == {"PROCESSED": 5}
        assert progress.load_progress(conn, bulk_id)["ProcessedCount"] == 5
        logs_after = conn.execute(select(t.device_bulk_change_log.c.Id)).scalars().all()
    assert set(logs_before) < set(logs_after)  # the earlier attempts' log rows are kept
    assert sorted(c["iccid"] for c in jasper.calls(method="PUT")[puts_before:]) == sorted([ICCIDS[1], ICCIDS[3]])


def test_submit_dag_shape(dagbag):
    dag = dagbag.dags["bulk_change_submit"]
    assert set(dag.task_ids) == {"submit", "launches", "launch_processing"}
    assert dag.task_dict["submit"].retries == 0  # a retried insert would create the bulk change twice
    assert dag.params["change_type"] == "StatusUpdate" and dag.params["portal_type"] == "M2M"
    assert dag.params.get_param("change_type").schema["enum"][0] == "StatusUpdate"
    assert len(dag.params.get_param("change_type").schema["enum"]) == 9
    assert dag.task_dict["launch_processing"].partial_kwargs["trigger_dag_id"] == "bulk_change_process"
    process = dagbag.dags["bulk_change_process"]
    assert process.params["dry_run"] is False and process.params["retry_failed"] is False
