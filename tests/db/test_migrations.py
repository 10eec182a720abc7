"""The Alembic migrations (bulkchange.db.migrate) are the one description of the AMOP schema.

* a migrated database is exactly ``schema.py`` (Alembic's compare_metadata): a table, column or
  index added to the code without a revision fails here;
* a legacy-only database with rows in it (production on day one) is stamped at the baseline,
  upgraded to head and downgraded again with its rows intact, on SQLite and PostgreSQL;
* the SQL Server script a DBA reviews is generated offline, base to head and back, for every
  revision on its own too (so every op compiles for the mssql dialect), and holds nothing
  SQL Server cannot run.
"""
from __future__ import annotations

import re
from datetime import datetime

import pytest
import sqlalchemy as sa
import sqlparse

from bulkchange.db import migrate
from bulkchange.db import schema as t
from bulkchange.db.connect import make_engine
from bulkchange.db.seed import create_schema
from tests.conftest import require_pg


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request, tmp_path):
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'mig.db'}")
    else:
        require_pg()
        engine = make_engine(request.getfixturevalue("pg_url"))
    yield engine
    engine.dispose()


def _describe(diffs) -> list[str]:
    return [migrate.describe(d) for d in diffs]


def test_migrated_database_is_exactly_the_code(empty_engine):
    migrate.upgrade(empty_engine)
    assert migrate.current(empty_engine) == migrate.head()
    assert _describe(migrate.differences(empty_engine)) == [], \
        "schema.py has tables/columns/indexes no migration creates: add a revision (docs/database.md)"
    # and create_schema (tests, demo) builds the same database through them
    create_schema(empty_engine)
    assert migrate.current(empty_engine) == migrate.head()


