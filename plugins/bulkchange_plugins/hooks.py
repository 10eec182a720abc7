"""Hooks: Airflow connections in, core objects (SQLAlchemy engine, carrier clients) out.

* ``AmopHook`` resolves the ``amop_db`` connection (conn types mssql, postgres, sqlite) through
  the providers' own DB hooks and returns a SQLAlchemy engine configured by the core.
* One hook per carrier API, each with its connection type (``jasper``, ``thingspace``,
  ``telegence``, ``teal``, ``pond``, ``revio``; registered by the project's provider distribution,
  ``provider/``, so the connection form lists them with every extra and "Test" calls
  ``test_connection``). A hook resolves one account's connection (by convention
  ``carrier_sp_<ServiceProviderId>`` / ``revio_sp_<ServiceProviderId>``) into a core client with its
  rate limit and retry policy. Connections of conn type ``http`` (before the carrier types existed)
  keep working: the service provider's integration picks the hook (``carrier_hook``).
  Credentials stay inside the client; Airflow masks connection passwords in task logs.
  With ``BULKCHANGE_RATE_LIMIT_REDIS_URL`` (or the connection extra ``rate_limit_redis_url``) the
  account's rate limit is one bucket in Redis shared by every worker and run
  (``bulkchange.shared_limiter``); without it each client has its own in-process share.
* ``carrier_clients`` gives a task its carrier and Rev.io clients and closes them.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from airflow.sdk import BaseHook

from bulkchange.carriers import CarrierSettings, build_client, build_revio_client
from bulkchange.carriers.base import AuthError, CarrierError
from bulkchange.db.connect import make_engine
from bulkchange.engine import CallPolicy, RetryPolicy
from bulkchange.models import Integration
from bulkchange.sanitize import sanitize_text
from bulkchange.settings import get_settings as deployment_settings
from bulkchange.shared_limiter import make_rate_limiter

_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()


class AmopHook(BaseHook):
    """The AMOP database. Its connection keeps the database's own conn type (mssql, postgres,
    sqlite), so the form and "Test" are those of the provider's DB hook: no conn type of its own."""

    conn_name_attr = "amop_conn_id"
    default_conn_name = "amop_db"
    conn_type = None
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

    def get_conn(self):
        return self.get_engine()

    def test_connection(self) -> tuple[bool, str]:
        from sqlalchemy import text

        try:
            with self.get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - the answer of a test, not a failure
            return False, sanitize_text(f"{type(exc).__name__}: {exc}", limit=500)
        return True, "AMOP database reachable"


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


LEGACY_CONN_TYPE = "http"  # carrier connections made before the carrier conn types existed


