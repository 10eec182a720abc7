"""Reconciliation of POND SIMs (package status and package type vs Device) and of carrier rate plans
(Jasper ratePlan, Teal planUuid / planName), against the simulators: each drift is written to the
inventory with one history row, and a second run while nothing changes at the carrier records
nothing again."""
from sqlalchemy import select

from bulkchange import reconcile
from bulkchange.db import schema as t
from bulkchange.models import Integration
from tests.integration.test_pond_status_update import SP as POND_SP
from tests.integration.test_pond_status_update import PondFleet, pond, pond_client  # noqa: F401 (fixtures)
from tests.integration.test_teal_status_update import SP as TEAL_SP
from tests.integration.test_teal_status_update import make_fleet as make_teal_fleet
from tests.integration.test_teal_status_update import teal, teal_client  # noqa: F401 (fixtures)


def status_history(engine):
    h = t.device_status_history
    with engine.connect() as conn:
        return sorted(conn.execute(select(h.c.ICCID, h.c.PreviousStatus, h.c.CurrentStatus, h.c.Source)).all())


def plan_history(engine):
    h = t.device_rate_plan_history
    with engine.connect() as conn:
        return sorted(conn.execute(select(h.c.ICCID, h.c.PreviousRatePlan, h.c.CurrentRatePlan, h.c.Source,
                                          h.c.DeviceId.is_not(None))).all())


def devices(engine, sp_id):
    d = t.device
    with engine.connect() as conn:
        return {r.ICCID: (r.Status, r.CarrierRatePlan) for r in conn.execute(
            select(d.c.ICCID, d.c.Status, d.c.CarrierRatePlan).where(d.c.ServiceProviderId == sp_id))}


def test_pond_package_status_and_type_are_reconciled_once(amop_engine, pond, pond_client):
    fleet = PondFleet(amop_engine, pond, 12, status="ACTIVE", service_status="ENABLED",
                      packages=[{"packageTypeId": "101", "status": "ACTIVE"}], rate_plan="101", start=61_000)
    suspended, terminated, other_plan = fleet.iccids[0:3], fleet.iccids[3:5], fleet.iccids[5:7]
    # changed at POND behind our back (the simulator's state is the carrier's)
    pond.seed_devices([{"iccid": i, "serviceStatus": "DISABLED", "packages": [{"packageTypeId": "101",
                                                                                 "status": "ACTIVE"}]}
                       for i in suspended])
    pond.seed_devices([{"iccid": i, "serviceStatus": "DISABLED", "packages": [{"packageTypeId": "101",
                                                                                 "status": "TERMINATED"}]}
                       for i in terminated])
    pond.seed_devices([{"iccid": i, "serviceStatus": "ENABLED", "packages": [
        {"packageTypeId": "101", "status": "TERMINATED"}, {"packageTypeId": "103", "status": "ACTIVE"}]}
        for i in other_plan])
    client = pond_client()

    first = reconcile.reconcile_provider_statuses(amop_engine, POND_SP, Integration.POND, client)
    assert first["drift"] == {"SUSPENDED -> ACTIVE": 3, "TERMINATED -> ACTIVE": 2}, first
    assert first["rate_plan_drift"] == {"103 -> 101": 2}, first
    assert first["updated"] == 5 and first["rate_plans_updated"] == 2
    assert first["carrier_devices"] == 12 and first["unread_pages"] == []
    assert status_history(amop_engine) == sorted(
        [(i, "ACTIVE", "SUSPENDED", "Reconciliation") for i in suspended]
        + [(i, "ACTIVE", "TERMINATED", "Reconciliation") for i in terminated])
    assert plan_history(amop_engine) == sorted((i, "101", "103", "Reconciliation", True) for i in other_plan)
    now = devices(amop_engine, POND_SP)
    assert {i: now[i] for i in suspended + terminated + other_plan} == {
        **{i: ("SUSPENDED", "101") for i in suspended}, **{i: ("TERMINATED", "101") for i in terminated},
        **{i: ("ACTIVE", "103") for i in other_plan}}

    calls = len(pond.calls(path_contains="/sims/", limit=100_000))
    second = reconcile.reconcile_provider_statuses(amop_engine, POND_SP, Integration.POND, client)
    assert second["drift"] == {} and second["rate_plan_drift"] == {}
    assert second["updated"] == 0 and second["rate_plans_updated"] == 0
    assert len(status_history(amop_engine)) == 5 and len(plan_history(amop_engine)) == 2
    # every SIM on record was read once more (POND has no list): 12 GETs, each through the client
    assert len(pond.calls(path_contains="/sims/", limit=100_000)) - calls == 12


