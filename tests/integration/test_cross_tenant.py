"""Cross-tenant probes: a tenant's bulk change names its own ICCID with another tenant's MSISDN /
EID / IMEI, or another tenant's site, customer rate plan, pool or Rev.io customer. Every change
type that takes an identifier or a reference is tried through the real pipeline against the
carrier simulators over HTTP: each probe ends ERROR with the reason, recorded in the log, and the
carrier (and Rev.io) saw no call at all."""
import pytest
from sqlalchemy import select

from bulkchange import processing
from bulkchange.carriers.jasper import JasperClient
from bulkchange.carriers.teal import TealClient
from bulkchange.carriers.telegence import TelegenceClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration
from simulators.teal import make_eid
from tests.integration.test_revio_after_status import make_revio, revio  # noqa: F401 (fixtures)

MOBILITY, M2M = 2, 0
OURS, THEIRS = 1, 2  # tenants
ACCOUNTS = {"telegence": ("xt-app", "xt-secret-1"), "teal": ("xt-key", "xt-secret-2"),
            "jasper": ("xt-user", "xt-secret-3")}
CLIENTS = {"telegence": TelegenceClient, "teal": TealClient, "jasper": JasperClient}
INTEGRATIONS = {"telegence": Integration.TELEGENCE, "teal": Integration.TEAL, "jasper": Integration.JASPER}


def _iccid(n):
    return seed.make_iccid(700_000 + n)


OUR_ICCID, THEIR_ICCID = _iccid(1), _iccid(2)
OUR_MSISDN, THEIR_MSISDN = "14045550001", "14045550002"
OUR_IMEI, THEIR_IMEI = "356938035643809", "490154203237518"

# (case, carrier, change type, portal, identifiers on the device change, change request, expected reason)
IDENTIFIER_PROBES = [
    ("Telegence suspend with their MSISDN", "telegence", ChangeType.STATUS_UPDATE, MOBILITY,
     {"MSISDN": THEIR_MSISDN}, {"UpdateStatus": "Suspend"}, f"MSISDN {THEIR_MSISDN} on the device change is not"),
    ("Telegence rate plan with their MSISDN", "telegence", ChangeType.CARRIER_RATE_PLAN_CHANGE, MOBILITY,
     {"MSISDN": THEIR_MSISDN}, {"CarrierRatePlan": "SOC-2"}, "is not device"),
    ("Telegence IMEI change on their line", "telegence", ChangeType.CHANGE_ICCID_AND_IMEI, MOBILITY,
     {"MSISDN": THEIR_MSISDN}, {"NewIMEI": "353456789012347"}, "is not device"),
    ("Telegence IMEI change naming their IMEI", "telegence", ChangeType.CHANGE_ICCID_AND_IMEI, MOBILITY,
     {"IMEI": THEIR_IMEI}, {"NewIMEI": "353456789012347"}, f"IMEI {THEIR_IMEI} on the device change is not"),
    ("Telegence username on their line", "telegence", ChangeType.EDIT_USERNAME_COST_CENTER, MOBILITY,
     {"MSISDN": THEIR_MSISDN}, {"ContactName": "Probe"}, "is not device"),
    ("Telegence activation of their SIM", "telegence", ChangeType.ACTIVATE_NEW_SERVICE, MOBILITY, {},
     {"TelegenceActivationRequest": {"service": {"serviceCharacteristic": [
         {"name": "sim", "value": THEIR_ICCID}, {"name": "singleUserCode", "value": "SOC-1"},
         {"name": "serviceZipCode", "value": "30301"}]}}}, "names SIM"),
    ("Telegence MSISDN not a number (URL path injection)", "telegence", ChangeType.STATUS_UPDATE, MOBILITY,
     {"MSISDN": "14045550001/../14045550002"}, {"UpdateStatus": "Suspend"}, "is not a valid MSISDN"),
    ("Teal disable with their EID", "teal", ChangeType.STATUS_UPDATE, M2M,
     {"EID": make_eid(THEIR_ICCID)}, {"UpdateStatus": "Suspend"}, "EID"),
    ("Teal plan with their EID", "teal", ChangeType.CARRIER_RATE_PLAN_CHANGE, M2M,
     {"EID": make_eid(THEIR_ICCID)}, {"PlanUuid": "plan-2"}, "is not device"),
    ("Jasper suspend of their ICCID", "jasper", ChangeType.STATUS_UPDATE, M2M,
     {"ICCID": THEIR_ICCID}, {"UpdateStatus": "Suspend"}, "not found"),
    ("Jasper rate plan of their ICCID", "jasper", ChangeType.CARRIER_RATE_PLAN_CHANGE, M2M,
     {"ICCID": THEIR_ICCID}, {"CarrierRatePlan": "P-1G"}, "not found"),
]


