"""ActivateNewService on Telegence through the core and reconciliation against the Telegence simulator
over HTTP: activation requests of at most 200 lines, waiting devices settled by settle_bulk (no
blocked worker), the DB filled from the carrier's answer (number, plan, IMEI, features), rejections,
the polling limit, and the linked customer assignment released when the activation is done."""
import time

import pytest
from sqlalchemy import select

from bulkchange import processing, reconcile
from bulkchange.carriers.telegence import TelegenceClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration

APP, SECRET = "tg-ans-app", "tg-ans-secret-8"
SP = 6
MOBILITY = 2
DC = t.mobility_device_change


@pytest.fixture
def tg(simulator):
    control = simulator.control("telegence")
    control.reset()
    control.set_accounts({APP: SECRET})
    control.configure(activation_delay_s=0.3)
    yield control
    control.configure(activation_delay_s=1.0, reject_iccids=[])


@pytest.fixture
def tg_client(simulator, tg):
    client = TelegenceClient(simulator.url_for("telegence"), APP, SECRET, billing_account="287000000009",
                             policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.02)),
                             timeout=10)
    yield client
    client.close()


def inventory(engine, control, n, start):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    control.seed_devices([{"iccid": i} for i in iccids])
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        seed.add_test_references(conn, tenant_id=1)  # the ids these tests name
        seed.add_devices(conn, [{"ICCID": i, "Status": "inventory"} for i in iccids], sp_id=SP, tenant_id=1)
    return iccids


def activation(soc="IOTSOC5", imei=None, **extra):
    chars = [{"name": "singleUserCode", "value": soc}, {"name": "serviceZipCode", "value": "30004"},
             {"name": "offeringCode1", "value": "DATA5G"}, {"name": "offeringCode2", "value": "SMSPACK"},
             {"name": "removeOfferingCode", "value": "OLDFEAT"}]
    if imei:
        chars.append({"name": "IMEI", "value": imei})
    return {"TelegenceActivationRequest": {"relatedParty": [{"name": "Acme"}],
                                           "service": {"serviceCharacteristic": chars}}, **extra}


def settle(engine, bulk_id, client, **kw):
    for _ in range(80):
        summary = reconcile.settle_bulk(engine, bulk_id, client, count_checks=False, **kw)
        if summary.still_waiting == 0:
            return summary
        time.sleep(0.1)
    return summary


