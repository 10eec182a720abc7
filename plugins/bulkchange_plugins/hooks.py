"""Hooks: Airflow connections in, core objects (SQLAlchemy engine, carrier client) out.

* ``AmopHook`` resolves the ``amop_db`` connection (conn types mssql, postgres, sqlite) through
  the providers' own DB hooks and returns a SQLAlchemy engine configured by the core.
* ``CarrierHook`` resolves one carrier account's connection (by convention
  ``carrier_sp_<ServiceProviderId>``) into a core carrier client with its rate limit and retry
  policy. Credentials stay inside the client; Airflow masks connection passwords in task logs.
  With ``BULKCHANGE_RATE_LIMIT_REDIS_URL`` (or the connection extra ``rate_limit_redis_url``) the
  account's rate limit is one bucket in Redis shared by every worker and run
  (``bulkchange.shared_limiter``); without it each client has its own in-process share.
"""
from __future__ import annotations

import os
import threading
from typing import Any

from airflow.sdk import BaseHook

from bulkchange.carriers import CarrierSettings, build_client, build_revio_client
from bulkchange.db.connect import make_engine
from bulkchange.engine import CallPolicy, RetryPolicy
from bulkchange.models import Integration
from bulkchange.shared_limiter import make_rate_limiter

_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


class AmopHook(BaseHook):
    conn_name_attr = "amop_conn_id"
    default_conn_name = "amop_db"
    hook_name = "AMOP database"

    def __init__(self, amop_conn_id: str = default_conn_name, **kwargs: Any):
        super().__init__(**kwargs)
        self.amop_conn_id = amop_conn_id

    def get_url(self):
        """The SQLAlchemy URL the provider's own DB hook builds for the connection."""
        db_hook = self.get_connection(self.amop_conn_id).get_hook()  # Sqlite/Postgres/MsSql hook
        try:
            return db_hook.sqlalchemy_url
        except NotImplementedError:  # SqliteHook only builds a URI string
            return db_hook.get_uri()

    def get_engine(self):
        """One engine (and connection pool) per database URL per process."""
        url = self.get_url()
        key = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = _ENGINES[key] = make_engine(url)
                _warn_about_locking(engine)
            return engine


def _warn_about_locking(engine) -> None:
    """Once per engine: a clear warning when SQL Server runs without READ_COMMITTED_SNAPSHOT."""
    import logging

    from bulkchange.db.connect import read_committed_snapshot_problem

    try:
        problem = read_committed_snapshot_problem(engine)
    except Exception as exc:  # noqa: BLE001 - a check, never a reason to fail a task
        problem = f"could not read the READ_COMMITTED_SNAPSHOT setting: {type(exc).__name__}"
    if problem:
        logging.getLogger("bulkchange.db").warning(problem)


def carrier_conn_id(service_provider_id: int) -> str:
    return f"carrier_sp_{service_provider_id}"


def revio_conn_id(service_provider_id: int) -> str:
    """The service provider's Rev.io billing account (docs/carriers/revio.md)."""
    return f"revio_sp_{service_provider_id}"


REVIO_DEFAULT_RATE_PER_S = 8.0  # Rev.io allows 500 calls/min per account


def revio_client_or_problem(service_provider_id: int, *, rate_share: int = 1) -> tuple[Any, str | None]:
    """(Rev.io client, None), or (None, why there is none): a missing connection is not an error
    until a device change asks for a Rev.io service."""
    conn_id = revio_conn_id(service_provider_id)
    try:
        settings = CarrierHook(conn_id).get_settings()
    except Exception as exc:  # AirflowNotFoundException and friends
        return None, f"no usable Rev.io connection {conn_id!r}: {type(exc).__name__}: {exc}"
    extra = settings.extra
    redis_url = extra.get("rate_limit_redis_url") or os.environ.get("BULKCHANGE_RATE_LIMIT_REDIS_URL") or None
    policy = CallPolicy(
        rate_limiter=make_rate_limiter(str(extra.get("rate_limit_key") or conn_id),
                                       settings.rate_limit_per_s or REVIO_DEFAULT_RATE_PER_S, share=rate_share,
                                       redis_url=redis_url),
        retry=RetryPolicy(max_attempts=settings.max_attempts))
    try:
        return build_revio_client(settings, policy=policy), None
    except ValueError as exc:
        return None, f"Rev.io connection {conn_id!r}: {exc}"


class CarrierHook(BaseHook):
    """One carrier account. Connection fields: host = API base URL (or extra ``base_url``),
    login = user / API key id, password = API key / secret; extra = engine knobs
    (``rate_limit_per_s``, ``timeout_s``, ``max_attempts``) and carrier-specific settings."""

    conn_name_attr = "carrier_conn_id"
    default_conn_name = "carrier_default"
    hook_name = "Carrier account (bulkchange)"

    def __init__(self, carrier_conn_id: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.carrier_conn_id = carrier_conn_id

    def get_settings(self) -> CarrierSettings:
        conn = self.get_connection(self.carrier_conn_id)
        extra = conn.extra_dejson or {}
        base_url = extra.get("base_url") or conn.host or ""
        if base_url and "://" not in base_url:
            scheme = conn.schema or "https"
            port = f":{conn.port}" if conn.port else ""
            base_url = f"{scheme}://{base_url}{port}"
        if not base_url:
            raise ValueError(f"connection {self.carrier_conn_id} has no host / base_url")
        return CarrierSettings(base_url=base_url, login=conn.login, password=conn.password, extra=extra)

    def get_client(self, integration: Integration, *, rate_share: int = 1):
        """A client whose calls share one limiter for the account's ``rate_limit_per_s``.

        Shared limit configured (env ``BULKCHANGE_RATE_LIMIT_REDIS_URL`` or extra
        ``rate_limit_redis_url``): one bucket in Redis keyed by extra ``rate_limit_key`` (default:
        the connection id) at the full rate, held across workers and concurrent runs. Otherwise an
        in-process bucket at the rate divided by ``rate_share`` (the batch tasks of one run allowed
        to call this account at once)."""
        settings = self.get_settings()
        extra = settings.extra
        redis_url = extra.get("rate_limit_redis_url") or os.environ.get("BULKCHANGE_RATE_LIMIT_REDIS_URL") or None
        policy = CallPolicy(
            rate_limiter=make_rate_limiter(str(extra.get("rate_limit_key") or self.carrier_conn_id),
                                           settings.rate_limit_per_s, share=rate_share, redis_url=redis_url),
            retry=RetryPolicy(max_attempts=settings.max_attempts),
        )
        return build_client(integration, settings, policy=policy)

    def credentials_problem(self, integration: Integration) -> str | None:
        """None when the account's connection exists and holds what the carrier needs, else why."""
        try:
            settings = self.get_settings()
        except Exception as exc:  # AirflowNotFoundException and friends
            return (f"no usable carrier connection {self.carrier_conn_id!r}: "
                    f"{type(exc).__name__}: {exc}")
        if not settings.login or not settings.password:
            return f"carrier connection {self.carrier_conn_id!r} has no login or password"
        try:
            build_client(integration, settings).close()
        except (ValueError, NotImplementedError) as exc:
            return f"carrier connection {self.carrier_conn_id!r}: {exc}"
        return None