@pytest.fixture
def carriers(simulator):
    controls = {}
    for name, (login, secret) in ACCOUNTS.items():
        control = simulator.control(name)
        control.reset()
        if name == "jasper":
            simulator.set_account("jasper", login, secret)
        else:
            control.set_accounts({login: secret})
        controls[name] = control
    controls["telegence"].seed_devices([{"iccid": OUR_ICCID, "msisdn": OUR_MSISDN, "status": "A"},
                                        {"iccid": THEIR_ICCID, "msisdn": THEIR_MSISDN, "status": "A"}])
    controls["teal"].seed_devices([{"iccid": i, "eid": make_eid(i), "status": "ONLINE"}
                                   for i in (OUR_ICCID, THEIR_ICCID)])
    controls["jasper"].seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "P-0"}
                                     for i in (OUR_ICCID, THEIR_ICCID)])
    for control in controls.values():
        control.clear_calls() if hasattr(control, "clear_calls") else None
    return controls


def _client(simulator, carrier):
    login, secret = ACCOUNTS[carrier]
    policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=1))
    return CLIENTS[carrier](simulator.url_for(carrier), login, secret, policy=policy, timeout=10)


def _two_tenants(engine, carrier):
    """The same carrier account for tenant 1 (service provider 101) and tenant 2 (102)."""
    integration = INTEGRATIONS[carrier]
    with engine.begin() as conn:
        for sp, tenant, iccid, msisdn, imei in ((101, OURS, OUR_ICCID, OUR_MSISDN, OUR_IMEI),
                                                (102, THEIRS, THEIR_ICCID, THEIR_MSISDN, THEIR_IMEI)):
            seed.add_service_provider(conn, sp_id=sp, name=f"tenant{tenant}", integration=integration,
                                      tenant_id=tenant)
            seed.add_devices(conn, [{"ICCID": iccid, "MSISDN": msisdn, "IMEI": imei, "EID": make_eid(iccid),
                                     "Status": {"telegence": "A", "teal": "ONLINE", "jasper": "ACTIVATED"}[carrier]}],
                             sp_id=sp, tenant_id=tenant)
        conn.execute(t.jasper_carrier_rate_plan.insert().values(ServiceProviderId=101, RatePlanCode="P-1G",
                                                                PlanMB=1024, BaseRate=4, IsActive=True))


def _run(engine, bulk_id, client=None, revio_client=None):
    plan = processing.prepare(engine, bulk_id)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client, revio_client=revio_client,
                                 revio_problem=None if revio_client else "no Rev.io in this test")
    return processing.finalize(engine, bulk_id)


def _outcome(engine, bulk_id, portal):
    dc = t.mobility_device_change if portal == MOBILITY else t.m2m_device_change
    lg = t.device_bulk_change_log
    with engine.connect() as conn:
        change = conn.execute(select(dc.c.Status, dc.c.StatusDetails).where(dc.c.BulkChangeId == bulk_id)).one()
        logged = conn.execute(select(lg.c.ErrorText).where(lg.c.BulkChangeId == bulk_id)).scalars().all()
        inventory = t.mobility_device if portal == MOBILITY else t.device  # Telegence lines are Mobility lines
        their = conn.execute(select(inventory).where(inventory.c.ICCID == THEIR_ICCID)).mappings().one()
    return change, logged, their


@pytest.mark.parametrize("case,carrier,change_type,portal,ids,request_,reason", IDENTIFIER_PROBES,
                         ids=[p[0] for p in IDENTIFIER_PROBES])
