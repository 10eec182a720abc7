"""device_status_reconcile under dag.test() for a POND account while one of its bulk changes is being
processed: reconciliation's carrier calls never come on top of the batches' at the account's rate.

* Without the shared (Redis) bucket, every task's limiter is its own: reconciliation waits for its
  turn (the account is skipped with the reason, no call reaches the carrier) and reconciles once the
  bulk change is no longer being processed.
* With the shared bucket, reconciliation draws from the account's bucket like the batch tasks: a
  Retry-After penalty a batch put on the bucket holds reconciliation's calls back too.
"""
import json
import os
import time
import uuid

import pytest
from sqlalchemy import select

from bulkchange import processing
from bulkchange.db import bulk_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import BulkStatus, ChangeType, Integration
from tests.dags.conftest import amop_conn_json

pytestmark = pytest.mark.airflow

SP, N = 13, 8
USER, SECRET = "recon-pond", "recon-pond-secret-7"
REDIS_URL = "redis://127.0.0.1:6379/7"


def setup(engine, simulator, monkeypatch, extra=None):
    pond = simulator.control("pond")
    pond.reset()
    simulator.set_account("pond", USER, SECRET)
    iccids = [seed.make_iccid(83_000 + i) for i in range(N)]
    # drift: the carrier shows the SIMs suspended, the inventory active
    pond.seed_devices([{"iccid": i, "serviceStatus": "DISABLED", "packages": [{"packageTypeId": "101"}]}
                       for i in iccids])
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="pond", integration=Integration.POND, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE", "CarrierRatePlan": "101"} for i in iccids],
                         sp_id=SP, tenant_id=1)
        other = seed.make_iccid(83_900)  # the running bulk change works on another SIM
        seed.add_devices(conn, [{"ICCID": other, "Status": "ACTIVE", "CarrierRatePlan": "101"}], sp_id=SP,
                         tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": other, "ChangeRequest": {"UpdateStatus": "Suspend"}}])
    pond.seed_devices([{"iccid": other, "serviceStatus": "ENABLED", "packages": [{"packageTypeId": "101"}]}])
    # being processed: a live run holds it
    processing.take_ownership(engine, bulk_id, "bulk_change_process:manual__running")
    with engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(engine))
    monkeypatch.setenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", json.dumps({
        "conn_type": "http", "host": simulator.url_for("pond"), "login": USER, "password": SECRET,
        "extra": {"distributor_id": "1001", "rate_limit_per_s": 50, **(extra or {})}}))
    return pond, iccids, bulk_id


def run(dagbag):
    from airflow.sdk import DagRunState

    dag_run = dagbag.dags["device_status_reconcile"].test(run_conf={"service_provider_ids": [SP], "dry_run": False})
    assert dag_run.state == DagRunState.SUCCESS
    return dag_run.get_task_instance("summarize").xcom_pull(task_ids="summarize")


def history(engine):
    with engine.connect() as conn:
        return conn.execute(select(t.device_status_history.c.ICCID)).scalars().all()


def test_without_a_shared_bucket_reconciliation_waits_for_running_batches(dagbag, sqlite_engine, simulator,
                                                                          monkeypatch):
    monkeypatch.delenv("BULKCHANGE_RATE_LIMIT_REDIS_URL", raising=False)
    pond, iccids, bulk_id = setup(sqlite_engine, simulator, monkeypatch)

    summary = run(dagbag)
    assert summary["skipped"] == [SP] and summary["devices_updated"] == 0, summary
    assert pond.calls(account=USER) == []  # not one call beside the batches
    assert history(sqlite_engine) == []

    with sqlite_engine.begin() as conn:  # the run ends: the account is free again
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSED)
    summary = run(dagbag)
    assert summary["skipped"] == [] and summary["devices_updated"] == N, summary
    assert summary["drift"] == {"Pond": {"SUSPENDED -> ACTIVE": N}}
    assert sorted(history(sqlite_engine)) == sorted(iccids)


@pytest.mark.redis
def test_with_the_shared_bucket_reconciliation_draws_from_the_batches_bucket(dagbag, sqlite_engine, simulator,
                                                                            monkeypatch):
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        reason = f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}: .ci/run must start Redis")
        pytest.skip(reason)
    key = f"recon-test-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("BULKCHANGE_RATE_LIMIT_REDIS_URL", REDIS_URL)
    pond, iccids, bulk_id = setup(sqlite_engine, simulator, monkeypatch, {"rate_limit_key": key})

    # a batch task of the running bulk change got a Retry-After of 3 s on the account's bucket (the
    # batch's own limiter, built by the same hook the batch tasks use)
    from bulkchange_plugins.hooks import carrier_hook

    hook = carrier_hook(SP, Integration.POND)
    batch_limiter = hook.call_policy(hook.get_settings(), rate_share=2).rate_limiter
    assert batch_limiter.key.endswith(key)
    try:
        batch_limiter.penalize(3.0)
        blocked_until = float(batch_limiter._redis.hget(batch_limiter.key, "blocked_until"))
        summary = run(dagbag)
        assert summary["skipped"] == [] and summary["devices_updated"] == N, summary
        calls = pond.calls(account=USER, limit=10_000)
        assert len(calls) >= N + 1  # every SIM on record was read
        # Redis TIME and the simulator's clock are this machine's: every reconciliation call waited
        # for the batch's penalty (a lower bound, whatever the load)
        assert min(c["ts"] for c in calls) >= blocked_until - 0.05
    finally:
        batch_limiter.reset()
    assert time.time() >= blocked_until
