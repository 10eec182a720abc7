"""SQL Server cannot run here, so prove every statement compiles for its dialect.

The test drives the whole processing path (claim, prepare, process, finalize, every db module
function) on SQLite with statement capture on, then compiles each captured Core statement and
every DDL object for mssql. Anything new that a later test executes is caught too: conftest
captures statements from every test engine, and this test compiles all captured so far.
"""
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateIndex, CreateTable

from bulkchange import processing
from bulkchange.db import claims
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from tests.conftest import CAPTURED_STATEMENTS


class _StubJasper:
    """Drives the DB code without HTTP: this test is about SQL, not the carrier."""

    def update_status(self, iccid, status, log=None):
        return {"iccid": iccid}

    def update_rate_plan(self, iccid, plan, communication_plan=None, log=None, effective_date=None):
        return {"iccid": iccid}

    def get_device(self, iccid, log=None):
        return {"iccid": iccid, "status": "ACTIVATED"}


def _drive_everything(engine):
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        conn.execute(t.jasper_carrier_rate_plan.insert().values(ServiceProviderId=1, RatePlanCode="P0",
                                                                PlanMB=0, BaseRate=1, IsActive=True))
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED",
                                 "CommunicationPlan": "C" if i % 2 else None} for i in range(6)], sp_id=1, tenant_id=1)
        reqs = [{"ICCID": seed.make_iccid(i), "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in range(6)]
        reqs.append({"ICCID": "123", "ChangeRequest": {"UpdateStatus": "Suspend"}})
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=reqs)
    assert claims.claim_new_bulk_changes(engine) == [bulk_id]
    plan = processing.prepare(engine, bulk_id, batch_size=3)
    processing.process_batch(engine, bulk_id, plan.batches[0].device_change_ids, client=_StubJasper())
    processing.finalize(engine, bulk_id)
    bulk_id2 = None
    with engine.begin() as conn:
        bulk_id2 = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                        requests=reqs[:2])
    processing.prepare(engine, bulk_id2, credentials_problem="no connection")


def test_every_statement_compiles_for_sql_server(sqlite_engine):
    _drive_everything(sqlite_engine)
    dialect = mssql.dialect()
    kinds = set()
    for key, stmt in CAPTURED_STATEMENTS.items():
        compiled = str(stmt.compile(dialect=dialect))
        assert compiled, key
        kinds.add(type(stmt).__name__)
    assert {"Select", "Update", "Insert"} <= kinds
    assert len(CAPTURED_STATEMENTS) >= 15  # the path above runs well over a dozen distinct statements


def test_limit_becomes_top_on_sql_server(sqlite_engine):
    _drive_everything(sqlite_engine)
    # the claim queries (they read ProcessChanges) that take a row limit
    selects = [str(s.compile(dialect=mssql.dialect())) for k, s in CAPTURED_STATEMENTS.items()
               if "ProcessChanges" in str(s) and k.startswith("Select") and "LIMIT" in str(s)]
    assert selects and all("TOP" in s for s in selects)
    assert not any("LIMIT" in s for s in selects)


def test_ddl_compiles_for_sql_server():
    dialect = mssql.dialect()
    for table in t.metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        assert f"CREATE TABLE [{table.name}]" in ddl or f"CREATE TABLE {table.name}" in ddl
        for index in table.indexes:
            str(CreateIndex(index).compile(dialect=dialect))
    ddl = str(CreateTable(t.device_bulk_change).compile(dialect=dialect))
    assert "IDENTITY" in ddl and "BIGINT" in ddl  # ids are BIGINT IDENTITY on SQL Server
