"""Personal data in the call logs: per carrier, a real flow that carries a subscriber's name, address,
e-mail or phone runs through the core (prepare / process_batch / finalize / settle_bulk) against the
simulator, and afterwards no personal value is found in any DeviceBulkChangeLog row nor in what the
application logged, while the non-personal fields of the same bodies (ICCID, number, plan, zip code
the carrier picks a number by, cost centers) stay readable for the audit.

POND and Teal bodies carry no personal field (their clients' and simulators' request and answer shapes:
SIM, package and eSIM ids, statuses, plans): nothing to mask there."""
import json
import logging
import time

import pytest
from sqlalchemy import select

from bulkchange import processing, reconcile
from bulkchange.carriers.thingspace import ThingSpaceClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.integration import test_activate_new_service as ans
from tests.integration import test_edit_username as eu
from tests.integration.test_activate_new_service import tg as ans_tg, tg_client as ans_tg_client  # noqa: F401
from tests.integration.test_edit_username import tg, tg_client, ts  # noqa: F401 (fixtures)
from tests.integration.test_revio_after_status import make_revio, revio  # noqa: F401 (fixtures)

NOT_OURS = ("simulators", "uvicorn", "fastapi", "starlette")  # the carriers' side of the wire


@pytest.fixture
def app_log(caplog):
    caplog.set_level(logging.DEBUG)
    return caplog


def log_rows(engine):
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        return conn.execute(select(lg.c.LogEntryDescription, lg.c.RequestText, lg.c.ResponseText,
                                   lg.c.ErrorText)).all()


def assert_masked(engine, app_log, personal, readable):
    rows = log_rows(engine)
    assert rows
    text = "\n".join(str(v) for row in rows for v in row if v)
    assert "***" in text  # masked, not dropped
    assert [p for p in personal if p in text] == [], "personal data in DeviceBulkChangeLog"
    assert [r for r in readable if r not in text] == [], "non-personal fields must stay readable"
    ours = "\n".join(r.getMessage() for r in app_log.records if not r.name.startswith(NOT_OURS))
    assert [p for p in personal if p in ours] == [], "personal data in the application log"


def settle(engine, bulk_id, client, **kw):
    for _ in range(100):
        summary = reconcile.settle_bulk(engine, bulk_id, client, count_checks=False, **kw)
        if summary.still_waiting == 0:
            return summary
        time.sleep(0.1)
    return summary


# --- Telegence: ActivateNewService with relatedParty and contactName --------------------------------
PARTY = {"first": "Jane", "last": "Roebuck-Quill", "street": "17 Larkspur Lane", "city": "Marietta",
         "email": "jane.roebuck@example.org", "phone": "6785550142", "contact": "Jane Roebuck-Quill"}


def test_telegence_activation_related_party(amop_engine, ans_tg, ans_tg_client, app_log):
    iccids = ans.inventory(amop_engine, ans_tg, 3, 74_000)
    item = ans.activation()["TelegenceActivationRequest"]
    item["relatedParty"] = [{"role": "subscriber", "name": f"{PARTY['first']} {PARTY['last']}",
                             "individual": {"givenName": PARTY["first"], "familyName": PARTY["last"]},
                             "address": {"street1": PARTY["street"], "city": PARTY["city"], "zipCode": "30004"},
                             "contactMedium": [{"type": "email", "emailAddress": PARTY["email"]},
                                               {"type": "phone", "phone": PARTY["phone"]}]}]
    item["service"]["serviceCharacteristic"].append({"name": "contactName", "value": PARTY["contact"]})
    with amop_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=ans.SP, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=ans.MOBILITY,
                                       requests=[{"ICCID": i, "ChangeRequest": {"TelegenceActivationRequest": item}}
                                                 for i in iccids])
    plan = processing.prepare(amop_engine, bulk_id)
    for b in plan.batches:
        processing.process_batch(amop_engine, bulk_id, b.device_change_ids, client=ans_tg_client)
    processing.finalize(amop_engine, bulk_id)
    assert settle(amop_engine, bulk_id, ans_tg_client).bulk_status == "PROCESSED"
    # the carrier got the party as sent (the real call carried it)
    posted = ans_tg.calls(method="POST")[0]["body"][0]
    assert posted["relatedParty"][0]["contactMedium"][0]["emailAddress"] == PARTY["email"]
    assert_masked(amop_engine, app_log, list(PARTY.values()),
                  [iccids[0], "IOTSOC5", "30004", "287000000009", "relatedParty", "contactName"])