def test_activations_in_requests_of_200_settle_with_number_plan_and_features(amop_engine, tg, tg_client):
    iccids = inventory(amop_engine, tg, 212, 71_000)
    tg.configure(reject_iccids=[iccids[5]])
    with amop_engine.begin() as conn:
        addition = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.CUSTOMER_ASSIGNMENT,
                                        portal_type=MOBILITY, process_changes=False,
                                        requests=[{"ICCID": i, "ChangeRequest": {"SiteId": 7}}
                                                  for i in iccids[:10] + [iccids[210]]])
    rows = [{"ICCID": i, "ChangeRequest": activation(imei="490154203237518" if n == 3 else None,
                                                     CustomerRatePlan=12 if n < 10 else None,
                                                     AdditionBulkChangeId=addition if n < 10 else None)}
            for n, i in enumerate(iccids[:210])]
    rows.append({"ICCID": iccids[210], "ChangeRequest": {"AdditionBulkChangeId": addition,
                                                         "TelegenceActivationRequest": {"service": {
                                                             "serviceCharacteristic": [{"name": "singleUserCode",
                                                                                        "value": "X"}]}}}})
    rows.append({"ICCID": iccids[211], "ChangeRequest": activation(StaticIPProvision={"StaticIPAPN": "apn"})})
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=rows)
    plan = processing.prepare(amop_engine, bulk_id, batch_size=250)
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=tg_client)
    out = processing.finalize(amop_engine, bulk_id)
    assert out["status"] == "WAITING_FOR_CARRIER"
    posts = tg.calls(method="POST")
    assert sorted(len(p["body"]) for p in posts) == [10, 200]  # at most 200 lines per activation request
    assert all("removeOfferingCode" not in str(p["body"]) for p in posts)
    assert posts[0]["body"][0]["billingAccount"] == {"id": "287000000009"}
    with amop_engine.connect() as conn:
        assert conn.execute(select(t.device_bulk_change.c.ProcessChanges)
                            .where(t.device_bulk_change.c.Id == addition).limit(1)).scalar() in (False, 0)
    summary = settle(amop_engine, bulk_id, tg_client)
    assert summary.bulk_status == "PROCESSED_WITH_ERRORS"
    with amop_engine.connect() as conn:
        dcs = {r.ICCID: r for r in conn.execute(select(DC).where(DC.c.BulkChangeId == bulk_id))}
        devices = {r.ICCID: r for r in conn.execute(select(t.mobility_device))}
        features = conn.execute(select(t.telegence_device_mobility_feature)).mappings().all()
        held = {r.ICCID: r for r in conn.execute(select(DC).where(DC.c.BulkChangeId == addition))}
        released = conn.execute(select(t.device_bulk_change.c.ProcessChanges)
                                .where(t.device_bulk_change.c.Id == addition).limit(1)).scalar()
    ok = [i for n, i in enumerate(iccids[:210]) if n != 5]
    for i in ok:
        assert dcs[i].Status == "PROCESSED", dcs[i].StatusDetails
        number = tg.request("GET", f"/lines/{dcs[i].MSISDN}")["iccid"]
        assert number == i  # the number the carrier gave this SIM
        assert devices[i].MSISDN == dcs[i].MSISDN and devices[i].Status == "A"
        assert devices[i].CarrierRatePlan == "IOTSOC5"
    assert devices[iccids[3]].IMEI == "490154203237518" and devices[iccids[0]].CustomerRatePlanId == 12
    assert devices[iccids[20]].CustomerRatePlanId is None
    assert sorted((f["ICCID"], f["OfferingCode"]) for f in features if f["ICCID"] == iccids[0]) == [
        (iccids[0], "DATA5G"), (iccids[0], "SMSPACK")]
    assert len(features) == 2 * len(ok)
    assert dcs[iccids[5]].Status == "API_FAILED" and "rejected" in dcs[iccids[5]].StatusDetails
    assert devices[iccids[5]].MSISDN is None and devices[iccids[5]].Status == "inventory"
    assert "serviceZipCode" in dcs[iccids[210]].StatusDetails and dcs[iccids[210]].Status == "ERROR"
    assert "StaticIPProvision needs PDPName" in dcs[iccids[211]].StatusDetails
    # the linked customer assignment: numbers written, the failed device's row refused, then released
    assert held[iccids[0]].MSISDN == dcs[iccids[0]].MSISDN and held[iccids[0]].Status == "NEW"
    assert held[iccids[5]].Status == "ERROR" and "activation failed" in held[iccids[5]].StatusDetails
    assert held[iccids[210]].Status == "ERROR" and "serviceZipCode" in held[iccids[210]].StatusDetails
    assert {held[i].Status for i in iccids[:10] if i != iccids[5]} == {"NEW"}
    assert released in (True, 1)
    # settled devices are not polled again
    before = len(tg.calls(method="GET"))
    assert reconcile.settle_bulk(amop_engine, bulk_id, tg_client).still_waiting == 0
    assert len(tg.calls(method="GET")) == before


def test_polling_stops_after_max_checks(amop_engine, tg, tg_client):
    tg.configure(activation_delay_s=3600)
    iccids = inventory(amop_engine, tg, 3, 72_000)
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=[{"ICCID": i, "ChangeRequest": activation()}
                                                                       for i in iccids])
    plan = processing.prepare(amop_engine, bulk_id)
    processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=tg_client)
    processing.finalize(amop_engine, bulk_id)
    for _ in range(5):
        assert reconcile.settle_bulk(amop_engine, bulk_id, tg_client).still_waiting == 3
    last = reconcile.settle_bulk(amop_engine, bulk_id, tg_client)
    assert last.settled == {"API_FAILED": 3} and last.bulk_status == "ERROR"
    with amop_engine.connect() as conn:
        details = [r.StatusDetails for r in conn.execute(select(DC))]
    assert all("after 6 checks" in d for d in details)


def test_static_ip_provisioned_after_activation(amop_engine, tg, tg_client):
    tg.configure(ip_pool_size=4)  # five SIMs ask, the PDP has four addresses
    iccids = inventory(amop_engine, tg, 6, 73_000)
    ip = {"PDPName": "ACME.PDP", "LteIndicator": "Y", "DefaultAPN": "N", "StaticIPAPN": "acme.static"}
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=[
                                           {"ICCID": i, "ChangeRequest": activation(StaticIPProvision=ip if n < 5 else None)}
                                           for n, i in enumerate(iccids)])
    plan = processing.prepare(amop_engine, bulk_id)
    processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=tg_client)
    processing.finalize(amop_engine, bulk_id)
    summary = settle(amop_engine, bulk_id, tg_client)
    assert summary.bulk_status == "PROCESSED", summary
    with amop_engine.connect() as conn:
        dcs = {r.ICCID: r for r in conn.execute(select(DC))}
        devices = {r.ICCID: r for r in conn.execute(select(t.mobility_device))}
    with_ip = [i for i in iccids[:5] if devices[i].IPAddress]
    assert len(with_ip) == 4 and len({devices[i].IPAddress for i in with_ip}) == 4
    for i in with_ip:
        assert dcs[i].IpAddress == devices[i].IPAddress and "provisioned" in dcs[i].StatusDetails
        line = tg.request("GET", f"/lines/{devices[i].MSISDN}")
        assert line["staticIPAddress"] == devices[i].IPAddress
    (no_ip,) = [i for i in iccids[:5] if not devices[i].IPAddress]
    assert "static IP NOT provisioned: no static IP address available" in dcs[no_ip].StatusDetails
    assert devices[no_ip].MSISDN and devices[no_ip].Status == "A"  # the line is kept and recorded
    assert devices[iccids[5]].IPAddress is None and dcs[iccids[5]].Status == "PROCESSED"
    body = tg.calls(path_contains="/provisioning", method="POST")[0]["body"]
    assert body["pdpName"] == "ACME.PDP" and body["subscriber"][0]["accessPointName"] == "acme.static"


