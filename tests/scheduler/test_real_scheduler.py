"""The pipeline under a real scheduler, not dag.test(): every Airflow component its own process.

* LocalExecutor: PostgreSQL metadata DB, AMOP DB on PostgreSQL, api-server + scheduler +
  dag-processor; the account's rate limit is the in-process per-task share (no Redis configured).
* CeleryExecutor: the same plus Redis as broker and two ``airflow celery worker`` processes; the
  account's rate limit is the shared Redis bucket. A second bulk change for the same account runs
  at the same time, so the limit must hold across workers *and* concurrent runs.

In both, a 2,000-device Jasper Suspend inserted as NEW is picked up by bulk_change_sensor
(triggered through the CLI, not waited for on its schedule) and every device ends PROCESSED.
The Jasper simulator's call log (arrival time of every request, refused ones included) shows the
requests per second the account received.
"""
from __future__ import annotations

import json
import math
import uuid

import pytest
from sqlalchemy import func, select

from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.db.connect import make_engine
from bulkchange.db.seed import create_schema
from bulkchange.models import ChangeType, Integration
from bulkchange_demo.demo import wait_for
from simulators.core import max_per_second
from simulators.server import SimulatorServer
from tests.scheduler.harness import AirflowCluster, forget_redis_keys

pytestmark = [pytest.mark.scheduler, pytest.mark.postgres]

SP_ID, TENANT_ID = 1, 1
RATE = 100            # the account's requests/s: connection extra and the simulator's limit
LATENCY_MS = 20
USER, KEY = "sched-test", "sched-secret-api-key-93"
DAGS = ["bulk_change_sensor", "bulk_change_process"]
FINISH_TIMEOUT_S = 420


def _devices(offset: int, n: int) -> list[dict]:
    return [{"ICCID": seed.make_iccid(700_000 + offset + i), "Status": "ACTIVATED", "CarrierRatePlan": "IOT-1GB"}
            for i in range(n)]


def _seed(amop_url: str, control, sizes: list[int]) -> tuple[list[int], int]:
    """The AMOP DB with one Jasper account, its devices and one NEW Suspend bulk change per size."""
    engine = make_engine(amop_url)
    create_schema(engine)
    bulk_ids, offset = [], 0
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP_ID, name="scheduler test", integration=Integration.JASPER,
                                  tenant_id=TENANT_ID)
        for n in sizes:
            devices = _devices(offset, n)
            offset += n
            control.seed_devices([{"iccid": d["ICCID"], "status": "ACTIVATED", "ratePlan": "IOT-1GB"}
                                  for d in devices])
            seed.add_devices(conn, devices, sp_id=SP_ID, tenant_id=TENANT_ID)
            bulk_ids.append(seed.add_bulk_change(
                conn, sp_id=SP_ID, tenant_id=TENANT_ID, change_type=ChangeType.STATUS_UPDATE, created_by="portal",
                requests=[{"ICCID": d["ICCID"], "ChangeRequest": {"UpdateStatus": "Suspend"}} for d in devices]))
    engine.dispose()
    return bulk_ids, offset


def _conn_env(amop_url: str, jasper_url: str, carrier_extra: dict) -> dict[str, str]:
    url = make_engine(amop_url).url
    return {
        "AIRFLOW_CONN_AMOP_DB": json.dumps({"conn_type": "postgres", "host": url.host, "port": url.port,
                                           "login": url.username, "schema": url.database}),
        f"AIRFLOW_CONN_CARRIER_SP_{SP_ID}": json.dumps({
            "conn_type": "http", "host": jasper_url, "login": USER, "password": KEY,
            "extra": {"rate_limit_per_s": RATE, "timeout_s": 10, **carrier_extra}}),
    }


@pytest.fixture
def jasper():
    with SimulatorServer(carriers=["jasper"], jasper_accounts={USER: KEY}, latency_ms=LATENCY_MS,
                         rate_limit=RATE) as server:
        yield server


