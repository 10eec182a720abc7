"""Alembic environment of the AMOP tables the pipeline owns or reads (docs/database.md).

Run through ``bulkchange.db.migrate`` (``./run db ...``), which builds the Alembic config in code:
there is no alembic.ini. Online, it migrates the connection (or URL) it is given; offline
(``--sql``) it prints the script for the dialect asked for (SQL Server for a DBA to review).

Only the tables of ``bulkchange.db.schema`` are ever compared or touched: the production AMOP
database has many other tables (and Airflow may share a server), so autogenerate and
``compare_metadata`` ignore every table not in our metadata, and the version table is our own
(``VERSION_TABLE``), never Airflow's ``alembic_version``.
"""
from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from bulkchange.db.migrate import VERSION_TABLE, include_name
from bulkchange.db.schema import metadata

config = context.config
target_metadata = metadata

COMMON = dict(
    target_metadata=target_metadata,
    version_table=VERSION_TABLE,
    include_name=include_name,
    compare_type=True,
    render_as_batch=False,
)


def run_migrations_offline() -> None:
    """Emit the script instead of running it (``--sql``): literal values, no DB needed."""
    url = config.attributes.get("url")
    dialect = config.attributes.get("dialect_name")
    kw = {"url": url} if url else {"dialect_name": dialect or "mssql"}
    # SQL Server: NVARCHAR(max) / VARCHAR(max), never the deprecated NTEXT / TEXT (offline there is
    # no server version for the dialect to decide from)
    dialect_opts = {"deprecate_large_types": True} if (dialect or "") == "mssql" or (url or "").startswith("mssql") else {}
    context.configure(literal_binds=True, transactional_ddl=True, dialect_opts=dialect_opts, **kw, **COMMON)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, **COMMON)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config({"sqlalchemy.url": config.attributes["url"]},
                                prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **COMMON)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
