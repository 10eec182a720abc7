"""ChangeICCIDAndIMEI rules ported from the legacy code, through the core against the simulators:

* a new ICCID held in ``Device`` by a spare SIM of the same service provider and tenant (status
  unknown / inventory) is taken over: the device's row gets the ICCID, the spare's row is retired;
  any other holder is refused with the legacy's "ICCID: <iccid> already exists.";
* the legacy follow-up step after a swap: with ``AddCustomerRatePlan`` the device gets the
  request's customer rate plan / pool once the carrier confirmed the swap (not before).
"""
from sqlalchemy import select

from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import Integration
from tests.integration.test_carrier_rate_plan import changes, run
from tests.integration.test_change_identifier import identifier_bulk, imei, set_imeis
from tests.integration.test_thingspace_status_update import (  # noqa: F401  (fixtures)
    make_fleet,
    settle_until_done,
    ts,
    ts_client,
)

FOLLOW_UP = {"AddCustomerRatePlan": True, "CustomerRatePlan": "12", "CustomerRatePool": "7"}


def rows(engine):
    d = t.device
    with engine.connect() as conn:
        return conn.execute(select(d.c.Id, d.c.ICCID, d.c.IMEI, d.c.Status, d.c.TenantId, d.c.IsActive, d.c.IsDeleted,
                                   d.c.CustomerRatePlanId, d.c.CustomerPoolId).order_by(d.c.Id)).all()


def live(engine, iccid):
    return [r for r in rows(engine) if r.ICCID == iccid and not r.IsDeleted]


def add_spares(engine, iccids, *, status="INVENTORY", sp_id=1, tenant_id=1):
    with engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": status} for i in iccids], sp_id=sp_id, tenant_id=tenant_id)


# ---------------------------------------------------------------- Jasper
def test_jasper_swap_takes_over_a_spare_sim_of_the_inventory(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(2)
    spares = [seed.make_iccid(96_000 + k) for k in range(2)]
    add_spares(amop_engine, spares)  # in AMOP's inventory and in the Jasper account, never activated
    jasper.seed_devices([{"iccid": s, "status": "INVENTORY"} for s in spares])
    device_ids = {r.ICCID: r.Id for r in rows(amop_engine)}
    bulk_id = identifier_bulk(amop_engine, [(o, {"NewICCID": n}) for o, n in zip(fleet.iccids, spares)])
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"PROCESSED": 2}
    for old, new in zip(fleet.iccids, spares):
        [row] = live(amop_engine, new)  # one live row names the SIM: the device's own
        assert row.Id == device_ids[old] and row.Status == "ACTIVATED"
        retired = next(r for r in rows(amop_engine) if r.Id == device_ids[new])
        assert (retired.ICCID, retired.IsActive, retired.IsDeleted) == (new, False, True)
        assert jasper.device(new)["status"] == "ACTIVATED" and jasper.device(old)["status"] == "DEACTIVATED"


def test_jasper_swap_to_a_sim_in_service_or_of_another_tenant_is_refused(amop_engine, fleet_factory,
                                                                         make_client, jasper):
    fleet = fleet_factory(3)
    in_service, foreign = seed.make_iccid(96_100), seed.make_iccid(96_101)
    add_spares(amop_engine, [in_service], status="ACTIVATED")
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=2, name="other", integration=Integration.JASPER, tenant_id=2)
    add_spares(amop_engine, [foreign], sp_id=2, tenant_id=2)  # a spare, but another tenant's
    bulk_id = identifier_bulk(amop_engine, [(fleet.iccids[0], {"NewICCID": in_service}),
                                            (fleet.iccids[1], {"NewICCID": foreign}),
                                            (fleet.iccids[2], {"NewIMEI": imei(1)})])
    set_imeis(amop_engine, [in_service], 1)  # an IMEI is never taken over, whoever holds it
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"ERROR": 3} and jasper.calls() == []
    dcs = changes(amop_engine, bulk_id)
    assert dcs[fleet.iccids[0]].status_details.startswith(f"ICCID: {in_service} already exists.")
    assert dcs[fleet.iccids[1]].status_details.startswith(f"ICCID: {foreign} already exists.")
    assert dcs[fleet.iccids[2]].status_details.startswith(f"IMEI: {imei(1)} already exists.")
    assert len(live(amop_engine, in_service)) == 1 and len(live(amop_engine, foreign)) == 1


