"""Archival: DB only on any carrier; each device refused with its reason when it has an active
Rev.io service or usage in the last 30 days, unless OverrideValidation; archived devices are
IsActive=0 / IsDeleted=1 and drop out of later bulk changes."""
from datetime import timedelta

from sqlalchemy import insert, select

from bulkchange import processing
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration, utcnow

SP = 8


def run(engine, bulk_id):
    plan = processing.prepare(engine, bulk_id, batch_size=20, credentials_problem="no carrier_sp_8")
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=None)
    return processing.finalize(engine, bulk_id)


def bulk(engine, requests):
    with engine.begin() as conn:
        return seed.add_bulk_change(conn, sp_id=SP, tenant_id=2, change_type=ChangeType.ARCHIVAL, requests=requests)


def test_archival_rules_and_override(amop_engine):
    now = utcnow()
    iccid = {n: seed.make_iccid(93_000 + n) for n in range(60)}
    kinds = {}
    rows = []
    for n, i in iccid.items():
        if n < 30:
            kind, extra = "quiet", {"DataUsageMB": 0}
        elif n < 35:
            kind, extra = "rev", {}
        elif n < 38:
            kind, extra = "rev_disconnected", {}
        elif n < 43:
            kind, extra = "recent", {"LastUsageDate": now - timedelta(days=5), "DataUsageMB": 10}
        elif n < 46:
            kind, extra = "old_usage", {"LastUsageDate": now - timedelta(days=45), "DataUsageMB": 10}
        elif n < 50:
            kind, extra = "cycle_usage", {"DataUsageMB": 3}
        else:
            kind, extra = "override", {"LastUsageDate": now - timedelta(days=1)}
        kinds[i] = kind
        rows.append({"ICCID": i, "Status": "ACTIVATED", "DataUsageMB": None, "LastUsageDate": None, **extra})
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="arch", integration=Integration.THINGSPACE, tenant_id=2)
        ids = dict(zip(iccid.values(), seed.add_devices(conn, rows, sp_id=SP, tenant_id=2)))
        services = []
        for i, kind in kinds.items():
            if kind in ("rev", "rev_disconnected", "override"):
                services.append({"ServiceId": 70_000 + ids[i], "CustomerId": "C1", "DeviceId": ids[i], "IsActive": True,
                                 "DisconnectedDate": now if kind == "rev_disconnected" else None, "CreatedDate": now})
        conn.execute(insert(t.rev_service), services)
    requests = [{"ICCID": i, "ChangeRequest": {"OverrideValidation": kinds[i] == "override"}} for i in iccid.values()]
    bulk_id = bulk(amop_engine, requests)
    summary = run(amop_engine, bulk_id)
    assert summary["status"] == "PROCESSED_WITH_ERRORS"
    with amop_engine.connect() as conn:
        devices = {r.ICCID: r for r in conn.execute(select(t.device))}
        changes = {r.ICCID: r for r in conn.execute(select(t.m2m_device_change))}
    allowed = {"quiet", "rev_disconnected", "old_usage", "override"}
    for i, kind in kinds.items():
        d, c = devices[i], changes[i]
        if kind in allowed:
            assert (c.Status, d.IsActive, d.IsDeleted) == ("PROCESSED", False, True), (kind, c.StatusDetails)
        else:
            assert (c.Status, d.IsActive, d.IsDeleted) == ("ERROR", True, False), kind
    assert "active Rev.io service" in changes[iccid[30]].StatusDetails and "OverrideValidation" in changes[iccid[30]].StatusDetails
    assert "within the last 30 days" in changes[iccid[40]].StatusDetails
    assert "3" in changes[iccid[47]].StatusDetails and "MB of usage" in changes[iccid[47]].StatusDetails
    assert "validation overridden" in changes[iccid[55]].StatusDetails
    assert summary["counts"] == {"PROCESSED": 30 + 3 + 3 + 10, "ERROR": 5 + 5 + 4}

    # an archived device is gone for the next bulk change (also a second archival)
    again = bulk(amop_engine, [{"ICCID": iccid[0], "ChangeRequest": {}}, {"ICCID": iccid[30], "ChangeRequest": {
        "OverrideValidation": True}}])
    summary = run(amop_engine, again)
    assert summary["counts"] == {"ERROR": 1, "PROCESSED": 1}
    with amop_engine.connect() as conn:
        details = dict(conn.execute(select(t.m2m_device_change.c.ICCID, t.m2m_device_change.c.StatusDetails)
                                    .where(t.m2m_device_change.c.BulkChangeId == again)).all())
    assert "already archived" in details[iccid[0]]


def test_dry_run_counts_no_carrier_call(amop_engine):
    from bulkchange import dryrun

    iccids = [seed.make_iccid(94_000 + i) for i in range(5)]
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="arch", integration=Integration.POND, tenant_id=2)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVE"} for i in iccids], sp_id=SP, tenant_id=2)
    bulk_id = bulk(amop_engine, [{"ICCID": i, "ChangeRequest": {}} for i in iccids])
    report = dryrun.dry_run_bulk_change(amop_engine, bulk_id, credentials_problem="no carrier_sp_8").as_dict()
    assert report["preflight_error"] is None and report["would_process"] == 5
    assert report["carrier_calls"] == {} and "no carrier call" in report["estimate_basis"]
    with amop_engine.connect() as conn:  # nothing archived by a dry run
        assert conn.execute(select(t.device.c.IsDeleted)).scalars().all() == [False] * 5


def test_db_only_ignores_the_carrier_write_switch(amop_engine):
    """WriteIsEnabled guards carrier writes; the legacy DB-only flows did not check it."""
    iccids = [seed.make_iccid(94_500 + i) for i in range(3)]
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP, name="arch", integration=Integration.JASPER, tenant_id=2,
                                  write_enabled=False)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=SP, tenant_id=2)
    assert run(amop_engine, bulk(amop_engine, [{"ICCID": i, "ChangeRequest": {}} for i in iccids]))["counts"] == {
        "PROCESSED": 3}
