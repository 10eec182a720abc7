"""Telegence status updates through the core against the Telegence simulator over HTTP: suspend,
restore and cancel are immediate PATCHes; activations wait as PENDING_ACTIVATION and settle through
bulkchange.reconcile; secrets never reach the log."""
import time

import pytest
from sqlalchemy import select, update

from bulkchange import processing, reconcile
from bulkchange.carriers import CarrierSettings, build_client
from bulkchange.carriers.telegence import TelegenceClient
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration
from tests.integration.flow import process, settle_until_done

APP, SECRET = "tg-int-app", "tg-int-secret-42"
SP = 6
MOBILITY = 2
DC = t.mobility_device_change


@pytest.fixture
def tg(simulator):
    control = simulator.control("telegence")
    control.reset()
    control.set_accounts({APP: SECRET})
    control.configure(activation_delay_s=0.3)
    return control


@pytest.fixture
def tg_client(simulator):
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=1))
    client = TelegenceClient(simulator.url_for("telegence"), APP, SECRET, policy=policy, timeout=10)
    yield client
    client.close()


def number(i):
    return f"1404{i:07d}"


def make_fleet(engine, control, n, status, start=40_000, with_line=True):
    """n devices in the AMOP DB and at the carrier; ``with_line=False``: SIMs in inventory."""
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    numbers = {iccid: number(start + i) if with_line else None for i, iccid in enumerate(iccids)}
    control.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": status} if with_line else {"iccid": i}
                          for i in iccids])
    with engine.begin() as conn:
        if not conn.execute(select(t.service_provider.c.Id).where(t.service_provider.c.Id == SP)).first():
            seed.add_service_provider(conn, sp_id=SP, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": status} for i in iccids],
                         sp_id=SP, tenant_id=1)
    return iccids, numbers


def bulk(engine, iccids, status, numbers=None, **request):
    with engine.begin() as conn:
        return seed.add_bulk_change(
            conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, portal_type=MOBILITY,
            requests=[{"ICCID": i, "MSISDN": (numbers or {}).get(i),
                       "ChangeRequest": {"UpdateStatus": status, **request}} for i in iccids])


def log_texts(engine, bulk_id):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        rows = conn.execute(select(lg.c.MobilityDeviceChangeId, lg.c.RequestText, lg.c.ResponseText, lg.c.ErrorText,
                                   lg.c.LogEntryDescription).where(lg.c.BulkChangeId == bulk_id)).all()
    return rows


def assert_no_secret(engine):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        rows = conn.execute(select(lg.c.RequestText, lg.c.ResponseText, lg.c.ErrorText)).all()
    assert rows
    assert not any(SECRET in (a or "") + (b or "") + (c or "") for a, b, c in rows)


def devices(engine):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(t.mobility_device.c.ICCID, t.mobility_device.c.Status, t.mobility_device.c.MSISDN))}


def history(engine, bulk_id):
    h = t.device_status_history
    with engine.connect() as conn:
        return conn.execute(select(h.c.ICCID, h.c.PreviousStatus, h.c.CurrentStatus, h.c.Source)
                            .where(h.c.BulkChangeId == bulk_id)).all()


def test_500_devices_suspend_restore_and_cancel(amop_engine, tg, tg_client):
    iccids, numbers = make_fleet(amop_engine, tg, 500, "A")
    others, other_numbers = make_fleet(amop_engine, tg, 500, "A", start=40_500)
    numbers.update(other_numbers)
    for fleet, word, before, after in ((iccids, "Suspend", "A", "S"), (iccids, "Restore", "S", "A"),
                                       (iccids, "Suspend", "A", "S"), (iccids, "Cancel", "S", "C"),
                                       (others, "Deactivate", "A", "C")):
        bulk_id = bulk(amop_engine, fleet, word, numbers)
        summary = process(amop_engine, bulk_id, tg_client)
        assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": 500}, word
        hist = history(amop_engine, bulk_id)
        assert len(hist) == 500 and set((p, c, s) for _, p, c, s in hist) == {(before, after, "BulkChange")}
        logs = log_texts(amop_engine, bulk_id)
        assert len(logs) == 500 and {r.LogEntryDescription for r in logs} == {
            "Update Telegence Subscriber: Telegence API"}
        assert len({r.MobilityDeviceChangeId for r in logs}) == 500
        assert all(f'"value": "{after}"' in r.RequestText for r in logs)
        ours = devices(amop_engine)
        assert {ours[i].Status for i in fleet} == {after}
        assert {tg.request("GET", f"/lines/{numbers[i]}")["subscriberStatus"] for i in fleet[::50]} == {after}
    patches = tg.calls(method="PATCH", limit=5000)
    assert len(patches) == 500 * 5  # one PATCH per device per change, no retries needed
    assert_no_secret(amop_engine)