def test_jasper_follow_up_customer_rate_plan_after_the_swap(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(4)
    set_imeis(amop_engine, fleet.iccids, 300)
    new_sim = seed.make_iccid(96_200)
    jasper.seed_devices([{"iccid": new_sim, "status": "INVENTORY"}])
    bulk_id = identifier_bulk(amop_engine, [
        (fleet.iccids[0], {"NewIMEI": imei(400), **FOLLOW_UP}),
        (fleet.iccids[1], {"NewICCID": new_sim, "AddCustomerRatePlan": True, "CustomerRatePool": "7"}),
        (fleet.iccids[2], {"NewIMEI": imei(401), "CustomerRatePlan": "12"}),  # no AddCustomerRatePlan: ignored
        (fleet.iccids[3], {"NewIMEI": imei(402), "AddCustomerRatePlan": True, "CustomerRatePlan": "abc"})])
    summary = run(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"PROCESSED": 3, "ERROR": 1}
    by_imei = {r.IMEI: r for r in rows(amop_engine)}
    assert (by_imei[imei(400)].CustomerRatePlanId, by_imei[imei(400)].CustomerPoolId) == (12, 7)
    [swapped] = live(amop_engine, new_sim)
    assert (swapped.CustomerRatePlanId, swapped.CustomerPoolId) == (None, 7)
    assert (by_imei[imei(401)].CustomerRatePlanId, by_imei[imei(401)].CustomerPoolId) == (None, None)
    dcs = changes(amop_engine, bulk_id)
    assert dcs[fleet.iccids[0]].status_details.endswith("customer rate plan 12 and customer rate pool 7 set")
    assert "Customer Rate Plan Id not valid: abc" in dcs[fleet.iccids[3]].status_details
    assert {c["iccid"] for c in jasper.calls(method="PUT")} == {fleet.iccids[0], fleet.iccids[1], fleet.iccids[2],
                                                               new_sim}  # nothing sent for the bad request


# ---------------------------------------------------------------- ThingSpace
def test_thingspace_swap_to_a_spare_settles_with_the_follow_up(amop_engine, ts, ts_client):
    iccids = make_fleet(amop_engine, ts, 2, "active")
    spare = seed.make_iccid(82_000)
    add_spares(amop_engine, [spare], status="inventory", sp_id=4)  # legacy "inventory": AMOP only
    ids = {r.ICCID: r.Id for r in rows(amop_engine)}
    bulk_id = identifier_bulk(amop_engine, [(iccids[0], {"NewICCID": spare, **FOLLOW_UP}),
                                            (iccids[1], {"NewIMEI": imei(800), **FOLLOW_UP})], sp_id=4)
    summary = run(amop_engine, bulk_id, ts_client)
    assert summary["counts"] == {"PENDING_CARRIER": 2}
    waiting = {r.Id: r for r in rows(amop_engine)}
    assert waiting[ids[iccids[0]]].CustomerRatePlanId is None  # not before the carrier confirms
    assert not waiting[ids[spare]].IsDeleted
    s = settle_until_done(amop_engine, bulk_id, ts_client)
    assert s.settled == {"PROCESSED": 2}
    [row] = live(amop_engine, spare)
    assert row.Id == ids[iccids[0]] and (row.CustomerRatePlanId, row.CustomerPoolId) == (12, 7)
    after = {r.Id: r for r in rows(amop_engine)}
    assert (after[ids[spare]].IsActive, after[ids[spare]].IsDeleted) == (False, True)
    assert (after[ids[iccids[1]]].IMEI, after[ids[iccids[1]]].CustomerRatePlanId) == (imei(800), 12)
