"""EditUsernameCostCenter through the core against the Jasper, Telegence, ThingSpace and Rev.io
simulators over HTTP: each device's own values, the Jasper audit-trail check, Rev.io custom fields by
label, the Telegence per-provider mapping and contactName, ThingSpace requests settled through
reconciliation, and no second carrier call or Rev.io patch for a retried device."""
import json
import time

import pytest
from sqlalchemy import select, update

from bulkchange import notify, processing, reconcile
from bulkchange.carriers.telegence import TelegenceClient, characteristic
from bulkchange.carriers.thingspace import ThingSpaceClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration, utcnow
from tests.integration.test_revio_after_status import make_revio, revio  # noqa: F401  (fixtures)

EDIT = ChangeType.EDIT_USERNAME_COST_CENTER


def policy():
    return CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.02, max_delay=1))


def add_bulk(engine, sp_id, rows, portal_type=0):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=EDIT, portal_type=portal_type,
                                    requests=rows)


def run(engine, bulk_id, client, revio_client, batch_size=50):
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client, revio_client=revio_client,
                                 revio_problem=None if revio_client else "no revio_sp_N connection")
    return processing.finalize(engine, bulk_id)


def changes(engine, table):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(table))}


def devices(engine):
    """Both inventories: Telegence lines are in MobilityDevice, the other carriers' SIMs in Device."""
    with engine.connect() as conn:
        return {r.ICCID: r for tbl in (t.device, t.mobility_device) for r in conn.execute(select(tbl))}


def rev_fields(service):
    return {f["label"]: f["value"] for f in service["fields"]}


def make_services(rev_client, iccids, numbers=None):
    out = {}
    for i in iccids:
        out[i] = rev_client.create_service({"customer_id": 4711, "provider_id": 3, "number": (numbers or {}).get(i) or i,
                                            "number2": i})
    return out


