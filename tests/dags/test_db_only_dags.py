"""DB-only change types through bulk_change_process under dag.test(), with no carrier connection at
all: CustomerRatePlanChange (a future-dated half applied by customer_rate_plan_scheduler), Archival,
and CustomerAssignment with its Rev.io service through the revio_sp_<N> connection."""
import json
from datetime import timedelta

import pytest
from sqlalchemy import insert, select, update

from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import INTEGRATION_IDS, ChangeType, Integration, utcnow
from tests.dags.conftest import amop_conn_json
from tests.integration.test_revio_after_status import REV_CLIENT, REV_KEY, REV_PASSWORD, REV_USER, revio  # noqa: F401

pytestmark = pytest.mark.airflow
SP = 12


def _fleet(engine, n, integration, start):
    iccids = [seed.make_iccid(start + i) for i in range(n)]
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="dbonly", integration=integration, tenant_id=5)
        seed.add_test_references(conn, tenant_id=5)  # the ids these tests name
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE", "DataUsageMB": 0} for i in iccids], sp_id=SP,
                         tenant_id=5)
    return iccids


def _bulk(engine, change_type, requests):
    with engine.begin() as conn:
        # a Telegence provider's bulk changes are Mobility ones (its lines are in the Mobility inventory)
        integration = conn.execute(select(t.service_provider.c.IntegrationId)
                                   .where(t.service_provider.c.Id == SP)).scalar_one()
        portal = 2 if integration == INTEGRATION_IDS[Integration.TELEGENCE] else 0
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=5, change_type=change_type, requests=requests,
                                    portal_type=portal)


def _state(engine, bulk_id):
    with engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        devices = {r.ICCID: r for tbl in (t.device, t.mobility_device) for r in conn.execute(select(tbl))}
        logs = conn.execute(select(t.device_bulk_change_log).where(
            t.device_bulk_change_log.c.BulkChangeId == bulk_id)).mappings().all()
        return bulk.status.value, progress.status_counts(conn, bulk), devices, logs


def test_customer_rate_plan_change_and_its_scheduler(dagbag, amop_engine, monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(amop_engine))
    monkeypatch.delenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", raising=False)  # not needed: no carrier call
    iccids = _fleet(amop_engine, 30, Integration.TELEGENCE, 97_000)
    soon = utcnow() + timedelta(hours=1)
    requests = ([{"ICCID": i, "ChangeRequest": {"CustomerRatePlanId": 21, "CustomerPoolId": 22}} for i in iccids[:15]]
                + [{"ICCID": i, "ChangeRequest": {"CustomerRatePlanId": 31, "EffectiveDate": soon.isoformat() + "Z"}}
                   for i in iccids[15:]])
    bulk_id = _bulk(amop_engine, ChangeType.CUSTOMER_RATE_PLAN_CHANGE, requests)
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 10})
    assert run.state == DagRunState.SUCCESS
    status, counts, devices, logs = _state(amop_engine, bulk_id)
    assert (status, counts) == ("WAITING_FOR_CARRIER", {"PROCESSED": 15, "SCHEDULED": 15})
    assert {devices[i].CustomerRatePlanId for i in iccids[:15]} == {21}
    assert {devices[i].CustomerRatePlanId for i in iccids[15:]} == {None}
    assert len(logs) == 30

    # nothing is due yet: the scheduler leaves everything as it is
    assert dagbag.dags["customer_rate_plan_scheduler"].test().state == DagRunState.SUCCESS
    assert _state(amop_engine, bulk_id)[:2] == ("WAITING_FOR_CARRIER", {"PROCESSED": 15, "SCHEDULED": 15})
    # the hour passes: move the stored dates into the past
    q = t.device_customer_rate_plan_queue
    with amop_engine.begin() as conn:
        conn.execute(update(q).where(q.c.BulkChangeId == bulk_id).values(EffectiveDate=utcnow() - timedelta(seconds=1)))
    sched = dagbag.dags["customer_rate_plan_scheduler"].test()
    assert sched.state == DagRunState.SUCCESS
    status, counts, devices, logs = _state(amop_engine, bulk_id)
    assert (status, counts) == ("PROCESSED", {"PROCESSED": 30})
    assert {devices[i].CustomerRatePlanId for i in iccids[15:]} == {31}
    assert len(logs) == 45


