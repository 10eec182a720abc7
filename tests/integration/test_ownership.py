"""One run per bulk change and one change at a time per device, through the core against the
Jasper simulator over real HTTP, on SQLite and PostgreSQL."""
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from bulkchange import processing
from bulkchange.db import bulk_changes, claims, device_changes
from bulkchange.db import schema as t
from bulkchange.models import utcnow

A = processing.run_owner("manual__first")
B = processing.run_owner("manual__second")


def _changes(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes.load_device_changes(conn, bulk)}


def _history(engine):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.device_status_history)).scalar_one()


def test_second_run_stops_before_any_write(amop_engine, fleet_factory):
    fleet = fleet_factory(3)
    bulk_id = fleet.bulk("Suspend")
    processing.take_ownership(amop_engine, bulk_id, A)
    before = _changes(amop_engine, bulk_id)
    with pytest.raises(processing.NotOwner, match=r"being processed by another run \(bulk_change_process:manual__first"):
        processing.take_ownership(amop_engine, bulk_id, B)
    with pytest.raises(processing.NotOwner, match="manual__second stops here and changes nothing"):
        processing.prepare(amop_engine, bulk_id, owner=B)
    assert _changes(amop_engine, bulk_id) == before  # still NEW, nothing validated or queued
    assert processing.prepare(amop_engine, bulk_id, owner=A).queued == 3  # a retry of the owner goes on


def test_a_batch_of_a_run_that_was_taken_over_sends_nothing(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(4)
    bulk_id = fleet.bulk("Suspend")
    plan = processing.prepare(amop_engine, bulk_id, owner=A)
    with amop_engine.begin() as conn:  # A stopped renewing (dead); B takes over once the hold expired
        conn.execute(update(t.device_bulk_change).values(LeaseExpiresDate=utcnow() - timedelta(seconds=1)))
    processing.take_ownership(amop_engine, bulk_id, B)
    with pytest.raises(processing.NotOwner, match="manual__second"):
        processing.process_batch(amop_engine, bulk_id, plan.batches[0].device_change_ids, client=make_client(),
                                 owner=A)
    assert jasper.calls(method="PUT") == []
    assert {dc.status.value for dc in _changes(amop_engine, bulk_id).values()} == {"PENDING"}
    with pytest.raises(processing.NotOwner):  # nor may A's finalize sweep B's devices
        processing.finalize(amop_engine, bulk_id, owner=A)
    for batch in processing.prepare(amop_engine, bulk_id, owner=B).batches:
        processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=make_client(), owner=B)
    assert processing.finalize(amop_engine, bulk_id, owner=B)["status"] == "PROCESSED"
    assert _history(amop_engine) == 4 and len(jasper.calls(method="PUT")) == 4
    with amop_engine.connect() as conn:  # released with the roll-up: a later run (retry) may take it
        assert claims.load_lease(conn, bulk_id).owner is None


@pytest.mark.parametrize("first", ["older", "newer"])
def test_one_change_at_a_time_per_device(amop_engine, fleet_factory, make_client, first):
    """Two bulk changes on overlapping devices: whichever is queued second refuses the shared
    devices naming the other bulk change; its other devices go on. Both orders."""
    fleet = fleet_factory(4)
    older = fleet.bulk("Suspend", iccids=fleet.iccids[:3])
    newer = fleet.bulk("Suspend", iccids=fleet.iccids[1:])
    one, two = (older, newer) if first == "older" else (newer, older)
    plan_one = processing.prepare(amop_engine, one)
    plan_two = processing.prepare(amop_engine, two)
    assert (plan_one.queued, plan_two.queued, plan_two.rejected) == (3, 1, 2)
    shared = fleet.iccids[1:3]
    refused = _changes(amop_engine, two)
    for iccid in shared:
        assert refused[iccid].status.value == "ERROR"
        assert (f"device {iccid} has an unsettled change in bulk change {one} " in refused[iccid].status_details
                and "one change at a time per device" in refused[iccid].status_details)
    for plan, bulk_id in ((plan_one, one), (plan_two, two)):
        for batch in plan.batches:
            processing.process_batch(amop_engine, bulk_id, batch.device_change_ids, client=make_client())
        processing.finalize(amop_engine, bulk_id)
    assert _history(amop_engine) == 4  # each device changed once
    # once the first has finished, the refused devices can be retried
    assert sorted(processing.reset_failed(amop_engine, two)) == sorted(refused[i].id for i in shared)
    assert processing.prepare(amop_engine, two).queued == 2
