"""ThingSpace callbacks end to end under dag.test(): the simulator posts each request's results over
HTTP to the callback endpoint of our Airflow plugin, served by Airflow's own api-server in a process of
its own as in production (tests/dags/conftest.py ``ApiServerProcess``; its log is shown when a test
fails), which stores them in ThingSpaceCallBackResponseLog and settles the waiting device changes at
once; polling stays the fallback when no callback comes.

* activations settle from the callback alone (bulk_change_process does not poll activations, and no
  device_status_reconcile runs here);
* suspends and identifier changes settle from the callback while the carrier's request-status reads
  fail (so no poll can have settled them);
* a callback without the account's secret, or with another one, is refused, logged without the
  secret, and changes nothing;
* the endpoint finds the account's connection kept in the metadata DB (made in the UI), as the
  api-server reads connections;
* with the carrier's callbacks lost, polling settles everything as before.
"""
import json
import time

import pytest
import requests
from sqlalchemy import select

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from bulkchange.rules import luhn_check_digit
from tests.dags.conftest import amop_conn_json, m2m_counts as counts, run_process as run_bulk_change_process

pytestmark = pytest.mark.airflow
ACCOUNT = "0000000000-00018"
SECRETS = ("cb-ts-secret-18", "cb-uws-password-18")
CALLBACK_SECRET = "cb-shared-secret-18-XYZ"
SP = 4


@pytest.fixture
def ts(simulator, amop_engine, api_server, monkeypatch):
    control = simulator.control("thingspace")
    control.reset()
    control.configure(action_delay_s=0.3)
    carrier = simulator.carrier("thingspace")
    carrier.clients["cb-key"] = SECRETS[0]
    carrier.users["cb-user"] = SECRETS[1]
    carrier.account_names.add(ACCOUNT)
    url = f"{api_server.url}/carrier-callbacks/thingspace/{SP}"
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", json.dumps({
        "conn_type": "thingspace", "host": simulator.url_for("thingspace"), "login": "cb-key",
        "password": SECRETS[0],
        "extra": {"uws_username": "cb-user", "uws_password": SECRETS[1], "account_name": ACCOUNT,
                  "callback_url": url, "callback_secret": CALLBACK_SECRET}}))
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
    api_server.start()  # with the connections above
    from bulkchange_plugins.carrier_callbacks import register

    assert register(SP) == {"accountName": ACCOUNT, "serviceName": "CarrierService"}
    control.url = url
    return control


def fleet(engine, control, state, start, n):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    control.seed_devices([{"iccid": i, "state": state, "accountName": ACCOUNT,
                           "msisdn": f"1470{start + k:07d}" if state != "preactive" else None}
                          for k, i in enumerate(iccids)])
    with engine.begin() as conn:
        ids = seed.add_devices(conn, [{"ICCID": i, "Status": state} for i in iccids], sp_id=SP, tenant_id=1)
    return iccids, ids


def bulk(engine, requests_, change_type=ChangeType.STATUS_UPDATE):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=change_type, requests=requests_)


def status_bulk(engine, iccids, status, **request):
    return bulk(engine, [{"ICCID": i, "ChangeRequest": {"UpdateStatus": status, **request}} for i in iccids])


def run_process(dagbag, bulk_id):
    return run_bulk_change_process(dagbag, bulk_id, batch_size=25)


def wait_for(engine, bulk_id, wanted, timeout=90):
    """The bulk change's counts once they are ``wanted`` (bounded: the last counts otherwise)."""
    deadline = time.monotonic() + timeout
    seen = counts(engine, bulk_id)
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
        seen = counts(engine, bulk_id)
    return seen


def callback_rows(engine):
    c = t.thingspace_callback_response_log.c
    with engine.connect() as conn:
        return conn.execute(select(c.RequestId, c.ICCID, c.APIStatus, c.APIResponse, c.ServiceProviderId, c.TenantId)
                            .order_by(c.Id)).all()


def details(engine, bulk_id):
    dc = t.m2m_device_change.c
    with engine.connect() as conn:
        return dict(conn.execute(select(dc.ICCID, dc.StatusDetails).where(dc.BulkChangeId == bulk_id)).all())


def refusals_logged(api_server):
    return [line for line in api_server.log().splitlines() if "bulkchange.callbacks" in line and "refused" in line]


def assert_no_secret_in(text, *more):
    for secret in (CALLBACK_SECRET, *SECRETS, *more):
        assert secret not in text


def polls_fail(control):
    """The carrier's reads (request status) answer 503: only a callback can settle anything."""
    control.configure(error_rate=1.0, error_statuses=[503], fault_methods=["GET"])


