"""Issue 12 under the real scheduler (LocalExecutor, PostgreSQL metadata and AMOP DBs): kills mid-batch.

* ``kill -9`` of one batch task process (the task runner Airflow's supervisor forked); Airflow's
  retry of the task takes over.
* ``kill -9`` of the whole Airflow (api-server, scheduler, dag-processor, triggerer, the LocalExecutor's
  workers and the task processes under them), then a restart on the same metadata DB with nothing
  done by hand: the restarted scheduler notices the dead task (orphan reset or task heartbeat
  timeout) and Airflow retries it.

Each runs a 100-device Jasper deactivation ("Deactivated" on devices with a communication plan: the
rate plan is changed first, then the status) as one batch task, slowed by the account's rate limit
and the carrier's latency so the kill comes while that batch has calls at the carrier. The kill
waits for the simulator's call log (some but not all of the batch's calls seen) and for a rate-plan
attempt left in flight, never for a sleep. Afterwards, from the simulator's own state: every device
final and none disagreeing with the carrier (device change, ``Device`` status and rate plan), no
status or rate-plan PUT twice, a log row for every call the carrier saw, and the rows the killed
attempt left ``IN_FLIGHT`` closed by the retry.

Both tests share one cluster (one metadata DB, one AMOP DB, one simulator); each has its own devices
and bulk change. The retry of a killed batch waits the DAG's ``retry_delay`` (30 s).
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
from sqlalchemy import select

from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.db.connect import make_engine
from bulkchange.db.seed import create_schema
from bulkchange.models import ChangeType, Integration
from bulkchange_demo.demo import wait_for
from simulators.server import SimulatorServer
from tests.scheduler.harness import AirflowCluster
from tests.scheduler.test_real_scheduler import KEY, SP_ID, TENANT_ID, USER, _conn_env

pytestmark = [pytest.mark.scheduler, pytest.mark.postgres]

N = 100                 # devices: one batch task (batch_size 100)
RATE = 20               # the account's requests/s; a batch task gets 1/BATCH_CONCURRENCY (2) of it
LATENCY_MS = 300        # so a kill finds requests at the carrier
PLANS = (("P-0", 0, 0.5), ("P-500", 500, 1.0), ("P-1G", 1024, 4.0))  # usage 200 MB: P-1G -> P-500 first
COMM_PLAN = "COMM-1"
FINISH_TIMEOUT_S = 480
DC, LOG = t.m2m_device_change, t.device_bulk_change_log
# As docker-compose.yaml: a task started while the api-server comes back waits for it. The task
# heartbeat timeout is compose's mechanism with a shorter value (compose: 120 s) to keep the test short.
RESILIENCE_ENV = {"AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
                  "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60"}


class Setup:
    def __init__(self, cluster: AirflowCluster, amop_url: str, server: SimulatorServer):
        self.cluster, self.amop_url, self.server = cluster, amop_url, server
        self.jasper = server.control("jasper")
        self.engine = make_engine(amop_url)
        self.next_start = 780_000


@pytest.fixture(scope="module")
def setup(tmp_path_factory, pg_database_module):
    with SimulatorServer(carriers=["jasper"], jasper_accounts={USER: KEY}, latency_ms=LATENCY_MS,
                         rate_limit=RATE) as server:
        control = server.control("jasper")
        control.add_rate_plans([{"name": c, "dataMB": mb, "baseRate": r} for c, mb, r in PLANS])
        control.add_communication_plans([COMM_PLAN])
        amop_url = pg_database_module("amop")
        engine = make_engine(amop_url)
        create_schema(engine)
        with engine.begin() as conn:
            seed.add_service_provider(conn, sp_id=SP_ID, name="kill test", integration=Integration.JASPER,
                                      tenant_id=TENANT_ID)
            for code, mb, rate in PLANS:
                conn.execute(t.jasper_carrier_rate_plan.insert().values(
                    ServiceProviderId=SP_ID, RatePlanCode=code, PlanMB=mb, BaseRate=rate, IsActive=True))
        engine.dispose()
        cluster = AirflowCluster(tmp_path_factory.mktemp("airflow"), pg_database_module("meta"),
                                 extra_env={**_conn_env(amop_url, server.url_for("jasper"), {}), **RESILIENCE_ENV})
        try:
            cluster.airflow("db", "migrate")
            cluster.start_core(triggerer=True)
            cluster.wait_for_dags(["bulk_change_process"])
            cluster.airflow("dags", "unpause", "bulk_change_process", "-y")
            s = Setup(cluster, amop_url, server)
            yield s
            s.engine.dispose()
        finally:
            cluster.stop()


def _fleet_and_run(s: Setup) -> tuple[int, list[str], str]:
    """N devices (AMOP and carrier), their Suspend bulk change, and a bulk_change_process run for it."""
    # the shared cluster: a run an earlier test left going would share the account's rate limit
    wait_for(lambda: not s.cluster.query("SELECT 1 FROM dag_run WHERE state IN ('queued', 'running')"),
             FINISH_TIMEOUT_S, 2, "the earlier tests' runs to end")
    iccids = [seed.make_iccid(s.next_start + i) for i in range(N)]
    s.next_start += N
    s.jasper.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "P-1G", "communicationPlan": COMM_PLAN}
                           for i in iccids])
    with s.engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED", "CarrierRatePlan": "P-1G",
                                 "CommunicationPlan": COMM_PLAN, "DataUsageMB": 200} for i in iccids],
                         sp_id=SP_ID, tenant_id=TENANT_ID)
        bulk_id = seed.add_bulk_change(conn, sp_id=SP_ID, tenant_id=TENANT_ID, change_type=ChangeType.STATUS_UPDATE,
                                       created_by="portal",
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Deactivated"}}
                                                 for i in iccids])
    run_id = f"bulk_change_{bulk_id}"
    s.cluster.airflow("dags", "trigger", "bulk_change_process", "--run-id", run_id,
                      "--conf", json.dumps({"bulk_change_id": bulk_id}))
    return bulk_id, iccids, run_id


def _puts(s: Setup, iccids: set[str]) -> list[dict]:
    return [c for c in s.jasper.calls(method="PUT") if c.get("iccid") in iccids]


def _half_done(puts: list[dict]) -> set[str]:
    """ICCIDs whose rate-plan PUT the carrier answered and whose status PUT it has not answered."""
    plan = {c["iccid"] for c in puts if c["status"] == 200 and "ratePlan" in (c["body"] or {})}
    return plan - {c["iccid"] for c in puts if "status" in (c["body"] or {})}


def _in_flight_rows(s: Setup, bulk_id: int, like: str = "%") -> int:
    with s.engine.connect() as conn:
        return len(conn.execute(select(LOG.c.Id).where(
            LOG.c.BulkChangeId == bulk_id, LOG.c.ResponseStatus == device_changes.LOG_IN_FLIGHT,
            LOG.c.LogEntryDescription.like(like))).all())


def _wait_mid_batch(s: Setup, bulk_id: int, iccids: list[str], run_id: str) -> tuple[int, int]:
    """Wait until the batch task runs, the carrier has seen some but not all of its PUTs, and a
    rate-plan PUT of it is in flight (its log row IN_FLIGHT). Returns the task's (pid, ti id), read
    before that last wait so the caller kills as soon as it returns."""
    wanted = set(iccids)

    def running():
        s.cluster.check_alive()
        rows = s.cluster.query("SELECT pid, id, state FROM task_instance WHERE dag_id = 'bulk_change_process' "
                               "AND run_id = :r AND task_id = 'process_batch' AND map_index = 0", r=run_id)
        return rows[0] if rows and rows[0].state == "running" and rows[0].pid and _puts(s, wanted) else None
    row = wait_for(running, 300, 0.2, f"the batch task of bulk change {bulk_id} to send")
    pid, ti_id = row.pid, str(row.id)
    with open(f"/proc/{pid}/cmdline", "rb") as f:  # the task runner's title: "airflow worker -- <ti id>"
        assert ti_id.encode() in f.read(), f"pid {pid} is not the task runner of {ti_id}"

    def mid_batch():
        s.cluster.check_alive()
        puts = _puts(s, wanted)
        assert len(puts) < 2 * N, "the batch finished before it could be killed"
        # several half done: the status PUTs of some of them are already on their way (the call
        # log shows a call once answered) and end at the carrier after the kill
        return len(puts) >= 30 and len(_half_done(puts)) >= 5 \
            and _in_flight_rows(s, bulk_id, "Update Jasper Rate Plan%") > 0
    wait_for(mid_batch, 300, 0.1, f"the batch of bulk change {bulk_id} to be mid-way at the carrier")
    return pid, ti_id


def _snapshot_at_kill(s: Setup, bulk_id: int, iccids: list[str]) -> tuple[int, int, int]:
    # the issue's case: a rate plan in at the carrier (answered), the status call after it not
    # answered when the task died; a retry sending the rate plan again would be a duplicate
    half_done = len(_half_done(_puts(s, set(iccids))))
    wait_for(lambda: s.jasper.stats()["in_flight"] == 0, 30, 0.05, "the killed requests to end at the carrier")
    return len(_puts(s, set(iccids))), half_done, _in_flight_rows(s, bulk_id)


def _wait_run_end(s: Setup, bulk_id: int, run_id: str) -> None:
    def ended():
        s.cluster.check_alive()
        rows = s.cluster.query("SELECT state, end_date FROM dag_run WHERE run_id = :r", r=run_id)
        with s.engine.connect() as conn:
            final = bulk_changes.load_bulk_change(conn, bulk_id).status.is_final
        return final and rows and rows[0].end_date is not None and rows[0].state in ("success", "failed")
    try:
        wait_for(ended, FINISH_TIMEOUT_S, 2, f"run {run_id} to end with bulk change {bulk_id} final")
    except Exception as exc:
        raise AssertionError(f"{exc}\n{s.cluster.logs_summary()}") from exc


def _assert_true_to_carrier(s: Setup, bulk_id: int, iccids: list[str], in_flight_at_kill: int) -> None:
    with s.engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dcs = {r.ICCID: r for r in conn.execute(select(DC.c.Id, DC.c.ICCID, DC.c.Status, DC.c.StatusDetails)
                                                .where(DC.c.BulkChangeId == bulk_id))}
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.Status,
                                                           t.device.c.CarrierRatePlan)
                                                    .where(t.device.c.ICCID.in_(iccids)))}
        log_rows = conn.execute(select(LOG.c.M2MDeviceChangeId, LOG.c.ResponseStatus).where(
            LOG.c.BulkChangeId == bulk_id, LOG.c.AttemptNumber.is_not(None))).all()
    rows = Counter(r[0] for r in log_rows)
    no_answer = Counter(r[0] for r in log_rows if r[1] == device_changes.LOG_NO_ANSWER)
    calls_by_iccid: dict[str, list[dict]] = {}
    for c in s.jasper.calls(account=USER):
        calls_by_iccid.setdefault(c.get("iccid"), []).append(c)

    mismatches, duplicates, log_gaps = [], [], []
    for iccid in iccids:
        carrier, dc, dev = s.jasper.device(iccid), dcs[iccid], devices[iccid]
        if dc.Status != "PROCESSED" or carrier["status"] != "DEACTIVATED" or dev.Status != carrier["status"] \
                or dev.CarrierRatePlan != carrier["ratePlan"]:
            mismatches.append((iccid, carrier["status"], carrier["ratePlan"], dc.Status, dev.Status,
                               dev.CarrierRatePlan, dc.StatusDetails))
        calls = calls_by_iccid.get(iccid, [])
        changes = Counter(key for c in calls if c["method"] == "PUT" and c["status"] != 429
                          and isinstance(c["body"], dict) for key in ("status", "ratePlan") if key in c["body"])
        if any(n > 1 for n in changes.values()):
            duplicates.append((iccid, dict(changes)))
        # every call the carrier saw has its row; one more only for an attempt the kill cut off
        # before it left (its row written first, closed NO_ANSWER by the retry)
        if not len(calls) <= rows[dc.Id] <= len(calls) + no_answer[dc.Id]:
            log_gaps.append((iccid, len(calls), rows[dc.Id], no_answer[dc.Id]))
    assert mismatches == [], _explain(s, bulk_id, [m[0] for m in mismatches], dcs, calls_by_iccid, mismatches)
    assert bulk.status.value == "PROCESSED"
    assert duplicates == []
    assert log_gaps == []
    # the rows the killed attempt left IN_FLIGHT are closed by the retry, none left
    assert [r for r in log_rows if r[1] == device_changes.LOG_IN_FLIGHT] == []
    assert sum(no_answer.values()) == in_flight_at_kill > 0


def _explain(s: Setup, bulk_id: int, iccids: list[str], dcs: dict, calls_by_iccid: dict, found: list) -> str:
    """What the log and the carrier's call log say about the devices an assertion names."""
    lines = [str(f) for f in found]
    with s.engine.connect() as conn:
        for iccid in iccids[:5]:
            lines.append(f"-- {iccid} log rows:")
            lines += [f"   {r.Id} {r.LogEntryDescription} | {r.ResponseStatus} | {r.Outcome} | {r.ErrorText}"
                      for r in conn.execute(select(LOG).where(LOG.c.M2MDeviceChangeId == dcs[iccid].Id)
                                            .order_by(LOG.c.Id))]
            lines.append(f"-- {iccid} carrier calls:")
            lines += [f"   {c['method']} {c['status']} {c['body']}" for c in calls_by_iccid.get(iccid, [])]
    return "\n".join(lines)


