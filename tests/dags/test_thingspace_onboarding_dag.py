"""ThingSpace onboarding end to end under dag.test() (legacy_behaviour.md 3.1, 4): StatusUpdate to
"pending activation" adds the device at the carrier (devices/actions/add, preactive, ICCID + IMEI)
and to our inventory; "inventory" adds it to our inventory only; both, and an activation without
IsIgnoreCurrentStatus, give the processed devices the service provider's default site. The portal's
ICCID/IMEI pair rules refuse a line with the legacy message, recorded on its device change.

Real parts: Airflow's in-process runner, the ThingSpace simulator over HTTP, the AMOP DB (SQLite and
PostgreSQL)."""
import json

import pytest
from sqlalchemy import insert, select, update

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.dags.conftest import amop_conn_json
from tests.dags.test_thingspace_dags import assert_clean_logs, issued_tokens

pytestmark = pytest.mark.airflow
ACCOUNT = "0000000000-00043"
SECRETS = ("dag-ts-secret-7", "dag-uws-password-7")
SP = 7
DEFAULT_SITE, OTHER_SITE, OTHER_TENANT_SITE = 701, 702, 703


@pytest.fixture
def ts(simulator, amop_engine, monkeypatch):
    control = simulator.control("thingspace")
    control.reset()
    control.configure(action_delay_s=0.2)
    carrier = simulator.carrier("thingspace")
    carrier.clients["dag-key-7"] = SECRETS[0]
    carrier.users["dag-user-7"] = SECRETS[1]
    carrier.account_names.add(ACCOUNT)
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.setenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", json.dumps({
        "conn_type": "http", "host": simulator.url_for("thingspace"), "login": "dag-key-7", "password": SECRETS[0],
        "extra": {"uws_username": "dag-user-7", "uws_password": SECRETS[1], "account_name": ACCOUNT}}))
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="verizon-7", integration=Integration.THINGSPACE, tenant_id=1)
        conn.execute(insert(t.site), [{"Id": DEFAULT_SITE, "TenantId": 1, "Name": "Unassigned", "IsActive": True},
                                      {"Id": OTHER_SITE, "TenantId": 1, "Name": "Acme", "IsActive": True}])
        conn.execute(update(t.service_provider).where(t.service_provider.c.Id == SP).values(DefaultSiteId=DEFAULT_SITE))
    return control


def imei(n):
    return f"35{n:013d}"


def run_bulk(dagbag, engine, requests):
    from airflow.sdk import DagRunState

    with engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=requests)
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert run.state == DagRunState.SUCCESS
    with engine.connect() as conn:
        changes = {r.ICCID: r for r in conn.execute(select(t.m2m_device_change).where(
            t.m2m_device_change.c.BulkChangeId == bulk_id))}
    return bulk_id, changes


def devices(engine):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(t.device).where(t.device.c.ServiceProviderId == SP))}


def test_pending_activation_adds_at_the_carrier_and_to_the_inventory(dagbag, amop_engine, simulator, ts):
    new, known, taken, bare, active_imei = (seed.make_iccid(720_000 + i) for i in range(5))
    # "known": at the carrier already (added before) and in our inventory, assigned to a customer
    ts.seed_devices([{"iccid": known, "imei": imei(2), "state": "preactive", "accountName": ACCOUNT}])
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": known, "Status": "inventory"},
                                {"ICCID": active_imei, "Status": "active", "IMEI": imei(9)}], sp_id=SP, tenant_id=1)
        conn.execute(update(t.device).where(t.device.c.ICCID == known).values(SiteId=OTHER_SITE))
    pending = {"UpdateStatus": "Pending Activation"}
    bulk_id, changes = run_bulk(dagbag, amop_engine, [
        {"ICCID": new, "ChangeRequest": {**pending, "Request": {"ICCID": new, "IMEI": imei(1)}}},
        {"ICCID": known, "ChangeRequest": {**pending, "Request": {"ICCID": known, "IMEI": imei(2)}}},
        {"ICCID": taken, "ChangeRequest": {**pending, "Request": {"ICCID": taken, "IMEI": imei(9)}}},
        {"ICCID": bare, "ChangeRequest": pending},
    ])
    # the portal's pair rules, with the legacy words, recorded on the refused device changes
    assert (changes[taken].Status, changes[taken].StatusDetails) == ("ERROR", f"IMEI: {imei(9)} already exists.")
    assert (changes[bare].Status, changes[bare].StatusDetails) == ("ERROR", f"ICCID: {bare} does not pending activate.")
    assert changes[new].Status == "PROCESSED" and changes[known].Status == "PROCESSED", changes
    assert "already exists" in changes[known].StatusDetails  # the carrier's "already exists" counts as added

    adds = ts.calls(method="POST", path_contains="/actions/add")
    assert len(adds) == 1
    body = adds[0]["body"]
    assert body["state"] == "preactive" and body["accountName"] == ACCOUNT
    assert sorted((d["deviceIds"][0]["id"], d["deviceIds"][1]["id"]) for d in body["devicesToAdd"]) == \
        sorted([(new, imei(1)), (known, imei(2))])
    assert (ts.device(new)["state"], ts.device(new)["imei"]) == ("preactive", imei(1))
    assert taken not in {i for c in adds for i in c.get("iccids") or []} and not ts.calls(path_contains="/activate")

    rows = devices(amop_engine)
    assert (rows[new].Status, rows[new].DeviceStatusId, rows[new].IMEI, rows[new].TenantId) == \
        ("pending activation", 15, imei(1), 1)
    assert (rows[known].Status, rows[known].DeviceStatusId, rows[known].IMEI) == ("pending activation", 15, imei(2))
    assert rows[new].SiteId == DEFAULT_SITE  # the service provider's default site
    assert rows[known].SiteId == OTHER_SITE  # a device with a customer keeps it
    assert taken not in rows and bare not in rows
    assert changes[new].DeviceId == rows[new].Id
    with amop_engine.connect() as conn:
        history = conn.execute(select(t.device_status_history.c.ICCID, t.device_status_history.c.PreviousStatus,
                                      t.device_status_history.c.CurrentStatus)
                               .where(t.device_status_history.c.BulkChangeId == bulk_id)).all()
    assert sorted(history) == sorted([(new, None, "pending activation"), (known, "inventory", "pending activation")])
    assert_clean_logs(amop_engine, issued_tokens(simulator))