def test_activations_settle_from_the_callbacks_alone(dagbag, amop_engine, simulator, ts, api_server):
    iccids, _ = fleet(amop_engine, ts, "preactive", 500_000, 30)
    bulk_id = status_bulk(amop_engine, iccids, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    run_process(dagbag, bulk_id)  # the run does not poll activations: it may end WAITING_FOR_CARRIER
    assert wait_for(amop_engine, bulk_id, ("PROCESSED", {"PROCESSED": 30})) == ("PROCESSED", {"PROCESSED": 30})
    with amop_engine.connect() as conn:
        rows = {r.ICCID: r for r in conn.execute(select(t.m2m_device_change.c.ICCID, t.m2m_device_change.c.MSISDN,
                                                        t.m2m_device_change.c.IpAddress)
                                                 .where(t.m2m_device_change.c.BulkChangeId == bulk_id))}
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.MSISDN, t.device.c.IPAddress,
                                                           t.device.c.Status))}
    for iccid in iccids:
        carrier = ts.device(iccid)
        assert (rows[iccid].MSISDN, rows[iccid].IpAddress) == (carrier["msisdn"], carrier["ipAddress"])
        assert (devices[iccid].MSISDN, devices[iccid].IPAddress, devices[iccid].Status) == \
            (carrier["msisdn"], carrier["ipAddress"], "active")
    assert all("ThingSpace callback for request" in d for d in details(amop_engine, bulk_id).values())
    # nobody asked the carrier about the lines: the callbacks alone settled them
    assert ts.calls(method="POST", path_contains="/devices/actions/list") == []
    stored = callback_rows(amop_engine)
    assert sorted(r.ICCID for r in stored) == sorted(iccids)
    assert {(r.APIStatus, r.ServiceProviderId, r.TenantId) for r in stored} == {("Success", SP, 1)}
    texts = " ".join(r.APIResponse for r in stored)
    assert CALLBACK_SECRET not in texts and "password" not in texts and "cb-user" not in texts
    delivered = [d for d in ts.request("GET", "/deliveries")]
    assert len(delivered) == 30 and all(d["delivered"] and d["url"] == ts.url for d in delivered)
    assert_no_secret_in(api_server.log())


def test_suspends_and_identifier_changes_settle_from_the_callbacks(dagbag, amop_engine, simulator, ts):
    iccids, ids = fleet(amop_engine, ts, "active", 510_000, 40)
    polls_fail(ts)
    suspend = status_bulk(amop_engine, iccids[:20], "Suspend")
    summary = run_process(dagbag, suspend)
    assert summary["status"] == "PROCESSED" and counts(amop_engine, suspend) == ("PROCESSED", {"PROCESSED": 20})
    assert {ts.device(i)["state"] for i in iccids[:20]} == {"suspend"}

    new_sims = [seed.make_iccid(520_000 + i) for i in range(10)]
    new_imeis = [b + luhn_check_digit(b) for b in (f"35{8_000 + i:012d}" for i in range(10))]
    swap = bulk(amop_engine, [{"ICCID": o, "ChangeRequest": {"NewICCID": n}} for o, n in zip(iccids[20:30], new_sims)]
                + [{"ICCID": o, "ChangeRequest": {"NewIMEI": n}} for o, n in zip(iccids[30:], new_imeis)],
                ChangeType.CHANGE_ICCID_AND_IMEI)
    summary = run_process(dagbag, swap)
    assert summary["status"] == "PROCESSED" and counts(amop_engine, swap) == ("PROCESSED", {"PROCESSED": 20})
    with amop_engine.connect() as conn:
        moved = {r.Id: r for r in conn.execute(select(t.device.c.Id, t.device.c.ICCID, t.device.c.IMEI))}
    assert [moved[i].ICCID for i in ids[20:30]] == new_sims and [moved[i].IMEI for i in ids[30:]] == new_imeis
    for bulk_id in (suspend, swap):
        assert all("ThingSpace callback for request" in d for d in details(amop_engine, bulk_id).values())
    assert ts.calls(method="GET", path_contains="/requests/", status=200) == []  # no poll got an answer
    assert len(callback_rows(amop_engine)) == 40