def test_pond_sim_unknown_at_the_carrier_is_missing_not_drift(amop_engine, pond, pond_client):
    fleet = PondFleet(amop_engine, pond, 3, status="ACTIVE", service_status="ENABLED",
                      packages=[{"packageTypeId": "101", "status": "ACTIVE"}], start=62_000)
    from bulkchange.db import seed

    stranger = seed.make_iccid(62_900)
    with amop_engine.begin() as conn:  # on record, but POND does not know the SIM
        seed.add_devices(conn, [{"ICCID": stranger, "Status": "ACTIVE", "CarrierRatePlan": "101"}],
                         sp_id=POND_SP, tenant_id=1)
    result = reconcile.reconcile_provider_statuses(amop_engine, POND_SP, Integration.POND, pond_client())
    assert result["missing_at_carrier"] == 1 and result["drift"] == {} and result["rate_plan_drift"] == {}
    assert result["carrier_devices"] == len(fleet.iccids)


def test_jasper_rate_plan_drift_is_recorded_once_per_change(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(60)  # P-1G at the carrier and on record; two pages of Search Devices
    moved = fleet.iccids[::7]
    jasper.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "P-500"} for i in moved])
    client = make_client()
    first = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
    assert first["rate_plan_drift"] == {"P-500 -> P-1G": len(moved)} and first["drift"] == {}
    assert first["rate_plans_updated"] == len(moved) and first["updated"] == 0
    assert plan_history(amop_engine) == sorted((i, "P-1G", "P-500", "Reconciliation", True) for i in moved)
    assert status_history(amop_engine) == []  # a plan drift is not a status change
    assert {i for i, (_, plan) in devices(amop_engine, 1).items() if plan == "P-500"} == set(moved)

    for _ in range(2):  # unchanged at the carrier: nothing recorded again
        again = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
        assert again["rate_plan_drift"] == {} and again["rate_plans_updated"] == 0
    assert len(plan_history(amop_engine)) == len(moved)

    # the carrier changes one of them again: that change is recorded, once
    jasper.seed_devices([{"iccid": moved[0], "status": "ACTIVATED", "ratePlan": "P-0"}])
    third = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
    assert third["rate_plan_drift"] == {"P-0 -> P-500": 1}
    assert len(plan_history(amop_engine)) == len(moved) + 1

    # a device with a change in flight is left alone (its bulk change records what it does)
    jasper.seed_devices([{"iccid": moved[1], "status": "ACTIVATED", "ratePlan": "P-0"}])
    fleet.bulk("Suspend", iccids=[moved[1]])
    held = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
    assert held["rate_plan_drift"] == {} and held["skipped_in_flight"] == 1


def test_teal_plan_is_the_same_by_uuid_or_name(amop_engine, teal, teal_client):
    iccids = make_teal_fleet(amop_engine, teal, 4, "ONLINE", start=63_000)
    by_uuid, by_name, other, none = iccids
    with amop_engine.begin() as conn:  # what a rate plan change leaves: the uuid, or the name given
        for iccid, plan in ((by_uuid, "plan-0001"), (by_name, "Teal Global 1GB"), (other, "plan-0002"),
                            (none, None)):
            conn.execute(t.device.update().where(t.device.c.ICCID == iccid).values(CarrierRatePlan=plan))
    result = reconcile.reconcile_provider_statuses(amop_engine, TEAL_SP, Integration.TEAL, teal_client)
    assert result["rate_plan_drift"] == {"plan-0001 -> plan-0002": 1, "plan-0001 -> None": 1}, result
    assert {r[0] for r in plan_history(amop_engine)} == {other, none}
