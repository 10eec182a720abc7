"""Engines for the AMOP database: one place that knows each dialect's connection quirks."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url

SQLITE_BUSY_TIMEOUT_MS = 30_000
# rows per round trip of a psycopg2 executemany (make_engine)
EXECUTEMANY_PAGE_SIZE = 500


def configure_engine(engine: Engine) -> Engine:
    """SQLite is written by several mapped tasks at once: WAL mode and a busy timeout.

    Short write transactions do the rest (the db modules keep them per batch).
    """
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; make BEGIN explicit and IMMEDIATE
        # for write transactions so two writers queue on the busy timeout instead of failing
        # with "database is locked" on lock upgrade.
        # Sent on the driver's connection itself: every transaction pays this (a carrier attempt's
        # journal row is one), and SQLAlchemy's execution machinery for one constant statement was
        # a measurable part of the CPU per device (docs/profile-r3.md).
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
    return engine


def make_engine(url: str | URL, **kwargs) -> Engine:
    """An engine for a URL string or a SQLAlchemy URL (a provider hook's ``sqlalchemy_url``)."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        kwargs.setdefault("connect_args", {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                           "check_same_thread": False})
        engine = create_engine(url, **kwargs)
        # Let SQLAlchemy emit BEGIN itself (see configure_engine)
        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.isolation_level = None
        return configure_engine(engine)
    kwargs.setdefault("pool_pre_ping", True)
    if url.get_driver_name() == "psycopg2":
        # psycopg2's executemany sends one statement per row: recording a batch's results updated
        # each device change, device and call log row in its own round trip (R3's 2,000 devices:
        # 6,200 round trips for three statements). Send them in pages instead. The price: an
        # executemany's rowcount is no longer the rows changed (the dialect's
        # supports_sane_multi_rowcount is False); code that needs that count asks the dialect
        # (db.sim_swap.retire_taken_over_spares).
        kwargs.setdefault("executemany_mode", "values_plus_batch")
        kwargs.setdefault("executemany_batch_page_size", EXECUTEMANY_PAGE_SIZE)
    if url.get_driver_name() == "psycopg":
        # psycopg 3 (what Airflow's Postgres connection gives) prepares a statement on the server
        # after its fifth execution, and PostgreSQL then plans it once for any parameters: for the
        # chunked "ICCID IN (1,000 values)" lookups that generic plan scans the whole table per
        # chunk, so prepare grew with the square of the fleet (bench R6: minutes, not seconds, for
        # 100,000 devices). Plan every statement for its values, as psycopg2 does.
        kwargs["connect_args"] = {"prepare_threshold": None, **kwargs.get("connect_args", {})}
    return configure_engine(create_engine(url, **kwargs))


SNAPSHOT_STATEMENT = "ALTER DATABASE CURRENT SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE"


def read_committed_snapshot_problem(engine: Engine) -> str | None:
    """On SQL Server, why the database's locking is not the one the pipeline is designed for
    (READ_COMMITTED_SNAPSHOT off: readers and writers block each other), with the statement a DBA
    runs; None when it is on, or on another dialect (docs/database.md)."""
    if engine.dialect.name != "mssql":
        return None
    from sqlalchemy import text

    with engine.connect() as conn:
        on = conn.execute(text("SELECT is_read_committed_snapshot_on FROM sys.databases "
                               "WHERE name = DB_NAME()")).scalar()
    if on:
        return None
    return ("READ_COMMITTED_SNAPSHOT is off on the AMOP database: under plain READ COMMITTED the "
            "batches' closing transactions, the portal's reads and the progress roll-up block each "
            "other and deadlocks (error 1205) are more likely (they are retried, docs/database.md). "
            f"A DBA enables it with: {SNAPSHOT_STATEMENT}")


class HeldConnection:
    """One pooled connection kept for a sequence of short transactions from one thread at a time
    (the call journal's group commits: ``bulkchange.journal``), instead of a checkout per
    transaction. A checkout is not free: on PostgreSQL and SQL Server the engine pings the
    connection first (``pool_pre_ping``), a round trip per transaction, and a journal writes one
    transaction per carrier attempt when the account's rate spaces the attempts out.

    ``begin()`` is used as ``engine.begin()`` is (``db.retry.run_in_transaction`` takes either).
    The connection goes back to the pool, and the next transaction checks one out again with the
    engine's ping, when it was idle longer than ``idle_s`` (a connection the server or a proxy
    dropped while it sat idle is then replaced, as the pool would) and after any error in a
    transaction (an invalidated connection is never used again). ``close()`` gives it back."""

    def __init__(self, engine: Engine, *, idle_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.engine = engine
        self.idle_s = idle_s
        self._clock = clock
        self._conn: Connection | None = None
        self._last_used = 0.0

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        if self._conn is not None and self._clock() - self._last_used > self.idle_s:
            self.close()
        if self._conn is None:
            self._conn = self.engine.connect()
        try:
            with self._conn.begin():
                yield self._conn
        except BaseException:
            self.close()
            raise
        finally:
            self._last_used = self._clock()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection: the pool discards it
                pass
