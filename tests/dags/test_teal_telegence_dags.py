"""Teal and Telegence through bulk_change_process under dag.test(): Teal's asynchronous operations
settle in the run's own wait_for_carrier sensor; Telegence's PATCHes settle in the batches."""
import json

import pytest
from sqlalchemy import func, select

from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from simulators.teal import make_eid
from tests.dags.conftest import amop_conn_json, run_process as run_bulk_change_process

pytestmark = pytest.mark.airflow
N = 500
TEAL = ("dag-teal-key-2", "dag-teal-secret-2")
TG = ("dag-tg-app-2", "dag-tg-secret-2")


def run_process(dagbag, bulk_id):
    return run_bulk_change_process(dagbag, bulk_id, batch_size=100)


def history(engine, bulk_id):
    h = t.device_status_history
    with engine.connect() as conn:
        return conn.execute(select(h.c.PreviousStatus, h.c.CurrentStatus, func.count())
                            .where(h.c.BulkChangeId == bulk_id).group_by(h.c.PreviousStatus, h.c.CurrentStatus)).all()


def log_texts(engine):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return " ".join((a or "") + (b or "") + (c or "") for a, b, c in conn.execute(
            select(lg.c.RequestText, lg.c.ResponseText, lg.c.ErrorText)))


def test_teal_disable_and_enable_settle_in_the_processing_run(dagbag, amop_engine, simulator, monkeypatch):
    teal = simulator.control("teal")
    teal.reset()
    teal.set_accounts({TEAL[0]: TEAL[1]})
    teal.configure(operation_delay_s=0.3)
    iccids = [seed.make_iccid(320_000 + i) for i in range(N)]
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "ONLINE"} for i in iccids])
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_12", json.dumps({
        "conn_type": "http", "host": simulator.url_for("teal"), "login": TEAL[0], "password": TEAL[1]}))
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=12, name="teal", integration=Integration.TEAL, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "EID": make_eid(i), "Status": "ONLINE"} for i in iccids],
                         sp_id=12, tenant_id=1)
    for word, before, after, endpoint in (("Suspend", "ONLINE", "STOPPED", "disable"),
                                          ("Active", "STOPPED", "ONLINE", "enable")):
        with amop_engine.begin() as conn:
            bulk_id = seed.add_bulk_change(conn, sp_id=12, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                           requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": word}}
                                                     for i in iccids])
        summary = run_process(dagbag, bulk_id)
        assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
        assert history(amop_engine, bulk_id) == [(before, after, N)]
        assert {teal.device(i)["deviceStatus"] for i in iccids[::50]} == {after}
        assert len(teal.calls(method="POST", path_contains=endpoint, limit=5000)) == N // 100
    assert TEAL[1] not in log_texts(amop_engine)


def test_telegence_suspend_settles_in_the_batches(dagbag, amop_engine, simulator, monkeypatch):
    tg = simulator.control("telegence")
    tg.reset()
    tg.set_accounts({TG[0]: TG[1]})
    iccids = [seed.make_iccid(330_000 + i) for i in range(N)]
    numbers = {i: f"1404{330_000 + n:07d}" for n, i in enumerate(iccids)}
    tg.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "A"} for i in iccids])
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_6", json.dumps({
        "conn_type": "http", "host": simulator.url_for("telegence"), "login": TG[0], "password": TG[1]}))
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": "A"} for i in iccids],
                         sp_id=6, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       portal_type=2, requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                                for i in iccids])
    summary = run_process(dagbag, bulk_id)
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": N}, summary
    assert history(amop_engine, bulk_id) == [("A", "S", N)]
    with amop_engine.connect() as conn:
        bc = bulk_changes.load_bulk_change(conn, bulk_id)
        assert {dc.status.value for dc in device_changes.load_device_changes(conn, bc)} == {"PROCESSED"}
        logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log)
                            .where(t.device_bulk_change_log.c.MobilityDeviceChangeId.is_not(None))).scalar_one()
    assert logs == N
    assert TG[1] not in log_texts(amop_engine)


def test_mobility_suspend_of_lines_named_by_msisdn_only_updates_the_mobility_inventory(
        dagbag, amop_engine, simulator, monkeypatch):
    """The portal's Mobility rows may carry only the line's number: the run finds each line in
    MobilityDevice by its MSISDN (some of them have no SIM on record), suspends it at Telegence and
    writes the Mobility inventory (MobilityDevice, TelegenceDevice, history); Device is not touched."""
    from bulkchange.db.device_status import device_status_ids, status_id_mismatches

    n = 60
    tg = simulator.control("telegence")
    tg.reset()
    tg.set_accounts({TG[0]: TG[1]})
    iccids = [seed.make_iccid(335_000 + i) for i in range(n)]
    numbers = [f"1404{335_000 + i:07d}" for i in range(n)]
    tg.seed_devices([{"iccid": i, "msisdn": m, "status": "A"} for i, m in zip(iccids, numbers)])
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_6", json.dumps({
        "conn_type": "http", "host": simulator.url_for("telegence"), "login": TG[0], "password": TG[1]}))
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=6, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        # half the lines are on record with their SIM, half by number only (as the legacy Mobility inventory has them)
        seed.add_devices(conn, [{"ICCID": i if k % 2 else None, "MSISDN": m, "Status": "A"}
                                for k, (i, m) in enumerate(zip(iccids, numbers))], sp_id=6, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=6, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       portal_type=2, requests=[{"MSISDN": m, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                                for m in numbers])
    summary = run_process(dagbag, bulk_id)
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": n}, summary
    assert {tg.request("GET", f"/lines/{m}")["subscriberStatus"] for m in numbers} == {"S"}
    md, td, h = t.mobility_device, t.telegence_device, t.device_status_history
    with amop_engine.connect() as conn:
        suspended = device_status_ids(conn, Integration.TELEGENCE, ["S"])["S"]
        lines = conn.execute(select(md.c.MSISDN, md.c.Status, md.c.DeviceStatusId)).all()
        telegence = conn.execute(select(td.c.SubscriberNumber, td.c.SubscriberNumberStatus, td.c.DeviceStatusId,
                                        td.c.OldDeviceStatusId)).all()
        hist = conn.execute(select(h.c.DeviceId, h.c.MobilityDeviceId, h.c.MSISDN, h.c.PreviousStatus,
                                   h.c.CurrentStatus).where(h.c.BulkChangeId == bulk_id)).all()
        in_device = conn.execute(select(func.count()).select_from(t.device)).scalar_one()
        mismatches = status_id_mismatches(conn, md) + status_id_mismatches(conn, td)
    assert suspended is not None
    assert sorted(lines) == sorted((m, "S", suspended) for m in numbers)
    active = device_status_ids(amop_engine.connect(), Integration.TELEGENCE, ["A"])["A"]
    assert sorted(telegence) == sorted((m, "S", suspended, active) for m in numbers)
    assert len(hist) == n and {(d, p, c) for d, _, _, p, c in hist} == {(None, "A", "S")}
    assert sorted(m for _, _, m, _, _ in hist) == sorted(numbers) and None not in {i for _, i, _, _, _ in hist}
    assert in_device == 0 and mismatches == []