class CarrierHook(BaseHook):
    """One carrier account. Connection fields: host = API base URL (or extra ``base_url``),
    login = user / API key id, password = API key / secret; extra = engine knobs
    (``rate_limit_per_s``, ``timeout_s``, ``max_attempts``, ...) and carrier-specific settings, each
    listed with its description and default in the provider metadata (``bulkchange_provider``).

    The subclasses below are the registered conn types; this base accepts a connection of any
    type and builds the client of the integration it is given."""

    conn_name_attr = "carrier_conn_id"
    default_conn_name = "carrier_default"
    conn_type: ClassVar[str | None] = None
    hook_name = "Carrier account (bulkchange)"
    integration: ClassVar[Integration | None] = None  # the carrier API this hook's clients speak
    default_rate_per_s: ClassVar[float | None] = None  # when the connection sets no rate_limit_per_s
    probe_description: ClassVar[str] = ""

    def __init__(self, carrier_conn_id: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.carrier_conn_id = carrier_conn_id or self.default_conn_name

    # -- connection -> settings -> client ------------------------------------------------------------
    def get_settings(self) -> CarrierSettings:
        conn = self.get_connection(self.carrier_conn_id)
        if self.conn_type and conn.conn_type not in (self.conn_type, LEGACY_CONN_TYPE):
            raise ValueError(f"connection {self.carrier_conn_id!r} has conn type {conn.conn_type!r}; "
                             f"this account needs {self.conn_type!r} (or {LEGACY_CONN_TYPE!r})")
        extra = _extras(conn.extra_dejson or {}, conn.conn_type)
        base_url = extra.get("base_url") or conn.host or ""
        if base_url and "://" not in base_url:
            scheme = conn.schema or "https"
            port = f":{conn.port}" if conn.port else ""
            base_url = f"{scheme}://{base_url}{port}"
        if not base_url:
            raise ValueError(f"connection {self.carrier_conn_id} has no host / base_url")
        return CarrierSettings(base_url=base_url, login=conn.login, password=conn.password, extra=extra)

    def call_policy(self, settings: CarrierSettings, *, rate_share: int = 1) -> CallPolicy:
        """The account's rate limit and retries.

        Shared limit configured (env ``BULKCHANGE_RATE_LIMIT_REDIS_URL`` or extra
        ``rate_limit_redis_url``): one bucket in Redis keyed by extra ``rate_limit_key`` (default:
        the connection id) at the full rate, held across workers and concurrent runs. Otherwise an
        in-process bucket at the rate divided by ``rate_share`` (the batch tasks of one run allowed
        to call this account at once)."""
        extra = settings.extra
        redis_url = shared_rate_limit_url(settings)
        return CallPolicy(
            rate_limiter=make_rate_limiter(str(extra.get("rate_limit_key") or self.carrier_conn_id),
                                           settings.rate_limit_per_s or self.default_rate_per_s,
                                           share=rate_share, redis_url=redis_url,
                                           headroom=settings.rate_limit_headroom),
            retry=RetryPolicy(max_attempts=settings.max_attempts))

    def rate_limit_shared(self) -> bool:
        """True when the account's rate limit is one bucket every process draws from (Redis), so a
        task that calls the account beside running batches takes its calls out of the same rate."""
        try:
            return bool(shared_rate_limit_url(self.get_settings()))
        except Exception:  # noqa: BLE001 - no usable connection: nothing is shared (credentials_problem says why)
            return False

    def get_client(self, integration: Integration | None = None, *, rate_share: int = 1):
        """A client whose calls share one limiter for the account's ``rate_limit_per_s``
        (``call_policy``); ``integration`` defaults to the hook's own."""
        settings = self.get_settings()
        return self._build(integration or self.integration, settings,
                           self.call_policy(settings, rate_share=rate_share))

    def get_conn(self):
        """The configured client (the caller closes it)."""
        return self.get_client()

    def _build(self, integration: Integration | None, settings: CarrierSettings, policy: Any):
        if integration is None:
            raise ValueError(f"{type(self).__name__} needs the integration of connection {self.carrier_conn_id!r}")
        return build_client(integration, settings, policy=policy)

    def credentials_problem(self, integration: Integration | None = None) -> str | None:
        """None when the account's connection exists and holds what the carrier needs, else why."""
        try:
            settings = self.get_settings()
        except Exception as exc:  # AirflowNotFoundException and friends
            return (f"no usable carrier connection {self.carrier_conn_id!r}: "
                    f"{type(exc).__name__}: {exc}")
        if not settings.login or not settings.password:
            return f"carrier connection {self.carrier_conn_id!r} has no login or password"
        try:
            self._build(integration or self.integration, settings, None).close()
        except (ValueError, NotImplementedError) as exc:
            return f"carrier connection {self.carrier_conn_id!r}: {exc}"
        return None

    # -- the connection form's "Test" ---------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """One cheap authenticated read at the carrier: (True, what was read) or (False, the carrier's
        answer, scrubbed of every secret the client holds)."""
        try:
            client = self.get_conn()
        except Exception as exc:  # noqa: BLE001 - no host, no key, wrong conn type: the answer of a test
            return False, sanitize_text(f"{type(exc).__name__}: {exc}", limit=500)
        try:
            self.probe(client)
        except CarrierError as exc:
            return False, carrier_message(exc)
        except Exception as exc:  # noqa: BLE001
            return False, client.sanitize(f"{type(exc).__name__}: {exc}")
        finally:
            client.close()
        return True, f"{self.hook_name.split(' (')[0]} accepted the credentials ({self.probe_description})"

    def probe(self, client: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no test read")

    # -- the connection form (Airflow reads the provider metadata first; these give the same form) ---
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        behaviour = _connection_type(cls.conn_type)["ui-field-behaviour"]
        return {"hidden_fields": behaviour["hidden-fields"], "relabeling": behaviour["relabeling"],
                "placeholders": behaviour["placeholders"]}

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import IntegerField, PasswordField, StringField
        from wtforms.validators import Optional

        widgets = {}
        for name, field in _connection_type(cls.conn_type)["conn-fields"].items():
            schema = field["schema"]
            kind, widget = ((PasswordField, BS3PasswordFieldWidget()) if schema.get("format") == "password" else
                            (IntegerField if "integer" in schema["type"] else StringField, BS3TextFieldWidget()))
            widgets[name] = kind(lazy_gettext(field["label"]), widget=widget, validators=[Optional()],
                                 description=field["description"], default=schema.get("default"))
        return widgets


def shared_rate_limit_url(settings: CarrierSettings) -> str | None:
    """The Redis URL of the account's shared rate-limit bucket (connection extra
    ``rate_limit_redis_url``, else env ``BULKCHANGE_RATE_LIMIT_REDIS_URL``), or None: in-process shares."""
    shared = deployment_settings().rate_limit_redis_url
    return settings.extra.get("rate_limit_redis_url") or (shared.get_secret_value() if shared else None)


def _connection_type(conn_type: str | None) -> dict:
    from bulkchange_provider import CONNECTION_TYPES  # the provider distribution (provider/)

    if conn_type not in CONNECTION_TYPES:
        raise ValueError(f"no connection form for conn type {conn_type!r}")
    return CONNECTION_TYPES[conn_type]


def _extras(extra: dict[str, Any], conn_type: str | None) -> dict[str, Any]:
    """The connection's extras as the core reads them: a form field left empty is absent (its
    default applies), and the ``extra__<conn_type>__<name>`` keys of older forms become ``<name>``."""
    prefix = f"extra__{conn_type}__"
    out = {}
    for key, value in extra.items():
        if value in (None, ""):
            continue
        out[key[len(prefix):] if key.startswith(prefix) else key] = value
    return out


def carrier_message(exc: CarrierError) -> str:
    """The error with what the carrier answered: a refused login's message is only in the answer
    (scrubbed by the client before it reached the exception)."""
    answer = (exc.response_text or "").strip()
    return f"{exc}: {answer[:500]}" if isinstance(exc, AuthError) and answer else str(exc)


class JasperHook(CarrierHook):
    """Jasper Control Center (also POD19, T-Mobile Jasper and Rogers, which speak its API)."""

    conn_type = "jasper"
    hook_name = "Jasper Control Center (bulkchange)"
    default_conn_name = "jasper_default"
    integration = Integration.JASPER
    probe_description = "Search Devices, one device"

    def probe(self, client: Any) -> None:
        next(iter(client.iter_devices(page_size=1)), None)


class ThingSpaceHook(CarrierHook):
    conn_type = "thingspace"
    hook_name = "Verizon ThingSpace (bulkchange)"
    default_conn_name = "thingspace_default"
    integration = Integration.THINGSPACE
    probe_description = "OAuth and UWS session login, one page of List Devices"

    def probe(self, client: Any) -> None:
        client.list_page()


class TelegenceHook(CarrierHook):
    conn_type = "telegence"
    hook_name = "AT&T Telegence (bulkchange)"
    default_conn_name = "telegence_default"
    integration = Integration.TELEGENCE
    probe_description = "one line of the subscriber list"

    def probe(self, client: Any) -> None:
        next(iter(client.iter_services(page_size=1)), None)


class TealHook(CarrierHook):
    conn_type = "teal"
    hook_name = "Teal eSIM (bulkchange)"
    default_conn_name = "teal_default"
    integration = Integration.TEAL
    probe_description = "one eSIM of the list"

    def probe(self, client: Any) -> None:
        next(iter(client.iter_esims(page_size=1)), None)


class PondHook(CarrierHook):
    conn_type = "pond"
    hook_name = "POND IoT (bulkchange)"
    default_conn_name = "pond_default"
    integration = Integration.POND
    probe_description = "the distributor's package types"

    def probe(self, client: Any) -> None:
        client.package_types()


REVIO_DEFAULT_RATE_PER_S = 8.0  # Rev.io allows 500 calls/min per account


class RevioHook(CarrierHook):
    """A service provider's Rev.io billing account (docs/carriers/revio.md)."""

    conn_type = "revio"
    hook_name = "Rev.io billing (bulkchange)"
    default_conn_name = "revio_default"
    default_rate_per_s = REVIO_DEFAULT_RATE_PER_S
    probe_description = "a service search"

    def _build(self, integration: Integration | None, settings: CarrierSettings, policy: Any):
        return build_revio_client(settings, policy=policy)

    def probe(self, client: Any) -> None:
        client.find_services(customer_id=0, page_size=1)  # customer 0 does not exist: one page, no rows