# --- Jasper --------------------------------------------------------------------------------------
def test_jasper_username_audit_trail_and_rev_cost_centers(amop_engine, fleet_factory, make_client, make_revio, jasper,
                                                          revio):
    fleet = fleet_factory(12, start=81_000)
    rev_client = make_revio()
    ids = fleet.iccids
    service_ids = make_services(rev_client, ids[:11])
    first_id = devices(amop_engine)[ids[0]].Id
    with amop_engine.begin() as conn:  # one service known locally, the others found at Rev.io
        conn.execute(t.rev_service.insert().values(ServiceId=service_ids[ids[0]], CustomerId="4711", Number2=ids[0],
                                                   DeviceId=first_id, ServiceProviderId=1,
                                                   IsActive=True, CreatedDate=utcnow()))
    # ids[10]: Jasper already shows the new name although our DB does not: the edit changes nothing,
    # the audit trail shows no change, so it is a failure with the reason.
    jasper.seed_devices([{"iccid": ids[10], "status": "ACTIVATED", "accountCustom1": "user-10"}])
    rows = [{"ICCID": i, "ChangeRequest": {"ContactName": f"user-{n}", "CostCenter1": f"CC1-{n}",
                                           "CostCenter2": f"CC2-{n}", "CostCenter3": f"CC3-{n}"}}
            for n, i in enumerate(ids)]
    rows.append({"ICCID": seed.make_iccid(99_999), "ChangeRequest": {"ContactName": "ghost"}})  # unknown device
    bulk_id = add_bulk(amop_engine, fleet.sp_id, rows)
    out = run(amop_engine, bulk_id, make_client(), rev_client)
    dcs = changes(amop_engine, t.m2m_device_change)
    assert out["status"] == "PROCESSED_WITH_ERRORS"
    for n, i in enumerate(ids[:10]):
        assert dcs[i].Status == "PROCESSED", dcs[i].StatusDetails
        assert jasper.device(i)["accountCustom1"] == f"user-{n}"  # each device its own values
        fields = rev_fields(rev_client.get_service(service_ids[i]))
        assert fields["Username"] == f"user-{n}"
        assert [fields[f"Cost Center {k}"] for k in (1, 2, 3)] == [f"CC{k}-{n}" for k in (1, 2, 3)]
    assert dcs[ids[10]].Status == "API_FAILED" and "audit trail" in dcs[ids[10]].StatusDetails
    # no Rev.io service: the username landed, the cost centers could not
    assert dcs[ids[11]].Status == "REV_IO_FAILED" and "no active Rev.io service" in dcs[ids[11]].StatusDetails
    assert dcs[seed.make_iccid(99_999)].Status == "ERROR"
    dev = devices(amop_engine)
    assert [dev[ids[3]].Username, dev[ids[3]].CostCenter1, dev[ids[3]].CostCenter3] == ["user-3", "CC1-3", "CC3-3"]
    assert dev[ids[10]].Username is None
    assert dev[ids[11]].Username == "user-11" and dev[ids[11]].CostCenter1 is None
    with amop_engine.connect() as conn:
        local = conn.execute(select(t.rev_service)).mappings().one()
        logs = conn.execute(select(t.device_bulk_change_log).where(
            t.device_bulk_change_log.c.M2MDeviceChangeId == dcs[ids[0]].Id)
            .order_by(t.device_bulk_change_log.c.Id)).mappings().all()  # rows are journaled in call order
    assert local["Username"] == "user-0" and local["CostCenter2"] == "CC2-0"
    # one username-updated report per bulk change, through the outbox, beside the summary
    sent = []
    result = notify.dispatch(amop_engine, bulk_ids=[bulk_id], send_email=lambda to, subj, body: sent.append(
        (to, subj, body)), recipients=["ops@example.com"])
    reports = [m for m in sent if "Username Update Report" in m[1]]
    assert len(reports) == 1 and len(sent) == 2, [m[1] for m in sent]
    assert "u***" in reports[0][2] and "CC1-3" in reports[0][2] and ids[11] in reports[0][2]
    assert "user-3" not in reports[0][2]  # a person's name: initials only in a mail
    assert ids[10] not in reports[0][2]  # the failed device is not reported as updated
    assert ("username" in [k[1] for k in result.sent])
    assert notify.dispatch(amop_engine, bulk_ids=[bulk_id], send_email=lambda *a: sent.append(a),
                           recipients=["ops@example.com"]).sent == []
    assert [r["LogEntryDescription"] for r in logs] == [
        "Update Jasper Username: Jasper API", "Get Device Audit Trail: Jasper API", "Get Rev.io Service: Rev.io API",
        "Update Rev.io Service: Rev.io API"]
    patch = next(r["RequestText"] for r in logs if r["LogEntryDescription"] == "Update Rev.io Service: Rev.io API")
    assert "Username" in patch and "user-0" not in patch  # a person's name is masked in the Rev.io patch ...
    assert "CC1-0" in patch  # ... a cost center is not personal: kept for the audit


def test_jasper_retry_of_interrupted_device_sends_nothing_twice(amop_engine, fleet_factory, make_client, make_revio,
                                                                jasper, revio):
    fleet = fleet_factory(4, start=82_000)
    rev_client = make_revio()
    service_ids = make_services(rev_client, fleet.iccids)
    bulk_id = add_bulk(amop_engine, fleet.sp_id, [{"ICCID": i, "ChangeRequest": {"ContactName": "ops", "CostCenter1": "42"}}
                                                   for i in fleet.iccids])
    run(amop_engine, bulk_id, make_client(), rev_client)
    puts = len(jasper.calls(method="PUT"))
    patches = len(revio.calls(method="PATCH"))
    assert puts == 4 and patches == 4
    # the task died after the carrier calls, before recording: the device changes are PROCESSING again
    with amop_engine.begin() as conn:
        conn.execute(update(t.m2m_device_change).values(Status="PROCESSING", IsProcessed=False))
        conn.execute(update(t.device).values(Username=None))
    plan = processing.prepare(amop_engine, bulk_id, batch_size=50)
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=make_client(),
                                 revio_client=rev_client)
    assert len(jasper.calls(method="PUT")) == puts  # read, found, not edited again
    assert len(revio.calls(method="PATCH")) == patches  # Rev.io already up to date: no second patch
    assert {r.Status for r in changes(amop_engine, t.m2m_device_change).values()} == {"PROCESSED"}
    assert {d.Username for d in devices(amop_engine).values()} == {"ops"}
    assert rev_fields(rev_client.get_service(service_ids[fleet.iccids[0]]))["Cost Center 1"] == "42"


