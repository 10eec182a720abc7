"""The decisions of a bulk_change_process run's tasks (bulkchange.process_run) without Airflow: a
plain RunContext records what a task pushes to XCom, writes as run note and logs, over a SQLite
AMOP database. The DAG tests (tests/dags) run the same steps under Airflow."""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from bulkchange import process_run, processing
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.id_runs import ids_of_runs
from bulkchange.models import ChangeType, Integration, utcnow

SP, TENANT = 1, 1
PARAMS = {"bulk_change_id": None, "batch_size": None, "max_parallel": 10, "dry_run": False, "retry_failed": False}


class FakeCarrier:
    def __init__(self, problem=None, rate=None):
        self.problem, self.rate, self.asked = problem, rate, []

    def credentials_problem(self, integration):
        self.asked.append(integration)
        return self.problem

    def get_settings(self):
        return SimpleNamespace(rate_limit_per_s=self.rate)


class FakeRun:
    """process_run.RunContext over a plain engine: XCom, notes and log lines kept in lists."""

    def __init__(self, engine, *, run_id="manual__1", try_number=1, user=None, conf=None, carrier=None,
                 allowed=None, xcom=None):
        self._engine = engine
        self.run_id, self.try_number, self.user, self.conf = run_id, try_number, user, conf or {}
        self.started = utcnow() - timedelta(seconds=5)
        self.max_batches = 1024
        self.carrier_hook = carrier or FakeCarrier(rate=10.0)
        self._allowed = allowed
        self.pushed: dict = {}
        self.xcom = xcom or {}  # (task_id, key) -> value, what other tasks pushed
        self.notes: list[str] = []
        self.lines: list[str] = []
        self.engine_asked = 0
        self.notified: list = []

    def say(self, text):
        self.lines.append(text)

    def push(self, key, value):
        self.pushed[key] = value

    def pull(self, task_id, key=None):
        return self.xcom.get((task_id, key or "return_value"))

    def note(self, text):
        self.notes.append(text)

    def engine(self):
        self.engine_asked += 1
        return self._engine

    def carrier(self, service_provider_id, integration):
        return self.carrier_hook

    @contextmanager
    def clients(self, service_provider_id, integration):  # no carrier is called in these tests
        raise AssertionError("no carrier client expected")
        yield

    def allowed_service_providers(self):
        return self._allowed

    def notify(self, engine, bulk_ids):
        self.notified.append(bulk_ids)
        return {"sent": 0}


@pytest.fixture
def engine(sqlite_engine):
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="sp1", integration=Integration.JASPER, tenant_id=TENANT)
        seed.add_test_references(conn, tenant_id=TENANT)
    return sqlite_engine


def _bulk(engine, n=3, *, change_type=ChangeType.STATUS_UPDATE, word="Suspend", start=10_000, **kw) -> int:
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    with engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED", "CarrierRatePlan": "P-1G"} for i in iccids],
                         sp_id=SP, tenant_id=TENANT)
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=TENANT, change_type=change_type,
                                    requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": word}} for i in iccids],
                                    **kw)


def _status(engine, bulk_id):
    with engine.connect() as conn:
        return bulk_changes.load_bulk_change(conn, bulk_id).status.value


def _prepare(run, bulk_id, **params):
    return process_run.prepare(run, {**PARAMS, "bulk_change_id": bulk_id, **params}, batch_concurrency=2,
                               approval_timeout_hours=72)


# --- prepare ---------------------------------------------------------------------------------------

def test_a_huge_conf_field_is_refused_by_name_before_anything_is_read(engine):
    run = FakeRun(engine, conf={"bulk_change_id": 1, "note": "x" * 100_000})
    with pytest.raises(process_run.TaskFailed, match="refused: .*note"):
        _prepare(run, 1)
    assert run.engine_asked == 0


def test_a_run_without_a_bulk_change_id_is_refused(engine):
    run = FakeRun(engine)
    with pytest.raises(process_run.TaskFailed, match='conf must name a bulk change'):
        _prepare(run, None)
    assert run.engine_asked == 0


def test_an_unknown_bulk_change_fails_without_retry(engine):
    with pytest.raises(process_run.TaskFailed, match="999"):
        _prepare(FakeRun(engine), 999)


def test_a_user_not_allowed_for_the_service_provider_is_refused(engine):
    bulk_id = _bulk(engine)
    run = FakeRun(engine, user="alice", allowed={"alice": [2]})
    with pytest.raises(process_run.TaskFailed, match="^refused: "):
        _prepare(run, bulk_id)
    assert run.pushed == {} and _status(engine, bulk_id) == "NEW"


def test_the_carrier_is_asked_only_by_change_types_that_call_it():
    jasper = SimpleNamespace(service_provider_id=SP, integration=Integration.JASPER)
    carrier = FakeCarrier(rate=7.0)
    run = SimpleNamespace(carrier=lambda sp, integ: carrier)
    status = SimpleNamespace(**vars(jasper), change_type=ChangeType.STATUS_UPDATE)
    assert process_run.carrier_access(run, status) == (None, 7.0)
    archival = SimpleNamespace(**vars(jasper), change_type=ChangeType.ARCHIVAL)  # DB only
    carrier.asked.clear()
    assert process_run.carrier_access(run, archival) == (None, None) and carrier.asked == []
    carrier.problem = "no usable carrier connection 'carrier_sp_1'"
    assert process_run.carrier_access(run, status) == ("no usable carrier connection 'carrier_sp_1'", None)