def test_archival_without_carrier_connection(dagbag, sqlite_engine, monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.delenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", raising=False)
    iccids = _fleet(sqlite_engine, 20, Integration.JASPER, 97_500)
    with sqlite_engine.begin() as conn:
        dev_id = conn.execute(select(t.device.c.Id).where(t.device.c.ICCID == iccids[0])).scalar_one()
        conn.execute(insert(t.rev_service).values(ServiceId=1, CustomerId="C", DeviceId=dev_id, IsActive=True,
                                                  CreatedDate=utcnow()))
    bulk_id = _bulk(sqlite_engine, ChangeType.ARCHIVAL, [{"ICCID": i, "ChangeRequest": {}} for i in iccids])
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id})
    assert run.state == DagRunState.SUCCESS
    status, counts, devices, logs = _state(sqlite_engine, bulk_id)
    assert (status, counts) == ("PROCESSED_WITH_ERRORS", {"PROCESSED": 19, "ERROR": 1})
    assert sum(1 for d in devices.values() if d.IsDeleted and not d.IsActive) == 19
    assert not devices[iccids[0]].IsDeleted
    assert len(logs) == 20


def test_customer_assignment_with_rev_io(dagbag, sqlite_engine, simulator, revio, monkeypatch):
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.delenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", raising=False)
    monkeypatch.setenv(f"AIRFLOW_CONN_REVIO_SP_{SP}", json.dumps({
        "conn_type": "http", "host": simulator.url_for("revio"), "login": f"{REV_USER}@{REV_CLIENT}",
        "password": REV_PASSWORD, "extra": {"subscription_key": REV_KEY, "rate_limit_per_s": 50}}))
    iccids = _fleet(sqlite_engine, 20, Integration.TEAL, 98_000)
    request = {"RevCustomerId": 900, "CreateRevService": True, "ProviderId": 4, "RevProductId": 61, "Rate": "2.5",
               "CustomerRatePlanId": 8}
    bulk_id = _bulk(sqlite_engine, ChangeType.CUSTOMER_ASSIGNMENT, [{"ICCID": i, "ChangeRequest": request}
                                                                    for i in iccids])
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 10})
    assert run.state == DagRunState.SUCCESS
    status, counts, devices, logs = _state(sqlite_engine, bulk_id)
    assert (status, counts) == ("PROCESSED", {"PROCESSED": 20})
    assert {(devices[i].RevCustomerId, devices[i].CustomerRatePlanId) for i in iccids} == {("900", 8)}
    assert sorted(s["number2"] for s in revio.request("GET", "/services")) == sorted(iccids)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(t.rev_service.c.DeviceId)).scalars().all().__len__() == 20
    assert not [r for r in logs if REV_PASSWORD in (r["RequestText"] or "") + (r["ResponseText"] or "")]


@pytest.mark.parametrize("integration", [Integration.JASPER, Integration.THINGSPACE, Integration.TELEGENCE,
                                         Integration.TEAL, Integration.POND], ids=lambda i: i.value)