# --- Telegence -----------------------------------------------------------------------------------
APP, SECRET = "tg-edit-app", "tg-edit-secret-7"
TG_SP = 6


@pytest.fixture
def tg(simulator):
    control = simulator.control("telegence")
    control.reset()
    control.set_accounts({APP: SECRET})
    return control


@pytest.fixture
def tg_client(simulator):
    client = TelegenceClient(simulator.url_for("telegence"), APP, SECRET, policy=policy(), timeout=10)
    yield client
    client.close()


def tg_fleet(engine, control, n, start, settings=None):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    numbers = {i: f"1404{start + k:07d}" for k, i in enumerate(iccids)}
    control.seed_devices([{"iccid": i, "msisdn": numbers[i], "status": "A"} for i in iccids])
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=TG_SP, name="att", integration=Integration.TELEGENCE, tenant_id=1)
        if settings:
            conn.execute(update(t.service_provider).where(t.service_provider.c.Id == TG_SP)
                         .values(Settings=json.dumps(settings)))
        seed.add_devices(conn, [{"ICCID": i, "MSISDN": numbers[i], "Status": "A"} for i in iccids],
                         sp_id=TG_SP, tenant_id=1)
    return iccids, numbers


@pytest.mark.parametrize("mode", ["USERNAME", "BOTH"])
def test_telegence_rev_mapping_and_contact_name(amop_engine, tg, tg_client, make_revio, revio, mode):
    iccids, numbers = tg_fleet(amop_engine, tg, 8, 83_000, settings={"PushUsernameUpdate": mode})
    rev_client = make_revio()
    service_ids = make_services(rev_client, iccids[:7], numbers)
    rows = [{"ICCID": i, "MSISDN": numbers[i], "ChangeRequest": {"ContactName": f"Dr {n}", "CostCenter1": f"D{n}"}}
            for n, i in enumerate(iccids)]
    bulk_id = add_bulk(amop_engine, TG_SP, rows, portal_type=2)
    out = run(amop_engine, bulk_id, tg_client, rev_client)
    dcs = changes(amop_engine, t.mobility_device_change)
    assert out["status"] == "PROCESSED_WITH_ERRORS"
    for n, i in enumerate(iccids[:7]):
        assert dcs[i].Status == "PROCESSED", dcs[i].StatusDetails
        service = rev_client.get_service(service_ids[i])
        assert rev_fields(service)["Username"] == f"Dr {n}" and rev_fields(service)["Cost Center 1"] == f"D{n}"
        assert (service.get("description") == f"Dr {n}") is (mode == "BOTH")
        assert characteristic(tg_client.get_service(numbers[i]), "contactName") == f"Dr {n}"
    # no Rev.io service: nothing changed anywhere, API_FAILED with the reason
    assert dcs[iccids[7]].Status == "API_FAILED" and "no active Rev.io service" in dcs[iccids[7]].StatusDetails
    assert characteristic(tg_client.get_service(numbers[iccids[7]]), "contactName") is None
    dev = devices(amop_engine)
    assert dev[iccids[2]].Username == "Dr 2" and dev[iccids[2]].CostCenter1 == "D2"
    assert dev[iccids[7]].Username is None


