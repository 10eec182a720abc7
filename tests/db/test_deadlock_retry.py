"""A transaction that loses a deadlock (or a lock) is run again, whole, by bulkchange.db.retry.

The PostgreSQL test makes a real deadlock: two connections lock two rows in opposite order; the
server aborts one (40P01); the helper runs the victim's transaction again and both sets of
writes are kept. The same test with retries off shows the deadlock surfacing, so the scenario
really deadlocks. The SQL Server and pyodbc error shapes are classified from their real forms.
"""
from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from bulkchange import processing
from bulkchange.db import bulk_changes, device_changes, progress
from bulkchange.db import retry
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration

DEADLOCK_1205 = (b"Transaction (Process ID 52) was deadlocked on lock resources with another process and has "
                 b"been chosen as the deadlock victim. Rerun the transaction.DB-Lib error message 20018, "
                 b"severity 13:\nGeneral SQL Server error: Check messages from the SQL Server\n")


def _wrapped(orig: BaseException, cls=OperationalError) -> DBAPIError:
    return cls("UPDATE [DeviceBulkChange] SET ...", {}, orig)


def test_sql_server_deadlock_victim_is_transient_pymssql():
    pymssql = pytest.importorskip("pymssql")
    exc = _wrapped(pymssql.OperationalError(1205, DEADLOCK_1205))
    assert retry.transient_reason(exc) == "deadlock victim (SQL Server 1205)"
    assert retry.is_transient(_wrapped(pymssql.OperationalError(3960, b"Snapshot isolation transaction aborted")))
    # a unique key violation or a syntax error is not run again
    assert not retry.is_transient(_wrapped(pymssql.IntegrityError(2627, b"Violation of PRIMARY KEY"), IntegrityError))
    assert not retry.is_transient(_wrapped(pymssql.ProgrammingError(102, b"Incorrect syntax near 'LIMIT'.")))


class _PyodbcError(Exception):
    """pyodbc's shape: args = (SQLSTATE, message)."""


def test_sql_server_deadlock_victim_is_transient_pyodbc():
    msg = ("[40001] [Microsoft][ODBC Driver 18 for SQL Server][SQL Server]Transaction (Process ID 57) was "
           "deadlocked on lock resources with another process and has been chosen as the deadlock victim. "
           "Rerun the transaction. (1205) (SQLExecDirectW)")
    assert retry.transient_reason(_wrapped(_PyodbcError("40001", msg))) == "deadlock victim (SQL Server 1205)"
    assert not retry.is_transient(_wrapped(_PyodbcError("23000", "[23000] Violation of PRIMARY KEY (2627)"),
                                           IntegrityError))


class _PgError(Exception):
    def __init__(self, code):
        super().__init__(code)
        self.pgcode = code  # psycopg2; psycopg 3 says sqlstate


def test_postgres_and_sqlite_shapes():
    assert retry.transient_reason(_wrapped(_PgError("40P01"))) == "deadlock detected (PostgreSQL 40P01)"
    assert retry.is_transient(_wrapped(_PgError("40001")))
    assert not retry.is_transient(_wrapped(_PgError("23505"), IntegrityError))
    assert retry.is_transient(_wrapped(sqlite3.OperationalError("database is locked")))
    assert not retry.is_transient(_wrapped(sqlite3.OperationalError("no such table: Device")))
    assert not retry.is_transient(ValueError("database is locked"))  # only database errors


def test_the_whole_transaction_runs_again_and_its_first_attempt_is_rolled_back(sqlite_engine):
    attempts = []

    def work(conn):
        attempts.append(1)
        conn.execute(sa.insert(t.integration).values(Id=900, Name="x"))
        if len(attempts) == 1:
            raise _wrapped(sqlite3.OperationalError("database is locked"))
        return "done"

    assert retry.run_in_transaction(sqlite_engine, work) == "done"
    assert len(attempts) == 2
    with sqlite_engine.connect() as conn:  # one row: the first attempt's insert was rolled back
        assert conn.execute(sa.select(sa.func.count()).where(t.integration.c.Id == 900)).scalar() == 1


