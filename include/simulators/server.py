"""Serve every simulated carrier from one FastAPI app on one loopback port.

``SimulatorServer`` runs uvicorn in a background thread (tests, demo, benchmarks);
``python -m simulators serve`` runs the same app in the foreground.

    with SimulatorServer(latency_ms=20, jasper={"rate_limit": 5}) as sims:
        sims.url_for("jasper")            # http://127.0.0.1:<port>/jasper/rws/api/v1
        sims.control("jasper").seed_devices([...])

Options: top-level knob keywords (``latency_ms=``, ``rate_limit=`` ...) apply to every carrier; a
keyword named after a carrier (``jasper={...}``) holds that carrier's constructor options (its knobs,
which win over the top-level ones, plus carrier options such as ``accounts`` or ``rate_plans``);
``jasper_accounts=`` is a shortcut for ``jasper={"accounts": ...}``.
"""
from __future__ import annotations

import http.client
import importlib
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from simulators.client import SimulatorControl
from simulators.core import SimulatedCarrier

# carrier name -> "module:Class"; later carriers register here
CARRIER_CLASSES: dict[str, str] = {
    "jasper": "simulators.jasper:JasperSimulator",
    "pond": "simulators.pond:PondSimulator",
    "revio": "simulators.revio:RevioSimulator",
    "telegence": "simulators.telegence:TelegenceSimulator",
    "teal": "simulators.teal:TealSimulator",
    "thingspace": "simulators.thingspace:ThingSpaceSimulator",
}


def carrier_class(name: str) -> type[SimulatedCarrier]:
    module, _, cls = CARRIER_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def build_app(carriers: dict[str, SimulatedCarrier]) -> FastAPI:
    app = FastAPI(title="bulkchange carrier simulators", docs_url="/docs", redoc_url=None)
    for carrier in carriers.values():
        app.include_router(carrier.router)
        app.include_router(carrier.control)

    @app.get("/health")
    async def health():
        return {"ok": True, "carriers": sorted(carriers)}

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)  # connections queue from now on, even before uvicorn serves
    sock.set_inheritable(True)
    return sock


class SimulatorServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 carriers: list[str | SimulatedCarrier] | None = None,
                 jasper_accounts: dict[str, str] | None = None, **options: Any):
        """``carriers``: names from ``CARRIER_CLASSES`` (default: all of them) and/or ready-made
        ``SimulatedCarrier`` instances (served as they are; the knob options do not apply to them)."""
        self.host = host
        wanted = list(carriers or CARRIER_CLASSES)
        per_carrier = {n: dict(options.pop(n, None) or {}) for n in list(CARRIER_CLASSES)}
        if jasper_accounts is not None:
            per_carrier["jasper"].setdefault("accounts", jasper_accounts)
        global_knobs = options  # whatever is left: knobs for every carrier
        self.carriers: dict[str, SimulatedCarrier] = {}
        for item in wanted:
            if isinstance(item, SimulatedCarrier):
                self.carriers[item.name] = item
            else:
                self.carriers[item] = carrier_class(item)(**{**global_knobs, **per_carrier[item]})
        self.app = build_app(self.carriers)
        self._sock = bind_socket(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- addresses
    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url_for(self, carrier: str) -> str:
        """The carrier's API root, to be used as a client's base URL."""
        c = self.carriers[carrier]
        return self.base_url + c.prefix + c.api_root

    def control_url(self, carrier: str) -> str:
        return self.base_url + self.carriers[carrier].prefix

    def control(self, carrier: str) -> SimulatorControl:
        return SimulatorControl(self.control_url(carrier))

    def carrier(self, name: str) -> SimulatedCarrier:
        """The in-process simulator object (for direct inspection; prefer the control API)."""
        return self.carriers[name]

    def set_account(self, carrier: str, username: str, secret: str) -> None:
        self.carriers[carrier].set_accounts({username: secret})

    # ---------------------------------------------------------------- lifecycle
    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                              timeout_graceful_shutdown=2, timeout_keep_alive=30, backlog=2048)

    def run(self) -> None:
        """Serve in the calling thread until interrupted (Ctrl-C / SIGTERM in the main thread)."""
        self._server = uvicorn.Server(self._config())
        try:
            self._server.run(sockets=[self._sock])
        finally:
            self._sock.close()

    def start(self, timeout: float = 20.0) -> "SimulatorServer":
        if self._thread is not None:
            return self
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"carrier-simulators:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._thread.is_alive():
                raise RuntimeError(f"simulators on {self.base_url} exited during startup")
            if self._server.started and self._healthy():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"simulators did not start on {self.base_url} within {timeout}s")

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=1)
            try:
                conn.request("GET", "/health")
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except OSError:
            return False

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=5)
            self._thread = None
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> "SimulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