def _run_until_final(cluster: AirflowCluster, amop_url: str, bulk_ids: list[int]) -> None:
    """Unpause the DAGs, trigger the sensor, wait until every bulk change is final."""
    cluster.wait_for_dags(DAGS)
    cluster.airflow("dags", "unpause", "bulk_change_.*", "--treat-dag-id-as-regex", "-y")
    cluster.airflow("dags", "trigger", "bulk_change_sensor")
    engine = make_engine(amop_url)

    def final():
        cluster.check_alive()
        with engine.connect() as conn:
            return all(bulk_changes.load_bulk_change(conn, b).status.is_final for b in bulk_ids)

    def runs_ended():
        # finalize writes the final status a moment before the scheduler closes the run (end_date);
        # stopping the cluster in between leaves a run without an end for _report_runs
        cluster.check_alive()
        rows = cluster.query("SELECT count(*) FROM dag_run WHERE dag_id = 'bulk_change_process' "
                             "AND (end_date IS NULL OR state NOT IN ('success', 'failed'))")
        return rows[0][0] == 0

    try:
        wait_for(final, FINISH_TIMEOUT_S, 3, f"bulk changes {bulk_ids} to finish")
        wait_for(runs_ended, 120, 2, "the bulk_change_process runs to end")
    except Exception as exc:
        raise AssertionError(f"{exc}\n{cluster.logs_summary()}") from exc
    finally:
        engine.dispose()


def _assert_all_processed(amop_url: str, bulk_ids: list[int], sizes: list[int], total: int,
                          calls: list[dict]) -> None:
    """Every device PROCESSED and DEACTIVATED; one log row per carrier call the simulator saw for the
    account (every attempt is logged: a 429 and its retry are two rows), no secret in any."""
    engine = make_engine(amop_url)
    with engine.connect() as conn:
        for bulk_id, n in zip(bulk_ids, sizes):
            bulk = bulk_changes.load_bulk_change(conn, bulk_id)
            assert (bulk.status.value, progress.status_counts(conn, bulk)) == ("PROCESSED", {"PROCESSED": n})
        assert conn.execute(select(t.device.c.Status, func.count()).group_by(t.device.c.Status)).all() \
            == [("DEACTIVATED", total)]
        logs = conn.execute(select(t.device_bulk_change_log.c.RequestText,
                                   t.device_bulk_change_log.c.ResponseText)).all()
        assert len(logs) == len(calls) >= total
        assert not [r for r in logs if KEY in (r[0] or "") + (r[1] or "")]
    engine.dispose()


def _report_runs(cluster: AirflowCluster, label: str, devices: int) -> None:
    """Print how long the processing runs took against the carrier bound (information only)."""
    rows = cluster.query("SELECT min(start_date), max(end_date) FROM dag_run WHERE dag_id = 'bulk_change_process'")
    start, end = rows[0]
    took = (end - start).total_seconds()
    print(f"\n{label}: {devices} devices processed in {took:.1f}s by bulk_change_process "
          f"(carrier bound {devices / RATE:.1f}s at {RATE}/s, ratio {took / (devices / RATE):.2f})")


def _carrier_calls(jasper) -> list[dict]:
    return [c for c in jasper.control("jasper").calls() if c.get("account") == USER]


def test_local_executor_on_postgres(tmp_path, pg_database, jasper):
    sizes = [2000]
    amop_url = pg_database("amop")
    bulk_ids, total = _seed(amop_url, jasper.control("jasper"), sizes)
    meta_url = pg_database("meta")
    cluster = AirflowCluster(tmp_path / "airflow", meta_url, executor="LocalExecutor",
                             extra_env=_conn_env(amop_url, jasper.url_for("jasper"), {}))
    try:
        cluster.airflow("db", "migrate")
        cluster.start_core()
        _run_until_final(cluster, amop_url, bulk_ids)
    finally:
        cluster.stop()

    calls = _carrier_calls(jasper)
    _assert_all_processed(amop_url, bulk_ids, sizes, total, calls)
    _report_runs(cluster, "LocalExecutor", total)
    assert len([c for c in calls if c["method"] == "PUT" and c["status"] == 200]) == total  # once per device
    assert max_per_second([c["ts"] for c in calls]) <= RATE * 1.2 + 1
    states = cluster.query("SELECT state, count(*) FROM task_instance WHERE dag_id = 'bulk_change_process' "
                           "AND task_id = 'process_batch' GROUP BY state")
    planned = _planned_batches(cluster, bulk_ids, sizes)
    assert planned[f"bulk_change_{bulk_ids[0]}"] >= 2  # at least one batch per concurrent task slot
    assert dict(states) == {"success": sum(planned.values())}  # every mapped batch task, once


