"""ChangeICCIDAndIMEI on Jasper and ThingSpace through the core, against the simulators over HTTP:
the identity moves on the same Device row, history keeps the old ICCID, taken or malformed new
identifiers are refused before any carrier call."""
from sqlalchemy import insert, select

from bulkchange import processing
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, DeviceChangeStatus, Integration, utcnow
from bulkchange.rules import luhn_check_digit
from tests.integration.test_carrier_rate_plan import changes, logs, run
from tests.integration.test_thingspace_status_update import (  # noqa: F401  (fixtures)
    ACCOUNT,
    make_fleet,
    settle_until_done,
    ts,
    ts_client,
)


def imei(n: int) -> str:
    body = f"35{n:012d}"
    return body + luhn_check_digit(body)


def identifier_bulk(engine, pairs, sp_id=1):
    """pairs: [(iccid, {"NewICCID": ...} | {"NewIMEI": ...})]"""
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=ChangeType.CHANGE_ICCID_AND_IMEI,
                                    requests=[{"ICCID": i, "ChangeRequest": req} for i, req in pairs])


def device_rows(engine):
    d = t.device
    with engine.connect() as conn:
        return {r.Id: r for r in conn.execute(select(d.c.Id, d.c.ICCID, d.c.IMEI, d.c.Status, d.c.CarrierRatePlan))}


def ids_by_iccid(engine):
    return {r.ICCID: r.Id for r in device_rows(engine).values()}


def set_imeis(engine, iccids, start):
    from sqlalchemy import update

    with engine.begin() as conn:
        for k, iccid in enumerate(iccids):
            conn.execute(update(t.device).where(t.device.c.ICCID == iccid).values(IMEI=imei(start + k)))


# ---------------------------------------------------------------- Jasper
def test_jasper_imei_change_and_the_refusals(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(8)
    set_imeis(amop_engine, fleet.iccids, 100)
    ids = ids_by_iccid(amop_engine)
    bad_luhn = imei(900)[:-1] + str((int(imei(900)[-1]) + 1) % 10)
    pairs = [(i, {"NewIMEI": imei(500 + k)}) for k, i in enumerate(fleet.iccids[:4])]
    pairs += [(fleet.iccids[4], {"NewIMEI": bad_luhn}),
              (fleet.iccids[5], {"NewIMEI": imei(101)}),                 # the IMEI of device 2
              (fleet.iccids[6], {"NewIMEI": imei(500)}),                 # also asked for by device 1
              (fleet.iccids[7], {"NewIMEI": imei(600), "OldIMEI": imei(1)})]  # not its IMEI
    bulk_id = identifier_bulk(amop_engine, pairs)
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"PROCESSED": 4, "ERROR": 4}
    dcs = changes(amop_engine, bulk_id)
    assert "Luhn" in dcs[fleet.iccids[4]].status_details
    assert "already exists." in dcs[fleet.iccids[5]].status_details
    assert f"device change {dcs[fleet.iccids[0]].id}" in dcs[fleet.iccids[6]].status_details
    assert "OldIMEI" in dcs[fleet.iccids[7]].status_details
    rows = device_rows(amop_engine)
    for k, iccid in enumerate(fleet.iccids[:4]):
        assert rows[ids[iccid]].IMEI == imei(500 + k) and rows[ids[iccid]].ICCID == iccid
        assert jasper.device(iccid)["deviceID"] == imei(500 + k)
    assert rows[ids[fleet.iccids[4]]].IMEI == imei(104)
    assert {c["iccid"] for c in jasper.calls(method="PUT")} == set(fleet.iccids[:4])
    assert {e.LogEntryDescription for e in logs(amop_engine, bulk_id)} >= {"Update Jasper IMEI (deviceID): Jasper API"}


