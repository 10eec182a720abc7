"""Repository behaviour on SQLite and PostgreSQL (the same code path as SQL Server)."""
import threading

import pytest
from sqlalchemy import func, select

from bulkchange.carriers.base import CallRecord
from bulkchange.db import bulk_changes, claims, device_changes, inventory, progress
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db import seed
from bulkchange.db.connect import make_engine
from bulkchange.models import BulkStatus, ChangeType, DeviceChangeStatus, DeviceResult, Integration


def make_bulk(engine, n=3, status="NEW", sp_id=1, tenant_id=1, process=True):
    with engine.begin() as conn:
        if conn.execute(select(t.service_provider.c.Id).where(t.service_provider.c.Id == sp_id)).first() is None:
            seed.add_service_provider(conn, sp_id=sp_id, name=f"sp{sp_id}", integration=Integration.JASPER,
                                      tenant_id=tenant_id)
        start = 1000 * sp_id
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(start + i), "Status": "ACTIVATED"} for i in range(n)],
                         sp_id=sp_id, tenant_id=tenant_id)
        return seed.add_bulk_change(
            conn, sp_id=sp_id, tenant_id=tenant_id, change_type=ChangeType.STATUS_UPDATE, status=status,
            process_changes=process,
            requests=[{"ICCID": seed.make_iccid(start + i), "ChangeRequest": {"UpdateStatus": "Suspend"}}
                      for i in range(n)])


def test_schema_creation_is_idempotent_and_seeds_lookups(amop_engine):
    from bulkchange.db.seed import create_schema
    create_schema(amop_engine)  # second time
    with amop_engine.connect() as conn:
        codes = set(conn.execute(select(t.device_change_request_type.c.Code)).scalars())
        assert len(codes) == 9 and "EditUsernameCostCenter" in codes
        assert conn.execute(select(t.integration.c.Name).where(t.integration.c.Id == 4)).scalar_one() == "ThingSpace"


def test_record_results_applies_device_updates_of_applied_changes_only(amop_engine):
    bulk_id = make_bulk(amop_engine, n=3)
    with amop_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        a, b, c = device_changes.load_device_changes(conn, bulk)
        devices = inventory.load_devices_by_iccid(conn, bulk, [a.iccid, b.iccid, c.iccid])
        new_iccid = seed.make_iccid(9_999)

        def result(dc, status, updates):
            return DeviceResult(device_change_id=dc.id, status=status, details="x", device_id=devices[dc.iccid].id,
                                iccid=dc.iccid, device_updates=updates)

        device_changes.record_results(conn, bulk, [
            result(a, DeviceChangeStatus.PROCESSED, {"CustomerRatePlanId": 7, "CustomerPoolId": 3}),
            result(b, DeviceChangeStatus.PROCESSED, {"ICCID": new_iccid, "Username": "Ada"}),
            result(c, DeviceChangeStatus.API_FAILED, {"Username": "never written"}),
        ], {}, processed_by="test")
        with pytest.raises(ValueError, match="no updatable column TenantId"):
            device_changes.record_results(conn, bulk, [result(a, DeviceChangeStatus.PROCESSED, {"TenantId": 2})], {},
                                          processed_by="test")
    with amop_engine.connect() as conn:
        rows = {r.Id: r for r in conn.execute(select(t.device))}
    ra, rb, rc = (rows[devices[dc.iccid].id] for dc in (a, b, c))
    assert (ra.CustomerRatePlanId, ra.CustomerPoolId, ra.Username, ra.ICCID) == (7, 3, None, a.iccid)
    assert (rb.ICCID, rb.Username, rb.CustomerRatePlanId) == (new_iccid, "Ada", None)
    assert rc.Username is None

def test_find_and_claim_only_new_with_process_changes(amop_engine):
    a = make_bulk(amop_engine)
    make_bulk(amop_engine, sp_id=2, process=False)
    make_bulk(amop_engine, sp_id=3, status="PROCESSED")
    assert claims.claim_new_bulk_changes(amop_engine) == [a]
    assert claims.claim_new_bulk_changes(amop_engine) == []
    with amop_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, a).status == BulkStatus.PENDING