def _batch_tries(s: Setup, run_id: str) -> tuple[str, int]:
    rows = s.cluster.query("SELECT state, try_number FROM task_instance WHERE dag_id = 'bulk_change_process' "
                           "AND run_id = :r AND task_id = 'process_batch' AND map_index = 0", r=run_id)
    return rows[0].state, rows[0].try_number


def test_sigkill_of_a_batch_task_then_airflow_retry(setup):
    s = setup
    started = time.monotonic()
    bulk_id, iccids, run_id = _fleet_and_run(s)
    pid, _ = _wait_mid_batch(s, bulk_id, iccids, run_id)
    os.kill(pid, 9)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or " Z " in open(f"/proc/{pid}/stat").read(),
             30, 0.05, f"task process {pid} to die")
    puts, half_done, in_flight = _snapshot_at_kill(s, bulk_id, iccids)
    print(f"\nkilled task process {pid} after {puts} of {2 * N} PUTs: {half_done} devices with the rate plan "
          f"changed and not the status, {in_flight} log rows IN_FLIGHT")
    # mid-batch: calls unanswered at the kill (IN_FLIGHT journal rows), at best devices half done;
    # the PUTs already on their way while the processes are being killed may land and leave none half
    # done, and the retry must still neither resend an applied PUT nor lose one
    assert 0 < puts < 2 * N and (half_done > 0 or in_flight > 0)

    _wait_run_end(s, bulk_id, run_id)
    assert _batch_tries(s, run_id) == ("success", 2)  # Airflow's retry finished the batch
    _assert_true_to_carrier(s, bulk_id, iccids, in_flight)
    print(f"task kill test: {time.monotonic() - started:.0f}s from trigger to checked")


