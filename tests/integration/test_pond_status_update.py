"""The POND StatusUpdate flow through the core (prepare / process_batch / finalize) against the POND
simulator over real HTTP, on SQLite and PostgreSQL: 500 devices per supported transition, the
package flow (exactly one ACTIVE package per SIM, saved to PondDeviceCarrierRatePlan), retries after
a crash, and rejections with reasons."""
import pytest
from sqlalchemy import func, select

from bulkchange import processing
from bulkchange.carriers import CarrierSettings, build_client
from bulkchange.carriers.base import PermanentError
from bulkchange.db import bulk_changes, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db.device_status import device_status_ids
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration

USER, SECRET, DIST = "pond-acct", "pond-secret-XYZ-987", "1001"
SP = 13


@pytest.fixture
def pond(simulator):
    control = simulator.control("pond")
    control.reset()
    simulator.set_account("pond", USER, SECRET)
    yield control
    control.reset()


@pytest.fixture
def pond_client(simulator, pond):
    clients = []

    def make(cls=None):
        settings = CarrierSettings(base_url=simulator.url_for("pond"), login=USER, password=SECRET,
                                   extra={"distributor_id": DIST})
        policy = CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=1))
        client = build_client(Integration.POND, settings, policy=policy)
        if cls is not None:
            client.__class__ = cls
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


class PondFleet:
    def __init__(self, engine, control, n, *, status, service_status, packages, rate_plan="101", start=50_000):
        self.engine, self.control = engine, control
        self.iccids = [seed.make_iccid(start + i) for i in range(n)]
        with engine.begin() as conn:
            seed.add_service_provider(conn, sp_id=SP, name="pond", integration=Integration.POND, tenant_id=1)
            seed.add_devices(conn, [{"ICCID": i, "Status": status, "CarrierRatePlan": rate_plan}
                                    for i in self.iccids], sp_id=SP, tenant_id=1)
        control.seed_devices([{"iccid": i, "serviceStatus": service_status, "packages": packages}
                              for i in self.iccids])

    def bulk(self, update_status, iccids=None, **req):
        rows = [{"ICCID": i, "ChangeRequest": {"UpdateStatus": update_status, **req}}
                for i in (self.iccids if iccids is None else iccids)]
        with self.engine.begin() as conn:
            return seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                        requests=rows)

    def sims(self):
        return {d["iccid"]: d for d in self.control.devices(limit=100_000)["devices"]}


def run_all(engine, bulk_id, client, batch_size=100, max_parallel=10):
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size)
    for batch in plan.batches:
        processing.process_batch(engine, bulk_id, batch.device_change_ids, client=client, max_parallel=max_parallel)
    return plan, processing.finalize(engine, bulk_id)


def db_state(engine):
    with engine.connect() as conn:
        devices = {r.ICCID: r for r in conn.execute(select(t.device))}
        history = conn.execute(select(t.device_status_history)).mappings().all()
        logs = conn.execute(select(t.device_bulk_change_log)).mappings().all()
        packages = conn.execute(select(t.pond_device_carrier_rate_plan)).mappings().all()
    return devices, history, logs, packages


def assert_clean_logs(logs):
    assert logs
    for lg in logs:
        text = f"{lg['RequestText']} {lg['ResponseText']} {lg['ErrorText']}"
        assert SECRET not in text and "Basic " not in text and USER + ":" not in text


TRANSITIONS = [
    # (from DB status, SIM service status, SIM packages, UpdateStatus, expected status)
    ("SUSPENDED", "DISABLED", [{"packageTypeId": "101", "status": "ACTIVE"}], "Active", "ACTIVE"),
    ("ACTIVE", "ENABLED", [{"packageTypeId": "101", "status": "ACTIVE"}], "Suspend", "SUSPENDED"),
    ("ACTIVE", "ENABLED", [{"packageTypeId": "101", "status": "ACTIVE"}], "Terminate", "TERMINATED"),
]


@pytest.mark.parametrize("current,service,packages,update,target", TRANSITIONS,
                         ids=[f"{c}->{t}" for c, _, _, _, t in TRANSITIONS])