def test_concurrent_claimers_each_bulk_change_claimed_once(amop_engine):
    ids = [make_bulk(amop_engine, n=1, sp_id=10 + i) for i in range(12)]
    url = amop_engine.url.render_as_string(hide_password=False)
    results, barrier = [], threading.Barrier(4)

    def claimer():
        engine = make_engine(url)  # each claimer has its own engine, like two sensor runs
        barrier.wait()
        results.append(claims.claim_new_bulk_changes(engine))
        engine.dispose()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(ids)  # every one claimed, none twice


def test_load_bulk_change_joins_type_provider_integration(amop_engine):
    bulk_id = make_bulk(amop_engine)
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert (bulk.change_type, bulk.integration, bulk.service_provider_name) == \
            (ChangeType.STATUS_UPDATE, Integration.JASPER, "sp1")
        with pytest.raises(bulk_changes.BulkChangeNotFound):
            bulk_changes.load_bulk_change(conn, 999999)


def test_devices_of_other_tenants_are_invisible(amop_engine):
    bulk_id = make_bulk(amop_engine)
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=7, name="other", integration=Integration.JASPER, tenant_id=2)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(5555), "Status": "ACTIVATED"}], sp_id=7, tenant_id=2)
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        found = inventory.load_devices_by_iccid(conn, bulk, [seed.make_iccid(1000), seed.make_iccid(5555)])
    assert list(found) == [seed.make_iccid(1000)]


def test_record_results_writes_changes_devices_history_and_logs(amop_engine):
    bulk_id = make_bulk(amop_engine, n=3)
    with amop_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dcs = device_changes.load_device_changes(conn, bulk)
        devices = inventory.load_devices_by_iccid(conn, bulk, [d.iccid for d in dcs])
        ok, failed, rejected = dcs
        results = [
            DeviceResult(device_change_id=ok.id, status=DeviceChangeStatus.PROCESSED, details="done",
                         device_id=devices[ok.iccid].id, iccid=ok.iccid, previous_device_status="ACTIVATED",
                         new_device_status="DEACTIVATED", carrier_rate_plan="P0"),
            DeviceResult(device_change_id=failed.id, status=DeviceChangeStatus.API_FAILED, details="HTTP 400",
                         device_id=devices[failed.iccid].id, iccid=failed.iccid),
        ]
        calls = {ok.id: [CallRecord("Update Jasper Status: Jasper API", "PUT", "u", "PUT /devices/x", 200, "{}")],
                 failed.id: [CallRecord("Update Jasper Status: Jasper API", "PUT", "u", "PUT", 400, "{}",
                                        error="HTTP 400", attempt=1)]}
        device_changes.record_results(conn, bulk, results, calls, processed_by="test")
        device_changes.reject_device_changes(conn, bulk, [(rejected.id, "bad ICCID")], processed_by="test")
    with amop_engine.connect() as conn:
        by_id = {d.id: d for d in device_changes.load_device_changes(conn, bulk)}
        assert by_id[ok.id].status == DeviceChangeStatus.PROCESSED
        assert by_id[failed.id].status_details == "HTTP 400"
        assert by_id[rejected.id].status == DeviceChangeStatus.ERROR
        dev = conn.execute(select(t.device).where(t.device.c.ICCID == ok.iccid)).mappings().one()
        # the id is DEACTIVATED's own in DeviceStatus (bulkchange.db.device_status)
        expected = device_status_ids(conn, bulk.integration, ["DEACTIVATED"])["DEACTIVATED"]
        assert expected is not None
        assert (dev["Status"], dev["DeviceStatusId"], dev["CarrierRatePlan"]) == ("DEACTIVATED", expected, "P0")
        assert dev["LastStatusChange"] is not None
        untouched = conn.execute(select(t.device.c.Status).where(t.device.c.ICCID == failed.iccid)).scalar_one()
        assert untouched == "ACTIVATED"
        hist = conn.execute(select(t.device_status_history)).mappings().all()
        assert [(h["PreviousStatus"], h["CurrentStatus"], h["BulkChangeId"]) for h in hist] == \
            [("ACTIVATED", "DEACTIVATED", bulk_id)]
        logs = conn.execute(select(t.device_bulk_change_log)
                            .order_by(t.device_bulk_change_log.c.Id)).mappings().all()
        assert [(lg["M2MDeviceChangeId"], lg["HasErrors"]) for lg in logs] == \
            [(ok.id, False), (failed.id, True), (rejected.id, True)]
        assert logs[2]["ErrorText"] == "bad ICCID"
        assert progress.rollup(conn, bulk)[0] == BulkStatus.PROCESSED_WITH_ERRORS


