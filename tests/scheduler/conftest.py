"""Fixtures for the real-scheduler tests: fresh PostgreSQL databases and the Redis server.

Outside CI they skip with the reason when PostgreSQL or Redis is unreachable; under CI=true they
fail instead (.ci/run starts both).
"""
from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import IN_CI, PG_ADMIN_URL, require_pg

REDIS_URL = os.environ.get("BULKCHANGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        reason = f"Redis not reachable at {REDIS_URL}: {type(exc).__name__}"
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: .ci/run must start Redis")
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def pg_database():
    """A factory of fresh PostgreSQL databases (URL per call), all dropped after the test."""
    yield from _databases()


@pytest.fixture(scope="module")
def pg_database_module():
    """``pg_database`` for a module's shared cluster: dropped after the module."""
    yield from _databases()


def _databases():
    require_pg()
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    names = []

    def create(label: str) -> str:
        name = f"bulkchange_sched_{label}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"

    yield create
    with admin.connect() as c:
        for name in names:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def redis_url():
    return require_redis()
