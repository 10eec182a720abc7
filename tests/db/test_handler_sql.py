"""The statements the change handlers run through their data-access modules, each run on SQLite
and compiled for SQL Server."""
from sqlalchemy import event
from sqlalchemy.dialects import mssql
from sqlalchemy.sql import ClauseElement

from bulkchange.db import username_changes
from bulkchange.db import repository as repo
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration


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


def test_username_change_statements_run_and_compile_for_sql_server(sqlite_engine):
    iccid = seed.make_iccid(1)
    with sqlite_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        [dev_id] = seed.add_devices(conn, [{"ICCID": iccid, "Status": "ACTIVATED", "Username": "old"}],
                                    sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.EDIT_USERNAME_COST_CENTER,
                                       requests=[{"ICCID": iccid, "ChangeRequest": {"ContactName": "new"}}])
        bulk = repo.load_bulk_change(conn, bulk_id)
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