@pytest.mark.parametrize("counts,expected", [
    ({"PROCESSED": 3}, BulkStatus.PROCESSED),
    ({"PROCESSED": 2, "API_FAILED": 1}, BulkStatus.PROCESSED_WITH_ERRORS),
    ({"ERROR": 2, "API_FAILED": 1}, BulkStatus.ERROR),
    ({"PROCESSED": 2, "PROCESSING": 1}, BulkStatus.PROCESSING),
    ({"PROCESSED": 2, "PENDING_ACTIVATION": 1}, BulkStatus.WAITING_FOR_CARRIER),
    ({"PENDING_CARRIER": 1, "PENDING": 1}, BulkStatus.PROCESSING),
    ({}, BulkStatus.ERROR),
])
def test_decide_bulk_status(counts, expected):
    assert progress.decide_bulk_status(counts)[0] == expected


def test_mark_and_sweep_chunk_large_id_lists(amop_engine):
    bulk_id = make_bulk(amop_engine, n=2300)  # more ids than one IN chunk / SQL Server's 2,100 params
    with amop_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        ids = [d.id for d in device_changes.load_device_changes(conn, bulk)]
        assert device_changes.mark_device_changes(conn, bulk, ids, DeviceChangeStatus.PENDING, processed_by="t") == 2300
        assert len(device_changes.load_device_changes(conn, bulk, ids=ids, statuses=["PENDING"])) == 2300
        assert bulk_changes.fail_unsettled(conn, bulk, "swept", processed_by="t") == 2300
        assert progress.rollup(conn, bulk) == (BulkStatus.ERROR, {"ERROR": 2300})
        n_logs = conn.execute(select(func.count()).select_from(t.device_bulk_change_log)).scalar_one()
        assert n_logs == 2300


def test_stale_claims_are_reclaimed_once(amop_engine):
    from datetime import timedelta

    from bulkchange.models import utcnow

    bulk_id = make_bulk(amop_engine, n=1)
    assert claims.claim_new_bulk_changes(amop_engine) == [bulk_id]
    assert claims.reclaim_stale(amop_engine, utcnow() - timedelta(minutes=30)) == []  # fresh claim: leave it
    with amop_engine.begin() as conn:  # the claim is an hour old and its run never started
        conn.execute(t.device_bulk_change.update().values(ModifiedDate=utcnow() - timedelta(hours=1)))
    cutoff = utcnow() - timedelta(minutes=30)
    assert claims.reclaim_stale(amop_engine, cutoff) == [bulk_id]
    assert claims.reclaim_stale(amop_engine, cutoff) == []  # the re-claim refreshed it: a second sensor loses
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)
    assert claims.reclaim_stale(amop_engine, utcnow() + timedelta(minutes=5)) == []  # started: not stale


def test_new_bulk_changes_take_turns_between_accounts(amop_engine):
    """A large account's backlog does not keep another account's change out of a poke: each
    account's oldest first, then each one's second oldest (oldest first within a turn)."""
    from sqlalchemy.dialects import mssql

    with amop_engine.begin() as conn:
        for sp_id in (1, 2, 3):
            seed.add_service_provider(conn, sp_id=sp_id, name=f"sp{sp_id}", integration=Integration.JASPER,
                                      tenant_id=1)

        def add(sp_id):
            return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                        requests=[{"ICCID": seed.make_iccid(1), "ChangeRequest": {"UpdateStatus": "Suspend"}}])

        big = [add(1) for _ in range(4)]  # account 1's backlog, all older than the others
        other, third = add(2), add(3)
        later = add(2)
    with amop_engine.connect() as conn:
        assert claims.find_new_bulk_change_ids(conn, limit=3) == [big[0], other, third]
        assert claims.find_new_bulk_change_ids(conn) == [big[0], other, third, big[1], later, big[2], big[3]]
    sql = str(claims.new_bulk_changes_query(3).compile(dialect=mssql.dialect(),
                                                         compile_kwargs={"literal_binds": True}))
    assert "row_number() over (partition by" in sql.lower() and "TOP 3" in sql