def test_500_activations_wait_then_settle_with_their_numbers(amop_engine, tg, tg_client):
    iccids, _ = make_fleet(amop_engine, tg, 500, "inventory", start=41_000, with_line=False)
    bulk_id = bulk(amop_engine, iccids, "Active", Request={"singleUserCode": "IOT5GB", "serviceZipCode": "30004"},
                   PostUpdateStatusId=8)
    summary = process(amop_engine, bulk_id, tg_client)
    assert summary["status"] == "WAITING_FOR_CARRIER" and summary["counts"] == {"PENDING_ACTIVATION": 500}
    with amop_engine.connect() as conn:
        ids = conn.execute(select(DC.c.CarrierRequestId).where(DC.c.BulkChangeId == bulk_id)).scalars().all()
    assert None not in ids and len(set(ids)) == 500
    posts = tg.calls(method="POST", limit=5000)
    assert len(posts) == 500 and all(c["body"][0]["service"]["serviceCharacteristic"][0]["name"] == "sim"
                                     for c in posts)
    s = settle_until_done(amop_engine, bulk_id, tg_client)
    assert s.settled == {"PROCESSED": 500} and s.bulk_status == "PROCESSED"
    ours = devices(amop_engine)
    with amop_engine.connect() as conn:
        changes = {r.ICCID: r.MSISDN for r in conn.execute(select(DC.c.ICCID, DC.c.MSISDN)
                                                           .where(DC.c.BulkChangeId == bulk_id))}
        status_ids = set(conn.execute(select(t.mobility_device.c.DeviceStatusId)).scalars())
        active_id = device_status_ids(conn, Integration.TELEGENCE, ["A"])["A"]
        lines = set(conn.execute(select(t.telegence_device.c.SubscriberNumberStatus,
                                        t.telegence_device.c.DeviceStatusId)).all())
    # the id is Telegence's "a" from DeviceStatus, not the request's PostUpdateStatusId (8, ThingSpace's)
    assert active_id is not None and active_id != 8 and status_ids == {active_id}
    assert lines == {("A", active_id)}  # the new lines are in TelegenceDevice too
    for iccid in iccids:
        assert ours[iccid].Status == "A" and ours[iccid].MSISDN and ours[iccid].MSISDN == changes[iccid]
        line = tg.request("GET", f"/lines/{ours[iccid].MSISDN}")
        assert line["iccid"] == iccid and line["subscriberStatus"] == "A"
    hist = history(amop_engine, bulk_id)
    assert len(hist) == 500 and {(p, c) for _, p, c, _ in hist} == {("inventory", "A")}
    assert_no_secret(amop_engine)