def test_500_devices_per_transition(amop_engine, pond, pond_client, current, service, packages, update, target):
    fleet = PondFleet(amop_engine, pond, 500, status=current, service_status=service, packages=packages)
    extra = {"Request": {"PackageTypeId": "102"}} if target == "ACTIVE" else {}
    bulk_id = fleet.bulk(update, PostUpdateStatusId=21, **extra)
    plan, summary = run_all(amop_engine, bulk_id, pond_client())
    assert len(plan.batches) == 5
    assert summary["status"] == "PROCESSED" and summary["counts"] == {"PROCESSED": 500}

    sims = fleet.sims()
    devices, history, logs, rows = db_state(amop_engine)
    assert {devices[i].Status for i in fleet.iccids} == {target}
    with amop_engine.connect() as conn:  # the target's id in DeviceStatus, not the request's PostUpdateStatusId
        expected = device_status_ids(conn, Integration.POND, [target])[target]
    assert expected is not None and {devices[i].DeviceStatusId for i in fleet.iccids} == {expected}
    assert len(history) == 500
    assert {(h["PreviousStatus"], h["CurrentStatus"], h["BulkChangeId"]) for h in history} == {
        (current, target, bulk_id)}
    assert_clean_logs(logs)
    per_device = {}
    for lg in logs:
        per_device.setdefault(lg["M2MDeviceChangeId"], []).append(lg["LogEntryDescription"])
    assert len(per_device) == 500

    if target == "ACTIVE":
        for iccid in fleet.iccids:
            sim = sims[iccid]
            active = [p for p in sim["packages"] if p["status"] == "ACTIVE"]
            assert sim["serviceStatus"] == "ENABLED"
            assert [p["packageTypeId"] for p in active] == ["102"], iccid
            assert sorted(p["status"] for p in sim["packages"]) == ["ACTIVE", "TERMINATED"]
        assert {devices[i].CarrierRatePlan for i in fleet.iccids} == {"102"}
        active_rows = [r for r in rows if r["Status"] == "ACTIVE"]
        assert len(active_rows) == 500 and len({r["ICCID"] for r in active_rows}) == 500
        assert {r["PackageTypeId"] for r in active_rows} == {"102"}
        assert sum(r["Status"] == "TERMINATED" for r in rows) == 500
        for iccid in fleet.iccids[:20]:  # the DB names the same package the carrier holds as ACTIVE
            live = [p["packageId"] for p in sims[iccid]["packages"] if p["status"] == "ACTIVE"]
            assert [r["PackageId"] for r in active_rows if r["ICCID"] == iccid] == live
        assert set(per_device[min(per_device)]) == {"Get Pond Packages: Pond API", "Add Pond Package: Pond API",
                                                     "Set Pond Package ACTIVE: Pond API",
                                                     "Set Pond Package TERMINATED: Pond API",
                                                     "Update Pond Status: Pond API"}
    elif target == "SUSPENDED":
        assert {s["serviceStatus"] for s in sims.values()} == {"DISABLED"}
        assert {p["status"] for s in sims.values() for p in s["packages"]} == {"ACTIVE"}  # packages kept
        assert rows == []
        assert all(v == ["Update Pond Status: Pond API"] for v in per_device.values())
    else:
        assert {s["serviceStatus"] for s in sims.values()} == {"DISABLED"}
        assert {p["status"] for s in sims.values() for p in s["packages"]} == {"TERMINATED"}
        assert len(rows) == 500 and {r["Status"] for r in rows} == {"TERMINATED"}


def test_activation_keeps_an_existing_package_of_the_wanted_type(sqlite_engine, pond, pond_client):
    """A SIM whose ACTIVE package already has the wanted type gets no new package; a stray PENDING
    one of another type is terminated; a SIM with no package gets one."""
    fleet = PondFleet(sqlite_engine, pond, 2, status="SUSPENDED", service_status="DISABLED",
                      packages=[{"packageTypeId": "102", "status": "ACTIVE"},
                                {"packageTypeId": "103", "status": "PENDING"}])
    bare = seed.make_iccid(59_999)
    with sqlite_engine.begin() as conn:
        seed.add_devices(conn, [{"ICCID": bare, "Status": "INVENTORY", "CarrierRatePlan": "103"}], sp_id=SP,
                         tenant_id=1)
    pond.seed_devices([{"iccid": bare, "serviceStatus": "DISABLED"}])
    bulk_id = fleet.bulk("Activate", iccids=fleet.iccids + [bare], Request={"RatePlanId": "102"})
    with sqlite_engine.begin() as conn:  # the bare SIM's request names no package type: its rate plan is used
        conn.execute(t.m2m_device_change.update().where(t.m2m_device_change.c.ICCID == bare)
                     .values(ChangeRequest='{"UpdateStatus": "Activate"}'))
    _, summary = run_all(sqlite_engine, bulk_id, pond_client())
    assert summary["counts"] == {"PROCESSED": 3}
    sims = fleet.sims()
    for iccid in fleet.iccids:
        assert sorted((p["packageTypeId"], p["status"]) for p in sims[iccid]["packages"]) == [
            ("102", "ACTIVE"), ("103", "TERMINATED")]
    assert [(p["packageTypeId"], p["status"]) for p in sims[bare]["packages"]] == [("103", "ACTIVE")]
    assert not pond.calls(method="POST", iccid=fleet.iccids[0])


