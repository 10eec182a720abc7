"""ThingSpace end to end under dag.test(): 1,000-device activation settled by device_status_reconcile,
and 1,000-device suspend / restore / deactivate settled by bulk_change_process's own wait.

Real parts: Airflow's in-process runner, the ThingSpace simulator over HTTP (OAuth + session tokens,
asynchronous requests), the AMOP DB on SQLite and PostgreSQL. The simulator's delay is far shorter
than the reconciliation schedule, so the test runs the reconcile DAG itself once the carrier is done.
"""
import json
import time

import pytest
from sqlalchemy import func, select

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json, m2m_counts as counts, run_process as run_bulk_change_process

pytestmark = pytest.mark.airflow
N = 1000
ACCOUNT = "0000000000-00042"
SECRETS = ("dag-ts-secret-5", "dag-uws-password-5")


@pytest.fixture
def ts(simulator, amop_engine, monkeypatch):
    control = simulator.control("thingspace")
    control.reset()
    control.configure(action_delay_s=0.5)
    carrier = simulator.carrier("thingspace")
    carrier.clients["dag-key"] = SECRETS[0]
    carrier.users["dag-user"] = SECRETS[1]
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_4", json.dumps({
        "conn_type": "http", "host": simulator.url_for("thingspace"), "login": "dag-key", "password": SECRETS[0],
        "extra": {"uws_username": "dag-user", "uws_password": SECRETS[1], "account_name": ACCOUNT}}))
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
    return control


def fleet(engine, control, state, start):
    iccids = [seed.make_iccid(start + i) for i in range(N)]
    control.seed_devices([{"iccid": i, "state": state, "accountName": ACCOUNT,
                           "msisdn": f"1470{start + n:07d}" if state != "preactive" else None}
                          for n, i in enumerate(iccids)])
    with engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": state} for i in iccids], sp_id=4, tenant_id=1)
    return iccids


def bulk(engine, iccids, status, **request):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": status, **request}}
                                              for i in iccids])


def run_process(dagbag, bulk_id):
    return run_bulk_change_process(dagbag, bulk_id, batch_size=250)


def assert_clean_logs(engine, client_tokens):
    with engine.connect() as conn:
        texts = " ".join(a + b for a, b in conn.execute(select(t.device_bulk_change_log.c.RequestText,
                                                               t.device_bulk_change_log.c.ResponseText)))
    assert texts and "Bearer" not in texts
    for secret in (*SECRETS, *client_tokens):
        assert secret not in texts


def issued_tokens(simulator):
    carrier = simulator.carrier("thingspace")
    return list(carrier.tokens) + list(carrier.sessions)


def test_activation_waits_then_reconciliation_fills_msisdn_and_ip(dagbag, amop_engine, simulator, ts):
    from airflow.sdk import DagRunState

    iccids = fleet(amop_engine, ts, "preactive", 300_000)
    bulk_id = bulk(amop_engine, iccids, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    summary = run_process(dagbag, bulk_id)
    assert summary["status"] == "WAITING_FOR_CARRIER"
    assert counts(amop_engine, bulk_id) == ("WAITING_FOR_CARRIER", {"PENDING_ACTIVATION": N})
    activations = ts.calls(method="POST", path_contains="/actions/activate")
    sizes = sorted(len(c["body"]["devices"]) for c in activations)
    assert sizes == [50] * 4 + [200] * 4  # 4 batches of 250, each sent as requests of up to 200 devices

    time.sleep(1.0)  # the carrier finishes (action_delay_s=0.5) long before the 15-minute schedule
    run = dagbag.dags["device_status_reconcile"].test(run_conf={"service_provider_ids": [4], "dry_run": False})
    assert run.state == DagRunState.SUCCESS
    assert counts(amop_engine, bulk_id) == ("PROCESSED", {"PROCESSED": N})
    with amop_engine.connect() as conn:
        rows = conn.execute(select(t.m2m_device_change.c.ICCID, t.m2m_device_change.c.MSISDN,
                                   t.m2m_device_change.c.IpAddress)
                            .where(t.m2m_device_change.c.BulkChangeId == bulk_id)).all()
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.MSISDN, t.device.c.IPAddress,
                                                           t.device.c.Status))}
        history = conn.execute(select(func.count()).select_from(t.device_status_history)
                               .where(t.device_status_history.c.BulkChangeId == bulk_id)).scalar_one()
    for iccid, msisdn, ip in rows:
        carrier = ts.device(iccid)
        assert (msisdn, ip) == (carrier["msisdn"], carrier["ipAddress"]) and msisdn and ip
        assert (devices[iccid].MSISDN, devices[iccid].IPAddress, devices[iccid].Status) == (msisdn, ip, "active")
    assert history == N
    assert_clean_logs(amop_engine, issued_tokens(simulator))


def test_suspend_restore_deactivate_settle_in_the_processing_run(dagbag, amop_engine, simulator, ts):
    iccids = fleet(amop_engine, ts, "active", 310_000)
    expected = {"Suspend": ("active", "suspend"), "Restore": ("suspend", "active"),
                "Deactivate": ("active", "deactive")}
    for status, (before, after) in expected.items():
        bulk_id = bulk(amop_engine, iccids, status)
        summary = run_process(dagbag, bulk_id)
        assert summary["status"] == "PROCESSED", (status, summary)
        assert counts(amop_engine, bulk_id) == ("PROCESSED", {"PROCESSED": N})
        with amop_engine.connect() as conn:
            history = conn.execute(select(t.device_status_history.c.PreviousStatus,
                                          t.device_status_history.c.CurrentStatus, func.count())
                                   .where(t.device_status_history.c.BulkChangeId == bulk_id)
                                   .group_by(t.device_status_history.c.PreviousStatus,
                                             t.device_status_history.c.CurrentStatus)).all()
            device_states = set(conn.execute(select(t.device.c.Status).where(t.device.c.ServiceProviderId == 4))
                                .scalars())
        assert history == [(before, after, N)], status
        assert device_states == {after}
        assert {ts.device(i)["state"] for i in iccids[:: N // 10]} == {after}
    deactivations = ts.calls(method="POST", path_contains="/actions/deactivate")
    assert deactivations and all(c["body"]["reasonCode"] == "FF" for c in deactivations)
    assert_clean_logs(amop_engine, issued_tokens(simulator))
