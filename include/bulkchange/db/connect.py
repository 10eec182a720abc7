"""Engines for the AMOP database: one place that knows each dialect's connection quirks."""
from __future__ import annotations

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.engine import Engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def configure_engine(engine: Engine) -> Engine:
    """SQLite is written by several mapped tasks at once: WAL mode and a busy timeout.

    Short write transactions do the rest (the repository keeps them per batch).
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
        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - trivial
            conn.exec_driver_sql("BEGIN IMMEDIATE")
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
    return configure_engine(create_engine(url, **kwargs))
