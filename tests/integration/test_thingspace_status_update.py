"""ThingSpace status updates through the core against the ThingSpace simulator over HTTP:
actions wait on the carrier, settle through bulkchange.reconcile, tokens refresh themselves."""
import pytest
from sqlalchemy import select

from bulkchange import processing, reconcile
from bulkchange.carriers.thingspace import ThingSpaceClient
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration

ACCOUNT = "0000000000-00001"
SECRETS = ("ts-secret-9", "uws-password-9")


@pytest.fixture
def ts(simulator):
    control = simulator.control("thingspace")
    control.reset()
    control.configure(action_delay_s=0.3)
    carrier = simulator.carrier("thingspace")
    carrier.clients["ts-key"] = SECRETS[0]
    carrier.users["ts-user"] = SECRETS[1]
    return control


@pytest.fixture
def ts_client(simulator):
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=4, base_delay=0.05, max_delay=1))
    client = ThingSpaceClient(simulator.url_for("thingspace"), "ts-key", SECRETS[0], "ts-user", SECRETS[1], ACCOUNT,
                              policy=policy, timeout=10)
    yield client
    client.close()


def make_fleet(engine, control, n, state, start=60_000):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    control.seed_devices([{"iccid": i, "state": state, "accountName": ACCOUNT, "imei": f"35{start + n:013d}"}
                          for i in iccids])
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        seed.add_test_references(conn, tenant_id=1)  # the Rev.io customers these tests name
        seed.add_devices(conn, [{"ICCID": i, "Status": state} for i in iccids], sp_id=4, tenant_id=1)
    return iccids


def bulk(engine, iccids, status, **request):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": status, **request}}
                                              for i in iccids])


def process(engine, bulk_id, client):
    plan = processing.prepare(engine, bulk_id, batch_size=50)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client)
    return processing.finalize(engine, bulk_id)


def settle_until_done(engine, bulk_id, client, rounds=40, **kw):
    """Settle until nothing waits; the returned summary counts what every round settled."""
    import time
    from collections import Counter

    total = Counter()
    for _ in range(rounds):
        s = reconcile.settle_bulk(engine, bulk_id, client, **kw)
        total.update(s.settled)
        if s.still_waiting == 0:
            break
        time.sleep(0.2)
    s.settled = dict(total)
    return s


def test_suspend_waits_for_the_request_then_settles(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 120, "active")
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    summary = process(amop_engine, bulk_id, ts_client)
    assert summary["status"] == "WAITING_FOR_CARRIER" and summary["counts"] == {"PENDING_CARRIER": 120}
    s = settle_until_done(amop_engine, bulk_id, ts_client, count_checks=False)
    assert s.settled == {"PROCESSED": 120} and s.bulk_status == "PROCESSED"
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(t.device.c.Status)).scalars()) == {"suspend"}
        hist = conn.execute(select(t.device_status_history.c.PreviousStatus,
                                   t.device_status_history.c.CurrentStatus)).all()
        logs = conn.execute(select(t.device_bulk_change_log.c.RequestText,
                                   t.device_bulk_change_log.c.ResponseText)).all()
    assert set(hist) == {("active", "suspend")} and len(hist) == 120
    carrier = ts.device(iccids[0])
    assert carrier["state"] == "suspend"
    texts = " ".join(a + b for a, b in logs)
    assert not any(s in texts for s in SECRETS) and "Bearer" not in texts
    token, session = ts_client._token, ts_client._session
    assert token and session and token not in texts and session not in texts


def test_restore_uses_the_restore_action_and_deactivate_sends_reason_code(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 4, "suspend")
    process(amop_engine, bulk(amop_engine, iccids[:2], "Restore"), ts_client)
    process(amop_engine, bulk(amop_engine, iccids[2:], "Deactivate"), ts_client)
    paths = {c["path"].rsplit("/", 1)[-1] for c in ts.calls(method="POST") if "/actions/" in c["path"]}
    assert {"restore", "deactivate"} <= paths
    deact = [c for c in ts.calls(method="POST") if c["path"].endswith("/deactivate")]
    assert all(c["body"]["reasonCode"] == "FF" for c in deact)