def test_dry_run_reports_and_plans_nothing_to_process(engine):
    bulk_id = _bulk(engine)
    run = FakeRun(engine)
    assert _prepare(run, bulk_id, dry_run=True) == []
    assert set(run.pushed) == {"run_note_head", "dry_run_report"}  # no owner: the bulk change is not taken
    assert run.pushed["dry_run_report"]["would_process"] == 3
    assert run.notes == [run.pushed["run_note_head"]] and "dry run" in run.notes[0]
    assert _status(engine, bulk_id) == "NEW"


def test_a_bulk_change_held_by_the_portal_is_not_taken(engine):
    bulk_id = _bulk(engine, process_changes=False)
    run = FakeRun(engine)
    with pytest.raises(process_run.TaskFailed, match=re.escape(processing.held_message(bulk_id))):
        _prepare(run, bulk_id)
    assert "owner" not in run.pushed and _status(engine, bulk_id) == "NEW"


def test_a_second_run_is_refused_and_says_so_in_its_note(engine):
    bulk_id = _bulk(engine)
    processing.take_ownership(engine, bulk_id, processing.run_owner("manual__other"))
    run = FakeRun(engine)
    with pytest.raises(process_run.TaskFailed, match="manual__other"):
        _prepare(run, bulk_id)
    assert "owner" not in run.pushed and run.notes[-1].startswith(run.pushed["run_note_head"] + "\nREFUSED: ")


def test_prepare_plans_batches_and_says_why_that_size(engine):
    bulk_id = _bulk(engine, n=5)
    run = FakeRun(engine)
    batches = _prepare(run, bulk_id, batch_size=2)
    # the ids travel as runs of consecutive ids: one run per batch here, never the id list itself
    assert all("device_change_ids" not in b and len(b["device_change_id_runs"]) == 1 for b in batches)
    planned = [ids_of_runs(b["device_change_id_runs"]) for b in batches]
    assert [len(ids) for ids in planned] == [2, 2, 1]
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert sorted(i for ids in planned for i in ids) == sorted(
            dc.id for dc in device_changes.load_device_changes(conn, bulk))
    assert {b["bulk_change_id"] for b in batches} == {bulk_id} and all(b["batch_label"] for b in batches)
    assert run.pushed["owner"] == processing.run_owner(run.run_id)
    assert run.pushed["batch_size"]["batch_size"] == 2 and "reason" in run.pushed["batch_size"]
    assert run.pushed["approval"] == {**run.pushed["approval"], "required": False,
                                      "why_not": process_run.NO_APPROVAL_NEEDED}


def test_batch_size_xcom_names_the_reason_only_when_there_is_one():
    result = processing.PrepareResult(1, [], batch_size=300, notes=["300 devices per task: rate 5/s", "more"])
    assert process_run.batch_size_xcom(result) == {"batch_size": 300, "reason": "300 devices per task: rate 5/s"}
    assert process_run.batch_size_xcom(processing.PrepareResult(1, [], batch_size=100)) == {"batch_size": 100}


def test_a_large_run_waits_for_approval_holding_the_bulk_change_for_the_window(engine, monkeypatch):
    monkeypatch.setenv("BULKCHANGE_APPROVAL_MAX_DEVICES", "2")
    bulk_id = _bulk(engine, n=3)
    run = FakeRun(engine)
    assert len(_prepare(run, bulk_id)) == 1
    request = run.pushed["approval"]
    assert request["required"] and request["subject"] == f"Approve {run.pushed['run_note_head']}"
    assert request["body"] and run.notes[-1].startswith(run.pushed["run_note_head"] + "\nWAITING FOR APPROVAL: ")
    bulk = t.device_bulk_change
    with engine.connect() as conn:
        until = conn.execute(select(bulk.c.LeaseExpiresDate).where(bulk.c.Id == bulk_id)).scalar_one()
    assert until > utcnow() + timedelta(hours=71)  # not only the lease time: nobody renews it meanwhile


def test_no_approval_is_asked_when_nothing_would_be_sent(engine, monkeypatch):
    monkeypatch.setenv("BULKCHANGE_APPROVAL_MAX_DEVICES", "2")
    bulk_id = _bulk(engine, n=3)
    run = FakeRun(engine, carrier=FakeCarrier(problem="no usable carrier connection"))
    assert _prepare(run, bulk_id) == []  # every device ERROR before any carrier call
    assert run.pushed["approval"]["required"] is False
    # three devices queued (over the limit of 2) but no batch planned: nothing to hold
    bulk_id = _bulk(engine, n=3, start=20_000)
    _prepare(FakeRun(engine, run_id="manual__2"), bulk_id)
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
    run = FakeRun(engine, run_id="manual__2")
    check = process_run.request_approval(run, engine, bulk, processing.PrepareResult(bulk_id, []), head="h",
                                         owner=processing.run_owner("manual__2"), approval_timeout_hours=72)
    assert check.required and run.pushed["approval"]["required"] is False and run.notes == []