def test_other_errors_are_not_retried_and_retries_are_bounded(sqlite_engine):
    calls = []

    def broken(conn):
        calls.append(1)
        raise _wrapped(sqlite3.OperationalError("no such table: Nope"))

    with pytest.raises(OperationalError, match="no such table"):
        retry.run_in_transaction(sqlite_engine, broken)
    assert len(calls) == 1

    calls.clear()

    def always_locked(conn):
        calls.append(1)
        raise _wrapped(sqlite3.OperationalError("database is locked"))

    with pytest.raises(OperationalError, match="database is locked"):
        retry.run_in_transaction(sqlite_engine, always_locked, attempts=3)
    assert len(calls) == 3


# --- a real deadlock on PostgreSQL -------------------------------------------------------------
def _two_devices(engine) -> tuple[int, int]:
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED"} for i in (1, 2)],
                         sp_id=1, tenant_id=1)
        ids = conn.execute(sa.select(t.device.c.Id).order_by(t.device.c.Id)).scalars().all()
    return ids[0], ids[1]


def _opposite_order_writers(engine, attempts: int):
    """Two transactions: A locks row 1 then row 2, B row 2 then row 1; both hold their first lock
    before asking for the second, so the server must abort one of them."""
    first, second = _two_devices(engine)
    barrier = threading.Barrier(2, timeout=60)
    tries = {"A": 0, "B": 0}
    errors: dict[str, BaseException] = {}

    def writer(name: str, order: tuple[int, int], column: str):
        def work(conn):
            tries[name] += 1
            conn.execute(sa.update(t.device).where(t.device.c.Id == order[0]).values({column: name}))
            if tries[name] == 1:
                barrier.wait()  # both hold their first row lock now
            conn.execute(sa.update(t.device).where(t.device.c.Id == order[1]).values({column: name}))

        try:
            retry.run_in_transaction(engine, work, what=f"writer {name}", attempts=attempts)
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            errors[name] = exc

    threads = [threading.Thread(target=writer, args=("A", (first, second), "CostCenter1")),
               threading.Thread(target=writer, args=("B", (second, first), "CostCenter2"))]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "writers still running"
    with engine.connect() as conn:
        rows = conn.execute(sa.select(t.device.c.CostCenter1, t.device.c.CostCenter2)
                            .order_by(t.device.c.Id)).all()
    return tries, errors, rows


@pytest.mark.postgres
def test_postgres_deadlock_victim_is_run_again_and_both_writes_are_kept(pg_engine):
    tries, errors, rows = _opposite_order_writers(pg_engine, attempts=retry.ATTEMPTS)
    assert errors == {}
    assert sorted(tries.values()) == [1, 2]  # one victim, run once more
    assert [tuple(r) for r in rows] == [("A", "B"), ("A", "B")]


@pytest.mark.postgres
def test_without_retries_the_same_scenario_surfaces_the_deadlock(pg_engine):
    tries, errors, rows = _opposite_order_writers(pg_engine, attempts=1)
    assert len(errors) == 1
    (victim, exc), = errors.items()
    assert retry.transient_reason(exc) == "deadlock detected (PostgreSQL 40P01)"
    column = 0 if victim == "A" else 1
    assert all(r[column] is None for r in rows)  # the victim's work is lost without the retry


# --- the batch's closing transaction goes through the helper ---------------------------------
class _StubJasper:
    def update_status(self, iccid, status, log=None):
        return {"iccid": iccid}

    def get_device(self, iccid, log=None):
        return {"iccid": iccid, "status": "ACTIVATED"}


