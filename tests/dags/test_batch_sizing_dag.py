"""bulk_change_process under dag.test(): without batch_size in the conf, prepare sizes the batches
from the carrier connection's rate limit (bulkchange.batch_sizing) and says why, in the real run
and in the dry-run report; a batch_size in the conf overrides it. Jasper simulator over HTTP."""
import json

import pytest

from tests.dags.conftest import amop_conn_json
from tests.dags.test_end_to_end import _seed as seed_suspend
from tests.dags.test_end_to_end import jasper  # noqa: F401  (fixture)

KEY = "sizing-secret-key-3"

pytestmark = pytest.mark.airflow


@pytest.fixture
def wired(sqlite_engine, simulator, jasper, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "size", "password": KEY,
        "extra": {"rate_limit_per_s": 40}}))
    simulator.set_account("jasper", "size", KEY)
    return sqlite_engine


def _chosen(run):
    return run.get_task_instance("prepare").xcom_pull(task_ids="prepare", key="batch_size")


def test_the_batch_size_follows_the_accounts_rate_limit(dagbag, wired, jasper):
    from airflow.sdk import DagRunState

    bulk_id = seed_suspend(wired, jasper, 5, start=61_000, name="size")
    dag = dagbag.dags["bulk_change_process"]
    # every field given: dag.test() keeps an earlier run's values as the next run's defaults
    dry = dag.test(run_conf={"bulk_change_id": bulk_id, "dry_run": True, "batch_size": None})
    report = dry.get_task_instance("finalize").xcom_pull(task_ids="finalize")
    assert "at 40 requests/s" in report["batch_size_reason"] and report["batch_count"] == 1
    run = dag.test(run_conf={"bulk_change_id": bulk_id, "dry_run": False, "batch_size": None})
    assert run.state == DagRunState.SUCCESS
    chosen = _chosen(run)
    assert "60 s of carrier work per task at 40 requests/s" in chosen["reason"], chosen
    assert chosen["batch_size"] == 100  # 2,400 devices of work, 5 devices to do: the minimum


def test_a_batch_size_in_the_conf_overrides_the_rule(dagbag, wired, jasper):
    from airflow.sdk import DagRunState

    bulk_id = seed_suspend(wired, jasper, 5, start=62_000, name="size")
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 2,
                                                                            "dry_run": False})
    assert run.state == DagRunState.SUCCESS
    assert _chosen(run)["batch_size"] == 2 and "as the run's conf asks" in _chosen(run)["reason"]