def test_telegence_retry_of_interrupted_devices_sends_nothing_twice(amop_engine, tg, tg_client, make_revio, revio):
    iccids, numbers = tg_fleet(amop_engine, tg, 5, 87_000)
    rev_client = make_revio()
    make_services(rev_client, iccids, numbers)
    bulk_id = add_bulk(amop_engine, TG_SP, [{"ICCID": i, "MSISDN": numbers[i],
                                             "ChangeRequest": {"ContactName": "night shift", "CostCenter3": "C3"}}
                                            for i in iccids], portal_type=2)
    run(amop_engine, bulk_id, tg_client, rev_client)
    tg_patches, rev_patches = len(tg.calls(method="PATCH")), len(revio.calls(method="PATCH"))
    assert (tg_patches, rev_patches) == (5, 5)
    with amop_engine.begin() as conn:  # the batch died after its calls, before recording them
        conn.execute(update(t.mobility_device_change).values(Status="PROCESSING", IsProcessed=False))
    ids = [r.Id for r in changes(amop_engine, t.mobility_device_change).values()]
    processing.process_batch(amop_engine, bulk_id, ids, client=tg_client, revio_client=rev_client)
    assert (len(tg.calls(method="PATCH")), len(revio.calls(method="PATCH"))) == (tg_patches, rev_patches)
    assert {r.Status for r in changes(amop_engine, t.mobility_device_change).values()} == {"PROCESSED"}


def test_telegence_without_revio_connection_fails_every_device(amop_engine, tg, tg_client):
    iccids, numbers = tg_fleet(amop_engine, tg, 3, 84_000)
    bulk_id = add_bulk(amop_engine, TG_SP, [{"ICCID": i, "MSISDN": numbers[i], "ChangeRequest": {"ContactName": "x"}}
                                            for i in iccids], portal_type=2)
    out = run(amop_engine, bulk_id, tg_client, None)
    assert out["status"] == "ERROR"
    assert all(r.Status == "API_FAILED" and "revio_sp_N" in r.StatusDetails
               for r in changes(amop_engine, t.mobility_device_change).values())
    assert tg.calls(method="PATCH") == []


def test_request_validation(amop_engine, tg, tg_client):
    iccids, numbers = tg_fleet(amop_engine, tg, 4, 85_000)
    with amop_engine.begin() as conn:
        conn.execute(update(t.mobility_device).where(t.mobility_device.c.ICCID == iccids[2]).values(MSISDN=None))
    bulk_id = add_bulk(amop_engine, TG_SP, [
        {"ICCID": iccids[0], "ChangeRequest": {}},
        {"ICCID": iccids[1], "ChangeRequest": {"CostCenter1": "x" * 200}},
        {"ICCID": iccids[2], "ChangeRequest": {"ContactName": "no number"}}], portal_type=2)
    processing.prepare(amop_engine, bulk_id)
    dcs = changes(amop_engine, t.mobility_device_change)
    assert "needs ContactName or CostCenter1..3" in dcs[iccids[0]].StatusDetails
    assert "CostCenter1" in dcs[iccids[1]].StatusDetails
    assert "has no MSISDN" in dcs[iccids[2]].StatusDetails
    assert {r.Status for r in dcs.values()} == {"ERROR"}
    # an unknown mapping setting is refused with the setting's name, before any call
    with amop_engine.begin() as conn:
        conn.execute(update(t.service_provider).where(t.service_provider.c.Id == TG_SP)
                     .values(Settings=json.dumps({"PushUsernameUpdate": "NICKNAME"})))
    bulk_id = add_bulk(amop_engine, TG_SP, [{"ICCID": iccids[3], "MSISDN": numbers[iccids[3]],
                                             "ChangeRequest": {"ContactName": "x"}}], portal_type=2)
    processing.prepare(amop_engine, bulk_id)
    assert "PushUsernameUpdate is 'NICKNAME'" in changes(amop_engine, t.mobility_device_change)[iccids[3]].StatusDetails


# --- ThingSpace ----------------------------------------------------------------------------------
ACCOUNT = "0000000000-00001"


@pytest.fixture
def ts(simulator):
    control = simulator.control("thingspace")
    control.reset()
    control.configure(action_delay_s=0.2)
    carrier = simulator.carrier("thingspace")
    carrier.clients["ts-key"] = "ts-secret-3"
    carrier.users["ts-user"] = "uws-password-3"
    return control


