"""Teal status updates through the core against the Teal simulator over HTTP: enable and disable
call their own endpoints, every device waits on its operation result and settles through
bulkchange.reconcile, a failed entry is an error, secrets never reach the log."""
import pytest
from sqlalchemy import select, update

from bulkchange import processing, reconcile
from bulkchange.carriers import CarrierSettings, build_client
from bulkchange.carriers.teal import PROCESSING, TealClient
from bulkchange.db import bulk_changes, device_changes as device_changes_db
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration
from simulators.teal import make_eid
from tests.integration.flow import process, settle_until_done

KEY, SECRET = "teal-int-key", "teal-int-secret-77"
SP = 12
DC = t.m2m_device_change


@pytest.fixture
def teal(simulator):
    control = simulator.control("teal")
    control.reset()
    control.set_accounts({KEY: SECRET})
    control.configure(operation_delay_s=0.2)
    return control


@pytest.fixture
def teal_client(simulator):
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=1))
    client = TealClient(simulator.url_for("teal"), KEY, SECRET, policy=policy, timeout=10)
    yield client
    client.close()


def make_fleet(engine, control, n, status, start=30_000):
    """Devices whose EID is on the Device row (the even ones also carry it on the device change)."""
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    control.seed_devices([{"iccid": i, "eid": make_eid(i), "status": status} for i in iccids])
    with engine.begin() as conn:
        if not conn.execute(select(t.service_provider.c.Id).where(t.service_provider.c.Id == SP)).first():
            seed.add_service_provider(conn, sp_id=SP, name="teal", integration=Integration.TEAL, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "EID": make_eid(i), "Status": status} for i in iccids],
                         sp_id=SP, tenant_id=1)
    return iccids


def bulk(engine, iccids, status, **request):
    with engine.begin() as conn:
        return seed.add_bulk_change(
            conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
            requests=[{"ICCID": i, "EID": make_eid(i) if n % 2 == 0 else None,
                       "ChangeRequest": {"UpdateStatus": status, **request}} for n, i in enumerate(iccids)])


def device_changes(engine, bulk_id):
    with engine.connect() as conn:
        bc = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes_db.load_device_changes(conn, bc)}


def assert_no_secret(engine):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        rows = conn.execute(select(lg.c.RequestText, lg.c.ResponseText, lg.c.ErrorText)).all()
    assert rows
    assert not any(SECRET in (a or "") + (b or "") + (c or "") for a, b, c in rows)


@pytest.mark.parametrize("start_status,word,endpoint,after", [
    ("ONLINE", "Suspend", "disable", "STOPPED"),
    ("STOPPED", "Active", "enable", "ONLINE"),
    ("WAITING", "Disable", "disable", "STOPPED"),
])
def test_500_devices_each_transition(amop_engine, teal, teal_client, start_status, word, endpoint, after):
    iccids = make_fleet(amop_engine, teal, 500, start_status)
    bulk_id = bulk(amop_engine, iccids, word, PostUpdateStatusId=31)
    summary = process(amop_engine, bulk_id, teal_client)
    assert summary["status"] == "WAITING_FOR_CARRIER" and summary["counts"] == {"PENDING_CARRIER": 500}
    posts = teal.calls(method="POST", limit=5000)
    assert len(posts) == 5 and {c["path"].rsplit("/", 1)[-1] for c in posts} == {endpoint}  # legacy: always disable
    assert sorted(e for c in posts for e in c["body"]["entries"]) == sorted(make_eid(i) for i in iccids)
    s = settle_until_done(amop_engine, bulk_id, teal_client, count_checks=False)
    assert s.settled == {"PROCESSED": 500} and s.bulk_status == "PROCESSED"
    assert len(teal.calls(path_contains="operation-result", status=200, limit=5000)) == 5  # one read per request
    with amop_engine.connect() as conn:
        ours = conn.execute(select(t.device.c.Status, t.device.c.DeviceStatusId)).all()
        hist = conn.execute(select(t.device_status_history.c.PreviousStatus, t.device_status_history.c.CurrentStatus)
                            .where(t.device_status_history.c.BulkChangeId == bulk_id)).all()
        logs = conn.execute(select(t.device_bulk_change_log.c.M2MDeviceChangeId,
                                   t.device_bulk_change_log.c.LogEntryDescription)
                            .where(t.device_bulk_change_log.c.BulkChangeId == bulk_id)).all()
        expected = device_status_ids(conn, Integration.TEAL, [after])[after]  # not the request's PostUpdateStatusId
    assert expected is not None and set(ours) == {(after, expected)}
    assert len(hist) == 500 and set(hist) == {(start_status, after)}
    descriptions = [d for _, d in logs]
    assert descriptions.count(f"Teal {endpoint.capitalize()} eSIM: Teal API") == 5
    assert descriptions.count("Teal Operation Result: Teal API") == 5
    # each device change has a row when sent and one when settled; a group's call is on one of them
    assert len(logs) == 1000 and len({i for i, _ in logs}) == 500
    assert {teal.device(i)["deviceStatus"] for i in iccids} == {after}
    assert_no_secret(amop_engine)