def test_an_activation_is_sent_once_under_faults_and_the_lines_are_found(amop_engine, tg, tg_client):
    """Activation POSTs (a create) answered 5xx, 502 after applying, or garbage: never sent again;
    the devices wait and settle from the account's lines (a 429, which nothing applied, is retried).
    At most one accepted create per device, and every device that got a line is PROCESSED."""
    iccids = inventory(amop_engine, tg, 24, 73_000)
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY,
                                       requests=[{"ICCID": i, "ChangeRequest": activation()} for i in iccids])
    tg.configure(seed=5, error_rate=0.25, applied_error_rate=0.25, malformed_rate=0.15, fault_methods=["POST"])
    plan = processing.prepare(amop_engine, bulk_id, batch_size=1)  # one activation request per device
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=tg_client)
    tg.configure(error_rate=0, applied_error_rate=0, malformed_rate=0)
    faults = {p["fault"] for p in tg.calls(method="POST")}
    assert {"error", "applied_error", "malformed"} <= faults  # the mix really happened
    sent: dict[str, int] = {}
    for post in tg.calls(method="POST"):  # every request, faulted ones included (named by its body)
        for item in post["body"]:
            sim = next(c["value"] for c in item["service"]["serviceCharacteristic"] if c["name"] == "sim")
            sent[sim] = sent.get(sim, 0) + 1
    assert sent == dict.fromkeys(iccids, 1)
    time.sleep(0.4)  # activation_delay_s 0.3: the accepted ones are active now
    settle(amop_engine, bulk_id, tg_client, max_checks=3)
    processing.finalize(amop_engine, bulk_id)
    lines = {a["iccid"] for a in tg.request("GET", "/activations") if a["status"] == "active"}
    with amop_engine.connect() as conn:
        rows = dict(conn.execute(select(DC.c.ICCID, DC.c.Status).where(DC.c.BulkChangeId == bulk_id)).all())
    assert lines and lines != set(iccids)  # some applied, some not
    assert {i for i, s in rows.items() if s == "PROCESSED"} == lines


def test_portal_processing_activation_and_its_assignment_from_the_sqs_message(amop_engine, tg, tg_client):
    """As the legacy portal does it: both bulk changes PROCESSING, the link only in the SQS message
    (AdditionBulkChangeId), not in the device changes' requests. The activation is processed once;
    the assignment is held, gets the new numbers, and is released for the sensor when it is over."""
    from sqlalchemy import update

    from bulkchange import legacy_queue as lq
    from bulkchange.db import claims

    iccids = inventory(amop_engine, tg, 3, 72_000)
    tg.configure(reject_iccids=[iccids[1]])
    bc = t.device_bulk_change
    with amop_engine.begin() as conn:
        addition = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.CUSTOMER_ASSIGNMENT,
                                        portal_type=MOBILITY, requests=[{"ICCID": i, "ChangeRequest": {"SiteId": 7}}
                                                                        for i in iccids])
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=[{"ICCID": i, "ChangeRequest": activation()}
                                                                       for i in iccids])
        conn.execute(update(bc).where(bc.c.Id.in_([addition, bulk_id])).values(Status="PROCESSING", ModifiedDate=None))
    message = {"MessageId": "m-ans", "Body": "Not used", "MessageAttributes": {
        "BulkChangeId": {"DataType": "String", "StringValue": str(bulk_id)},
        "AdditionBulkChangeId": {"DataType": "String", "StringValue": str(addition)}}}
    for expected in (lq.LAUNCH, lq.ACK):  # the portal's message, then a duplicate
        with amop_engine.begin() as conn:
            assert lq.decide(conn, lq.parse_message(message)).action == expected
    assert claims.claim_new_bulk_changes(amop_engine) == []  # the held assignment is not taken early
    plan = processing.prepare(amop_engine, bulk_id, batch_size=10)
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=tg_client)
    processing.finalize(amop_engine, bulk_id)
    assert settle(amop_engine, bulk_id, tg_client).bulk_status == "PROCESSED_WITH_ERRORS"
    with amop_engine.connect() as conn:
        dcs = {r.ICCID: r for r in conn.execute(select(DC).where(DC.c.BulkChangeId == bulk_id))}
        held = {r.ICCID: r for r in conn.execute(select(DC).where(DC.c.BulkChangeId == addition))}
        state = conn.execute(select(bc.c.Status, bc.c.ProcessChanges).where(bc.c.Id == addition)).one()
    assert held[iccids[0]].MSISDN == dcs[iccids[0]].MSISDN and held[iccids[0]].Status == "NEW"
    assert held[iccids[1]].Status == "ERROR" and "activation failed" in held[iccids[1]].StatusDetails
    assert state.Status == "NEW" and state.ProcessChanges in (True, 1)  # released whatever the portal set
    assert claims.claim_new_bulk_changes(amop_engine) == [addition]