def test_inventory_is_db_only_and_activation_without_ignore_gets_the_default_site(dagbag, amop_engine, ts):
    new, existing, to_activate, forced = (seed.make_iccid(730_000 + i) for i in range(4))
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": existing, "Status": "pending activation"},
                                {"ICCID": to_activate, "Status": "preactive"},
                                {"ICCID": forced, "Status": "preactive"}], sp_id=SP, tenant_id=1)
    ts.seed_devices([{"iccid": i, "state": "preactive", "accountName": ACCOUNT} for i in (to_activate, forced)])
    _, changes = run_bulk(dagbag, amop_engine, [
        {"ICCID": new, "ChangeRequest": {"UpdateStatus": "Inventory", "Request": {"ICCID": new, "IMEI": imei(5)}}},
        {"ICCID": existing, "ChangeRequest": {"UpdateStatus": "Inventory"}},
    ])
    assert changes[new].Status == "PROCESSED"
    assert changes[existing].Status == "ERROR" and changes[existing].StatusDetails.startswith("Invalid ICCID")
    assert not ts.calls(path_contains="/devices/actions/")  # inventory never calls the carrier
    rows = devices(amop_engine)
    assert (rows[new].Status, rows[new].IMEI, rows[new].SiteId) == ("inventory", imei(5), DEFAULT_SITE)
    assert rows[existing].SiteId is None

    plan = {"servicePlan": "M2M-5GB", "mdnZipCode": "30004"}
    _, changes = run_bulk(dagbag, amop_engine, [
        {"ICCID": to_activate, "ChangeRequest": {"UpdateStatus": "Active", "Request": plan}},
        {"ICCID": forced, "ChangeRequest": {"UpdateStatus": "Active", "IsIgnoreCurrentStatus": True, "Request": plan}},
    ])
    assert {changes[i].Status for i in (to_activate, forced)} == {"PENDING_ACTIVATION"}
    rows = devices(amop_engine)
    assert rows[to_activate].SiteId == DEFAULT_SITE  # the legacy "pending activate" path: default site
    assert rows[forced].SiteId is None  # IsIgnoreCurrentStatus: activation only, as the legacy


def test_the_default_site_of_another_tenant_is_never_given(dagbag, amop_engine, ts):
    with amop_engine.begin() as conn:
        conn.execute(insert(t.site).values(Id=OTHER_TENANT_SITE, TenantId=2, Name="elsewhere", IsActive=True))
        conn.execute(update(t.service_provider).where(t.service_provider.c.Id == SP)
                     .values(DefaultSiteId=OTHER_TENANT_SITE))
    new = seed.make_iccid(740_000)
    _, changes = run_bulk(dagbag, amop_engine, [{"ICCID": new, "ChangeRequest": {"UpdateStatus": "Inventory"}}])
    assert changes[new].Status == "PROCESSED"
    assert devices(amop_engine)[new].SiteId is None
