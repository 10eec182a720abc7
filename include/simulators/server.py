"""Serve every simulated carrier from one FastAPI app on one loopback port.

``SimulatorServer`` runs uvicorn in a background thread (tests, demo, benchmarks);
``python -m simulators serve`` runs it in the foreground.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from simulators.client import SimulatorControl
from simulators.core import SimulatedCarrier
from simulators.jasper import JasperSimulator

API_ROOTS = {"jasper": "/jasper/rws/api/v1"}


def build_app(carriers: dict[str, SimulatedCarrier]) -> FastAPI:
    app = FastAPI(title="bulkchange carrier simulators", docs_url="/docs", redoc_url=None)
    for carrier in carriers.values():
        app.include_router(carrier.router)
        app.include_router(carrier.control)

    @app.get("/health")
    async def health():
        return {"ok": True, "carriers": sorted(carriers)}

    return app


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class SimulatorServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, jasper_accounts: dict[str, str] | None = None,
                 **knobs: Any):
        self.host = host
        self.port = port or _free_port(host)
        self.carriers: dict[str, SimulatedCarrier] = {"jasper": JasperSimulator(accounts=jasper_accounts, **knobs)}
        self.app = build_app(self.carriers)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url_for(self, carrier: str) -> str:
        """The carrier's API root, as a client's base URL."""
        return self.base_url + API_ROOTS[carrier]

    def control(self, carrier: str) -> SimulatorControl:
        return SimulatorControl(f"{self.base_url}/{carrier}")

    def set_account(self, carrier: str, username: str, secret: str) -> None:
        self.carriers[carrier].accounts[username] = secret

    def start(self, timeout: float = 20.0) -> "SimulatorServer":
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="carrier-simulators", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"simulators did not start on {self.base_url}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
