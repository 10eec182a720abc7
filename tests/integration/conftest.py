from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from bulkchange.carriers.jasper import JasperClient
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy
from bulkchange.models import ChangeType, Integration

KEY = "integration-api-key-XYZ"


@pytest.fixture
def jasper(simulator):
    control = simulator.control("jasper")
    control.reset()
    simulator.set_account("jasper", "acct", KEY)
    return control


@pytest.fixture
def make_client(simulator):
    clients = []

    def make(rate=None, attempts=3, timeout=10.0, base_delay=0.05):
        policy = CallPolicy(RateLimiter(rate), RetryPolicy(max_attempts=attempts, base_delay=base_delay, max_delay=2))
        client = JasperClient(simulator.url_for("jasper"), "acct", KEY, policy=policy, timeout=timeout)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


class Fleet:
    """A Jasper service provider with devices in the AMOP DB and in the simulator."""

    def __init__(self, engine, control, n, *, status="ACTIVATED", comm_plan=None, start=70_000, sp_id=1,
                 tenant_id=1, write_enabled=True):
        self.engine, self.control = engine, control
        self.iccids = [seed.make_iccid(start + i) for i in range(n)]
        with engine.begin() as conn:
            seed.add_service_provider(conn, sp_id=sp_id, name=f"sp{sp_id}", integration=Integration.JASPER,
                                      tenant_id=tenant_id, write_enabled=write_enabled)
            seed.add_test_references(conn, tenant_id=tenant_id)  # the ids these tests name
            for code, mb, rate in (("P-0", 0, 0.5), ("P-500", 500, 1.0), ("P-1G", 1024, 4.0)):
                conn.execute(t.jasper_carrier_rate_plan.insert().values(
                    ServiceProviderId=sp_id, RatePlanCode=code, PlanMB=mb, BaseRate=rate, IsActive=True))
            seed.add_devices(conn, [{"ICCID": i, "Status": status, "CarrierRatePlan": "P-1G",
                                     "CommunicationPlan": comm_plan, "DataUsageMB": 200} for i in self.iccids],
                             sp_id=sp_id, tenant_id=tenant_id)
        control.seed_devices([{"iccid": i, "status": status, "ratePlan": "P-1G", "communicationPlan": comm_plan}
                              for i in self.iccids])
        # the account at the carrier has the plans our DB knows (Control Center refuses any other)
        control.add_rate_plans([{"name": code, "dataMB": mb, "baseRate": rate}
                                for code, mb, rate in (("P-0", 0, 0.5), ("P-500", 500, 1.0), ("P-1G", 1024, 4.0))])
        if comm_plan:
            control.add_communication_plans([comm_plan])
        self.sp_id, self.tenant_id = sp_id, tenant_id

    def bulk(self, update_status="Suspend", iccids=None, extra=None, **req):
        requests = [{"ICCID": i, "ChangeRequest": {"UpdateStatus": update_status, **req}}
                    for i in (self.iccids if iccids is None else iccids)]
        requests += extra or []
        with self.engine.begin() as conn:
            return seed.add_bulk_change(conn, sp_id=self.sp_id, tenant_id=self.tenant_id,
                                        change_type=ChangeType.STATUS_UPDATE, requests=requests)


@pytest.fixture
def fleet_factory(amop_engine, jasper):
    return lambda n, **kw: Fleet(amop_engine, jasper, n, **kw)


@dataclass
class JasperOutcome:
    """A Jasper bulk change after its run, beside the carrier's state (the simulator's devices)."""

    device_changes: dict[str, Any]  # ICCID -> device change row (Id, ICCID, Status, StatusDetails)
    devices: dict[str, Any]  # ICCID -> Device row (ICCID, Status, CarrierRatePlan)
    log_rows: Counter  # device change id -> DeviceBulkChangeLog rows of a carrier attempt
    # (iccid, carrier status, carrier rate plan, device change status, Device status, Device rate plan,
    #  details) of every device whose device change, Device status or rate plan disagrees with the carrier
    mismatches: list[tuple]


def jasper_outcome(engine, control, bulk_id: int, iccids, *, changed_status: str = "DEACTIVATED") -> JasperOutcome:
    """Read the run's outcome and compare it with the carrier: a device change is PROCESSED exactly
    when the carrier shows ``changed_status``, and the Device row holds the carrier's status and plan."""
    dc_table, log = t.m2m_device_change, t.device_bulk_change_log
    with engine.connect() as conn:
        dcs = {r.ICCID: r for r in conn.execute(
            select(dc_table.c.Id, dc_table.c.ICCID, dc_table.c.Status, dc_table.c.StatusDetails)
            .where(dc_table.c.BulkChangeId == bulk_id))}
        devices = {r.ICCID: r for r in conn.execute(select(t.device.c.ICCID, t.device.c.Status,
                                                           t.device.c.CarrierRatePlan))}
        rows = Counter(conn.execute(select(log.c.M2MDeviceChangeId).where(
            log.c.BulkChangeId == bulk_id, log.c.AttemptNumber.is_not(None))).scalars())
    mismatches = []
    for iccid in iccids:
        carrier = control.device(iccid)
        dc, dev = dcs[iccid], devices[iccid]
        changed = carrier["status"] == changed_status
        if (dc.Status == "PROCESSED") != changed or dev.Status != carrier["status"] \
                or dev.CarrierRatePlan != carrier["ratePlan"]:
            mismatches.append((iccid, carrier["status"], carrier["ratePlan"], dc.Status, dev.Status,
                               dev.CarrierRatePlan, dc.StatusDetails))
    return JasperOutcome(dcs, devices, rows, mismatches)