def test_identifier_of_another_tenant_is_refused_before_any_call(sqlite_engine, simulator, carriers, case, carrier,
                                                                 change_type, portal, ids, request_, reason):
    _two_tenants(sqlite_engine, carrier)
    with sqlite_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=101, tenant_id=OURS, change_type=change_type, portal_type=portal,
                                       requests=[{"ICCID": OUR_ICCID, **ids, "ChangeRequest": request_}])
    client = _client(simulator, carrier)
    try:
        summary = _run(sqlite_engine, bulk_id, client)
    finally:
        client.close()
    change, logged, their = _outcome(sqlite_engine, bulk_id, portal)
    assert change.Status == "ERROR" and reason in change.StatusDetails, change.StatusDetails
    assert any(reason in (text or "") for text in logged), logged  # the rejection is recorded
    assert summary["status"] == "ERROR"
    for name, control in carriers.items():
        assert control.calls() == [], f"{case}: {name} was called"
    assert their["Status"] in ("A", "ONLINE", "ACTIVATED") and their["TenantId"] == THEIRS


# (case, change type, change request, expected reason)
REFERENCE_PROBES = [
    ("assign their site", ChangeType.CUSTOMER_ASSIGNMENT, {"SiteId": 2001}, "SiteId 2001 belongs to another tenant"),
    ("assign their Rev.io customer", ChangeType.CUSTOMER_ASSIGNMENT,
     {"RevCustomerId": "7002", "CreateRevService": True, "ProviderId": 3, "ServiceTypeId": 8},
     "RevCustomerId 7002 belongs to another tenant"),
    ("assign their customer rate plan", ChangeType.CUSTOMER_ASSIGNMENT, {"SiteId": 1001, "CustomerRatePlanId": 2002},
     "CustomerRatePlanId 2002 belongs to another tenant"),
    ("their customer rate plan", ChangeType.CUSTOMER_RATE_PLAN_CHANGE, {"CustomerRatePlanId": 2002},
     "CustomerRatePlanId 2002 belongs to another tenant"),
    ("their customer pool", ChangeType.CUSTOMER_RATE_PLAN_CHANGE, {"CustomerPoolId": 2003},
     "CustomerPoolId 2003 belongs to another tenant"),
    ("a rate plan nobody owns", ChangeType.CUSTOMER_RATE_PLAN_CHANGE, {"CustomerRatePlanId": 9999},
     "CustomerRatePlanId 9999 does not exist"),
    ("Rev.io service for their customer", ChangeType.CREATE_REV_SERVICE,
     {"RevCustomerId": "7002", "ProviderId": 3, "ServiceTypeId": 8, "RevProductIdList": [501], "RateList": ["1"]},
     "RevCustomerId 7002 belongs to another tenant"),
    ("status update whose Rev.io service is for their customer", ChangeType.STATUS_UPDATE,
     {"UpdateStatus": "Suspend", "RevService": {"RevCustomerId": "7002", "ProviderId": 3, "ServiceTypeId": 8}},
     "RevCustomerId 7002 belongs to another tenant"),
]


@pytest.mark.parametrize("case,change_type,request_,reason", REFERENCE_PROBES, ids=[p[0] for p in REFERENCE_PROBES])
def test_reference_of_another_tenant_is_refused_before_any_change(sqlite_engine, simulator, carriers, revio,
                                                                  make_revio, case, change_type, request_, reason):
    _two_tenants(sqlite_engine, "jasper")
    with sqlite_engine.begin() as conn:
        seed.add_tenant_references(conn, tenant_id=OURS, sites=[1001], rate_plans=[1002], rate_pools=[1003],
                                   rev_customers=["7001"])
        seed.add_tenant_references(conn, tenant_id=THEIRS, sites=[2001], rate_plans=[2002], rate_pools=[2003],
                                   rev_customers=["7002"])
        bulk_id = seed.add_bulk_change(conn, sp_id=101, tenant_id=OURS, change_type=change_type,
                                       requests=[{"ICCID": OUR_ICCID, "ChangeRequest": request_}])
        before = conn.execute(select(t.device).where(t.device.c.ICCID == OUR_ICCID)).mappings().one()
    client, rev = _client(simulator, "jasper"), make_revio()
    try:
        _run(sqlite_engine, bulk_id, client, rev)
    finally:
        client.close()
    change, logged, _ = _outcome(sqlite_engine, bulk_id, M2M)
    assert change.Status == "ERROR" and reason in change.StatusDetails, change.StatusDetails
    assert any(reason in (text or "") for text in logged), logged
    assert carriers["jasper"].calls() == [] and revio.calls() == []
    with sqlite_engine.connect() as conn:
        after = conn.execute(select(t.device).where(t.device.c.ICCID == OUR_ICCID)).mappings().one()
        queued = conn.execute(select(t.device_customer_rate_plan_queue)).all()
    assert dict(after) == dict(before) and queued == []  # nothing of ours changed either


