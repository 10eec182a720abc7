"""A small Python client for a simulated carrier's control API (tests, demo, benchmarks)."""
from __future__ import annotations

from typing import Any

import requests


class SimulatorControl:
    def __init__(self, carrier_base_url: str, timeout: float = 30.0):
        self.base = carrier_base_url.rstrip("/") + "/_control"
        self.session = requests.Session()
        self.timeout = timeout

    def _req(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.session.request(method, self.base + path, timeout=self.timeout, **kw)
        resp.raise_for_status()
        return resp.json()

    def reset(self) -> None:
        self._req("POST", "/reset")

    def seed_devices(self, devices: list[dict]) -> dict:
        return self._req("POST", "/devices", json=devices)

    def device(self, iccid: str) -> dict:
        return self._req("GET", f"/devices/{iccid}")

    def configure(self, **knobs: Any) -> dict:
        return self._req("PUT", "/config", json=knobs)

    def config(self) -> dict:
        return self._req("GET", "/config")

    def calls(self, **filters: Any) -> list[dict]:
        return self._req("GET", "/calls", params={k: v for k, v in filters.items() if v is not None})

    def stats(self) -> dict:
        return self._req("GET", "/stats")
