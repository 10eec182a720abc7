"""Schema migrations of the AMOP tables (Alembic), in code: no alembic.ini.

The revisions in ``migrations/versions`` are the one description of how the AMOP database gets
to the shape of ``bulkchange.db.schema``: ``0001_legacy_baseline`` is the legacy tables as
production already has them (stamped there, created on a development database), each later
revision one group of our additions, each with a downgrade. ``seed.create_schema`` (tests, the demo,
the benchmarks) builds a database by running them; ``tests/db/test_migrations.py`` fails when
``schema.py`` has a table, column or index no revision creates.

Command line: ``./run db`` (``bulkchange_plugins.dbcli``), docs/database.md.
"""
from __future__ import annotations

import io
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine

from bulkchange.db.schema import metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Our own version table: the AMOP server may also hold Airflow's metadata (alembic_version)
VERSION_TABLE = "BulkChangeSchemaVersion"
BASELINE = "0001_legacy_baseline"


class SchemaNotManaged(RuntimeError):
    """The database has AMOP tables but no migration version: someone must say which revision it is at."""


def include_name(name: str | None, type_: str, parent_names: dict) -> bool:
    """Compare and migrate only our tables: production has many more, which are not ours to judge."""
    if type_ == "table":
        return name in metadata.tables
    return True


def alembic_config(*, connection: Connection | None = None, url: str | None = None,
                   dialect_name: str | None = None, output: io.StringIO | None = None,
                   script_location: Path | None = None) -> Config:
    cfg = Config(output_buffer=output, stdout=output or io.StringIO())
    cfg.set_main_option("script_location", str(script_location or MIGRATIONS_DIR))
    cfg.set_main_option("file_template", "%%(rev)s")  # revision ids are already "NNNN_what"
    cfg.attributes.update({"connection": connection, "url": url, "dialect_name": dialect_name})
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    return script_directory().get_current_head()


def _in_transaction(bind: Engine | Connection, fn: Callable[[Connection], Any]) -> Any:
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            return fn(conn)
    return fn(bind)


def current(bind: Engine | Connection) -> str | None:
    """The revision the database is at (None: never migrated nor stamped)."""
    def run(conn):
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return run(conn)
    return run(bind)


def _refuse_unstamped(conn: Connection) -> None:
    if current(conn) is None and inspect(conn).has_table("DeviceBulkChange"):
        raise SchemaNotManaged(
            f"the database has AMOP tables but no migration version ({VERSION_TABLE}): it is not ours to "
            f"guess which revision it is at. A legacy-only (production) database: ./run db stamp {BASELINE} "
            "first (docs/database.md)")


def upgrade(bind: Engine | Connection, revision: str = "head") -> None:
    """Run the revisions up to ``revision`` in one transaction. Refuses a database holding AMOP
    tables without a version (stamp it first)."""
    def run(conn):
        _refuse_unstamped(conn)
        command.upgrade(alembic_config(connection=conn), revision)
    _in_transaction(bind, run)


def downgrade(bind: Engine | Connection, revision: str) -> None:
    _in_transaction(bind, lambda conn: command.downgrade(alembic_config(connection=conn), revision))


def stamp(bind: Engine | Connection, revision: str) -> None:
    """Record that the database is at ``revision`` without running anything (production baseline)."""
    _in_transaction(bind, lambda conn: command.stamp(alembic_config(connection=conn), revision))


def _only_ours(obj, name, type_, reflected, compare_to) -> bool:
    """Leave out what only the database has (production's legacy tables have more columns and
    indexes than the code reads)."""
    return not (reflected and compare_to is None)


def differences(bind: Engine | Connection, *, database_extras: bool = True) -> list:
    """What the database lacks (or has differently) compared to ``schema.py``: Alembic's diff
    entries ('add_table', 'add_column', 'add_index', 'modify_type', ...). Empty when they agree.

    ``database_extras=False`` ignores columns/indexes only the database has (a production
    database); the tests keep them, so a revision creating more than the code is caught too."""
    def run(conn):
        opts = {"include_name": include_name, "compare_type": True, "version_table": VERSION_TABLE}
        if not database_extras:
            opts["include_object"] = _only_ours
        ctx = MigrationContext.configure(conn, opts=opts)
        return compare_metadata(ctx, metadata)
    if isinstance(bind, Engine):
        with bind.connect() as conn:
            return run(conn)
    return run(bind)