# --- ThingSpace: the ContactName goes to a custom field ----------------------------------------------
def test_thingspace_contact_name_custom_field(amop_engine, ts, simulator, app_log):
    iccids = [seed.make_iccid(75_000 + i) for i in range(3)]
    ts.seed_devices([{"iccid": i, "state": "active", "accountName": eu.ACCOUNT} for i in iccids])
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": i, "Status": "active"} for i in iccids], sp_id=4, tenant_id=1)
    client = ThingSpaceClient(simulator.url_for("thingspace"), "ts-key", "ts-secret-3", "ts-user", "uws-password-3",
                              eu.ACCOUNT, policy=eu.policy(), timeout=10)
    names = [f"Arthur Dentworth {n}" for n in range(3)]
    rows = [{"ICCID": i, "ChangeRequest": {"ContactName": names[n], "CostCenter1": f"VZ-CC-{n}",
                                           "CostCenter2": f"DEPT-{n}"}} for n, i in enumerate(iccids)]
    bulk_id = eu.add_bulk(amop_engine, 4, rows)
    eu.run(amop_engine, bulk_id, client, None)
    assert settle(amop_engine, bulk_id, client).bulk_status == "PROCESSED"
    for iccid in iccids:  # the carrier's view of the line (custom fields included) is logged too
        client.get_device(iccid, log=None)
    assert {f["key"]: f["value"] for f in ts.device(iccids[0])["customFields"]}["CustomField1"] == names[0]
    client.close()
    assert_masked(amop_engine, app_log, names, [iccids[0], "VZ-CC-0", "DEPT-1", "CustomField1", "CustomField2"])


# --- Rev.io: the username in a service's custom field and description ---------------------------------
def test_revio_username_field_and_description(amop_engine, tg, tg_client, make_revio, revio, app_log):
    iccids, numbers = eu.tg_fleet(amop_engine, tg, 3, 76_000, settings={"PushUsernameUpdate": "BOTH"})
    rev_client = make_revio()
    before = "Zaphod Previousowner"  # the service's description as Rev.io shows it before the change
    for i in iccids:
        rev_client.create_service({"customer_id": 4711, "provider_id": 3, "number": numbers[i], "number2": i,
                                   "description": before})
    names = [f"Trillian Astra {n}" for n in range(3)]
    rows = [{"ICCID": i, "MSISDN": numbers[i], "ChangeRequest": {"ContactName": names[n],
                                                                 "CostCenter1": f"FIN-{n}"}}
            for n, i in enumerate(iccids)]
    bulk_id = eu.add_bulk(amop_engine, eu.TG_SP, rows, portal_type=2)
    out = eu.run(amop_engine, bulk_id, tg_client, rev_client)
    assert out["status"] == "PROCESSED", out
    service = rev_client.find_service(4711, numbers[iccids[0]])
    assert service["description"] == names[0] and eu.rev_fields(service)["Username"] == names[0]
    assert_masked(amop_engine, app_log, names + [before],
                  [numbers[iccids[0]], "FIN-0", "Cost Center 1", "/description", "Update Rev.io Service"])


def test_personal_fields_of_the_listed_bodies_are_masked_in_a_log_row(amop_engine):
    """The bodies the carriers define (contracts and carrier_apis.md) with every personal field the
    issue lists, stored through device_changes' log writer like any call record."""
    from bulkchange.carriers.base import CallRecord
    from bulkchange.db import bulk_changes, device_changes

    ppu = {"devices": [{"deviceIds": [{"id": "89148000000000000001", "kind": "iccid"}]}], "servicePlan": "M2M-5GB",
           "mdnZipCode": "30004", "accountName": "0000000000-00001",
           "primaryPlaceOfUse": {"customerName": {"title": "Mr", "firstName": "Ford", "lastName": "Prefectus"},
                                 "address": {"addressLine1": "42 Betelgeuse Way", "city": "Guildford", "state": "GA",
                                             "zip": "30004", "country": "USA", "phone": "4045550199",
                                             "emailAddress": "ford@example.net"}}}
    listed = {"devices": [{"deviceIds": [{"id": "89148000000000000001", "kind": "iccid"}],
                           "extendedAttributes": [{"key": "PrimaryPlaceOfUseFirstName", "value": "Ford"},
                                                  {"key": "PrimaryPlaceOfUseLastName", "value": "Prefectus"},
                                                  {"key": "PrimaryPlaceOfUseAddressLine1", "value": "42 Betelgeuse Way"}],
                           "carrierInformations": [{"servicePlan": "M2M-5GB", "state": "active"}]}]}
    customer = {"customer_id": 4711, "first_name": "Ford", "last_name": "Prefectus", "email": "ford@example.net",
                "mobile_phone": "4045550199", "address_1": "42 Betelgeuse Way", "company_name": "Megadodo",
                "contacts": [{"name": "Ford Prefectus", "phone": "4045550199"}]}
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=4, name="verizon", integration=Integration.THINGSPACE, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=4, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": "89148000000000000001",
                                                  "ChangeRequest": {"UpdateStatus": "Active"}}])
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        records = [CallRecord(description="ThingSpace Activate: ThingSpace API", method="POST", url="/x",
                              request_text="POST /m2m/v1/devices/actions/activate\n" + json.dumps(ppu),
                              response_text=json.dumps(listed), status_code=200),
                   CallRecord(description="Get Rev.io Customer: Rev.io API", method="GET", url="/y",
                              request_text="GET /v1/Customers/4711", response_text=json.dumps(customer),
                              status_code=200)]
        device_changes.add_log_entries(conn, bulk, [device_changes.LogEntry.from_call(None, r) for r in records],
                                       processed_by="test")
    personal = ["Ford", "Prefectus", "42 Betelgeuse Way", "4045550199", "ford@example.net"]
    rows = log_rows(amop_engine)
    text = "\n".join(str(v) for row in rows for v in row if v)
    assert [p for p in personal if p in text] == []
    assert all(r in text for r in ("M2M-5GB", "30004", "89148000000000000001", "Megadodo", "4711"))
