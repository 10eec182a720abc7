"""bulk_change_process under dag.test(): one run per bulk change (a second run stops in prepare
with a message and changes nothing; a dead run's expired hold is taken over) and more batches
than Airflow's max_map_length. Jasper simulator over HTTP; AMOP DB on SQLite and PostgreSQL."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bulkchange import processing
from bulkchange.db import bulk_changes, claims, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import DeviceChangeStatus, Integration, utcnow
from tests.dags.test_end_to_end import _seed as seed_suspend
from tests.dags.test_end_to_end import jasper  # noqa: F401  (fixture)
from tests.dags.conftest import amop_conn_json

KEY = "ownership-secret-key-7"
FIRST = processing.run_owner("manual__first_run")

pytestmark = pytest.mark.airflow


@pytest.fixture
def wired(amop_engine, simulator, jasper, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_1", json.dumps({
        "conn_type": "http", "host": simulator.url_for("jasper"), "login": "own", "password": KEY}))
    simulator.set_account("jasper", "own", KEY)
    return amop_engine


def _seed(engine, control, n):
    return seed_suspend(engine, control, n, start=60_000, name="own")


def _counts(engine):
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one(),
                conn.execute(select(func.count()).select_from(t.device_bulk_change_log)).scalar_one())


def _snapshot(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return bulk.status, [(dc.id, dc.status, dc.status_details)
                             for dc in device_changes.load_device_changes(conn, bulk)]


def test_second_run_of_one_bulk_change_stops_in_prepare_and_changes_nothing(dagbag, wired, jasper, smtp_server,
                                                                            monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_server.conn_json)
    engine, n = wired, 6
    bulk_id = _seed(engine, jasper, n)
    # the first run (launched by the sensor, say) holds the bulk change and has queued its devices
    plan = processing.prepare(engine, bulk_id, owner=processing.take_ownership(engine, bulk_id, FIRST).owner)
    before = _snapshot(engine, bulk_id)

    second = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert second.state == DagRunState.FAILED
    assert _snapshot(engine, bulk_id) == before  # nothing validated, sent, swept or rolled up
    assert jasper.calls(method="PUT") == [] and _counts(engine) == (0, 0)
    bodies = [msg.get_body(preferencelist=("html", "plain")).get_content()
              for _, msg in smtp_server.inbox.messages]
    assert any(f"bulk change {bulk_id} is being processed by another run (bulk_change_process:manual__first_run"
               in b and "stops here and changes nothing" in b for b in bodies), bodies

    # the first run carries on and finishes: one history row and one log row per device
    for batch in plan.batches:
        processing.process_batch(engine, bulk_id, batch.device_change_ids, client=_client(engine, jasper),
                                 owner=FIRST)
    assert processing.finalize(engine, bulk_id, owner=FIRST)["status"] == "PROCESSED"
    assert _counts(engine) == (n, n) and len(jasper.calls(method="PUT")) == n


def _client(engine, jasper):
    from bulkchange_plugins.hooks import CarrierHook

    return CarrierHook("carrier_sp_1").get_client(Integration.JASPER)


def test_an_expired_hold_of_a_dead_run_is_taken_over(dagbag, wired, jasper):
    from airflow.sdk import DagRunState

    engine, n = wired, 6
    bulk_id = _seed(engine, jasper, n)
    plan = processing.prepare(engine, bulk_id, batch_size=3, owner=processing.take_ownership(engine, bulk_id, FIRST).owner)
    with engine.begin() as conn:  # the dead run's first batch task took its devices and sent one of them
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, plan.batches[0].device_change_ids,
                                           DeviceChangeStatus.PROCESSING, processed_by=FIRST)
        conn.execute(update(t.device_bulk_change).values(LeaseExpiresDate=utcnow() - timedelta(seconds=1)))
    jasper.seed_devices([{"iccid": seed.make_iccid(60_000), "status": "DEACTIVATED", "ratePlan": "IOT-1GB"}])

    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 3})
    assert run.state == DagRunState.SUCCESS
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert bulk.status.value == "PROCESSED" and progress.status_counts(conn, bulk) == {"PROCESSED": n}
        assert claims.load_lease(conn, bulk_id).owner is None  # released by finalize
    # the device the dead run had sent was confirmed at the carrier, not sent again
    assert sorted(c["iccid"] for c in jasper.calls(method="PUT")) == [seed.make_iccid(60_000 + i)
                                                                      for i in range(1, n)]


def test_more_batches_than_max_map_length_raise_the_batch_size(dagbag, wired, jasper, monkeypatch):
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import DagRunState
    from airflow.utils.session import create_session

    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "3")
    engine, n = wired, 10
    bulk_id = _seed(engine, jasper, n)
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 1})
    assert run.state == DagRunState.SUCCESS
    with create_session() as session:
        mapped = session.query(TaskInstance).filter(TaskInstance.run_id == run.run_id,
                                                    TaskInstance.task_id == "process_batch").count()
    assert mapped == 3  # batches of 4, 4, 2 instead of 10 batches of 1
    with engine.connect() as conn:
        assert progress.status_counts(conn, bulk_changes.load_bulk_change(conn, bulk_id)) == {"PROCESSED": n}
    assert len(jasper.calls(method="PUT")) == n