def describe(diff) -> str:
    """One line for a ``differences`` entry: 'add_column Device.RevCustomerId', 'add_table X' ..."""
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(describe(d) for d in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind} {diff[1].name}"
    if kind in ("add_column", "remove_column"):
        return f"{kind} {diff[2]}.{diff[3].name}"
    if kind in ("add_index", "remove_index", "add_constraint", "remove_constraint", "add_fk", "remove_fk"):
        obj = diff[1]
        table = getattr(getattr(obj, "table", None), "name", "?")
        return f"{kind} {getattr(obj, 'name', None) or obj} on {table}"
    if kind.startswith("modify_"):
        return f"{kind} {diff[2]}.{diff[3]}: {diff[5]!r} -> {diff[6]!r}"
    return repr(diff)


def ensure_schema(bind: Engine | Connection) -> str:
    """Bring a development/test database to the head revision; returns what it did.

    An empty database is built from the baseline up; a migrated one is upgraded. A database
    with AMOP tables but no version (built by ``metadata.create_all`` before migrations existed,
    or an un-stamped production copy) is stamped at head only when it already matches
    ``schema.py`` exactly; otherwise it raises :class:`SchemaNotManaged` rather than guess.
    """
    def run(conn):
        at = current(conn)
        if at is None and inspect(conn).has_table("DeviceBulkChange"):
            diff = differences(conn)
            if diff:
                raise SchemaNotManaged(
                    "the database has AMOP tables but no migration version "
                    f"({VERSION_TABLE}); stamp the revision it is at (./run db stamp "
                    f"{BASELINE} for a legacy-only database, docs/database.md); "
                    f"it differs from the code by {len(diff)} change(s), first: {describe(diff[0])}")
            command.stamp(alembic_config(connection=conn), "head")
            return "stamped"
        if at == head():
            return "current"
        command.upgrade(alembic_config(connection=conn), "head")
        return "upgraded"
    return _in_transaction(bind, run)


@contextmanager
def _quiet_alembic():
    """Alembic's progress lines ("Context impl MSSQLImpl", "Running upgrade ...") are not part of an
    offline script: where the process has logging set up to print on stdout (an Airflow process, a
    test session), they would land in the middle of the script the DBA reviews."""
    log = logging.getLogger("alembic")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


def offline_sql(*, from_revision: str | None = None, to_revision: str = "head", downgrade: bool = False,
                dialect_name: str = "mssql") -> str:
    """The migration script for a DBA to review and run (Alembic offline mode), as text.

    Upgrade: ``from_revision`` (None = an empty database) to ``to_revision``. Downgrade: from
    ``from_revision`` (default head) down to ``to_revision`` (use "base" to remove everything,
    or the baseline to keep the legacy tables)."""
    out = io.StringIO()
    cfg = alembic_config(dialect_name=dialect_name, output=out)
    with _quiet_alembic():
        if downgrade:
            rng = f"{from_revision or 'head'}:{to_revision}"
            command.downgrade(cfg, rng, sql=True)
        else:
            rng = f"{from_revision}:{to_revision}" if from_revision else to_revision
            command.upgrade(cfg, rng, sql=True)
    return _header(f"{'downgrade' if downgrade else 'upgrade'} {rng}", dialect_name) + out.getvalue()


def offline_stamp_sql(revision: str = BASELINE, *, dialect_name: str = "mssql") -> str:
    """The script that records ``revision`` as applied without running it (creates the version table)."""
    out = io.StringIO()
    with _quiet_alembic():
        command.stamp(alembic_config(dialect_name=dialect_name, output=out), revision, sql=True)
    return _header(f"stamp {revision}", dialect_name) + out.getvalue()


def _header(what: str, dialect_name: str) -> str:
    text = (f"-- bulkchange AMOP schema migration: {what} ({dialect_name}), generated by ./run db sql\n"
            f"-- version table: {VERSION_TABLE}; review, back up, then run it (docs/database.md)\n")
    if dialect_name == "mssql":
        # any error rolls the whole transaction back (run with sqlcmd -b so the next batches do not run)
        text += "SET XACT_ABORT ON;\n\nGO\n\n"
    return text


def new_revision(message: str, *, script_location: Path | None = None) -> Path:
    """Write the next revision file for what ``schema.py`` has and the migrations do not yet create:
    Alembic autogenerate against a scratch SQLite database migrated to head. Review it (a NOT NULL
    column on an existing table needs a ``server_default``, its downgrade ``mssql_drop_default=True``);
    ``./run db revision "what"``. Returns the file written."""
    import re
    import tempfile

    from sqlalchemy import create_engine

    location = script_location or MIGRATIONS_DIR
    scripts = ScriptDirectory.from_config(alembic_config(script_location=location))
    number = len(list(scripts.walk_revisions())) + 1
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")
    rev_id = f"{number:04d}_{slug}"[:32].rstrip("_")
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/scratch.db")
        try:
            with engine.begin() as conn:
                command.upgrade(alembic_config(connection=conn, script_location=location), "head")
                script = command.revision(alembic_config(connection=conn, script_location=location),
                                          message=message, autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
    return Path(script.path)
