"""Carrier clients: one plain HTTP client per carrier behind the same small interface.

``build_client`` turns connection settings (whatever holds them: an Airflow connection, a test)
into a client for an integration, so adding a carrier is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bulkchange.models import Integration


# A carrier counts its rate limit on arrival: requests spaced exactly 1/rate apart can arrive a few
# milliseconds bunched (the network, a busy host) and be refused. Pacing 2 % below the limit means
# any `rate` consecutive requests span 1.02 s: 20 ms of such jitter per second is absorbed.
DEFAULT_RATE_LIMIT_HEADROOM = 0.02


@dataclass
class CarrierSettings:
    """Connection settings for one carrier account (credentials included; never log this)."""

    base_url: str
    login: str | None = None
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print credentials
        return f"CarrierSettings(base_url={self.base_url!r}, login={self.login!r}, password=***)"

    # Engine knobs carried on the connection's extra (docs/configuration.md)
    @property
    def rate_limit_per_s(self) -> float | None:
        value = self.extra.get("rate_limit_per_s")
        return float(value) if value not in (None, "") else None

    @property
    def rate_limit_headroom(self) -> float:
        """The share of ``rate_limit_per_s`` left unused (extra ``rate_limit_headroom``, default
        ``DEFAULT_RATE_LIMIT_HEADROOM``): see ``shared_limiter.make_rate_limiter``."""
        value = self.extra.get("rate_limit_headroom")
        headroom = DEFAULT_RATE_LIMIT_HEADROOM if value in (None, "") else float(value)
        if not 0 <= headroom < 0.5:
            raise ValueError(f"rate_limit_headroom must be at least 0 and below 0.5, got {value!r}")
        return headroom

    @property
    def timeout_s(self) -> float:
        return float(self.extra.get("timeout_s", 30))

    @property
    def max_attempts(self) -> int:
        return int(self.extra.get("max_attempts", 3))

    @property
    def max_response_bytes(self) -> int:
        """The largest carrier answer read (extra ``max_response_mb``, default 16 MiB)."""
        from bulkchange.carriers.http import DEFAULT_MAX_BYTES

        value = self.extra.get("max_response_mb")
        return int(float(value) * 1024 * 1024) if value not in (None, "") else DEFAULT_MAX_BYTES


def build_client(integration: Integration, settings: CarrierSettings, *, policy: Any = None):
    """The carrier's client, its every request bounded by ``timeout_s`` (overall) and
    ``max_response_mb`` (carriers/http.py)."""
    client = _build_client(integration, settings, policy=policy)
    client.session.max_bytes = settings.max_response_bytes
    return client


def _build_client(integration: Integration, settings: CarrierSettings, *, policy: Any = None):
    family = integration.family
    if family == Integration.JASPER:
        from bulkchange.carriers.jasper import JasperClient

        return JasperClient(settings.base_url, settings.login or "", settings.password or "",
                            policy=policy, timeout=settings.timeout_s)
    if family == Integration.THINGSPACE:
        from bulkchange.carriers.thingspace import ThingSpaceClient

        extra = settings.extra
        client = ThingSpaceClient(settings.base_url, settings.login or "", settings.password or "",
                                  extra.get("uws_username", ""), extra.get("uws_password", ""),
                                  extra.get("account_name", ""), policy=policy, timeout=settings.timeout_s)
        if extra.get("unknown_outcome_wait_s") not in (None, ""):
            client.unknown_outcome_wait_s = float(extra["unknown_outcome_wait_s"])
        return client
    if family == Integration.TELEGENCE:
        from bulkchange.carriers.telegence import ACTIVATION_PATH, SERVICE_PATH, TelegenceClient

        extra = settings.extra
        return TelegenceClient(settings.base_url, settings.login or "", settings.password or "",
                               service_path=extra.get("service_path") or SERVICE_PATH,
                               activation_path=extra.get("activation_path") or ACTIVATION_PATH,
                               billing_account=extra.get("billing_account_number"),
                               ip_paths={k: extra[f"ip_{k}_path"] for k in ("addresses", "provisioning", "status")
                                         if extra.get(f"ip_{k}_path")},
                               policy=policy, timeout=settings.timeout_s)
    if family == Integration.TEAL:
        from bulkchange.carriers.teal import TealClient

        extra = settings.extra
        paths = {k: extra[k] for k in ("enable_path", "disable_path", "operation_result_path", "assign_plan_path",
                                   "plans_path")
                 if extra.get(k)}
        return TealClient(settings.base_url, settings.login or "", settings.password or "",
                          callback_url=extra.get("callback_url"), policy=policy, timeout=settings.timeout_s, **paths)
    if family == Integration.POND:
        from bulkchange.carriers.pond import DEFAULT_PATHS, PondClient

        extra = settings.extra
        return PondClient(settings.base_url, settings.login or "", settings.password or "",
                          str(extra.get("distributor_id") or ""),
                          paths={k: extra[k] for k in DEFAULT_PATHS if extra.get(k)},
                          policy=policy, timeout=settings.timeout_s)
    raise NotImplementedError(f"no client for carrier {integration.value} yet")


def build_revio_client(settings: CarrierSettings, *, policy: Any = None):
    """The Rev.io billing client of a service provider (connection ``revio_sp_<N>``, docs/carriers/revio.md):
    login ``user@clientcode`` (or login ``user`` + extra ``client_code``), password, extra
    ``subscription_key``; optional extra ``services_path`` / ``service_products_path``."""
    from bulkchange.carriers.revio import RevioClient

    extra = settings.extra
    paths = {k: extra[k] for k in ("services_path", "service_products_path") if extra.get(k)}
    client = RevioClient(settings.base_url, settings.login or "", str(extra.get("client_code") or ""),
                         settings.password or "", str(extra.get("subscription_key") or ""),
                         policy=policy, timeout=settings.timeout_s, **paths)
    client.session.max_bytes = settings.max_response_bytes
    return client
