"""Stored ThingSpace callbacks settle device changes through the core (the endpoint itself:
tests/dags/test_thingspace_callbacks.py): a callback stored before the batch recorded its request is
settled by that batch, the poll settles from stored callbacks without asking the carrier, and what is
stored is scrubbed."""
import http.server
import json
import threading
import time

import pytest
from sqlalchemy import select

from bulkchange import processing, reconcile
from bulkchange import thingspace_callbacks as cb
from bulkchange.db import bulk_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType
from tests.integration.test_thingspace_status_update import (  # noqa: F401  (fixtures)
    ACCOUNT,
    make_fleet,
    ts,
    ts_client,
)

SECRET = "stored-callback-secret-77"


@pytest.fixture
def listener(amop_engine, ts):
    """A loopback URL standing in for the endpoint's transport: each callback is stored as the
    endpoint stores it (cb.store), nothing settled."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert cb.authentic(body, SECRET)
            with amop_engine.begin() as conn:
                cb.store(conn, 4, 1, body, cb.parse(body), secrets=[SECRET])
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cb"
    server.shutdown()


def rows(engine, bulk_id):
    dc = t.m2m_device_change.c
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(dc.ICCID, dc.Status, dc.StatusDetails)
                                                 .where(dc.BulkChangeId == bulk_id))}


def stored(engine):
    c = t.thingspace_callback_response_log.c
    with engine.connect() as conn:
        return conn.execute(select(c.RequestId, c.ICCID, c.APIStatus, c.APIResponse)).all()


def test_a_callback_stored_before_the_batch_records_its_request_settles_with_the_batch(
        amop_engine, ts, ts_client, listener):
    ts_client.register_callback(listener, "bulkchange", SECRET)
    active = make_fleet(amop_engine, ts, 2, "active", start=61_000)
    suspended = [seed.make_iccid(61_100 + i) for i in range(2)]
    ts.seed_devices([{"iccid": i, "state": "suspend", "accountName": ACCOUNT} for i in suspended])
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": "suspend"} for i in suspended], sp_id=4, tenant_id=1)
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, requests=[
            *({"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in active),
            *({"ICCID": i, "ChangeRequest": {"UpdateStatus": "Active"}} for i in suspended)])
    # two requests sent one after the other, each answered 1.5 s late; the carrier completes each at
    # once, so the first request's callbacks are stored while the second is still on its way
    ts.configure(action_delay_s=0, latency_ms=1500)
    plan = processing.prepare(amop_engine, bulk_id, batch_size=10)
    (batch,) = plan.batches
    processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=ts_client, max_parallel=1)
    first = rows(amop_engine, bulk_id)
    assert {first[i].Status for i in active} == {"PROCESSED"}  # settled by the batch from the stored callbacks
    assert all("ThingSpace callback for request" in first[i].StatusDetails for i in active)

    # the carrier's request-status reads fail from here on: only stored callbacks can settle the rest
    ts.configure(latency_ms=0, error_rate=1.0, error_statuses=[503], fault_methods=["GET"])
    deadline = time.monotonic() + 30
    while len(stored(amop_engine)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    # (the second request's callbacks may have been stored in time for the batch as well)
    reconcile.settle_bulk(amop_engine, bulk_id, ts_client, count_checks=False)
    done = rows(amop_engine, bulk_id)
    assert all(done[i].Status == "PROCESSED" and "ThingSpace callback" in done[i].StatusDetails for i in suspended)
    with amop_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, bulk_id).status.value == "PROCESSED"
    assert ts.calls(method="GET", path_contains="/requests/", status=200) == []
    kept = stored(amop_engine)
    assert sorted(r.ICCID for r in kept) == sorted(active + suspended) and {r.APIStatus for r in kept} == {"Success"}
    texts = " ".join(r.APIResponse for r in kept)
    assert SECRET not in texts and "bulkchange" not in texts  # the echoed credentials are not kept


def test_a_failure_callback_fails_the_device_change_with_the_carriers_fault(amop_engine, ts, ts_client, listener):
    ts_client.register_callback(listener, "bulkchange", SECRET)
    iccids = make_fleet(amop_engine, ts, 2, "active", start=62_000)
    ts.seed_devices([{"iccid": i, "state": "deactive", "accountName": ACCOUNT} for i in iccids])  # not as we think
    ts.configure(action_delay_s=0.3)
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                                 for i in iccids])
    plan = processing.prepare(amop_engine, bulk_id, batch_size=10)
    processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=ts_client)
    deadline = time.monotonic() + 30
    while len(stored(amop_engine)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    ts.configure(error_rate=1.0, error_statuses=[503], fault_methods=["GET"])
    s = reconcile.settle_bulk(amop_engine, bulk_id, ts_client, count_checks=False, only_reported=True)
    assert s.still_waiting == 0 and s.settled == {"API_FAILED": 2}
    done = rows(amop_engine, bulk_id)
    assert all("DeviceState.Invalid" in done[i].StatusDetails for i in iccids)
    assert {r.APIStatus for r in stored(amop_engine)} == {"Failed"}


def test_an_identifier_change_settles_from_its_callback(amop_engine, ts, ts_client, listener):
    ts_client.register_callback(listener, "bulkchange", SECRET)
    (old,) = make_fleet(amop_engine, ts, 1, "active", start=63_000)
    new = seed.make_iccid(63_500)
    ts.configure(action_delay_s=0.3)
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.CHANGE_ICCID_AND_IMEI,
                                       requests=[{"ICCID": old, "ChangeRequest": {"NewICCID": new}}])
    plan = processing.prepare(amop_engine, bulk_id, batch_size=10)
    processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=ts_client)
    deadline = time.monotonic() + 30
    while not stored(amop_engine) and time.monotonic() < deadline:
        time.sleep(0.1)
    ts.configure(error_rate=1.0, error_statuses=[503], fault_methods=["GET"])  # no poll can answer
    s = reconcile.settle_bulk(amop_engine, bulk_id, ts_client, count_checks=False, only_reported=True)
    assert s.settled == {"PROCESSED": 1} and s.bulk_status == "PROCESSED"
    assert "ThingSpace callback for request" in rows(amop_engine, bulk_id)[old].StatusDetails
    with amop_engine.connect() as conn:
        assert conn.execute(select(t.device.c.ICCID)).scalars().all() == [new]


def test_reports_keep_the_last_final_callback_per_device():
    ok = {"requestId": "r1", "deviceIds": [{"id": "8901", "kind": "Iccid"}], "status": "Success",
          "deviceResponse": {"activateResponse": {"deviceIds": [{"id": "8901", "kind": "iccid"},
                                                                {"id": "14705550000", "kind": "msisdn"}],
                                                  "ipAddress": "10.0.0.9"}}}
    report = cb.parse(ok)
    assert (report.iccid, report.msisdn, report.ip_address, report.succeeded) == ("8901", "14705550000", "10.0.0.9",
                                                                                   True)
    failed = cb.parse({"requestId": "r1", "deviceIds": [{"id": "8901", "kind": "iccid"}], "status": "Failed",
                       "faultResponse": {"faultcode": "X.DeviceAlreadyActive", "faultstring": "already"}})
    assert failed.failed and failed.answer()["devices"][0]["faultResponse"]["faultcode"] == "X.DeviceAlreadyActive"
    assert not cb.parse({"requestId": "r1", "deviceIds": [], "status": "Pending"}).final
    for bad in (None, [], {"status": "Success"}, {"requestId": "x" * 129}, {"requestId": "r", "status": 3}):
        with pytest.raises(cb.CallbackInvalid):
            cb.parse(bad)
    assert cb.authentic({"password": "s3cret"}, "s3cret")
    assert not cb.authentic({"password": "s3cre"}, "s3cret") and not cb.authentic({}, "s3cret")
    assert not cb.authentic({"password": ""}, "") and not cb.authentic({"password": 5}, "5")
