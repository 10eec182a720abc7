"""The framework with a toy carrier of its own, served over real HTTP: how a later carrier
(ThingSpace-like: token endpoint, asynchronous activation, its own error shape) plugs in."""
import time

import pytest
import requests
from fastapi import Request

from simulators.core import Call, SimulatedCarrier, format_retry_after, max_per_second
from simulators.devices import make_iccid
from simulators.server import SimulatorServer

ICCID = make_iccid(1)


class ToyCarrier(SimulatedCarrier):
    name = "toy"
    prefix = "/toy"
    api_root = "/api/v2"
    rate_limit_message = ("Too many requests", "TOO_MANY")

    def error_body(self, status, message, code):
        return {"errorCode": code or f"HTTP_{status}", "errorMessage": message, "toy": True}

    def authenticate(self, request: Request) -> str:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        for user, secret in self.accounts.items():
            if token == f"token-{user}-{secret}":
                return user
        raise self.error(401, "bad token", "UNAUTHORIZED")

    def add_routes(self):
        @self.route("POST", "/login", auth=False)
        def login(call: Call):
            body = call.body or {}
            if self.accounts.get(body.get("user")) != body.get("secret"):
                raise self.error(400, "bad login", "LOGIN")
            return {"token": f"token-{body['user']}-{body['secret']}"}

        @self.route("POST", "/devices/actions/activate")
        def activate(call: Call):
            iccids = [d["iccid"] for d in call.body["devices"]]
            call.iccids = iccids
            for iccid in iccids:
                self.devices[iccid]["state"] = "pending activation"
                self.schedule_device_update(iccid, 0.5, {"state": "active"})
            return {"requestId": "r-1"}

        @self.route("GET", "/devices/{iccid}")
        async def get_device(call: Call):
            dev = self.devices.get(call.iccid)
            if dev is None:
                raise self.error(404, "no such device", "NOT_FOUND")
            return dict(dev)


@pytest.fixture(scope="module")
def toy():
    with SimulatorServer(carriers=[ToyCarrier(accounts={"u": "s"})]) as sims:
        yield sims


def test_a_new_carrier_plugs_in(toy):
    root = toy.url_for("toy")
    assert root == f"{toy.base_url}/toy/api/v2"
    control = toy.control("toy")
    control.reset()
    control.seed_devices([{"iccid": make_iccid(i), "state": "preactive"} for i in (1, 2)])
    assert requests.get(f"{root}/devices/{ICCID}", timeout=5).json() == \
        {"errorCode": "UNAUTHORIZED", "errorMessage": "bad token", "toy": True}
    token = requests.post(f"{root}/login", json={"user": "u", "secret": "s"}, timeout=5).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.post(f"{root}/devices/actions/activate", headers=auth, timeout=5,
                      json={"devices": [{"iccid": make_iccid(1)}, {"iccid": make_iccid(2)}]})
    assert r.json() == {"requestId": "r-1"}
    assert requests.get(f"{root}/devices/{ICCID}", headers=auth, timeout=5).json()["state"] == "pending activation"
    time.sleep(0.6)
    assert requests.get(f"{root}/devices/{ICCID}", headers=auth, timeout=5).json()["state"] == "active"
    assert control.device(make_iccid(2))["state"] == "active"
    # a multi-device call is found under each of its ICCIDs
    [activation] = control.calls(iccid=make_iccid(2))
    assert activation["iccids"] == [make_iccid(1), make_iccid(2)] and activation["account"] == "u"
    assert control.calls(path_contains="/login")[0]["account"] is None


def test_framework_limits_use_the_carriers_error_shape(toy):
    root = toy.url_for("toy")
    control = toy.control("toy")
    control.reset()
    control.seed_devices([{"iccid": ICCID}])
    control.configure(rate_limit=1)
    auth = {"Authorization": "Bearer token-u-s"}
    assert requests.get(f"{root}/devices/{ICCID}", headers=auth, timeout=5).status_code == 200
    r = requests.get(f"{root}/devices/{ICCID}", headers=auth, timeout=5)
    assert r.status_code == 429 and r.json()["errorCode"] == "TOO_MANY" and r.json()["toy"] is True
    control.configure(rate_limit=None, fail_iccids={ICCID: 503})
    r = requests.get(f"{root}/devices/{ICCID}", headers=auth, timeout=5)
    assert r.status_code == 503 and r.json()["toy"] is True


def test_helpers():
    assert [format_retry_after(x) for x in (0.2, 0.001, 0.351, 1.0, 1.5)] == ["0.2", "0.01", "0.36", "1", "1.5"]
    assert [format_retry_after(x, integer=True) for x in (0.2, 1.0, 1.01)] == ["1", "1", "2"]
    assert max_per_second([0.0, 0.5, 0.99, 1.0, 1.2, 3.0]) == 4
    assert max_per_second([]) == 0
