"""The statements the change handlers run through their data-access modules, each run on SQLite
and compiled for SQL Server."""
from datetime import timedelta

from sqlalchemy import event, select
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import ClauseElement

from bulkchange.db import (
    bulk_devices,
    customer_rate_plans,
    device_identifiers,
    new_service,
    sim_swap,
    username_changes,
)
from bulkchange.db import bulk_changes, tables
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration, utcnow


def _statements(engine) -> list[ClauseElement]:
    seen: list[ClauseElement] = []

    @event.listens_for(engine, "before_execute")
    def _keep(conn, clauseelement, multiparams, params, execution_options):
        if isinstance(clauseelement, ClauseElement):
            seen.append(clauseelement)
    return seen


def _compile_all(statements) -> None:
    dialect = mssql.dialect()
    for stmt in statements:
        assert str(stmt.compile(dialect=dialect))


def _one_device(engine, n: int, change_type: ChangeType, change_request: dict, **device):
    """One Jasper device of service provider 1 / tenant 1 and a bulk change naming it: (iccid, device
    id, bulk change, device change id)."""
    iccid = seed.make_iccid(n)
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        [dev_id] = seed.add_devices(conn, [{"ICCID": iccid, "Status": "ACTIVATED", **device}], sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=change_type,
                                       requests=[{"ICCID": iccid, "ChangeRequest": change_request}])
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dc_id = conn.execute(select(t.m2m_device_change.c.Id)).scalar_one()
    return iccid, dev_id, bulk, dc_id


def test_username_change_statements_run_and_compile_for_sql_server(sqlite_engine):
    iccid, dev_id, bulk, _ = _one_device(sqlite_engine, 1, ChangeType.EDIT_USERNAME_COST_CENTER,
                                         {"ContactName": "new"}, Username="old")
    seen = _statements(sqlite_engine)
    with sqlite_engine.begin() as conn:
        assert [(r.Id, r.ICCID, r.Username) for r in username_changes.current_usernames(conn, bulk)] == \
            [(dev_id, iccid, "old")]
        assert username_changes.active_rev_services(conn, bulk) == []
        assert username_changes.service_provider_settings(conn, 1) is None
        username_changes.update_rev_service_columns(conn, ["Username"], [{"s_id": 7, "v_Username": "new"}])
        assert username_changes.applied_username_changes(conn, bulk) == []
    assert len(seen) == 5
    _compile_all(seen)


def test_customer_rate_plan_queue_statements_run_and_compile_for_sql_server(sqlite_engine):
    iccid, dev_id, bulk, dc_id = _one_device(sqlite_engine, 2, ChangeType.CUSTOMER_RATE_PLAN_CHANGE,
                                             {"CustomerRatePlanId": 5})
    now = utcnow()
    seen = _statements(sqlite_engine)
    with sqlite_engine.begin() as conn:
        queued = [customer_rate_plans.QueuedChange(dc_id, dev_id, 5, None, None, now - timedelta(minutes=1))]
        assert customer_rate_plans.queue_changes(conn, bulk, queued, created_by="test") == 1
        assert customer_rate_plans.queue_changes(conn, bulk, queued, created_by="test") == 0  # already queued
        ids = customer_rate_plans.due_queue_ids(conn, now, 10)
        assert len(ids) == 1
        assert customer_rate_plans.claim_queue_rows(conn, ids, applied_at=now) == 1
        assert [int(r["DeviceChangeId"]) for r in customer_rate_plans.load_queue_rows(conn, ids)] == [dc_id]
        assert customer_rate_plans.live_device_ids(conn, 0, [dev_id, dev_id + 1]) == {dev_id}
        customer_rate_plans.write_device_plan_columns(conn, 0, ["CustomerRatePlanId"],
                                                      [(dev_id, {"CustomerRatePlanId": 5})], now=now)
        customer_rate_plans.mark_scheduled_processed(conn, bulk, [(dc_id, "applied")], now=now, processed_by="test")
    assert len(seen) >= 8
    _compile_all(seen)


def test_new_service_statements_run_and_compile_for_sql_server(sqlite_engine):
    iccid = seed.make_iccid(3)
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=2, name="tg", integration=Integration.TELEGENCE, tenant_id=1)
        [dev_id] = seed.add_devices(conn, [{"ICCID": iccid, "MSISDN": "5550001", "Status": "A"}],
                                    sp_id=2, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=2, tenant_id=1, change_type=ChangeType.ACTIVATE_NEW_SERVICE,
                                       requests=[{"ICCID": iccid, "ChangeRequest": {}}], portal_type=2)
        linked_id = seed.add_bulk_change(conn, sp_id=2, tenant_id=1, change_type=ChangeType.CUSTOMER_ASSIGNMENT,
                                         requests=[{"ICCID": iccid, "ChangeRequest": {}}], portal_type=2,
                                         process_changes=False)
        bulk, linked = bulk_changes.load_bulk_change(conn, bulk_id), bulk_changes.load_bulk_change(conn, linked_id)
        tbl = tables.change_table(bulk.portal_type)
        dc_id = conn.execute(select(tbl.c.Id).where(tbl.c.BulkChangeId == bulk_id)).scalar_one()
    now = utcnow()
    seen = _statements(sqlite_engine)
    with sqlite_engine.begin() as conn:
        new_service.replace_line_features(conn, bulk, [dev_id], [(dev_id, iccid, "5550001", "F1")], now=now)
        assert new_service.change_requests(conn, bulk, [dc_id]) == [(dc_id, "{}")]
        assert new_service.count_unsettled(conn, bulk) == 1
        assert new_service.failed_activations(conn, bulk) == []
        new_service.set_linked_numbers(conn, linked, [(iccid, "5550001")], now=now)
        new_service.refuse_linked_changes(conn, linked, [(iccid, "failed")], now=now)
        new_service.release_held_bulk_change(conn, linked_id)
    assert len(seen) == 8
    _compile_all(seen)


def test_identifier_eid_and_archival_statements_run_and_compile_for_sql_server(sqlite_engine):
    iccid, dev_id, bulk, dc_id = _one_device(sqlite_engine, 4, ChangeType.ARCHIVAL, {},
                                             IMEI="350000000000001", EID="E1")
    seen = _statements(sqlite_engine)
    with sqlite_engine.begin() as conn:
        assert sim_swap.change_requests_in_order(conn, bulk) == [(dc_id, iccid, "{}")]
        assert sim_swap.device_imeis(conn, bulk, [iccid, "1"]) == {iccid: "350000000000001"}
        assert device_identifiers.inventory_eids(conn, bulk) == {iccid: "E1"}
        assert list(bulk_devices.device_usage(conn, bulk)) == [dev_id]
        assert bulk_devices.active_rev_services(conn, bulk) == {}
    assert len(seen) == 5
    _compile_all(seen)