def test_jasper_iccid_change_moves_identity_and_keeps_history(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(5)
    set_imeis(amop_engine, fleet.iccids, 200)
    ids = ids_by_iccid(amop_engine)
    new_sims = [seed.make_iccid(90_000 + k) for k in range(5)]
    jasper.seed_devices([{"iccid": n, "status": "INVENTORY"} for n in new_sims[:4]])  # the 5th is not ours
    with amop_engine.begin() as conn:  # an earlier status change of the first device
        conn.execute(insert(t.device_status_history).values(
            DeviceId=ids[fleet.iccids[0]], ICCID=fleet.iccids[0], PreviousStatus="INVENTORY",
            CurrentStatus="ACTIVATED", ChangedBy="portal", Source="BulkChange", ChangedDate=utcnow()))
    bulk_id = identifier_bulk(amop_engine, [(o, {"NewICCID": n, "OldICCID": o}) for o, n in zip(fleet.iccids, new_sims)])
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"PROCESSED": 4, "API_FAILED": 1} and summary["status"] == "PROCESSED_WITH_ERRORS"
    rows = device_rows(amop_engine)
    for old, new in zip(fleet.iccids[:4], new_sims[:4]):
        row = rows[ids[old]]  # the same Device row, now on the new SIM
        assert row.ICCID == new and row.Status == "ACTIVATED" and row.CarrierRatePlan == "P-1G"
        new_sim, old_sim = jasper.device(new), jasper.device(old)
        assert (new_sim["status"], new_sim["ratePlan"], new_sim["deviceID"]) == ("ACTIVATED", "P-1G", row.IMEI)
        assert old_sim["status"] == "DEACTIVATED"
    assert rows[ids[fleet.iccids[4]]].ICCID == fleet.iccids[4]  # the failed one stays where it was
    assert "not in the Jasper account" in changes(amop_engine, bulk_id)[fleet.iccids[4]].status_details
    assert jasper.device(fleet.iccids[4])["status"] == "ACTIVATED"
    with amop_engine.connect() as conn:
        hist = conn.execute(select(t.device_status_history.c.DeviceId, t.device_status_history.c.ICCID)).all()
    assert hist == [(ids[fleet.iccids[0]], fleet.iccids[0])]  # history kept, under the old ICCID
    assert len(ids_by_iccid(amop_engine)) == 5  # no device row added


def test_jasper_iccid_change_retried_after_a_crash_sends_only_what_is_missing(amop_engine, fleet_factory,
                                                                             make_client, jasper):
    fleet = fleet_factory(3)
    new_sims = [seed.make_iccid(91_000 + k) for k in range(3)]
    jasper.seed_devices([{"iccid": n, "status": "INVENTORY"} for n in new_sims])
    bulk_id = identifier_bulk(amop_engine, [(o, {"NewICCID": n}) for o, n in zip(fleet.iccids, new_sims)])
    ids = processing.prepare(amop_engine, bulk_id, batch_size=10).batches[0].device_change_ids
    with amop_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, ids, DeviceChangeStatus.PROCESSING, processed_by="dead attempt")
    client = make_client()
    # the dead attempt got the first device all the way through and the second half way
    client.edit_device(new_sims[0], {"ratePlan": "P-1G", "status": "ACTIVATED"}, description="test")
    client.update_status(fleet.iccids[0], "DEACTIVATED")
    client.edit_device(new_sims[1], {"ratePlan": "P-1G", "status": "ACTIVATED"}, description="test")
    processing.process_batch(amop_engine, bulk_id, ids, client=client)
    assert processing.finalize(amop_engine, bulk_id)["counts"] == {"PROCESSED": 3}
    assert len(jasper.calls(method="PUT", iccid=new_sims[0])) == 1 and len(jasper.calls(method="PUT", iccid=fleet.iccids[0])) == 1
    assert len(jasper.calls(method="PUT", iccid=new_sims[1])) == 1 and len(jasper.calls(method="PUT", iccid=fleet.iccids[1])) == 1
    assert len(jasper.calls(method="PUT", iccid=new_sims[2])) == 1 and len(jasper.calls(method="PUT", iccid=fleet.iccids[2])) == 1
    assert sorted(r.ICCID for r in device_rows(amop_engine).values()) == sorted(new_sims)


def test_new_iccid_of_another_device_or_malformed_is_refused(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(4)
    with amop_engine.begin() as conn:  # a device of another tenant already has this SIM
        seed.add_service_provider(conn, sp_id=2, name="other", integration=Integration.JASPER, tenant_id=2)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(95_000), "Status": "ACTIVATED"}], sp_id=2, tenant_id=2)
    bad = seed.make_iccid(95_001)[:-1] + str((int(seed.make_iccid(95_001)[-1]) + 1) % 10)
    bulk_id = identifier_bulk(amop_engine, [(fleet.iccids[0], {"NewICCID": seed.make_iccid(95_000)}),
                                            (fleet.iccids[1], {"NewICCID": bad}),
                                            (fleet.iccids[2], {"NewICCID": fleet.iccids[3]}),
                                            (fleet.iccids[3], {"NewICCID": fleet.iccids[3]})])
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"ERROR": 4} and jasper.calls() == []
    dcs = changes(amop_engine, bulk_id)
    assert "already exists." in dcs[fleet.iccids[0]].status_details
    assert "NewICCID" in dcs[fleet.iccids[1]].status_details and "check digit" in dcs[fleet.iccids[1]].status_details
    assert "already exists." in dcs[fleet.iccids[2]].status_details
    assert "already the device's ICCID" in dcs[fleet.iccids[3]].status_details
    with amop_engine.begin() as conn:  # and both identifiers in one change is a request error
        b2 = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.CHANGE_ICCID_AND_IMEI,
                                  requests=[{"ICCID": fleet.iccids[0], "ChangeRequest": {
                                      "NewICCID": seed.make_iccid(95_002), "NewIMEI": imei(1)}}])
    assert run(amop_engine, b2, make_client())["counts"] == {"ERROR": 1}
    assert "exactly one of NewICCID or NewIMEI" in changes(amop_engine, b2)[fleet.iccids[0]].status_details


