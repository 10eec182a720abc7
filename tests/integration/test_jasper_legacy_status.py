"""Jasper StatusUpdate rules ported from the legacy code (legacy_behaviour.md 3.1), through the core
(prepare / process_batch / finalize, as bulk_change_process runs them) against the Jasper and Rev.io
simulators:

* the cheapest-plan-first step runs for a request asking "deactivated" only; a Suspend (carried
  out as DEACTIVATED too) goes straight to the status call, as in the legacy;
* with ``AccountNumber`` the device takes that Rev.io customer (and its site) after the status
  change, unless Rev.io shows a service line of the device that is not disconnected: then the
  customer stays and the device change says "Active service line. Cannot change customers.".
"""
from sqlalchemy import select, update

from bulkchange import processing
from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from tests.integration.test_revio_after_status import make_revio, revio  # noqa: F401 (fixtures)

ACCOUNT = "4711"  # one of seed.TEST_REV_CUSTOMERS
SITE = 17


def run_all(engine, bulk_id, client, revio_client=None):
    plan = processing.prepare(engine, bulk_id, batch_size=25)
    for batch in plan.batches:
        processing.process_batch(engine, bulk_id, batch.device_change_ids, client=client, revio_client=revio_client)
    return processing.finalize(engine, bulk_id)


def changes(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        return {dc.iccid: dc for dc in device_changes.load_device_changes(conn, bulk)}


def devices(engine):
    with engine.connect() as conn:
        return {r.ICCID: r for r in conn.execute(select(t.device))}


def plan_puts(jasper):
    return [c for c in jasper.calls(method="PUT") if "ratePlan" in (c.get("body") or {})]


def test_suspend_does_not_move_the_plan_first(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(3, comm_plan="COMM-1")
    summary = run_all(amop_engine, fleet.bulk("Suspend"), make_client())
    assert summary["counts"] == {"PROCESSED": 3}
    assert plan_puts(jasper) == []
    assert [c["body"] for c in jasper.calls(iccid=fleet.iccids[0], method="PUT")] == [{"status": "DEACTIVATED"}]
    assert {r.CarrierRatePlan for r in devices(amop_engine).values()} == {"P-1G"}


def test_only_deactivated_moves_the_plan_first(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(3, comm_plan="COMM-1")
    requests = ["deactivated ", "Deactivate", "DEACTIVATED"]  # the legacy compared trimmed, lower-cased
    extra = [{"ICCID": i, "ChangeRequest": {"UpdateStatus": s}} for i, s in zip(fleet.iccids, requests)]
    summary = run_all(amop_engine, fleet.bulk(iccids=[], extra=extra), make_client())
    assert summary["counts"] == {"PROCESSED": 3}
    assert sorted(c["iccid"] for c in plan_puts(jasper)) == sorted([fleet.iccids[0], fleet.iccids[2]])


def _with_site(engine):
    with engine.begin() as conn:
        conn.execute(update(t.site).where(t.site.c.Id == SITE).values(RevCustomerId=ACCOUNT))


def test_account_number_sets_the_rev_customer_after_the_status_change(amop_engine, fleet_factory, make_client,
                                                                      jasper, make_revio, revio):
    fleet = fleet_factory(2)
    _with_site(amop_engine)
    rev = make_revio()
    # a disconnected line does not hold the device
    rev.create_service({"customer_id": 9, "provider_id": 3, "number": "x", "number2": fleet.iccids[1],
                        "disconnected_date": "2026-01-31Z"})
    bulk_id = fleet.bulk("Suspend", AccountNumber=ACCOUNT)
    summary = run_all(amop_engine, bulk_id, make_client(), rev)
    assert summary["counts"] == {"PROCESSED": 2}
    for iccid in fleet.iccids:
        row = devices(amop_engine)[iccid]
        assert (row.Status, row.RevCustomerId, row.SiteId) == ("DEACTIVATED", ACCOUNT, SITE)
        assert changes(amop_engine, bulk_id)[iccid].status_details.endswith(f"Rev customer set to {ACCOUNT}")


def test_an_active_service_line_keeps_the_customer(amop_engine, fleet_factory, make_client, jasper,
                                                    make_revio, revio):
    fleet = fleet_factory(2)
    _with_site(amop_engine)
    rev = make_revio()
    rev.create_service({"customer_id": 9, "provider_id": 3, "number": "5550001", "number2": fleet.iccids[0]})
    # a live line of the customer asked for changes no customer: it does not hold the device
    rev.create_service({"customer_id": int(ACCOUNT), "provider_id": 3, "number": "5550002",
                        "number2": fleet.iccids[1]})
    bulk_id = fleet.bulk("Suspend", AccountNumber=ACCOUNT)
    summary = run_all(amop_engine, bulk_id, make_client(), rev)
    assert summary["counts"] == {"PROCESSED": 2}  # the status change itself succeeded, as in the legacy
    held, free = (devices(amop_engine)[i] for i in fleet.iccids)
    assert (held.Status, held.RevCustomerId, held.SiteId) == ("DEACTIVATED", None, None)
    assert changes(amop_engine, bulk_id)[fleet.iccids[0]].status_details.endswith(
        "Active service line. Cannot change customers.")
    assert (free.RevCustomerId, free.SiteId) == (ACCOUNT, SITE)


def test_without_rev_io_the_customer_is_not_changed_and_says_why(amop_engine, fleet_factory, make_client, jasper):
    fleet = fleet_factory(1)
    bulk_id = fleet.bulk("Suspend", AccountNumber=ACCOUNT)
    summary = run_all(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"REV_IO_FAILED": 1}
    row = devices(amop_engine)[fleet.iccids[0]]
    assert (row.Status, row.RevCustomerId) == ("DEACTIVATED", None)  # the carrier change is kept
    assert f"Rev customer {ACCOUNT} not set" in changes(amop_engine, bulk_id)[fleet.iccids[0]].status_details


def test_an_account_number_of_no_tenant_customer_is_refused_before_any_call(amop_engine, fleet_factory,
                                                                             make_client, jasper):
    fleet = fleet_factory(1)
    bulk_id = fleet.bulk("Suspend", AccountNumber="no-such-customer")
    summary = run_all(amop_engine, bulk_id, make_client())
    assert summary["counts"] == {"ERROR": 1}
    assert "AccountNumber no-such-customer is not a Rev.io customer of tenant 1" in \
        changes(amop_engine, bulk_id)[fleet.iccids[0]].status_details
    assert jasper.calls() == []
