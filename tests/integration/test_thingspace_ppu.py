"""ThingSpace activation with the subscriber's first and last name (legacy ``Request.thingSpacePPU``)
through the core against the ThingSpace simulator over HTTP: the PPU variant of the activation, the
username and description written in Device as the legacy did, and no personal field in any log row."""
import json

from sqlalchemy import select

from bulkchange.db import bulk_changes, device_changes
from bulkchange.models import ChangeType
from bulkchange.db import schema as t
from tests.integration.test_thingspace_status_update import (  # noqa: F401
    SECRETS,
    bulk,
    make_fleet,
    process,
    settle_until_done,
    ts,
    ts_client,
)

PPU = {"FirstName": "Ford", "LastName": "Prefectus", "AddressLine": "42 Betelgeuse Way", "City": "Guildford",
       "State": "GA", "ZipCode": "30301", "Country": "USA"}
PERSONAL = ("Ford", "Prefectus", "Betelgeuse", "Guildford")


def seed_requests(engine, by_iccid):
    """One bulk change whose device changes each carry their own ThingSpace Request."""
    from bulkchange.db import seed
    from bulkchange.models import ChangeType

    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Active", "Request": r}}
                                              for i, r in by_iccid.items()])


def test_activation_with_first_and_last_name_sends_the_ppu_and_writes_username_and_description(
        amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 4, "preactive")
    plain = {"servicePlan": "M2M-5GB", "mdnZipCode": "30004"}
    bulk_id = seed_requests(amop_engine, {
        iccids[0]: {"servicePlan": "M2M-5GB", "thingSpacePPU": PPU},  # no mdnZipCode: the PPU's ZIP (legacy)
        iccids[1]: {"servicePlan": "M2M-5GB", "thingspaceppu": {k.lower(): v for k, v in PPU.items()}},
        iccids[2]: {**plain, "thingSpacePPU": {"FirstName": "Arthur"}},  # no last name: a plain activation
        iccids[3]: plain})
    summary = process(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"PENDING_ACTIVATION": 4}, summary

    activations = [c["body"] for c in ts.calls(method="POST") if c["path"].endswith("/actions/activate")]
    with_ppu = [b for b in activations if "primaryPlaceOfUse" in b]
    without = [b for b in activations if "primaryPlaceOfUse" not in b]
    assert len(with_ppu) == 1 and len(without) == 1  # the PPU applies to every device of its request
    assert sorted(d["deviceIds"][0]["id"] for d in with_ppu[0]["devices"]) == sorted(iccids[:2])
    assert with_ppu[0]["primaryPlaceOfUse"] == {  # as the legacy built it
        "customerName": {"firstName": "Ford", "lastName": "Prefectus"},
        "address": {"addressLine1": "42 Betelgeuse Way", "city": "Guildford", "state": "GA", "zip": "30301",
                    "country": "USA"}}
    assert with_ppu[0]["mdnZipCode"] == "30301"
    assert sorted(d["deviceIds"][0]["id"] for d in without[0]["devices"]) == sorted(iccids[2:])

    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 4} and s.bulk_status == "PROCESSED"
    with amop_engine.connect() as conn:
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.Username,
                                                           t.device.c.DeviceDescription, t.device.c.Status))}
        logs = conn.execute(select(t.device_bulk_change_log.c.RequestText, t.device_bulk_change_log.c.ResponseText,
                                   t.device_bulk_change_log.c.ErrorText, t.device_bulk_change_log.c.LogEntryDescription)
                            ).all()
        details = conn.execute(select(t.m2m_device_change.c.StatusDetails)).scalars().all()
    for iccid in iccids[:2]:
        assert devices[iccid].Status == "active" and devices[iccid].Username == "Ford Prefectus"
        assert json.loads(devices[iccid].DeviceDescription) == PPU
    for iccid in iccids[2:]:
        assert devices[iccid].Status == "active"
        assert (devices[iccid].Username, devices[iccid].DeviceDescription) == (None, None)

    # the real call's log row: the body is there, its personal fields are not (sanitize masks by key)
    text = "\n".join(str(v) for row in logs for v in row if v) + "\n".join(d or "" for d in details)
    assert "primaryPlaceOfUse" in text and "ThingSpace Activate" in text and iccids[0] in text
    assert [p for p in PERSONAL if p in text] == []
    assert not any(secret in text for secret in SECRETS)