# ---------------------------------------------------------------- ThingSpace
def test_thingspace_iccid_and_imei_changes_settle_through_reconciliation(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 6, "active")
    ids = ids_by_iccid(amop_engine)
    new_sims = [seed.make_iccid(80_000 + k) for k in range(3)]
    ts.seed_devices([{"iccid": seed.make_iccid(80_009), "state": "preactive", "accountName": ACCOUNT}])
    ts.seed_devices([{"iccid": iccids[5], "state": "deactive", "accountName": ACCOUNT}])
    pairs = [(o, {"NewICCID": n}) for o, n in zip(iccids[:3], new_sims)]
    pairs += [(iccids[3], {"NewIMEI": imei(700)}),
              (iccids[4], {"NewICCID": seed.make_iccid(80_009)}),  # a SIM the carrier has (not in AMOP)
              (iccids[5], {"NewIMEI": imei(701)})]                 # no line of service at the carrier
    bulk_id = identifier_bulk(amop_engine, pairs, sp_id=4)
    summary = run(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"PENDING_CARRIER": 6} and summary["status"] == "WAITING_FOR_CARRIER"
    calls = ts.calls(method="PUT", path_contains="/actions/deviceId")
    assert len(calls) == 6 and all("/devices/4g/actions/deviceId" in c["path"] for c in calls)
    first = next(c["body"] for c in calls if c["body"]["deviceIds"][0]["id"] == iccids[0])
    assert first == {"deviceIds": [{"id": iccids[0], "kind": "iccid"}], "change4gOption": "ChangeICCID",
                     "deviceIdsTo": [{"id": new_sims[0], "kind": "iccid"}]}
    assert {r.ICCID for r in device_rows(amop_engine).values()} == set(iccids)  # nothing moved yet
    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 4, "API_FAILED": 2} and s.bulk_status == "PROCESSED_WITH_ERRORS"
    rows = device_rows(amop_engine)
    for old, new in zip(iccids[:3], new_sims):
        assert rows[ids[old]].ICCID == new
        assert ts.device(new)["iccid"] == new
    assert rows[ids[iccids[3]]].IMEI == imei(700) and ts.device(iccids[3])["imei"] == imei(700)
    dcs = changes(amop_engine, bulk_id)
    assert "DeviceAlreadyExists" in dcs[iccids[4]].status_details and rows[ids[iccids[4]]].ICCID == iccids[4]
    assert "DeviceState.Invalid" in dcs[iccids[5]].status_details and rows[ids[iccids[5]]].IMEI != imei(701)


def test_thingspace_retry_after_a_crash_does_not_resend_a_done_change(amop_engine, ts, ts_client):
    import time

    iccids = make_fleet(amop_engine, ts, 3, "active")
    new_sims = [seed.make_iccid(81_000 + k) for k in range(3)]
    bulk_id = identifier_bulk(amop_engine, list(zip(iccids, ({"NewICCID": n} for n in new_sims))), sp_id=4)
    ids = processing.prepare(amop_engine, bulk_id, batch_size=10).batches[0].device_change_ids
    with amop_engine.begin() as conn:  # the dead attempt sent the first change before it could record it
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_changes.mark_device_changes(conn, bulk, ids, DeviceChangeStatus.PROCESSING, processed_by="dead attempt")
    ts_client.change_device_id(iccids[0], "iccid", new_sims[0])
    time.sleep(0.6)  # the carrier applied it (action_delay_s=0.3)
    processing.process_batch(amop_engine, bulk_id, ids, client=ts_client)
    dcs = changes(amop_engine, bulk_id)
    assert dcs[iccids[0]].status == DeviceChangeStatus.PROCESSED and "confirmed" in dcs[iccids[0]].status_details
    assert {dcs[i].status for i in iccids[1:]} == {DeviceChangeStatus.PENDING_CARRIER}
    assert settle_until_done(amop_engine, bulk_id, ts_client).bulk_status == "PROCESSED"
    sent = [c["body"]["deviceIds"][0]["id"] for c in ts.calls(method="PUT", path_contains="/actions/deviceId")]
    assert sorted(sent) == sorted(iccids)  # one change per device, the first one not sent again
    assert sorted(r.ICCID for r in device_rows(amop_engine).values()) == sorted(new_sims)
