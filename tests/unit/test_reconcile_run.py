"""The decisions of device_status_reconcile's tasks (bulkchange.reconcile_run) without Airflow:
which service providers, when one waits for its turn or is skipped, and the run's summary. The DAG
tests (tests/dags/test_reconcile_*.py) run the same steps under Airflow against the simulators."""
from __future__ import annotations


import pytest

from bulkchange import processing, reconcile_run
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration


class FakeAccounts:
    def __init__(self, engine, hook=None):
        self._engine, self.hook, self.lines, self.notified = engine, hook, [], []

    def say(self, text):
        self.lines.append(text)

    def engine(self):
        return self._engine

    def carrier(self, service_provider_id, integration):
        return self.hook

    def clients(self, service_provider_id, integration, *, revio=True):
        raise AssertionError("no carrier client expected")

    def notify(self, engine, bulk_ids=None):
        self.notified.append(bulk_ids)
        return {"sent": 0}


class FakeHook:
    def __init__(self, problem=None, shared=False):
        self.problem, self.shared = problem, shared

    def credentials_problem(self, integration):
        return self.problem

    def rate_limit_shared(self):
        return self.shared


@pytest.fixture
def engine(sqlite_engine):
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="jasper", integration=Integration.JASPER, tenant_id=1)
        seed.add_service_provider(conn, sp_id=2, name="ebonding", integration=Integration.EBONDING, tenant_id=1)
        seed.add_service_provider(conn, sp_id=3, name="pond", integration=Integration.POND, tenant_id=1)
    return sqlite_engine


def test_scope_keeps_the_carriers_that_can_be_reconciled(engine):
    accounts = FakeAccounts(engine)
    chosen = reconcile_run.scope(accounts, {"service_provider_ids": []})
    assert chosen == [{"service_provider_id": 1}, {"service_provider_id": 3}]
    assert reconcile_run.scope(accounts, {"service_provider_ids": [3]}) == [{"service_provider_id": 3}]
    assert accounts.lines[-1] == "reconciling service providers [3]"


def test_an_unusable_connection_skips_the_provider_saying_why(engine):
    accounts = FakeAccounts(engine, FakeHook(problem="no usable carrier connection 'carrier_sp_1'"))
    out = reconcile_run.reconcile_provider(accounts, 1, {"dry_run": False, "max_checks": 6})
    assert out == {"service_provider_id": 1, "skipped": "no usable carrier connection 'carrier_sp_1'"}


def _processing_bulk(engine):
    iccid = seed.make_iccid(1)
    with engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": iccid, "Status": "ACTIVATED"}], sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": iccid, "ChangeRequest": {"UpdateStatus": "Suspend"}}],
                                       status="PROCESSING")
    processing.take_ownership(engine, bulk_id, processing.run_owner("manual__1"))
    return bulk_id


def test_without_a_shared_rate_a_running_bulk_change_has_the_account(engine):
    bulk_id = _processing_bulk(engine)
    why = reconcile_run.turn_problem(FakeHook(shared=False), engine, 1)
    assert why.startswith(f"waiting for its turn: bulk change(s) [{bulk_id}]")
    assert reconcile_run.turn_problem(FakeHook(shared=True), engine, 1) is None  # one bucket for all
    assert reconcile_run.turn_problem(FakeHook(shared=False), engine, 3) is None  # another account
    accounts = FakeAccounts(engine, FakeHook())
    out = reconcile_run.reconcile_provider(accounts, 1, {"dry_run": False, "max_checks": 6})
    assert out == {"service_provider_id": 1, "skipped": why} and accounts.lines == [f"skipped: {why}"]


def test_the_summary_adds_up_per_integration_and_lists_the_skipped():
    results = [
        {"service_provider_id": 1, "integration": "Jasper", "drift": {"DEACTIVATED -> ACTIVATED": 2}, "updated": 2,
         "rate_plan_drift": {"P-1 -> P-2": 1}, "rate_plans_updated": 1,
         "settled": [{"bulk_change_id": 9, "settled": {"PROCESSED": 3, "API_FAILED": 1}}]},
        {"service_provider_id": 2, "integration": "Jasper", "drift": {"DEACTIVATED -> ACTIVATED": 1}, "updated": 1,
         "rate_plan_drift": {}, "rate_plans_updated": 0, "settled": []},
        {"service_provider_id": 3, "integration": "Pond", "drift": {}, "updated": 0},
        {"service_provider_id": 4, "skipped": "waiting for its turn"},
    ]
    assert reconcile_run.drift_summary(results) == {
        "drift": {"Jasper": {"DEACTIVATED -> ACTIVATED": 3}, "Pond": {}}, "devices_updated": 3,
        "rate_plan_drift": {"Jasper": {"P-1 -> P-2": 1}}, "rate_plans_updated": 1, "device_changes_settled": 4,
        "providers": 4, "skipped": [4]}


def test_summarize_sweeps_the_notifications_except_in_a_dry_run(sqlite_engine):
    accounts = FakeAccounts(sqlite_engine)
    assert "notifications" not in reconcile_run.summarize(accounts, [], {"dry_run": True})
    assert accounts.notified == []
    assert reconcile_run.summarize(accounts, [], {"dry_run": False})["notifications"] == {"sent": 0}
    assert accounts.notified == [None]  # every pending one, not only this run's