def test_remove_offering_codes_are_taken_off_the_new_line_and_its_features(amop_engine, tg, tg_client):
    """Legacy PNSA: once a line is active, its request's ``removeOfferingCode`` SOCs are taken off it
    with one PATCH (logged "Telegence Update Mobility Configuration") and are not among its feature
    rows; a SOC the line does not carry is said and not sent, the activation stands. Each line's
    CarrierRatePool / CarrierDataGroup are stored on its TelegenceDevice row."""
    iccids = inventory(amop_engine, tg, 3, 74_000)
    tg.configure(plan_offerings={"IOTSOC5": ["OLDFEAT", "VMAIL"]})  # the plan's bundled SOCs
    pools = [("POOL-A", "DG-1"), ("POOL-B", None), (None, None)]
    rows = [{"ICCID": i, "ChangeRequest": activation(CarrierRatePool=pool, CarrierDataGroup=group)}
            for i, (pool, group) in zip(iccids, pools)]
    # the last one asks to remove a SOC its line will not carry (the carrier would refuse that PATCH)
    rows[2]["ChangeRequest"]["TelegenceActivationRequest"]["service"]["serviceCharacteristic"][-1]["value"] = "NOPE"
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=rows)
    plan = processing.prepare(amop_engine, bulk_id)
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=tg_client)
    processing.finalize(amop_engine, bulk_id)
    assert settle(amop_engine, bulk_id, tg_client).bulk_status == "PROCESSED"
    lg, td = t.device_bulk_change_log, t.telegence_device
    with amop_engine.connect() as conn:
        dcs = {r.ICCID: r for r in conn.execute(select(DC).where(DC.c.BulkChangeId == bulk_id))}
        features = conn.execute(select(t.telegence_device_mobility_feature.c.ICCID,
                                       t.telegence_device_mobility_feature.c.OfferingCode)).all()
        logged = conn.execute(select(lg.c.MobilityDeviceChangeId, lg.c.LogEntryDescription, lg.c.RequestText,
                                     lg.c.HasErrors).where(lg.c.BulkChangeId == bulk_id)).all()
        lines = {r.SubscriberNumber: r for r in conn.execute(select(td).where(td.c.ServiceProviderId == SP))}
    assert {dc.Status for dc in dcs.values()} == {"PROCESSED"}
    socs = {i: sorted(v for k, v in tg.request("GET", f"/lines/{dcs[i].MSISDN}").items()
                      if k.startswith("offeringCode")) for i in iccids}
    assert socs[iccids[0]] == socs[iccids[1]] == ["DATA5G", "SMSPACK", "VMAIL"]  # OLDFEAT taken off
    assert socs[iccids[2]] == ["DATA5G", "OLDFEAT", "SMSPACK", "VMAIL"]  # nothing removed there
    assert sorted(c for i, c in features if i == iccids[0]) == ["DATA5G", "SMSPACK", "VMAIL"]
    assert sorted(c for i, c in features if i == iccids[2]) == ["DATA5G", "OLDFEAT", "SMSPACK", "VMAIL"]
    assert "offering code(s) OLDFEAT removed" in dcs[iccids[0]].StatusDetails
    assert "offering code(s) NOPE not on the line, nothing to remove" in dcs[iccids[2]].StatusDetails
    removals = [e for e in logged if e.LogEntryDescription == "Telegence Update Mobility Configuration: Telegence API"]
    assert sorted(e.MobilityDeviceChangeId for e in removals) == sorted(dcs[i].Id for i in iccids[:2])
    assert all("removeOfferingCode" in (e.RequestText or "") and not e.HasErrors for e in removals)
    patches = tg.calls(method="PATCH")
    assert len(patches) == 2 and all(p["status"] == 200 for p in patches)  # one per line that had the SOC
    stored = [(lines[dcs[i].MSISDN].CarrierRatePool, lines[dcs[i].MSISDN].CarrierDataGroup) for i in iccids]
    assert stored == pools