def test_own_identifiers_and_references_still_pass(sqlite_engine, simulator, carriers):
    """The checks refuse only what is not the tenant's: the same probe with our own MSISDN works."""
    _two_tenants(sqlite_engine, "telegence")
    with sqlite_engine.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=101, tenant_id=OURS, change_type=ChangeType.STATUS_UPDATE,
                                       portal_type=MOBILITY, requests=[{"ICCID": OUR_ICCID, "MSISDN": OUR_MSISDN,
                                                                        "ChangeRequest": {"UpdateStatus": "Suspend"}}])
    client = _client(simulator, "telegence")
    try:
        assert _run(sqlite_engine, bulk_id, client)["status"] == "PROCESSED"
    finally:
        client.close()
    patched = [c["path"] for c in carriers["telegence"].calls(method="PATCH")]
    assert patched and all(p.endswith(OUR_MSISDN) for p in patched)


def test_submit_csv_msisdn_and_eid_columns_take_the_same_checks(sqlite_engine):
    from bulkchange import submit as core

    _two_tenants(sqlite_engine, "telegence")
    sub = core.parse_submission({
        "service_provider_id": 101, "change_type": "StatusUpdate", "portal_type": "Mobility",
        "change_request": {"UpdateStatus": "Suspend"},
        "devices_csv": f"ICCID,MSISDN\n{OUR_ICCID},{THEIR_MSISDN}\n{_iccid(3)},not-a-number\n"})
    result = core.submit(sqlite_engine, sub, process_now=False, dry_run=True)
    reasons = " | ".join(p["reason"] for p in result.problems)
    assert f"MSISDN {THEIR_MSISDN} on the device change is not" in reasons
    assert "is not a valid MSISDN" in reasons


@pytest.mark.parametrize("own_ban,asked,reason", [
    ("287000000101", "287000000202", "billing account 287000000202 is not this service provider's"),
    (None, "287000000202", "cannot be checked against this service provider"),
    ("287000000101", "287000000101", None),
], ids=["another tenant's BAN", "no BAN configured to check against", "its own BAN"])
def test_a_telegence_activation_bills_only_the_service_providers_own_account(sqlite_engine, simulator, carriers,
                                                                           own_ban, asked, reason):
    spare = _iccid(3)
    carriers["telegence"].seed_devices([{"iccid": spare}])
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=101, name="tenant1", integration=Integration.TELEGENCE, tenant_id=OURS)
        seed.add_devices(conn, [{"ICCID": spare, "Status": "Inventory"}], sp_id=101, tenant_id=OURS)
        bulk_id = seed.add_bulk_change(conn, sp_id=101, tenant_id=OURS, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       portal_type=MOBILITY, requests=[{"ICCID": spare, "ChangeRequest": {
                                           "TelegenceActivationRequest": {
                                               "billingAccount": {"id": asked},
                                               "service": {"serviceCharacteristic": [
                                                   {"name": "singleUserCode", "value": "SOC-1"},
                                                   {"name": "serviceZipCode", "value": "30301"}]}}}}])
    login, secret = ACCOUNTS["telegence"]
    client = TelegenceClient(simulator.url_for("telegence"), login, secret, billing_account=own_ban, timeout=10,
                             policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=1)))
    try:
        _run(sqlite_engine, bulk_id, client)
    finally:
        client.close()
    (status, details), = _statuses(sqlite_engine, bulk_id)
    posts = carriers["telegence"].calls(method="POST")
    if reason:
        assert status == "ERROR" and reason in details and posts == []
    else:
        assert status != "ERROR" and len(posts) == 1 and posts[0]["body"][0]["billingAccount"] == {"id": asked}


def _statuses(engine, bulk_id):
    dc = t.mobility_device_change
    with engine.connect() as conn:
        return conn.execute(select(dc.c.Status, dc.c.StatusDetails).where(dc.c.BulkChangeId == bulk_id)).all()