def test_retry_failed_is_refused_for_a_bulk_change_not_finished(engine):
    bulk_id = _bulk(engine)
    with pytest.raises(process_run.TaskFailed):
        _prepare(FakeRun(engine), bulk_id, retry_failed=True)


def test_a_retried_prepare_finds_the_failed_devices_already_queued(engine):
    """The first attempt queued them again and the bulk change is PROCESSING: the second attempt
    goes on planning instead of refusing the retry it started itself."""
    bulk_id = _bulk(engine, status="PROCESSING")
    bulk = SimpleNamespace(id=bulk_id, status=SimpleNamespace(value="PROCESSING"))
    assert process_run.queue_failed_again(FakeRun(engine, try_number=2), engine, bulk) == []
    with pytest.raises(process_run.TaskFailed):
        process_run.queue_failed_again(FakeRun(engine, try_number=1), engine, bulk)
    done = SimpleNamespace(id=bulk_id, status=SimpleNamespace(value="PROCESSED"))
    with pytest.raises(process_run.TaskFailed):
        process_run.queue_failed_again(FakeRun(engine, try_number=2), engine, done)


# --- wait_for_carrier ------------------------------------------------------------------------------

def test_nothing_to_wait_for_in_a_dry_run_or_a_run_that_took_nothing(engine):
    run = FakeRun(engine, xcom={("prepare", "owner"): "run:x"})
    assert process_run.carrier_done(run, {**PARAMS, "bulk_change_id": 1, "dry_run": True})
    assert run.engine_asked == 0
    run = FakeRun(engine)
    assert process_run.carrier_done(run, {**PARAMS, "bulk_change_id": 1})
    assert run.engine_asked == 0


def test_a_run_whose_bulk_change_was_taken_over_stops_waiting(engine):
    bulk_id = _bulk(engine)
    processing.take_ownership(engine, bulk_id, processing.run_owner("manual__other"))
    run = FakeRun(engine, xcom={("prepare", "owner"): processing.run_owner("manual__1")})
    assert process_run.carrier_done(run, {**PARAMS, "bulk_change_id": bulk_id})
    assert run.lines[-1].startswith("not waiting: ")


# --- finalize --------------------------------------------------------------------------------------

def test_finalize_of_a_dry_run_returns_its_report_and_changes_nothing(engine):
    report = {"would_process": 3, "batch_count": 1, "carrier_calls": {}, "estimated_seconds": 1.0}
    run = FakeRun(engine, xcom={("prepare", "dry_run_report"): report, ("prepare", "run_note_head"): "Bulk change 1"})
    assert process_run.finalize(run, {**PARAMS, "bulk_change_id": 1, "dry_run": True},
                                approval_timeout_hours=72) == report
    assert run.engine_asked == 0 and run.notes[0].startswith("Bulk change 1")
    with pytest.raises(process_run.TaskFailed, match="prepare produced no report"):
        process_run.finalize(FakeRun(engine), {**PARAMS, "bulk_change_id": 1, "dry_run": True},
                             approval_timeout_hours=72)


def test_finalize_of_a_run_that_took_nothing_touches_nothing(engine):
    bulk_id = _bulk(engine)
    with pytest.raises(process_run.TaskFailed, match=f"did not take bulk change {bulk_id}"):
        process_run.finalize(FakeRun(engine), {**PARAMS, "bulk_change_id": bulk_id}, approval_timeout_hours=72)
    assert _status(engine, bulk_id) == "NEW"


def _prepared(engine, n=3):
    bulk_id = _bulk(engine, n=n)
    run = FakeRun(engine)
    _prepare(run, bulk_id)
    return bulk_id, {("prepare", k): v for k, v in run.pushed.items()}


def test_a_rejection_marks_every_open_device_change_with_who_and_why(engine):
    bulk_id, xcom = _prepared(engine)
    xcom[("approve", "answer")] = {"chosen_options": ["Reject"], "params_input": {"reason": "wrong list"},
                                   "responded_by_user": {"name": "bob"}}
    run = FakeRun(engine, xcom=xcom)
    summary = process_run.finalize(run, {**PARAMS, "bulk_change_id": bulk_id}, approval_timeout_hours=72)
    assert summary["status"] == "ERROR" and summary["notifications"] == {"sent": 0}
    assert "not approved: rejected by bob: wrong list: 3 device changes marked ERROR" in run.lines
    assert run.notified == [[bulk_id]]


def test_devices_no_batch_settled_are_swept_and_fail_the_task(engine):
    bulk_id, xcom = _prepared(engine)
    run = FakeRun(engine, xcom=xcom)
    with pytest.raises(process_run.TaskFailed, match=r"^3 device changes were left unprocessed and are now ERROR"):
        process_run.finalize(run, {**PARAMS, "bulk_change_id": bulk_id}, approval_timeout_hours=72)
    assert run.notified == [[bulk_id]] and run.notes  # notified and noted before failing
