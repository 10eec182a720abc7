"""db.connect.HeldConnection: the call journal's writes share one checked-out connection instead of
a checkout (and, on a server database, a ping round trip) per transaction."""
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from bulkchange.db.connect import HeldConnection, make_engine
from bulkchange.db.retry import run_in_transaction


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'held.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
    checkouts = []
    event.listen(engine, "checkout", lambda *a: checkouts.append(1))
    engine.checkouts = checkouts
    yield engine
    engine.dispose()


def rows(engine):
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT x FROM t ORDER BY x"))]


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_many_transactions_take_one_checkout_and_commit_each(engine):
    held = HeldConnection(engine)
    for i in range(5):
        run_in_transaction(held, lambda conn: conn.execute(sa.text("INSERT INTO t VALUES (:x)"), {"x": i}))
        assert rows(engine) == list(range(i + 1))  # committed: another connection sees it
    held.close()
    assert len(engine.checkouts) - 5 == 1  # the five reads above took one each
    assert engine.pool.checkedout() == 0


def test_an_idle_connection_goes_back_and_the_next_write_checks_out_again(engine):
    clock = Clock()
    held = HeldConnection(engine, idle_s=5.0, clock=clock)
    with held.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    clock.now += 4.9
    with held.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (2)"))
    assert len(engine.checkouts) == 1
    clock.now += 5.1  # idle longer than idle_s: checked out again (the engine's ping on a server DB)
    with held.begin() as conn:
        conn.execute(sa.text("INSERT INTO t VALUES (3)"))
    assert len(engine.checkouts) == 2 and engine.pool.checkedout() == 1
    held.close()
    assert engine.pool.checkedout() == 0


def test_an_error_rolls_back_and_the_connection_is_not_used_again(engine):
    held = HeldConnection(engine)
    with held.begin() as conn:
        first = conn
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    with pytest.raises(sa.exc.OperationalError):
        with held.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (2)"))
            conn.execute(sa.text("INSERT INTO missing VALUES (1)"))
    assert engine.pool.checkedout() == 0  # given back at once
    with held.begin() as conn:
        assert conn is not first
        conn.execute(sa.text("INSERT INTO t VALUES (3)"))
    held.close()
    assert rows(engine) == [1, 3]