def test_a_callback_without_the_secret_is_refused_logged_and_changes_nothing(dagbag, amop_engine, simulator, ts,
                                                                            api_server):
    ts.configure(drop_callbacks=True)  # the carrier's own callbacks are lost: the forged ones are all there is
    iccids, _ = fleet(amop_engine, ts, "preactive", 530_000, 3)
    bulk_id = status_bulk(amop_engine, iccids, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    run_process(dagbag, bulk_id)
    assert counts(amop_engine, bulk_id) == ("WAITING_FOR_CARRIER", {"PENDING_ACTIVATION": 3})
    with amop_engine.connect() as conn:
        request_id = conn.execute(select(t.m2m_device_change.c.CarrierRequestId)
                                  .where(t.m2m_device_change.c.BulkChangeId == bulk_id)).scalars().first()
    forged = {"requestId": request_id, "deviceIds": [{"id": iccids[0], "kind": "iccid"}], "status": "Failed",
              "faultResponse": {"faultcode": "UnifiedWebService.REQUEST_FAILED.Forged", "faultstring": "forged"},
              "username": "bulkchange"}
    wrong = requests.post(ts.url, json={**forged, "password": "not-the-secret-42"}, timeout=30)
    missing = requests.post(ts.url, json=forged, timeout=30)
    assert (wrong.status_code, missing.status_code) == (401, 401)
    refusals = refusals_logged(api_server)  # logged before the answer
    assert len(refusals) == 2 and all(f"service provider {SP}" in m and "(401)" in m for m in refusals)
    assert_no_secret_in(api_server.log(), "not-the-secret-42")
    huge = requests.post(ts.url, data=b'{"requestId": "' + b"7" * 70_000 + b'"}', timeout=30,
                         headers={"Content-Type": "application/json"})
    assert huge.status_code == 413  # not read, whatever it holds
    assert callback_rows(amop_engine) == []
    assert counts(amop_engine, bulk_id) == ("WAITING_FOR_CARRIER", {"PENDING_ACTIVATION": 3})

    # the same callback with the account's secret is taken: it would have failed the device change
    right = requests.post(ts.url, json={**forged, "password": CALLBACK_SECRET}, timeout=30)
    assert right.status_code == 200
    assert wait_for(amop_engine, bulk_id, ("WAITING_FOR_CARRIER", {"PENDING_ACTIVATION": 2, "API_FAILED": 1})) == \
        ("WAITING_FOR_CARRIER", {"PENDING_ACTIVATION": 2, "API_FAILED": 1})
    assert "Forged" in details(amop_engine, bulk_id)[iccids[0]]
    assert_no_secret_in(api_server.log(), "not-the-secret-42")


def test_the_endpoint_reads_the_connections_kept_in_the_metadata_db(amop_engine, simulator, api_server,
                                                                  monkeypatch):
    """Connections made in the UI live in the metadata DB: the endpoint, in the api-server's process,
    reads them there as well as from the environment (the task SDK's BaseHook in a server context)."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    for name in ("AIRFLOW_CONN_AMOP_DB", f"AIRFLOW_CONN_CARRIER_SP_{SP}"):
        monkeypatch.delenv(name, raising=False)
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
    ids = ["amop_db", f"carrier_sp_{SP}"]
    kept = [Connection.from_json(amop_conn_json(amop_engine), conn_id=ids[0]),
            Connection(conn_id=ids[1], conn_type="thingspace", host=simulator.url_for("thingspace"), login="cb-key",
                       password=SECRETS[0], extra=json.dumps({"account_name": ACCOUNT,
                                                              "callback_secret": CALLBACK_SECRET}))]
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id.in_(ids)).delete(synchronize_session=False)
        session.add_all(kept)
    try:
        api_server.start()
        url = f"{api_server.url}/carrier-callbacks/thingspace/{SP}"
        body = {"requestId": "req-kept-in-the-db", "deviceIds": [{"id": seed.make_iccid(560_000), "kind": "iccid"}],
                "status": "Success", "username": "bulkchange"}
        # 401, not 403: the secret was found (and this one is not it)
        assert requests.post(url, json={**body, "password": "not-the-secret-42"}, timeout=30).status_code == 401
        assert requests.post(url, json={**body, "password": CALLBACK_SECRET}, timeout=30).status_code == 200
        assert [(r.RequestId, r.ServiceProviderId) for r in callback_rows(amop_engine)] == \
            [("req-kept-in-the-db", SP)]
        assert_no_secret_in(api_server.log(), "not-the-secret-42")
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id.in_(ids)).delete(synchronize_session=False)


def test_lost_callbacks_settle_by_polling(dagbag, amop_engine, simulator, ts):
    from airflow.sdk import DagRunState

    ts.configure(drop_callbacks=True)
    iccids, _ = fleet(amop_engine, ts, "active", 540_000, 20)
    suspend = status_bulk(amop_engine, iccids, "Suspend")
    summary = run_process(dagbag, suspend)  # bulk_change_process's own wait polls the requests
    assert summary["status"] == "PROCESSED" and counts(amop_engine, suspend) == ("PROCESSED", {"PROCESSED": 20})
    assert ts.calls(method="GET", path_contains="/requests/", status=200)

    fresh, _ = fleet(amop_engine, ts, "preactive", 550_000, 10)
    activate = status_bulk(amop_engine, fresh, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    run_process(dagbag, activate)
    assert counts(amop_engine, activate) == ("WAITING_FOR_CARRIER", {"PENDING_ACTIVATION": 10})
    deadline = time.monotonic() + 30
    while any(ts.device(i)["state"] != "active" for i in fresh) and time.monotonic() < deadline:
        time.sleep(0.2)  # the carrier completes the activations (action_delay_s)
    run = dagbag.dags["device_status_reconcile"].test(run_conf={"service_provider_ids": [SP], "dry_run": False})
    assert run.state == DagRunState.SUCCESS
    assert counts(amop_engine, activate) == ("PROCESSED", {"PROCESSED": 10})
    assert callback_rows(amop_engine) == []
    dropped = ts.request("GET", "/deliveries")
    assert len(dropped) == 30 and all(d.get("dropped") for d in dropped)