def test_ppu_without_the_full_address_is_refused_before_any_call(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 2, "preactive")
    partial = {k: v for k, v in PPU.items() if k not in ("City", "Country")}
    bulk_id = bulk(amop_engine, iccids, "Active",
                   Request={"servicePlan": "M2M-5GB", "mdnZipCode": "30004", "thingSpacePPU": partial})
    summary = process(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"ERROR": 2}, summary
    assert not [c for c in ts.calls(method="POST") if "/actions/" in c["path"]]
    with amop_engine.connect() as conn:
        b = bulk_changes.load_bulk_change(conn, bulk_id)
        reasons = {dc.status_details for dc in device_changes.load_device_changes(conn, b)}
    assert len(reasons) == 1
    (reason,) = reasons
    assert "thingSpacePPU" in reason and "City, Country" in reason
    assert not any(p in reason for p in PERSONAL)


def test_active_without_ignore_current_status_adds_the_device_first_then_activates(amop_engine, ts, ts_client):
    """Legacy "active" without IsIgnoreCurrentStatus (a new ICCID/IMEI pair): POST devices/actions/add,
    then the activation of the devices the carrier added; with IsIgnoreCurrentStatus, or an ICCID-only
    line, the activation alone."""
    from bulkchange.db import seed

    known = make_fleet(amop_engine, ts, 2, "preactive")  # in our inventory and at the carrier
    new, elsewhere = seed.make_iccid(61_500), seed.make_iccid(61_501)
    ts.seed_devices([{"iccid": elsewhere, "state": "preactive", "accountName": "0000000000-00009"}])
    plan = {"servicePlan": "M2M-5GB", "mdnZipCode": "30004"}
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, requests=[
            {"ICCID": new, "ChangeRequest": {"UpdateStatus": "Active", "Request": {**plan, "IMEI": "356938035643809"}}},
            {"ICCID": elsewhere, "ChangeRequest": {"UpdateStatus": "Active",
                                                   "Request": {**plan, "IMEI": "356938035643810"}}},
            {"ICCID": known[0], "ChangeRequest": {"UpdateStatus": "Active", "IsIgnoreCurrentStatus": True,
                                                  "Request": {**plan, "IMEI": "356938035643811"}}},
            {"ICCID": known[1], "ChangeRequest": {"UpdateStatus": "Active", "Request": plan}}])
    summary = process(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"PENDING_ACTIVATION": 3, "API_FAILED": 1}, summary

    calls = [c for c in ts.calls(method="POST") if c["path"].endswith(("/actions/add", "/actions/activate"))]
    adds = [c for c in calls if c["path"].endswith("/add")]
    assert len(adds) == 1 and calls.index(adds[0]) == 0  # the add goes first
    assert sorted(d["deviceIds"][0]["id"] for d in adds[0]["body"]["devicesToAdd"]) == sorted([new, elsewhere])
    activated = sorted(d["deviceIds"][0]["id"] for c in calls[1:] for d in c["body"]["devices"])
    assert activated == sorted([new, known[0], known[1]])  # not the device the carrier refused to add

    with amop_engine.connect() as conn:
        b = bulk_changes.load_bulk_change(conn, bulk_id)
        by_iccid = {dc.iccid: dc for dc in device_changes.load_device_changes(conn, b)}
        row = conn.execute(select(t.device.c.Id, t.device.c.IMEI, t.device.c.Status)
                           .where(t.device.c.ICCID == new)).one()
    assert "belongs to another account" in by_iccid[elsewhere].status_details
    assert by_iccid[new].device_id == row.Id and (row.IMEI, row.Status) == ("356938035643809", "pending activation")
    assert "ThingSpace add: Success" in by_iccid[new].status_details

    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 3} and s.bulk_status == "PROCESSED_WITH_ERRORS"
    with amop_engine.connect() as conn:
        status, msisdn = conn.execute(select(t.device.c.Status, t.device.c.MSISDN)
                                      .where(t.device.c.ICCID == new)).one()
    assert status == "active" and msisdn and ts.device(new)["state"] == "active"