def test_kill_9_of_the_whole_airflow_then_restart(setup):
    s = setup
    started = time.monotonic()
    bulk_id, iccids, run_id = _fleet_and_run(s)
    pid, _ = _wait_mid_batch(s, bulk_id, iccids, run_id)
    killed = s.cluster.kill_all()
    assert pid in killed  # the task runner (its own process group) is gone with the rest
    puts, half_done, in_flight = _snapshot_at_kill(s, bulk_id, iccids)
    print(f"\nkilled {len(killed)} Airflow processes after {puts} of {2 * N} PUTs: {half_done} devices with "
          f"the rate plan answered and not the status, {in_flight} log rows IN_FLIGHT")
    # mid-batch: calls unanswered at the kill (IN_FLIGHT journal rows), at best devices half done;
    # the PUTs already on their way while the processes are being killed may land and leave none half
    # done, and the retry must still neither resend an applied PUT nor lose one
    assert 0 < puts < 2 * N and (half_done > 0 or in_flight > 0)

    s.cluster.start_core(triggerer=True, suffix="-2")  # the same metadata DB; nothing else done
    _wait_run_end(s, bulk_id, run_id)
    state, tries = _batch_tries(s, run_id)
    assert state == "success" and tries >= 2, (state, tries)
    _assert_true_to_carrier(s, bulk_id, iccids, in_flight)
    print(f"whole-Airflow kill test: {time.monotonic() - started:.0f}s from trigger to checked")
