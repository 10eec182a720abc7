"""Status-history reconciliation against the Jasper simulator."""
from sqlalchemy import func, select

from bulkchange import reconcile
from bulkchange.db import schema as t
from bulkchange.models import Integration


def history(engine):
    with engine.connect() as conn:
        return conn.execute(select(t.device_status_history.c.ICCID, t.device_status_history.c.PreviousStatus,
                                   t.device_status_history.c.CurrentStatus, t.device_status_history.c.Source)
                            .order_by(t.device_status_history.c.ICCID)).all()


def test_drift_found_and_recorded_exactly_once(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(120)  # more than two pages of Search Devices (50 per page)
    drifted = fleet.iccids[::10]
    for iccid in drifted:  # changed at the carrier behind our back
        jasper.seed_devices([{"iccid": iccid, "status": "DEACTIVATED"}])
    client = make_client()
    first = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
    assert first["drift"] == {"DEACTIVATED -> ACTIVATED": len(drifted)}
    assert first["updated"] == len(drifted) and first["carrier_devices"] == 120
    rows = history(amop_engine)
    assert rows == sorted((i, "ACTIVATED", "DEACTIVATED", "Reconciliation") for i in drifted)
    with amop_engine.connect() as conn:
        statuses = dict(conn.execute(select(t.device.c.Status, func.count()).group_by(t.device.c.Status)).all())
    assert statuses == {"ACTIVATED": 120 - len(drifted), "DEACTIVATED": len(drifted)}
    second = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
    assert second["drift"] == {} and second["updated"] == 0
    assert history(amop_engine) == rows


def test_dry_run_writes_nothing_and_in_flight_devices_are_left_alone(amop_engine, fleet_factory, make_client,
                                                                      jasper):
    fleet = fleet_factory(6)
    jasper.seed_devices([{"iccid": i, "status": "DEACTIVATED"} for i in fleet.iccids[:3]])
    fleet.bulk("Suspend", iccids=fleet.iccids[:1])  # a NEW bulk change holds the first device
    client = make_client()
    dry = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client, dry_run=True)
    assert dry["drift"] == {"DEACTIVATED -> ACTIVATED": 2} and dry["skipped_in_flight"] == 1
    assert dry["updated"] == 0 and history(amop_engine) == []
    real = reconcile.reconcile_provider_statuses(amop_engine, 1, Integration.JASPER, client)
    assert real["updated"] == 2
    assert {r[0] for r in history(amop_engine)} == set(fleet.iccids[1:3])