def test_refusals_rejections_and_check_limit_carry_reasons(amop_engine, tg, tg_client):
    iccids, numbers = make_fleet(amop_engine, tg, 3, "A", start=42_000)
    spare, _ = make_fleet(amop_engine, tg, 4, "inventory", start=42_100, with_line=False)
    with amop_engine.begin() as conn:  # a line the carrier does not know, and one without a number
        conn.execute(update(t.mobility_device).where(t.mobility_device.c.ICCID == iccids[1]).values(MSISDN="19999999999"))
        conn.execute(update(t.mobility_device).where(t.mobility_device.c.ICCID == iccids[2]).values(MSISDN=None))
    tg.configure(reject_iccids=[spare[0]])
    plan = {"singleUserCode": "IOT5GB", "serviceZipCode": "30004"}
    suspend = bulk(amop_engine, iccids, "Suspend")
    activate = bulk(amop_engine, spare[:2], "Active", Request=plan)
    no_plan = bulk(amop_engine, spare[2:3], "Active")
    for b in (suspend, activate, no_plan):
        process(amop_engine, b, tg_client)
    settle_until_done(amop_engine, activate, tg_client)
    with amop_engine.connect() as conn:
        out = {}
        for b in (suspend, activate, no_plan):
            bc = bulk_changes.load_bulk_change(conn, b)
            out.update({dc.iccid: dc for dc in device_changes.load_device_changes(conn, bc)})
    assert out[iccids[0]].status.value == "PROCESSED"
    assert out[iccids[1]].status.value == "API_FAILED" and "/service/" in out[iccids[1]].status_details
    assert out[iccids[2]].status.value == "ERROR" and "has no MSISDN" in out[iccids[2]].status_details
    assert out[spare[0]].status.value == "API_FAILED" and "rejected activation" in out[spare[0]].status_details
    assert "injected" in out[spare[0]].status_details
    assert out[spare[1]].status.value == "PROCESSED"
    assert out[spare[2]].status.value == "ERROR" and "singleUserCode" in out[spare[2]].status_details
    assert not [c for c in tg.calls(method="POST") if spare[2] in str(c["body"])]

    tg.configure(activation_delay_s=3600)  # never finishes within the test
    slow = bulk(amop_engine, spare[3:], "Active", Request=plan)
    process(amop_engine, slow, tg_client)
    for _ in range(2):
        s = reconcile.settle_bulk(amop_engine, slow, tg_client, max_checks=2)
    assert s.settled == {"API_FAILED": 1} and s.bulk_status == "ERROR"
    with amop_engine.connect() as conn:
        bc = bulk_changes.load_bulk_change(conn, slow)
        (dc,) = device_changes.load_device_changes(conn, bc)
    assert "activation pending after 2 checks" in dc.status_details


def test_interrupted_attempt_is_checked_at_the_carrier_before_resending(amop_engine, tg, tg_client):
    iccids, numbers = make_fleet(amop_engine, tg, 4, "A", start=43_000)
    bulk_id = bulk(amop_engine, iccids, "Suspend", numbers)
    plan = processing.prepare(amop_engine, bulk_id)
    ids = plan.batches[0].device_change_ids
    # an earlier attempt sent two of them and died before recording anything
    tg.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "S"} for i in iccids[:2]])
    with amop_engine.begin() as conn:
        conn.execute(update(DC).where(DC.c.Id.in_(ids)).values(Status="PROCESSING"))
    processing.process_batch(amop_engine, bulk_id, ids, client=tg_client)
    assert processing.finalize(amop_engine, bulk_id)["counts"] == {"PROCESSED": 4}
    patched = {c["path"].rsplit("/", 1)[-1] for c in tg.calls(method="PATCH")}
    assert patched == {numbers[i] for i in iccids[2:]}


def test_status_reconciliation_reads_the_line_list(amop_engine, tg, tg_client):
    iccids, numbers = make_fleet(amop_engine, tg, 30, "A", start=44_000)
    tg.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "S"} for i in iccids[:7]])
    result = reconcile.reconcile_provider_statuses(amop_engine, SP, Integration.TELEGENCE, tg_client)
    assert result["drift"] == {"S -> A": 7} and result["updated"] == 7 and result["carrier_devices"] == 30
    again = reconcile.reconcile_provider_statuses(amop_engine, SP, Integration.TELEGENCE, tg_client)
    assert again["drift"] == {} and again["updated"] == 0


def test_build_client_reads_the_connection(simulator, tg):
    settings = CarrierSettings(simulator.url_for("telegence"), APP, SECRET,
                               extra={"activation_path": "/custom/activation/"})
    client = build_client(Integration.TELEGENCE, settings)
    assert isinstance(client, TelegenceClient) and client.activation_path == "/custom/activation"
    assert SECRET in client._secrets
    with pytest.raises(ValueError, match="app-secret"):
        build_client(Integration.TELEGENCE, CarrierSettings(simulator.url_for("telegence"), APP, None))