def test_thingspace_cost_center_and_custom_fields_settle_through_reconciliation(amop_engine, ts, simulator):
    iccids = [seed.make_iccid(86_000 + i) for i in range(6)]
    ts.seed_devices([{"iccid": i, "state": "active", "accountName": ACCOUNT} for i in iccids[:5]])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "active"} for i in iccids], sp_id=4, tenant_id=1)
    client = ThingSpaceClient(simulator.url_for("thingspace"), "ts-key", "ts-secret-3", "ts-user", "uws-password-3",
                              ACCOUNT, policy=policy(), timeout=10)
    rows = [{"ICCID": i, "ChangeRequest": {"ContactName": f"tech {n}", "CostCenter1": f"VZ{n}", "CostCenter3": "z"}}
            for n, i in enumerate(iccids)]
    bulk_id = add_bulk(amop_engine, 4, rows)
    out = run(amop_engine, bulk_id, client, None)
    assert out["status"] == "WAITING_FOR_CARRIER"
    for _ in range(50):
        summary = reconcile.settle_bulk(amop_engine, bulk_id, client)
        if summary.still_waiting == 0:
            break
        time.sleep(0.1)
    assert summary.bulk_status == "PROCESSED_WITH_ERRORS"
    dcs = changes(amop_engine, t.m2m_device_change)
    dev = devices(amop_engine)
    for n, i in enumerate(iccids[:5]):
        assert dcs[i].Status == "PROCESSED", dcs[i].StatusDetails
        carrier_dev = ts.device(i)
        assert carrier_dev["costCenterCode"] == f"VZ{n}"
        assert {f["key"]: f["value"] for f in carrier_dev["customFields"]} == {"CustomField1": f"tech {n}",
                                                                                 "CustomField3": "z"}
        assert (dev[i].Username, dev[i].CostCenter1, dev[i].CostCenter3) == (f"tech {n}", f"VZ{n}", "z")
    # not in the carrier's account: the carrier's fault, and nothing written
    assert dcs[iccids[5]].Status == "API_FAILED" and "DeviceNotFound" in dcs[iccids[5]].StatusDetails
    assert dev[iccids[5]].Username is None
    client.close()


def test_thingspace_field_endpoints_match_the_published_sdk(amop_engine, ts, simulator):
    """Bodies built with Verizon's SDK models and serializer are accepted and applied; the answer
    parses with the SDK's RequestResponse."""
    from verizon.api_helper import APIHelper
    from verizon.models.account_device_list import AccountDeviceList
    from verizon.models.custom_fields import CustomFields
    from verizon.models.custom_fields_update_request import CustomFieldsUpdateRequest
    from verizon.models.device_cost_center_request import DeviceCostCenterRequest
    from verizon.models.device_id import DeviceId
    from verizon.models.request_response import RequestResponse

    iccid = seed.make_iccid(88_000)
    ts.seed_devices([{"iccid": iccid, "state": "active", "accountName": ACCOUNT}])
    client = ThingSpaceClient(simulator.url_for("thingspace"), "ts-key", "ts-secret-3", "ts-user", "uws-password-3",
                              ACCOUNT, policy=policy(), timeout=10)
    devices = [AccountDeviceList(device_ids=[DeviceId(id=iccid, kind="iccid")])]
    for path, model in (("/m2m/v1/devices/costCenter",
                         DeviceCostCenterRequest(account_name=ACCOUNT, cost_center="CC-9", devices=devices)),
                        ("/m2m/v1/devices/actions/customFields",
                         CustomFieldsUpdateRequest(account_name=ACCOUNT, devices=devices,
                                                   custom_fields_to_update=[CustomFields(key="CustomField2",
                                                                                         value="v2")]))):
        answer = client._call("PUT", path, json_body=json.loads(APIHelper.json_serialize(model)), description="sdk")
        assert RequestResponse.from_dictionary(answer).request_id
    time.sleep(0.3)
    for _ in range(20):
        device = ts.device(iccid)
        if device.get("costCenterCode") and device.get("customFields"):
            break
        time.sleep(0.1)
    assert device["costCenterCode"] == "CC-9" and device["customFields"] == [{"key": "CustomField2", "value": "v2"}]
    remove = DeviceCostCenterRequest(account_name=ACCOUNT, remove_cost_center=True, devices=devices)
    client._call("PUT", "/m2m/v1/devices/costCenter", json_body=json.loads(APIHelper.json_serialize(remove)),
                 description="sdk")
    client.close()