@pytest.mark.postgres
def test_psycopg3_plans_every_lookup_for_its_own_values(pg_url):
    """Airflow's Postgres connection gives a psycopg (3) URL; psycopg 3 prepares a statement on the
    server after its fifth execution and PostgreSQL then reuses one generic plan for it, which for
    the chunked ``ICCID IN (...)`` lookups scanned the whole table per chunk (bench R6: prepare grew
    with the square of the fleet). The engine must not prepare them."""
    import sqlalchemy as sa

    engine = make_engine(sa.make_url(pg_url).set(drivername="postgresql+psycopg"))
    seed.create_schema(engine)
    try:
        bulk_id = make_bulk(engine, n=3)
        with engine.connect() as conn:
            bulk = bulk_changes.load_bulk_change(conn, bulk_id)
            for _ in range(8):  # more than psycopg's default prepare threshold (5)
                found = inventory.load_devices_by_iccid(conn, bulk, [seed.make_iccid(1000 + i) for i in range(3)])
                assert len(found) == 3
            prepared = conn.execute(sa.text("SELECT count(*) FROM pg_prepared_statements")).scalar_one()
        assert prepared == 0, f"{prepared} statements prepared on the server: generic plans"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_psycopg2_sends_an_executemany_in_pages_not_a_round_trip_per_row(pg_url):
    """Recording a batch's results updates every device change and device: with psycopg2's own
    executemany that is one statement (a round trip) per row. The engine sends them in pages."""
    import psycopg2.extensions
    import sqlalchemy as sa

    from bulkchange.db.connect import EXECUTEMANY_PAGE_SIZE

    sent = {"execute": 0, "executemany": 0}

    class Counting(psycopg2.extensions.cursor):
        def execute(self, *a, **kw):
            sent["execute"] += 1
            return super().execute(*a, **kw)

        def executemany(self, *a, **kw):
            sent["executemany"] += 1
            return super().executemany(*a, **kw)

    engine = make_engine(pg_url, connect_args={"cursor_factory": Counting})
    seed.create_schema(engine)
    try:
        bulk_id = make_bulk(engine, n=EXECUTEMANY_PAGE_SIZE + 20)
        tbl = t.m2m_device_change
        with engine.begin() as conn:
            ids = list(conn.execute(select(tbl.c.Id).where(tbl.c.BulkChangeId == bulk_id)).scalars())
            sent.update(execute=0, executemany=0)
            conn.execute(sa.update(tbl).where(tbl.c.Id == sa.bindparam("dc_id"))
                         .values(StatusDetails=sa.bindparam("why")),
                         [{"dc_id": i, "why": f"row {i}"} for i in ids])
        # two pages (psycopg2.extras.execute_batch sends each as one statement), not 520 rows
        assert sent == {"execute": 2, "executemany": 0}
        with engine.connect() as conn:
            rows = conn.execute(select(tbl.c.Id, tbl.c.StatusDetails).where(tbl.c.BulkChangeId == bulk_id)).all()
        details = {r.Id: r.StatusDetails for r in rows}
        assert details == {i: f"row {i}" for i in ids}
    finally:
        engine.dispose()


def test_retired_spares_are_counted_whatever_the_driver_reports_for_an_executemany(amop_engine):
    """retire_taken_over_spares says how many spare rows it retired, also where the driver reports
    only a page's last statement for an executemany (psycopg2 in pages: db.connect)."""
    from bulkchange.db import sim_swap

    bulk_id = make_bulk(amop_engine, n=2)
    spares = [seed.make_iccid(97_000 + k) for k in range(3)]
    with amop_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": i, "Status": "INVENTORY"} for i in spares], sp_id=1, tenant_id=1)
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        device_ids = list(conn.execute(select(t.device.c.Id).where(t.device.c.ICCID.in_(
            [seed.make_iccid(1000), seed.make_iccid(1001)]))).scalars())
        moved = [(device_ids[0], spares[0]), (device_ids[1], spares[1])]
        assert sim_swap.retire_taken_over_spares(conn, bulk, moved) == 2
        retired = set(conn.execute(select(t.device.c.ICCID).where(t.device.c.IsDeleted == True)).scalars())  # noqa: E712
    assert retired == {spares[0], spares[1]}