def test_interrupted_activation_found_active_is_not_sent_again(amop_engine, tg, tg_client):
    spare, _ = make_fleet(amop_engine, tg, 3, "inventory", start=45_000, with_line=False)
    bulk_id = bulk(amop_engine, spare, "Active", Request={"singleUserCode": "IOT5GB", "serviceZipCode": "30004"})
    ids = processing.prepare(amop_engine, bulk_id).batches[0].device_change_ids
    # the lost attempt's activation of the first SIM went through at the carrier
    tg.seed_devices([{"iccid": spare[0], "msisdn": "14700000999", "status": "A"}])
    with amop_engine.begin() as conn:
        conn.execute(update(DC).where(DC.c.Id.in_(ids)).values(Status="PROCESSING"))
    processing.process_batch(amop_engine, bulk_id, ids, client=tg_client)
    posted = [c["body"][0]["service"]["serviceCharacteristic"][0]["value"] for c in tg.calls(method="POST")]
    assert sorted(posted) == sorted(spare[1:])
    assert len(tg.calls(method="GET", path_contains="lineconfig")) == 1  # the line list is read once per batch
    assert devices(amop_engine)[spare[0]].MSISDN == "14700000999"
    assert settle_until_done(amop_engine, bulk_id, tg_client).bulk_status == "PROCESSED"


def test_carrier_errors_are_retried_and_each_line_changes_once(amop_engine, tg, simulator):
    iccids, numbers = make_fleet(amop_engine, tg, 60, "A", start=46_000)
    tg.configure(error_rate=0.3, seed=7)
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.05))
    client = TelegenceClient(simulator.url_for("telegence"), APP, SECRET, policy=policy, timeout=10)
    try:
        summary = process(amop_engine, bulk(amop_engine, iccids, "Suspend", numbers), client)
    finally:
        client.close()
    assert summary["counts"] == {"PROCESSED": 60}
    patches = tg.calls(method="PATCH", limit=5000)
    assert len([c for c in patches if c["status"] == 200]) == 60 and len(patches) > 60
    assert_no_secret(amop_engine)


def test_lost_activation_answers_are_not_resent_and_settle_from_the_line_list(amop_engine, tg, tg_client):
    spare, _ = make_fleet(amop_engine, tg, 5, "inventory", start=47_000, with_line=False)
    tg.configure(malformed_rate=1.0, activation_delay_s=0.1)  # every answer is cut in transit
    bulk_id = bulk(amop_engine, spare, "Active", Request={"singleUserCode": "IOT5GB", "serviceZipCode": "30004"})
    summary = process(amop_engine, bulk_id, tg_client)
    assert summary["counts"] == {"PENDING_ACTIVATION": 5}
    assert len(tg.calls(method="POST")) == 5  # accepted once each, never sent again
    with amop_engine.connect() as conn:
        assert set(conn.execute(select(DC.c.CarrierRequestId).where(DC.c.BulkChangeId == bulk_id)).scalars()) == {None}
    tg.configure(malformed_rate=0.0)
    time.sleep(0.2)  # past the activation delay: the carrier has the lines
    s = reconcile.settle_bulk(amop_engine, bulk_id, tg_client)
    assert s.settled == {"PROCESSED": 5} and s.bulk_status == "PROCESSED"
    assert len(tg.calls(method="GET", path_contains="lineconfig")) == 1  # one line list for the whole pass
    ours = devices(amop_engine)
    assert all(ours[i].MSISDN and ours[i].Status == "A" for i in spare)


def test_rejected_duplicate_of_an_active_line_is_processed(amop_engine, tg, tg_client):
    spare, _ = make_fleet(amop_engine, tg, 2, "inventory", start=48_000, with_line=False)
    tg.seed_devices([{"iccid": spare[0], "msisdn": "14700001234", "status": "A"}])  # active already at the carrier
    bulk_id = bulk(amop_engine, spare, "Active", Request={"singleUserCode": "IOT5GB", "serviceZipCode": "30004"})
    process(amop_engine, bulk_id, tg_client)
    s = settle_until_done(amop_engine, bulk_id, tg_client)
    assert s.settled == {"PROCESSED": 2}
    out = {}
    with amop_engine.connect() as conn:
        bc = bulk_changes.load_bulk_change(conn, bulk_id)
        out = {dc.iccid: dc for dc in device_changes.load_device_changes(conn, bc)}
    assert "was rejected" in out[spare[0]].status_details and out[spare[0]].msisdn == "14700001234"