def test_failed_entries_are_api_failed_with_the_carriers_message(amop_engine, teal, teal_client):
    iccids = make_fleet(amop_engine, teal, 6, "ONLINE", start=31_000)
    teal.configure(reject_eids=[make_eid(iccids[1]), make_eid(iccids[4])])
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    process(amop_engine, bulk_id, teal_client)
    s = settle_until_done(amop_engine, bulk_id, teal_client)
    assert s.settled == {"PROCESSED": 4, "API_FAILED": 2} and s.bulk_status == "PROCESSED_WITH_ERRORS"
    out = device_changes(amop_engine, bulk_id)
    for i in (1, 4):
        assert out[iccids[i]].status.value == "API_FAILED"
        assert f"failed for eSIM {make_eid(iccids[i])}: disable rejected" in out[iccids[i]].status_details
    assert teal.device(iccids[1])["deviceStatus"] == "ONLINE"


def test_refusal_of_an_esim_already_at_the_target_settles_processed_with_teals_words(amop_engine, teal, teal_client):
    """Our copy is stale (STOPPED / ONLINE) while Teal already shows the target: the pipeline sends the
    operation, Teal refuses the no-op (contracts/teal.md rule 12), and the eSIM's state read afterwards
    settles the device change PROCESSED with the carrier's words; a real refusal stays API_FAILED."""
    iccids = make_fleet(amop_engine, teal, 3, "STOPPED", start=31_500)
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "ONLINE"} for i in iccids[:2]])
    teal.configure(reject_eids=[make_eid(iccids[1])])  # refused although not for being there already
    teal.seed_devices([{"iccid": iccids[1], "eid": make_eid(iccids[1]), "status": "STOPPED"}])
    bulk_id = bulk(amop_engine, iccids, "Active")
    assert process(amop_engine, bulk_id, teal_client)["counts"] == {"PENDING_CARRIER": 3}
    s = settle_until_done(amop_engine, bulk_id, teal_client)
    out = device_changes(amop_engine, bulk_id)
    assert out[iccids[0]].status.value == "PROCESSED"
    assert f"eSIM {make_eid(iccids[0])} is ONLINE; it cannot be enabled" in out[iccids[0]].status_details
    assert "already being ONLINE at the carrier" in out[iccids[0]].status_details
    assert out[iccids[1]].status.value == "API_FAILED" and "enable rejected" in out[iccids[1]].status_details
    assert out[iccids[2]].status.value == "PROCESSED"
    assert s.bulk_status == "PROCESSED_WITH_ERRORS"
    with amop_engine.connect() as conn:
        ours = dict(conn.execute(select(t.device.c.ICCID, t.device.c.Status)).all())
    assert ours[iccids[0]] == "ONLINE" and ours[iccids[1]] == "STOPPED"


def test_device_without_eid_is_rejected_before_any_call(amop_engine, teal, teal_client):
    iccids = make_fleet(amop_engine, teal, 2, "ONLINE", start=32_000)
    with amop_engine.begin() as conn:
        conn.execute(update(t.device).where(t.device.c.ICCID == iccids[1]).values(EID=None))
    bulk_id = bulk(amop_engine, iccids[1:], "Suspend")  # odd position 0 -> even: give it none on the change too
    with amop_engine.begin() as conn:
        conn.execute(update(DC).where(DC.c.BulkChangeId == bulk_id).values(EID=None))
    summary = process(amop_engine, bulk_id, teal_client)
    assert summary["counts"] == {"ERROR": 1}
    assert "needs the eSIM's EID" in device_changes(amop_engine, bulk_id)[iccids[1]].status_details
    assert teal.calls(method="POST") == []