def test_db_only_change_types_on_every_carrier(dagbag, sqlite_engine, simulator, integration, monkeypatch):
    """The README's table marks these pairs "DB": one handler serves every carrier. Each carrier's
    service provider runs each of them through bulk_change_process, and no carrier sees a call."""
    from airflow.sdk import DagRunState

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.delenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", raising=False)
    before = {name: len(c.log.entries) for name, c in simulator.carriers.items()}
    iccids = _fleet(sqlite_engine, 9, integration, 98_500)
    cases = [
        (ChangeType.CUSTOMER_RATE_PLAN_CHANGE, {"CustomerRatePlanId": 41, "CustomerPoolId": 42},
         lambda d: (d.CustomerRatePlanId, d.CustomerPoolId) == (41, 42)),
        (ChangeType.CUSTOMER_ASSIGNMENT, {"SiteId": 77, "CustomerRatePlanId": 43},
         lambda d: (d.SiteId, d.CustomerRatePlanId) == (77, 43)),
        (ChangeType.ARCHIVAL, {}, lambda d: d.IsDeleted and not d.IsActive),
    ]
    for change_type, request, applied in cases:
        bulk_id = _bulk(sqlite_engine, change_type, [{"ICCID": i, "ChangeRequest": request} for i in iccids])
        run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 5})
        assert run.state == DagRunState.SUCCESS, change_type
        status, counts, devices, logs = _state(sqlite_engine, bulk_id)
        assert (status, counts) == ("PROCESSED", {"PROCESSED": 9}), change_type
        assert all(applied(devices[i]) for i in iccids), change_type
        assert len(logs) == 9 and not any(r["HasErrors"] for r in logs), change_type
    assert {name: len(c.log.entries) for name, c in simulator.carriers.items()} == before


def test_assignment_history_and_site_check_and_ebonding_refusal_through_bulk_change_process(
        dagbag, sqlite_engine, monkeypatch):
    """Through bulk_change_process: a CustomerAssignment leaves one DeviceAssignmentHistory row per
    device it changed and refuses a SiteId of another tenant with the reason; an eBonding service
    provider's rate plan change is refused at pre-flight with the eBonding reason on every device."""
    from airflow.sdk import DagRunState

    from bulkchange.db.assignment_history import load_assignment_history

    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", amop_conn_json(sqlite_engine))
    monkeypatch.delenv(f"AIRFLOW_CONN_CARRIER_SP_{SP}", raising=False)
    iccids = _fleet(sqlite_engine, 4, Integration.POND, 98_700)
    with sqlite_engine.begin() as conn:
        seed.add_tenant_references(conn, tenant_id=77, sites=[7001])  # another tenant's site
    bulk_id = _bulk(sqlite_engine, ChangeType.CUSTOMER_ASSIGNMENT,
                    [{"ICCID": i, "ChangeRequest": {"SiteId": 7001 if n == 3 else 50 + n, "CustomerRatePlanId": 9}}
                     for n, i in enumerate(iccids)])
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": bulk_id, "batch_size": 5})
    assert run.state == DagRunState.SUCCESS
    status, counts, devices, logs = _state(sqlite_engine, bulk_id)
    assert (status, counts) == ("PROCESSED_WITH_ERRORS", {"PROCESSED": 3, "ERROR": 1})
    assert any("SiteId 7001 belongs to another tenant" in (r["ErrorText"] or "") for r in logs)
    with sqlite_engine.connect() as conn:
        history = load_assignment_history(conn, bulk_id)
    assert sorted((h["ICCID"], h["SiteId"], h["CustomerRatePlanId"]) for h in history) == [
        (iccids[n], 50 + n, 9) for n in range(3)]
    assert devices[iccids[3]].SiteId is None

    eb_sp, eb_iccids = SP + 1, [seed.make_iccid(98_800 + n) for n in range(2)]
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=eb_sp, name="ebonding", integration=Integration.EBONDING, tenant_id=5)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE"} for i in eb_iccids], sp_id=eb_sp, tenant_id=5)
        eb_bulk = seed.add_bulk_change(conn, sp_id=eb_sp, tenant_id=5, change_type=ChangeType.CARRIER_RATE_PLAN_CHANGE,
                                       requests=[{"ICCID": i, "ChangeRequest": {"CarrierRatePlan": "EB-1"}}
                                                 for i in eb_iccids])
    run = dagbag.dags["bulk_change_process"].test(run_conf={"bulk_change_id": eb_bulk, "batch_size": 5})
    status, counts, _, logs = _state(sqlite_engine, eb_bulk)
    assert (status, counts) == ("ERROR", {"ERROR": 2})
    assert len(logs) == 2 and all("eBonding bulk changes that reach the carrier are not processed"
                                  in (r["ErrorText"] or r["ResponseText"] or "") for r in logs)
