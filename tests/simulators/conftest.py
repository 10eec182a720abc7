"""Fixtures for the simulator tests: the session-wide ``simulator`` (tests/conftest.py), reset before
each test, with two Jasper accounts and five seeded devices."""
import base64
import http.server
import json
import threading
import time

import pytest
import requests

from simulators.devices import demo_devices, make_iccid

ACCOUNTS = {"sim": "sim-key", "other": "other-key"}
ICCIDS = [make_iccid(i) for i in range(1, 6)]


def basic(user: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()


@pytest.fixture
def jasper(simulator):
    """The Jasper control client, freshly reset, with ICCIDS seeded (ACTIVATED, IOT-1GB)."""
    control = simulator.control("jasper")
    control.reset()
    control.set_accounts(ACCOUNTS)
    control.seed_devices(demo_devices(5, status="ACTIVATED", ratePlan="IOT-1GB", communicationPlan="COMM-1"))
    yield control
    control.reset()
    control.close()


class Api:
    """Authenticated calls to the Jasper REST root as one account."""

    def __init__(self, root: str, user: str = "sim"):
        self.root = root
        self.session = requests.Session()
        self.session.headers["Authorization"] = basic(user, ACCOUNTS[user])

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", 10)
        return self.session.request(method, self.root + path, **kw)

    def close(self):
        self.session.close()


@pytest.fixture
def api(simulator, jasper):
    client = Api(simulator.url_for("jasper"))
    yield client
    client.close()


@pytest.fixture
def api_other(simulator, jasper):
    client = Api(simulator.url_for("jasper"), "other")
    yield client
    client.close()


class CallbackListener:
    """A loopback HTTP server recording the JSON body of every POST it receives (``received``) at ``url``."""

    def __init__(self):
        self.received: list = []
        received = self.received

        class Listener(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Listener)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/carrier"

    def wait_for(self, count: int, timeout: float = 10) -> None:
        """Wait (at most ``timeout`` seconds) until ``count`` bodies have arrived."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def callback_listener():
    listener = CallbackListener()
    yield listener
    listener.server.shutdown()
    listener.server.server_close()
