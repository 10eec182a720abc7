"""Run a write transaction again when the database chose it as a deadlock victim or refused it a lock.

Concurrent batches of one bulk change close with a transaction that updates their device rows
and then the bulk change's roll-up row; the sensor and reconciliation write the same rows. Any
database can then pick a victim: SQL Server error 1205 (deadlock) or 3960 (snapshot update
conflict), PostgreSQL 40P01 (deadlock detected) or 40001 (serialization failure), SQLite
"database is locked" when the busy timeout ran out. The victim's transaction is rolled back as a
whole (SQL Server rolls back the entire transaction on 1205, PostgreSQL aborts it), so the
retry is of the whole transaction, never of one statement inside it: ``run_in_transaction``
opens a fresh transaction per attempt. The work is the same function each time; everything it
wrote in a failed attempt was rolled back with it.

Bounded: ``ATTEMPTS`` tries (the legacy retried SQL 3 times: 1 + 3) with a short randomised
exponential backoff so two victims do not collide again in step; the last error is re-raised
unchanged. docs/database.md.
"""
from __future__ import annotations

import logging
import re
import sqlite3
from typing import Callable, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")

ATTEMPTS = 4
WAIT_MULTIPLIER_S = 0.1
WAIT_MAX_S = 3.0

MSSQL_TRANSIENT = {1205: "deadlock victim (SQL Server 1205)",
                   3960: "snapshot isolation update conflict (SQL Server 3960)"}
PG_TRANSIENT = {"40P01": "deadlock detected (PostgreSQL 40P01)",
                "40001": "serialization failure (PostgreSQL 40001)"}
SQLITE_TRANSIENT = ("database is locked", "database table is locked", "database is busy")
_MSSQL_NUMBER = re.compile(r"\((\d{4})\)")  # pyodbc: "... deadlock victim. Rerun the transaction. (1205) (SQLExecDirectW)"


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is a lost deadlock / lock conflict worth running the transaction again, or None.

    Looks at the DBAPI error under SQLAlchemy's wrapper: psycopg2 ``pgcode`` / psycopg
    ``sqlstate``; pymssql ``args == (1205, b"Transaction ... deadlock victim ...")``; pyodbc
    ``args == ("40001", "[40001] [Microsoft]...(1205) (SQLExecDirectW)")``; sqlite3 messages."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if orig is None:
        return None
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if isinstance(code, str) and code in PG_TRANSIENT:
        return PG_TRANSIENT[code]
    args = getattr(orig, "args", ()) or ()
    if args and isinstance(args[0], int) and args[0] in MSSQL_TRANSIENT:  # pymssql
        return MSSQL_TRANSIENT[args[0]]
    if args and isinstance(args[0], str) and args[0] == "40001" and len(args) > 1:  # pyodbc
        for number in _MSSQL_NUMBER.findall(str(args[1])):
            if int(number) in MSSQL_TRANSIENT:
                return MSSQL_TRANSIENT[int(number)]
        if "deadlock" in str(args[1]).lower():
            return MSSQL_TRANSIENT[1205]
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        if any(m in text for m in SQLITE_TRANSIENT):
            return f"SQLite: {text}"
    return None


def is_transient(exc: BaseException) -> bool:
    return transient_reason(exc) is not None


def run_in_transaction(engine: Engine, work: Callable[[Connection], T], *, what: str = "transaction",
                       attempts: int = ATTEMPTS) -> T:
    """``work(conn)`` inside ``engine.begin()``, run again in a new transaction when it lost a
    deadlock or lock conflict (at most ``attempts`` times); returns what ``work`` returns.
    ``engine``: an Engine, or anything with its ``begin()`` (``db.connect.HeldConnection``)."""
    def before_sleep(state) -> None:
        exc = state.outcome.exception()
        log.warning("%s: %s, attempt %d of %d rolled back; running it again", what, transient_reason(exc),
                    state.attempt_number, attempts)

    for attempt in Retrying(retry=retry_if_exception(is_transient), stop=stop_after_attempt(attempts),
                            wait=wait_random_exponential(multiplier=WAIT_MULTIPLIER_S, max=WAIT_MAX_S),
                            before_sleep=before_sleep, reraise=True):
        with attempt:
            with engine.begin() as conn:
                return work(conn)
    raise AssertionError("unreachable")  # pragma: no cover - Retrying re-raises the last error
