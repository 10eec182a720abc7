"""The onboarding statements (bulkchange.db.onboarding) on a real DB, and compiled for SQL Server."""
from sqlalchemy import insert, select, update
from sqlalchemy.dialects import mssql

from bulkchange.db import onboarding
from bulkchange.db import bulk_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.conftest import CAPTURED_STATEMENTS


def test_onboarding_statements_run_and_compile_for_sql_server(sqlite_engine):
    new, known = seed.make_iccid(1), seed.make_iccid(2)
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=3, name="ts", integration=Integration.THINGSPACE, tenant_id=1)
        conn.execute(insert(t.site).values(Id=31, TenantId=1, Name="default", IsActive=True))
        conn.execute(update(t.service_provider).values(DefaultSiteId=31))
        seed.add_devices(conn, [{"ICCID": known, "Status": "active", "IMEI": "350000000000009"}], sp_id=3, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=3, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": new, "ChangeRequest": {"UpdateStatus": "Inventory"}}])
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dc_id = conn.execute(select(t.m2m_device_change.c.Id)).scalar_one()
        assert set(onboarding.load_devices_by_imei(conn, bulk, ["350000000000009", "1"])) == {"350000000000009"}
        added = onboarding.add_to_inventory(conn, bulk, [onboarding.OnboardedDevice(dc_id, new, None, "inventory"),
                                                         onboarding.OnboardedDevice(dc_id, known, None, "inventory")],
                                            processed_by="test")
        assert list(added) == [new]
        assert onboarding.set_default_site(conn, bulk, [new, known]) == 2
        assert onboarding.set_default_site(conn, bulk, [new, known]) == 0  # only devices with no site
        known_id = conn.execute(select(t.device.c.Id).where(t.device.c.ICCID == known)).scalar_one()
        onboarding.record_place_of_use(conn, bulk, [(known_id, "Ford Prefectus", '{"FirstName": "Ford"}')])
        assert conn.execute(select(t.device.c.Username, t.device.c.DeviceDescription)
                            .where(t.device.c.Id == known_id)).one() == ("Ford Prefectus", '{"FirstName": "Ford"}')
    dialect = mssql.dialect()
    ours = [s for k, s in CAPTURED_STATEMENTS.items() if "SiteId" in k or "DefaultSiteId" in k or '"IMEI" IN' in k
            or "DeviceDescription" in k]
    assert any("DeviceDescription" in k for k in CAPTURED_STATEMENTS)
    assert ours
    for stmt in ours:
        assert str(stmt.compile(dialect=dialect))