def test_activation_fills_msisdn_and_ip_when_active(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 30, "preactive")
    bulk_id = bulk(amop_engine, iccids, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    summary = process(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"PENDING_ACTIVATION": 30} and summary["status"] == "WAITING_FOR_CARRIER"
    with amop_engine.connect() as conn:
        req_ids = set(conn.execute(select(t.m2m_device_change.c.CarrierRequestId)).scalars())
    activations = [c for c in ts.calls(method="POST") if c["path"].endswith("/actions/activate")]
    assert None not in req_ids and len(req_ids) == len(activations) == 1  # 30 devices, one grouped request
    assert sorted(d["deviceIds"][0]["id"] for d in activations[0]["body"]["devices"]) == sorted(iccids)
    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 30} and s.bulk_status == "PROCESSED"
    with amop_engine.connect() as conn:
        changes = conn.execute(select(t.m2m_device_change.c.ICCID, t.m2m_device_change.c.MSISDN,
                                      t.m2m_device_change.c.IpAddress)).all()
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.MSISDN, t.device.c.IPAddress,
                                                           t.device.c.Status))}
    for iccid, msisdn, ip in changes:
        assert msisdn and ip
        assert (devices[iccid].MSISDN, devices[iccid].IPAddress, devices[iccid].Status) == (msisdn, ip, "active")


def test_activation_without_plan_is_rejected_before_any_call(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 2, "preactive")
    summary = process(amop_engine, bulk(amop_engine, iccids, "Active"), ts_client)
    assert summary["counts"] == {"ERROR": 2}
    assert ts.calls(method="POST") == [] or all("/actions/" not in c["path"] for c in ts.calls(method="POST"))


def test_carrier_refusal_and_check_limit_fail_with_reasons(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 3, "preactive")
    ts.seed_devices([{"iccid": iccids[0], "state": "active", "accountName": ACCOUNT}])  # carrier disagrees
    ts.configure(action_delay_s=0.2)
    bulk_id = bulk(amop_engine, iccids, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    process(amop_engine, bulk_id, ts_client)
    s = settle_until_done(amop_engine, bulk_id, ts_client)
    with amop_engine.connect() as conn:
        b = bulk_changes.load_bulk_change(conn, bulk_id)
        by_iccid = {dc.iccid: dc for dc in device_changes.load_device_changes(conn, b)}
    assert by_iccid[iccids[0]].status.value == "API_FAILED"
    assert "DeviceAlreadyActive" in by_iccid[iccids[0]].status_details
    assert s.bulk_status == "PROCESSED_WITH_ERRORS"

    ts.configure(action_delay_s=3600)  # never finishes within the test
    slow = [seed.make_iccid(62_000 + i) for i in range(2)]
    ts.seed_devices([{"iccid": i, "state": "preactive", "accountName": ACCOUNT} for i in slow])
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": "preactive"} for i in slow], sp_id=4, tenant_id=1)
    slow_bulk = bulk(amop_engine, slow, "Active", Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004"})
    process(amop_engine, slow_bulk, ts_client)
    for _ in range(3):
        s = reconcile.settle_bulk(amop_engine, slow_bulk, ts_client, max_checks=3)
    assert s.settled == {"API_FAILED": 2} and s.bulk_status == "ERROR"
    with amop_engine.connect() as conn:
        b = bulk_changes.load_bulk_change(conn, slow_bulk)
        assert all("not active after 3 checks" in dc.status_details
                   for dc in device_changes.load_device_changes(conn, b))


def test_expired_tokens_are_renewed_once(amop_engine, ts, ts_client, simulator):
    iccids = make_fleet(amop_engine, ts, 10, "active")
    ts_client.get_device(iccids[0])  # logged in
    simulator.control("thingspace").request("POST", "/expire-tokens")
    summary = process(amop_engine, bulk(amop_engine, iccids, "Suspend"), ts_client)
    assert summary["counts"] == {"PENDING_CARRIER": 10}


def test_drift_in_the_device_list_is_recorded_exactly_once(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 230, "active", start=64_000)  # three pages of the device list
    drifted = iccids[::23]
    ts.seed_devices([{"iccid": i, "state": "suspend", "accountName": ACCOUNT} for i in drifted])
    ts.seed_devices([{"iccid": seed.make_iccid(69_999), "state": "active", "accountName": "0000000000-00009"}])
    first = reconcile.reconcile_provider_statuses(amop_engine, 4, Integration.THINGSPACE, ts_client)
    assert first["drift"] == {"suspend -> active": len(drifted)} and first["updated"] == len(drifted)
    assert first["carrier_devices"] == 230  # only this account's devices
    second = reconcile.reconcile_provider_statuses(amop_engine, 4, Integration.THINGSPACE, ts_client)
    assert second["drift"] == {} and second["updated"] == 0
    with amop_engine.connect() as conn:
        rows = conn.execute(select(t.device_status_history.c.ICCID, t.device_status_history.c.PreviousStatus,
                                   t.device_status_history.c.CurrentStatus, t.device_status_history.c.Source)).all()
    assert sorted(rows) == sorted((i, "active", "suspend", "Reconciliation") for i in drifted)
    pages = ts.calls(method="POST", path_contains="/actions/list")
    assert all(c["body"].get("maxNumberOfDevices", 0) <= 100 for c in pages)