def test_a_table_column_or_index_without_a_revision_is_caught(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    migrate.upgrade(engine)
    extra = sa.Table("DeviceBulkChangeMadeUp", t.metadata, sa.Column("Id", sa.Integer, primary_key=True))
    column = sa.Column("MadeUpColumn", sa.String(64))
    t.device_bulk_change.append_column(column)
    try:
        found = _describe(migrate.differences(engine))
    finally:
        t.metadata.remove(extra)
        t.device_bulk_change._columns.remove(column)
        engine.dispose()
    assert "add_table DeviceBulkChangeMadeUp" in found
    assert "add_column DeviceBulkChange.MadeUpColumn" in found
    assert "MadeUpColumn" not in t.device_bulk_change.c  # the metadata is left as it was


# --- production on day one: a legacy-only database with rows -----------------------------------
NOW = datetime(2026, 11, 30, 12, 0, 0)


def _legacy_database(engine) -> None:
    """The legacy tables (baseline) with rows, and no version table: what production is."""
    migrate.upgrade(engine, migrate.BASELINE)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE "{migrate.VERSION_TABLE}"'))
        conn.execute(sa.text('INSERT INTO "Integration" ("Id", "Name") VALUES (1, \'Jasper\')'))
        conn.execute(sa.text('INSERT INTO "DeviceChangeRequestType" ("Id", "Code") VALUES (1, \'StatusUpdate\')'))
        conn.execute(sa.text('INSERT INTO "ServiceProvider" ("Id", "Name", "IntegrationId", "TenantId", '
                             '"WriteIsEnabled", "IsActive") VALUES (7, \'sp\', 1, 3, :y, :y)'), {"y": True})
        conn.execute(sa.text('INSERT INTO "Device" ("ICCID", "ServiceProviderId", "TenantId", "Status", '
                             '"IsActive", "IsDeleted") VALUES (\'8901\', 7, 3, \'ACTIVATED\', :y, :n)'),
                     {"y": True, "n": False})
        conn.execute(sa.text('INSERT INTO "DeviceBulkChange" ("TenantId", "ServiceProviderId", '
                             '"ChangeRequestTypeId", "PortalTypeId", "ProcessChanges", "Status", "CreatedDate") '
                             'VALUES (3, 7, 1, 0, :y, \'PROCESSED\', :now)'), {"y": True, "now": NOW})
        bulk_id = conn.execute(sa.text('SELECT MAX("Id") FROM "DeviceBulkChange"')).scalar()
        conn.execute(sa.text('INSERT INTO "M2M_DeviceChange" ("BulkChangeId", "ICCID", "Status", "IsProcessed") '
                             'VALUES (:b, \'8901\', \'PROCESSED\', :y)'), {"b": bulk_id, "y": True})
        conn.execute(sa.text('INSERT INTO "Rev_Service" ("ServiceId", "CustomerId", "IsActive", "CreatedDate") '
                             'VALUES (11, \'C1\', :y, :now)'), {"y": True, "now": NOW})


def _legacy_rows(engine) -> dict:
    with engine.connect() as conn:
        return {
            "device": conn.execute(sa.text('SELECT "ICCID", "Status" FROM "Device"')).all(),
            "bulk": conn.execute(sa.text('SELECT "Status", "CreatedDate" FROM "DeviceBulkChange"')).all(),
            "change": conn.execute(sa.text('SELECT "ICCID", "Status" FROM "M2M_DeviceChange"')).all(),
            "rev": conn.execute(sa.text('SELECT "ServiceId", "CustomerId" FROM "Rev_Service"')).all(),
        }


def test_legacy_database_with_rows_upgrades_to_head_and_back(empty_engine):
    engine = empty_engine
    _legacy_database(engine)
    before = _legacy_rows(engine)
    assert before["device"] == [("8901", "ACTIVATED")]

    # an un-stamped database with AMOP tables is never guessed at
    with pytest.raises(migrate.SchemaNotManaged, match="stamp"):
        migrate.upgrade(engine)
    with pytest.raises(migrate.SchemaNotManaged):
        create_schema(engine)

    migrate.stamp(engine, migrate.BASELINE)
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    assert _describe(migrate.differences(engine)) == []
    assert _legacy_rows(engine) == before
    with engine.begin() as conn:
        # the rows already there got the NOT NULL column's server default...
        assert conn.execute(sa.text('SELECT "CarrierCheckCount" FROM "M2M_DeviceChange"')).scalars().all() == [0]
        # ...and so does a row the legacy portal inserts without knowing the column
        bulk_id = conn.execute(sa.text('SELECT MAX("Id") FROM "DeviceBulkChange"')).scalar()
        conn.execute(sa.text('INSERT INTO "M2M_DeviceChange" ("BulkChangeId", "ICCID", "Status", "IsProcessed") '
                             'VALUES (:b, \'8902\', \'NEW\', :n)'), {"b": bulk_id, "n": False})
        assert conn.execute(sa.text('SELECT "CarrierCheckCount" FROM "M2M_DeviceChange" WHERE "ICCID" = \'8902\''
                                    )).scalar() == 0
        # the pipeline's own tables work
        conn.execute(sa.insert(t.device_bulk_change_notification).values(
            BulkChangeId=bulk_id, Channel="webhook", ToStatus="PROCESSED", State="PENDING", Attempts=0,
            CreatedDate=NOW))

    migrate.downgrade(engine, migrate.BASELINE)
    assert migrate.current(engine) == migrate.BASELINE
    insp = sa.inspect(engine)
    assert not insp.has_table("DeviceBulkChangeNotification")
    assert "CarrierCheckCount" not in {c["name"] for c in insp.get_columns("M2M_DeviceChange")}
    assert "RevCustomerId" not in {c["name"] for c in insp.get_columns("Device")}
    after = _legacy_rows(engine)
    assert after["device"] == before["device"] and after["bulk"] == before["bulk"]
    assert after["rev"] == before["rev"]
    assert sorted(after["change"]) == sorted(before["change"] + [("8902", "NEW")])

    migrate.upgrade(engine)  # and up again
    assert _describe(migrate.differences(engine)) == []
    migrate.downgrade(engine, "base")
    assert [n for n in sa.inspect(engine).get_table_names() if n in t.metadata.tables] == []


def test_a_database_built_before_migrations_is_stamped_only_when_it_matches(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    t.metadata.create_all(engine)  # how create_schema built databases before the migrations
    assert migrate.ensure_schema(engine) == "stamped"
    assert migrate.current(engine) == migrate.head()
    assert migrate.ensure_schema(engine) == "current"
    engine.dispose()

    engine = make_engine(f"sqlite:///{tmp_path / 'partial.db'}")
    t.metadata.create_all(engine, tables=[tb for tb in t.metadata.sorted_tables
                                          if tb.name != "DeviceBulkChangeDryRun"])
    with pytest.raises(migrate.SchemaNotManaged, match="add_table DeviceBulkChangeDryRun"):
        migrate.ensure_schema(engine)
    engine.dispose()


# --- the SQL Server script ---------------------------------------------------------------------
FORBIDDEN = [
    (r"\bLIMIT\b", "LIMIT (T-SQL has TOP / OFFSET FETCH)"),
    (r"\bRETURNING\b", "RETURNING (T-SQL has OUTPUT)"),
    (r"\b(TRUE|FALSE)\b", "a boolean literal (BIT takes 1 / 0)"),
    (r"\bBOOLEAN\b", "BOOLEAN (T-SQL has BIT)"),
    (r"\bN?TEXT\b", "TEXT / NTEXT (deprecated: VARCHAR(max) / NVARCHAR(max))"),
    (r"\bSERIAL\b|\bAUTOINCREMENT\b", "a non-T-SQL identity"),
    (r'"', "a double-quoted identifier (T-SQL brackets them)"),
]


def _statements(script: str) -> list[str]:
    """The statements of a script: GO separates batches, each batch one statement here."""
    out = []
    for batch in re.split(r"^GO$", script, flags=re.M):
        body = "\n".join(line for line in batch.splitlines() if not line.startswith("--")).strip()
        out.extend(str(s).strip() for s in sqlparse.parse(body) if str(s).strip())
    return out


def _check_tsql(script: str) -> list[str]:
    statements = _statements(script)
    assert statements
    for stmt in statements:
        for pattern, why in FORBIDDEN:
            assert not re.search(pattern, stmt, flags=re.I), f"{why} in: {stmt}"
        kind = sqlparse.parse(stmt)[0].get_type()
        assert kind != "UNKNOWN" or stmt.upper().startswith(("BEGIN TRANSACTION", "COMMIT", "SET XACT_ABORT",
                                                             "DECLARE")), stmt
    return statements


def test_sql_server_upgrade_script_base_to_head():
    script = migrate.offline_sql(from_revision=None)
    statements = _check_tsql(script)
    assert statements[0] == "SET XACT_ABORT ON;" and statements[1] == "BEGIN TRANSACTION;"
    assert statements[-1] == "COMMIT;"
    text = "\n".join(statements)
    for expected in (
        f"CREATE TABLE [{migrate.VERSION_TABLE}]",
        "CREATE TABLE [DeviceBulkChange] (\n    [Id] BIGINT NOT NULL IDENTITY",
        "[ErrorMessage] NVARCHAR(max) NULL",
        "CREATE INDEX [IX_M2M_DeviceChange_BulkChange_Status] ON [M2M_DeviceChange] ([BulkChangeId], [Status])",
        "ALTER TABLE [M2M_DeviceChange] ADD [CarrierCheckCount] INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE [DeviceBulkChange] ADD [TotalCount] INTEGER NULL",
        "CREATE TABLE [DeviceBulkChangeNotification]",
        "CREATE TABLE [DeviceBulkChangeDryRun]",
        "ALTER TABLE [Device] ADD [RevCustomerId] VARCHAR(64) NULL",
        "CREATE INDEX [IX_DeviceBulkChangeLog_M2MDeviceChange] ON [DeviceBulkChangeLog] ([M2MDeviceChangeId])",
        f"SET version_num='{migrate.head()}'",
    ):
        assert expected in text, expected


def test_sql_server_upgrade_script_from_the_baseline_leaves_legacy_tables_alone():
    statements = _check_tsql(migrate.offline_sql(from_revision=migrate.BASELINE))
    text = "\n".join(statements)
    assert "CREATE TABLE [DeviceBulkChange]" not in text and "CREATE TABLE [Device]" not in text
    assert f"CREATE TABLE [{migrate.VERSION_TABLE}]" not in text  # the stamp script creates it
    assert "ALTER TABLE [M2M_DeviceChange] ADD [CarrierRequestId] VARCHAR(128) NULL" in text
    stamp = _check_tsql(migrate.offline_stamp_sql(migrate.BASELINE))
    assert any(s.startswith(f"CREATE TABLE [{migrate.VERSION_TABLE}]") for s in stamp)
    assert any(f"VALUES ('{migrate.BASELINE}')" in s for s in stamp)


def test_sql_server_downgrade_script_head_to_base():
    statements = _check_tsql(migrate.offline_sql(to_revision="base", downgrade=True))
    text = "\n".join(statements)
    for expected in ("DROP INDEX [IX_DeviceBulkChange_ServiceProvider] ON [DeviceBulkChange]",
                     "ALTER TABLE [M2M_DeviceChange] DROP COLUMN [CarrierCheckCount]",
                     "DROP TABLE [DeviceBulkChangeNotification]",
                     "DROP TABLE [DeviceBulkChange]",
                     f"DELETE FROM [{migrate.VERSION_TABLE}]"):
        assert expected in text, expected
    # SQL Server cannot drop a column with a default constraint: the script drops the constraint first
    i_default = text.lower().index("from sys.default_constraints\nwhere parent_object_id = object_id('m2m_devicechange')")
    assert i_default < text.index("ALTER TABLE [M2M_DeviceChange] DROP COLUMN [CarrierCheckCount]")


def test_every_revision_compiles_for_sql_server_up_and_down():
    revisions = list(reversed(list(migrate.script_directory().walk_revisions())))
    assert revisions[0].revision == migrate.BASELINE and revisions[-1].revision == migrate.head()
    for rev in revisions:
        down_from = rev.down_revision
        up = migrate.offline_sql(from_revision=down_from, to_revision=rev.revision)
        down = migrate.offline_sql(from_revision=rev.revision, to_revision=down_from or "base", downgrade=True)
        for script in (up, down):
            assert f"-- Running " in script, rev.revision
            _check_tsql(script)


def test_run_db_sql_prints_the_script(capsys):
    from bulkchange_plugins import dbcli

    assert dbcli.main(["sql"]) == 0
    out = capsys.readouterr().out
    assert "upgrade 0001_legacy_baseline:head (mssql)" in out and "ALTER TABLE [Device] ADD" in out
    assert dbcli.main(["upgrade", "--sql"]) == 0
    assert capsys.readouterr().out == out
    assert dbcli.main(["sql", "--downgrade"]) == 0
    assert f"downgrade head:{migrate.BASELINE}" in capsys.readouterr().out


def test_run_db_upgrade_migrates_the_configured_database(tmp_path, monkeypatch, capsys):
    from bulkchange_plugins import dbcli

    url = f"sqlite:///{tmp_path / 'amop.db'}"
    monkeypatch.setenv("BULKCHANGE_AMOP_URL", url)
    assert dbcli.main(["upgrade"]) == 0
    assert dbcli.main(["check"]) == 0
    assert dbcli.main(["downgrade", "0005_carrier_requests"]) == 0
    assert dbcli.main(["check"]) == 1
    assert "add_table DeviceBulkChangeNotification" in capsys.readouterr().out
    assert url not in capsys.readouterr().out


def test_check_ignores_what_only_the_production_database_has(tmp_path):
    """Production's legacy tables have more columns than the code reads: not a difference for
    ./run db check, but the strict comparison (this file's first test) still sees them."""
    engine = make_engine(f"sqlite:///{tmp_path / 'prod.db'}")
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text('ALTER TABLE "Device" ADD COLUMN "ForeignAssetTag" VARCHAR(64)'))
    assert migrate.differences(engine, database_extras=False) == []
    assert _describe(migrate.differences(engine)) == ["remove_column Device.ForeignAssetTag"]
    engine.dispose()


def test_the_next_revision_is_written_for_what_the_code_added(tmp_path):
    """What the lead does when a branch adds a column: ./run db revision "..." writes the revision
    (autogenerated against a scratch database at head); with it the comparison passes again."""
    import shutil

    location = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, location, ignore=shutil.ignore_patterns("__pycache__"))
    column = sa.Column("AttemptCount", sa.Integer)
    t.device_bulk_change_log.append_column(column)
    try:
        path = migrate.new_revision("DeviceBulkChangeLog attempt columns", script_location=location)
        text = path.read_text()
        assert path.name == f"{int(migrate.head()[:4]) + 1:04d}_devicebulkchangelog_attempt.py"  # numbered next
        assert "op.add_column('DeviceBulkChangeLog', sa.Column('AttemptCount', sa.Integer()" in text
        assert "op.drop_column('DeviceBulkChangeLog', 'AttemptCount')" in text
        assert f"down_revision: Union[str, Sequence[str], None] = '{migrate.head()}'" in text
        engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
        with engine.begin() as conn:
            from alembic import command
            command.upgrade(migrate.alembic_config(connection=conn, script_location=location), "head")
        assert _describe(migrate.differences(engine)) == []
        engine.dispose()
    finally:
        t.device_bulk_change_log._columns.remove(column)


def test_run_db_finds_the_airflow_connection_without_a_url(tmp_path, monkeypatch):
    """No --url and no BULKCHANGE_AMOP_URL: the amop_db Airflow connection, as the tasks use it."""
    import json

    from bulkchange_plugins import dbcli

    monkeypatch.delenv("BULKCHANGE_AMOP_URL", raising=False)
    path = tmp_path / "amop.db"
    monkeypatch.setenv("AIRFLOW_CONN_AMOP_DB", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    assert dbcli.main(["upgrade"]) == 0
    engine = make_engine(f"sqlite:///{path}")
    assert migrate.current(engine) == migrate.head()
    engine.dispose()
