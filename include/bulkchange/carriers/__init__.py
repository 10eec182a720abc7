"""Carrier clients: one plain HTTP client per carrier behind the same small interface.

``build_client`` turns connection settings (whatever holds them: an Airflow connection, a test)
into a client for an integration, so adding a carrier is one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bulkchange.models import Integration


@dataclass
class CarrierSettings:
    """Connection settings for one carrier account (credentials included; never log this)."""

    base_url: str
    login: str | None = None
    password: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print credentials
        return f"CarrierSettings(base_url={self.base_url!r}, login={self.login!r}, password=***)"

    # Engine knobs carried on the connection's extra (README: Configuration)
    @property
    def rate_limit_per_s(self) -> float | None:
        value = self.extra.get("rate_limit_per_s")
        return float(value) if value not in (None, "") else None

    @property
    def timeout_s(self) -> float:
        return float(self.extra.get("timeout_s", 30))

    @property
    def max_attempts(self) -> int:
        return int(self.extra.get("max_attempts", 3))


def build_client(integration: Integration, settings: CarrierSettings, *, policy: Any = None):
    family = integration.family
    if family == Integration.JASPER:
        from bulkchange.carriers.jasper import JasperClient

        return JasperClient(settings.base_url, settings.login or "", settings.password or "",
                            policy=policy, timeout=settings.timeout_s)
    if family == Integration.THINGSPACE:
        from bulkchange.carriers.thingspace import ThingSpaceClient

        extra = settings.extra
        return ThingSpaceClient(settings.base_url, settings.login or "", settings.password or "",
                                extra.get("uws_username", ""), extra.get("uws_password", ""),
                                extra.get("account_name", ""), policy=policy, timeout=settings.timeout_s)
    raise NotImplementedError(f"no client for carrier {integration.value} yet")