def _planned_batches(cluster, bulk_ids, sizes) -> dict[str, int]:
    """Mapped batch tasks each run planned: its devices over the batch size prepare chose (XCom
    ``batch_size``, chosen from the account's rate: bulkchange.batch_sizing)."""
    rows = cluster.query("SELECT run_id, value FROM xcom WHERE dag_id = 'bulk_change_process' "
                         "AND task_id = 'prepare' AND key = 'batch_size'")
    chosen = {}
    for run_id, value in rows:
        value = json.loads(value) if isinstance(value, (str, bytes)) else value
        chosen[run_id] = value["batch_size"] if isinstance(value, dict) else int(value)
    return {f"bulk_change_{b}": math.ceil(n / chosen[f"bulk_change_{b}"]) for b, n in zip(bulk_ids, sizes)}


def test_celery_two_workers_share_the_account_rate_limit(tmp_path, pg_database, redis_url, jasper):
    sizes = [2000, 500]  # the 2,000-device change and a second one for the same account, at the same time
    amop_url = pg_database("amop")
    bulk_ids, total = _seed(amop_url, jasper.control("jasper"), sizes)
    meta_url = pg_database("meta")
    queue = f"bulkchange_test_{uuid.uuid4().hex[:8]}"
    broker = redis_url.rsplit("/", 1)[0] + "/2"
    env = _conn_env(amop_url, jasper.url_for("jasper"), {"rate_limit_key": f"test-{queue}"})
    env.update({
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + meta_url.replace("+psycopg2", ""),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "BULKCHANGE_RATE_LIMIT_REDIS_URL": redis_url,
    })
    cluster = AirflowCluster(tmp_path / "airflow", meta_url, executor="CeleryExecutor", extra_env=env)
    try:
        cluster.airflow("db", "migrate")
        cluster.start_core()
        cluster.start_celery_worker("worker1", queue)
        cluster.start_celery_worker("worker2", queue)
        _run_until_final(cluster, amop_url, bulk_ids)
    finally:
        cluster.stop()
        forget_redis_keys(broker, queue)
        forget_redis_keys(redis_url, f"test-{queue}")

    # The account's requests/s held across both workers and both runs: every request the carrier
    # received (refused ones included), in any one-second window
    calls = _carrier_calls(jasper)
    peak = max_per_second([c["ts"] for c in calls])
    refused = sum(1 for c in calls if c["status"] == 429)
    print(f"\ncarrier calls {len(calls)}, peak {peak}/s (limit {RATE}/s), refused with 429: {refused}")
    assert peak <= RATE * 1.2 + 1  # margin for late wake-ups; without a shared limit the two runs send ~2x

    # Mapped batches ran on both workers (task_instance.hostname is the worker's name)
    rows = cluster.query("SELECT run_id, hostname FROM task_instance WHERE dag_id = 'bulk_change_process' "
                         "AND task_id = 'process_batch' AND state = 'success'")
    planned = _planned_batches(cluster, bulk_ids, sizes)
    assert sorted(r.run_id for r in rows) == sorted(run for run, n in planned.items() for _ in range(n))
    assert {r.hostname for r in rows} == {"worker1", "worker2"}

    _assert_all_processed(amop_url, bulk_ids, sizes, total, calls)
    assert len([c for c in calls if c["method"] == "PUT" and c["status"] == 200]) == total  # once per device
    _report_runs(cluster, "CeleryExecutor, 2 workers", total)
