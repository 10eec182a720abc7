"""A small client for one simulated carrier's control API (tests, demo, benchmarks).

    control = SimulatorControl("http://127.0.0.1:8700/jasper")   # the carrier's prefix URL
    control.reset(); control.seed_devices([{"iccid": ...}]); control.configure(rate_limit=5)
    control.calls(iccid=..., method="PUT"); control.stats()

Every method raises ``requests.HTTPError`` on a non-2xx answer (e.g. ``device()`` of an unknown ICCID,
or ``configure()`` with an invalid knob: the 400 body says why).
"""
from __future__ import annotations

from typing import Any

import requests


class SimulatorControl:
    def __init__(self, carrier_base_url: str, timeout: float = 60.0):
        self.base = carrier_base_url.rstrip("/") + "/_control"
        self.session = requests.Session()
        self.timeout = timeout

    def request(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.session.request(method, self.base + path, timeout=self.timeout, **kw)
        if resp.status_code >= 400:
            raise requests.HTTPError(f"{resp.status_code} from {method} {self.base + path}: {resp.text[:500]}",
                                     response=resp)
        return resp.json()

    def reset(self) -> None:
        self.request("POST", "/reset")

    def seed_devices(self, devices: list[dict]) -> dict:
        """Add or replace devices; returns ``{"seeded": n, "total": devices now held}``."""
        return self.request("POST", "/devices", json=list(devices))

    def device(self, iccid: str) -> dict:
        return self.request("GET", f"/devices/{iccid}")

    def devices(self, limit: int = 100) -> dict:
        """``{"total": n, "devices": [first `limit` devices]}``."""
        return self.request("GET", "/devices", params={"limit": limit})

    def configure(self, **knobs: Any) -> dict:
        """Merge knobs into the carrier's config; returns the whole config."""
        return self.request("PUT", "/config", json=knobs)

    def config(self) -> dict:
        return self.request("GET", "/config")

    def set_accounts(self, accounts: dict[str, str]) -> list[str]:
        return self.request("PUT", "/accounts", json=accounts)["accounts"]

    def calls(self, **filters: Any) -> list[dict]:
        """Filters: iccid, method, path_contains, since, until (epoch seconds), status, account, fault, limit."""
        return self.request("GET", "/calls", params={k: v for k, v in filters.items() if v is not None})

    def stats(self) -> dict:
        return self.request("GET", "/stats")

    def run_scheduled(self, within_s: float) -> int:
        """Run now what the carrier would do within ``within_s`` seconds (async operations, activations)."""
        return self.request("POST", "/scheduled/run", params={"within_s": within_s})["ran"]

    # -- Jasper extras ------------------------------------------------------------------------------
    def set_rate_plans(self, plans: list[dict]) -> list[dict]:
        return self.request("PUT", "/rateplans", json=plans)["ratePlans"]

    def add_rate_plans(self, plans: list[dict]) -> list[dict]:
        """Add plans to the account's list (by name; a known name is replaced)."""
        current = {p["name"]: p for p in self.request("GET", "/rateplans")["ratePlans"]}
        current.update({p["name"]: p for p in plans})
        return self.set_rate_plans(list(current.values()))

    def set_communication_plans(self, plans: list[str | dict]) -> list[dict]:
        return self.request("PUT", "/communicationplans", json=plans)["communicationPlans"]

    def add_communication_plans(self, names: list[str]) -> list[dict]:
        current = [p["name"] for p in self.request("GET", "/communicationplans")["communicationPlans"]]
        return self.set_communication_plans(current + [n for n in names if n and n not in current])

    # -- ThingSpace extras ---------------------------------------------------------------------------
    def add_service_plans(self, names: list[str]) -> list[str]:
        """Add service plans to the ThingSpace account's list."""
        current = self.request("GET", "/serviceplans")["servicePlans"]
        plans = current + [n for n in names if n and n not in current]
        return self.request("PUT", "/serviceplans", json=plans)["servicePlans"]

    def scheduled_edits(self, iccid: str | None = None) -> list[dict]:
        return self.request("GET", "/scheduled_edits", params={"iccid": iccid} if iccid else None)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "SimulatorControl":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