def test_processing_as_202_and_the_check_limit(amop_engine, teal, teal_client):
    iccids = make_fleet(amop_engine, teal, 3, "STOPPED", start=33_000)
    # the operations finish only when the test says so: no race with a busy machine's clock
    teal.configure(processing_status=202, operation_delay_s=3600)
    bulk_id = bulk(amop_engine, iccids[:2], "Active")
    process(amop_engine, bulk_id, teal_client)
    first = reconcile.settle_bulk(amop_engine, bulk_id, teal_client)
    assert first.still_waiting == 2  # 202 PROCESSING is not an answer yet
    assert teal.run_scheduled(3600) == 1  # one operation for both eSIMs
    assert settle_until_done(amop_engine, bulk_id, teal_client).settled == {"PROCESSED": 2}
    assert 202 in {c["status"] for c in teal.calls(path_contains="operation-result")}

    teal.configure(operation_delay_s=3600, processing_status=102)
    slow = bulk(amop_engine, iccids[2:], "Active")
    process(amop_engine, slow, teal_client)
    request_id = device_changes(amop_engine, slow)[iccids[2]].carrier_request_id
    assert teal_client.operation_result(request_id) is PROCESSING
    for _ in range(3):
        s = reconcile.settle_bulk(amop_engine, slow, teal_client, max_checks=3)
    assert s.settled == {"API_FAILED": 1} and s.bulk_status == "ERROR"
    assert "still processing after 3 checks" in device_changes(amop_engine, slow)[iccids[2]].status_details


def test_interrupted_attempt_is_checked_at_the_carrier_before_resending(amop_engine, teal, teal_client):
    iccids = make_fleet(amop_engine, teal, 4, "ONLINE", start=34_000)
    bulk_id = bulk(amop_engine, iccids, "Suspend")
    ids = processing.prepare(amop_engine, bulk_id).batches[0].device_change_ids
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "STOPPED"} for i in iccids[:2]])
    with amop_engine.begin() as conn:
        conn.execute(update(DC).where(DC.c.Id.in_(ids)).values(Status="PROCESSING"))
    processing.process_batch(amop_engine, bulk_id, ids, client=teal_client)
    sent = sorted(e for c in teal.calls(method="POST") for e in c["body"]["entries"])
    assert sent == sorted(make_eid(i) for i in iccids[2:])
    s = settle_until_done(amop_engine, bulk_id, teal_client)
    assert s.bulk_status == "PROCESSED"


def test_status_reconciliation_reads_the_esim_list(amop_engine, teal, teal_client):
    iccids = make_fleet(amop_engine, teal, 230, "ONLINE", start=35_000)  # more than two pages of 100
    teal.seed_devices([{"iccid": i, "eid": make_eid(i), "status": "STOPPED"} for i in iccids[:9]])
    result = reconcile.reconcile_provider_statuses(amop_engine, SP, Integration.TEAL, teal_client)
    assert result["carrier_devices"] == 230 and result["drift"] == {"STOPPED -> ONLINE": 9}
    assert reconcile.reconcile_provider_statuses(amop_engine, SP, Integration.TEAL, teal_client)["drift"] == {}


def test_build_client_reads_the_connection(simulator, teal):
    settings = CarrierSettings(simulator.url_for("teal"), KEY, SECRET, extra={"disable_path": "/v2/esims/disable"})
    client = build_client(Integration.TEAL, settings)
    assert isinstance(client, TealClient) and client.paths["disable"] == "/v2/esims/disable"
    assert client.paths["enable"] == "/esims/enable" and SECRET in client._secrets
    with pytest.raises(ValueError, match="ApiSecret"):
        build_client(Integration.TEAL, CarrierSettings(simulator.url_for("teal"), KEY, ""))


def test_lost_answers_are_looked_up_by_request_id_not_resent(amop_engine, teal, simulator):
    """A truncated answer (the operation was applied) is looked up by its requestId at
    ``/operation-result`` before anything is sent again: Teal knows it, so it is never re-sent."""
    iccids = make_fleet(amop_engine, teal, 300, "ONLINE", start=36_000)
    teal.configure(malformed_rate=0.6, seed=5)
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=10, base_delay=0.01, max_delay=0.05))
    client = TealClient(simulator.url_for("teal"), KEY, SECRET, policy=policy, timeout=10)
    try:
        bulk_id = bulk(amop_engine, iccids, "Suspend")
        assert process(amop_engine, bulk_id, client)["counts"] == {"PENDING_CARRIER": 300}
        assert settle_until_done(amop_engine, bulk_id, client).settled == {"PROCESSED": 300}
    finally:
        client.close()
    posts = teal.calls(method="POST", limit=5000)
    assert any(c["fault"] == "malformed" for c in posts)  # some answers were lost...
    assert len(posts) == 3 and len({c["query"] for c in posts}) == 3  # ...and none was sent again
    assert len(teal.request("GET", "/operations")) == 3