CARRIER_HOOKS: dict[Integration, type[CarrierHook]] = {
    hook.integration: hook for hook in (JasperHook, ThingSpaceHook, TelegenceHook, TealHook, PondHook)}


def carrier_hook(service_provider_id: int, integration: Integration) -> CarrierHook:
    """The hook of the service provider's carrier account (connection ``carrier_sp_<N>``): chosen by
    the integration, so a connection of conn type ``http`` works as well as one of the carrier's."""
    hook = CARRIER_HOOKS.get(integration.family, CarrierHook)
    return hook(carrier_conn_id(service_provider_id))


def revio_client_or_problem(service_provider_id: int, *, rate_share: int = 1) -> tuple[Any, str | None]:
    """(Rev.io client, None), or (None, why there is none): a missing connection is not an error
    until a device change asks for a Rev.io service."""
    conn_id = revio_conn_id(service_provider_id)
    hook = RevioHook(conn_id)
    try:
        settings = hook.get_settings()
    except Exception as exc:  # AirflowNotFoundException and friends
        return None, f"no usable Rev.io connection {conn_id!r}: {type(exc).__name__}: {exc}"
    try:
        return hook._build(None, settings, hook.call_policy(settings, rate_share=rate_share)), None
    except ValueError as exc:
        return None, f"Rev.io connection {conn_id!r}: {exc}"


@dataclass
class TaskClients:
    carrier: Any | None  # the carrier account's client; None when the task needs none
    revio: Any | None  # the Rev.io client; None when not asked for or not usable
    revio_problem: str | None  # why there is no Rev.io client (None: there is one, or none was asked for)


@contextmanager
def carrier_clients(service_provider_id: int, integration: Integration, *, carrier: bool = True,
                    revio: bool = True, rate_share: int = 1) -> Iterator[TaskClients]:
    """A task's clients for one service provider's accounts, closed when the block ends."""
    with ExitStack() as stack:
        client = None
        if carrier:
            client = carrier_hook(service_provider_id, integration).get_client(integration, rate_share=rate_share)
            stack.callback(client.close)
        revio_client, problem = (revio_client_or_problem(service_provider_id, rate_share=rate_share) if revio
                                 else (None, None))
        if revio_client is not None:
            stack.callback(revio_client.close)
        yield TaskClients(client, revio_client, problem)