def test_retry_after_a_crash_adds_no_second_package(sqlite_engine, pond, pond_client, monkeypatch):
    fleet = PondFleet(sqlite_engine, pond, 30, status="SUSPENDED", service_status="DISABLED",
                      packages=[{"packageTypeId": "101", "status": "ACTIVE"}])
    bulk_id = fleet.bulk("Active", Request={"PackageTypeId": "102"})
    plan = processing.prepare(sqlite_engine, bulk_id, batch_size=100)
    ids = plan.batches[0].device_change_ids
    real = device_changes.record_results

    def crash(*a, **kw):
        raise RuntimeError("worker died before recording")

    monkeypatch.setattr(device_changes, "record_results", crash)
    with pytest.raises(RuntimeError):
        processing.process_batch(sqlite_engine, bulk_id, ids, client=pond_client())
    monkeypatch.setattr(device_changes, "record_results", real)
    with sqlite_engine.connect() as conn:
        assert progress.status_counts(conn, bulk_changes.load_bulk_change(conn, bulk_id)) == {"PROCESSING": 30}
        assert conn.execute(select(func.count()).select_from(t.pond_device_carrier_rate_plan)).scalar() == 0
    processing.process_batch(sqlite_engine, bulk_id, ids, client=pond_client())
    assert processing.finalize(sqlite_engine, bulk_id)["counts"] == {"PROCESSED": 30}
    assert len(pond.calls(method="POST", path_contains="/packages")) == 30  # one package added per SIM, ever
    for sim in fleet.sims().values():
        assert [p["packageTypeId"] for p in sim["packages"] if p["status"] == "ACTIVE"] == ["102"]
    _, _, _, rows = db_state(sqlite_engine)
    assert sum(r["Status"] == "ACTIVE" for r in rows) == 30


def test_failed_termination_takes_the_new_package_back(sqlite_engine, pond, pond_client):
    fleet = PondFleet(sqlite_engine, pond, 2, status="SUSPENDED", service_status="DISABLED",
                      packages=[{"packageTypeId": "101", "status": "ACTIVE"}])
    victim = fleet.iccids[0]
    pond.seed_devices([{"iccid": victim, "serviceStatus": "DISABLED",
                        "packages": [{"packageId": "OLD-1", "packageTypeId": "101", "status": "ACTIVE"}]}])

    from bulkchange.carriers.pond import PondClient

    class Refusing(PondClient):
        """POND refuses to terminate the victim's old package (a real HTTP call for everything else)."""

        def set_package_status(self, iccid, package_id, status, *, log=None):
            if package_id == "OLD-1" and status == "TERMINATED":
                raise PermanentError("HTTP 409: package is locked", status_code=409)
            return super().set_package_status(iccid, package_id, status, log=log)

    bulk_id = fleet.bulk("Active", Request={"PackageTypeId": "102"})
    _, summary = run_all(sqlite_engine, bulk_id, pond_client(Refusing))
    assert summary["counts"] == {"PROCESSED": 1, "API_FAILED": 1}
    sim = fleet.sims()[victim]
    assert sorted((p["packageTypeId"], p["status"]) for p in sim["packages"]) == [
        ("101", "ACTIVE"), ("102", "TERMINATED")]
    assert sim["serviceStatus"] == "DISABLED"
    devices, _, _, rows = db_state(sqlite_engine)
    assert devices[victim].Status == "SUSPENDED"
    with sqlite_engine.connect() as conn:
        details = conn.execute(select(t.m2m_device_change.c.StatusDetails)
                               .where(t.m2m_device_change.c.ICCID == victim)).scalar()
    assert "Activate Pond SIM refused by carrier" in details and "locked" in details
    assert {(r["PackageTypeId"], r["Status"]) for r in rows if r["ICCID"] == victim} == {("102", "TERMINATED")}


def test_rejections_before_any_carrier_call(sqlite_engine, pond, pond_client):
    fleet = PondFleet(sqlite_engine, pond, 3, status="ACTIVE", service_status="ENABLED", packages=[],
                      rate_plan=None)
    with sqlite_engine.begin() as conn:
        conn.execute(t.device.update().where(t.device.c.ICCID == fleet.iccids[1]).values(Status="TERMINATED"))
        conn.execute(t.device.update().where(t.device.c.ICCID == fleet.iccids[2]).values(Status="SUSPENDED"))
    bulk_id = fleet.bulk("Active", iccids=fleet.iccids[1:])
    rows = [{"ICCID": fleet.iccids[0], "ChangeRequest": {"UpdateStatus": "Paused"}}]
    with sqlite_engine.begin() as conn:
        other = seed.add_bulk_change(conn, sp_id=SP, tenant_id=1, change_type=ChangeType.STATUS_UPDATE, requests=rows)
    _, summary = run_all(sqlite_engine, bulk_id, pond_client())
    _, summary2 = run_all(sqlite_engine, other, pond_client())
    assert summary["counts"] == {"ERROR": 2} and summary2["counts"] == {"ERROR": 1}
    with sqlite_engine.connect() as conn:
        reasons = dict(conn.execute(select(t.m2m_device_change.c.ICCID, t.m2m_device_change.c.StatusDetails)).all())
    assert "cannot change status from TERMINATED to ACTIVE" in reasons[fleet.iccids[1]]
    assert "needs Request.PackageTypeId" in reasons[fleet.iccids[2]]
    assert "is not a Pond status" in reasons[fleet.iccids[0]]
    assert pond.calls() == []


def test_client_needs_a_distributor_id(simulator):
    with pytest.raises(ValueError, match="distributor_id"):
        build_client(Integration.POND, CarrierSettings(base_url=simulator.url_for("pond"), login=USER,
                                                       password=SECRET))