def test_a_batch_whose_closing_transaction_loses_a_lock_is_recorded_once(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="sp", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": seed.make_iccid(i), "Status": "ACTIVATED"} for i in range(3)],
                         sp_id=1, tenant_id=1)
        bulk_id = seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                       requests=[{"ICCID": seed.make_iccid(i),
                                                  "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in range(3)])
    plan = processing.prepare(engine, bulk_id, batch_size=10)
    real = progress.refresh_progress
    calls = []

    def loses_once(conn, bulk):  # the last statement of the closing transaction is the victim
        calls.append(1)
        if len(calls) == 1:
            raise _wrapped(sqlite3.OperationalError("database is locked"))
        return real(conn, bulk)

    monkeypatch.setattr(progress, "refresh_progress", loses_once)
    summary = processing.process_batch(engine, bulk_id, plan.batches[0].device_change_ids, client=_StubJasper())
    assert len(calls) == 2
    assert summary.progress["ProcessedCount"] == 3
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(t.m2m_device_change.c.Status)
                                .where(t.m2m_device_change.c.BulkChangeId == bulk_id)).scalars().all()
        history = conn.execute(sa.select(sa.func.count()).select_from(t.device_status_history)
                               .where(t.device_status_history.c.BulkChangeId == bulk_id)).scalar()
        logs = conn.execute(sa.select(t.device_bulk_change_log.c.M2MDeviceChangeId)
                            .where(t.device_bulk_change_log.c.BulkChangeId == bulk_id)).scalars().all()
    assert statuses == ["PROCESSED"] * 3
    # once per device, not twice: the lost attempt left nothing behind
    assert history == 3
    assert len(logs) == 3 and len(set(logs)) == 3


# --- SQL Server's READ_COMMITTED_SNAPSHOT check -------------------------------------------------
class _FakeMssqlEngine:
    """Answers the sys.databases query as SQL Server would."""

    def __init__(self, on):
        self.on, self.queries = on, []
        self.dialect = type("D", (), {"name": "mssql"})()

    def connect(self):
        engine = self

        class _Conn:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, stmt):
                engine.queries.append(str(stmt))
                return type("R", (), {"scalar": lambda _self: engine.on})()
        return _Conn()


def test_read_committed_snapshot_off_is_reported_with_the_statement(sqlite_engine):
    from bulkchange.db.connect import SNAPSHOT_STATEMENT, read_committed_snapshot_problem

    off = _FakeMssqlEngine(False)
    problem = read_committed_snapshot_problem(off)
    assert "READ_COMMITTED_SNAPSHOT is off" in problem and SNAPSHOT_STATEMENT in problem
    assert "is_read_committed_snapshot_on" in off.queries[0] and "DB_NAME()" in off.queries[0]
    assert read_committed_snapshot_problem(_FakeMssqlEngine(True)) is None
    assert read_committed_snapshot_problem(sqlite_engine) is None  # other dialects: nothing to check


def test_the_hook_warns_when_it_opens_the_amop_engine():
    import logging

    from bulkchange_plugins import hooks

    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("bulkchange.db")
    logger.addHandler(handler)
    try:
        hooks._warn_about_locking(_FakeMssqlEngine(False))
        assert len(records) == 1 and "READ_COMMITTED_SNAPSHOT is off" in records[0].getMessage()
        hooks._warn_about_locking(_FakeMssqlEngine(True))
        assert len(records) == 1
    finally:
        logger.removeHandler(handler)


def test_a_journal_write_that_meets_a_lock_is_retried_not_failing_the_device(sqlite_engine, monkeypatch):
    """The call journal writes before each carrier request; a lock or deadlock on that short write
    is retried (a failed journal write means the device is ERROR and nothing is sent)."""
    from bulkchange.carriers.base import CallRecord
    from tests.db.test_repository import make_bulk

    bulk_id = make_bulk(sqlite_engine, n=1)
    with sqlite_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dc = device_changes.load_device_changes(conn, bulk)[0]
    real = device_changes.log_rows
    failures = [_wrapped(sqlite3.OperationalError("database is locked"))]

    def once_locked(*args, **kwargs):
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(device_changes, "log_rows", once_locked)
    record = CallRecord("Update Jasper Status", "PUT", "http://carrier/devices/1", "{}")
    ids = device_changes.journal_write(sqlite_engine, bulk, processed_by="test", intents=[(dc.id, record)])
    assert len(ids) == 1 and not failures
    with sqlite_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.device_bulk_change_log)).scalar_one() == 1
