"""The Teal simulator over HTTP: auth, asynchronous enable/disable with /operation-result (HTTP 102
or 202 while processing), per-entry errors, idempotent requestIds, reads, and the rate limit."""
import time

import pytest
import requests

from simulators.devices import make_iccid
from simulators.teal import make_eid

KEY, SECRET = "teal-key", "teal-secret-1"
ICCIDS = [make_iccid(800 + i) for i in range(4)]
EIDS = [make_eid(i) for i in ICCIDS]


@pytest.fixture
def teal(simulator):
    control = simulator.control("teal")
    control.reset()
    control.set_accounts({KEY: SECRET})
    control.seed_devices([{"iccid": ICCIDS[0], "status": "ONLINE"}, {"iccid": ICCIDS[1], "status": "WAITING"},
                          {"iccid": ICCIDS[2], "status": "STOPPED"}, {"iccid": ICCIDS[3], "status": "ONLINE"}])
    yield control
    control.reset()


@pytest.fixture
def api(simulator):
    root = simulator.url_for("teal")
    session = requests.Session()
    session.headers.update({"ApiKey": KEY, "ApiSecret": SECRET})

    def call(method, path, **kw):
        kw.setdefault("timeout", 10)
        return session.request(method, root + path, **kw)
    return call


def wait_result(api, request_id, timeout=10):
    deadline = time.monotonic() + timeout
    codes = []
    while time.monotonic() < deadline:
        r = api("GET", "/operation-result", params={"requestId": request_id})
        codes.append(r.status_code)
        if r.status_code == 200:
            return r.json(), codes
        time.sleep(0.05)
    raise AssertionError(f"operation {request_id} never finished: {codes[-5:]}")


def test_auth_headers_are_required_and_checked(simulator, teal):
    url = simulator.url_for("teal") + "/esims"
    assert requests.get(url, timeout=10).status_code == 401
    wrong = requests.get(url, headers={"ApiKey": KEY, "ApiSecret": "x"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json() == {"success": False, "errorMessage": "Invalid ApiKey or ApiSecret"}


def test_disable_then_enable_each_hit_their_own_endpoint(api, teal):
    teal.configure(operation_delay_s=3600)  # finishes when the test runs the carrier's clock forward
    r = api("POST", "/esims/disable", params={"requestId": "Disable_1"}, json={"entries": [EIDS[0], EIDS[3]]})
    assert r.status_code == 200 and r.json() == {"success": True, "requestId": "Disable_1"}
    first = api("GET", "/operation-result", params={"requestId": "Disable_1"})
    assert first.status_code == 102 and first.content == b""  # HTTP 102 reaches requests on loopback
    assert teal.run_scheduled(3600) == 1
    answer, codes = wait_result(api, "Disable_1")
    assert answer["success"] is True and answer["operationType"] == "DISABLE"
    assert [e["eid"] for e in answer["entries"]] == [EIDS[0], EIDS[3]]
    assert teal.device(ICCIDS[0])["deviceStatus"] == "STOPPED" and teal.device(ICCIDS[0])["suspended"] is True
    api("POST", "/esims/enable", params={"requestId": "Enable_1"}, json={"entries": [EIDS[0]]})
    teal.run_scheduled(3600)
    answer, _ = wait_result(api, "Enable_1")
    assert answer["operationType"] == "ENABLE" and teal.device(ICCIDS[0])["deviceStatus"] == "ONLINE"


def test_processing_can_be_answered_as_202(api, teal):
    teal.configure(operation_delay_s=3600, processing_status=202)
    api("POST", "/esims/enable", params={"requestId": "E202"}, json={"entries": [EIDS[2]]})
    r = api("GET", "/operation-result", params={"requestId": "E202"})
    assert r.status_code == 202 and r.json()["status"] == "PROCESSING"
    teal.run_scheduled(3600)
    answer, codes = wait_result(api, "E202")
    assert codes == [200] and answer["success"] is True
    with pytest.raises(requests.HTTPError):
        teal.configure(processing_status=204)


def test_failed_entries_are_errors_not_successes(api, teal):
    teal.configure(operation_delay_s=0.0, reject_eids=[EIDS[1]])
    api("POST", "/esims/disable", params={"requestId": "D2"}, json={"entries": [EIDS[0], EIDS[1], "8904" + "0" * 28]})
    answer, _ = wait_result(api, "D2")
    assert answer["success"] is False
    ok, rejected, unknown = answer["entries"]
    assert ok["success"] is True and rejected["success"] is False and "injected" in rejected["errorMessage"]
    assert "not found" in unknown["errorMessage"]
    assert teal.device(ICCIDS[1])["deviceStatus"] == "WAITING"  # not applied


def test_request_ids_are_required_and_replays_are_idempotent(api, teal):
    assert api("POST", "/esims/enable", json={"entries": [EIDS[2]]}).status_code == 400
    assert api("POST", "/esims/enable", params={"requestId": "x" * 33}, json={"entries": [EIDS[2]]}).status_code == 400
    assert api("POST", "/esims/enable", params={"requestId": "R1"}, json={"entries": []}).status_code == 400
    assert api("POST", "/esims/enable", params={"requestId": "R1"}, json={"entries": [EIDS[2]]}).status_code == 200
    assert api("POST", "/esims/enable", params={"requestId": "R1"}, json={"entries": [EIDS[2]]}).status_code == 200
    clash = api("POST", "/esims/disable", params={"requestId": "R1"}, json={"entries": [EIDS[2]]})
    assert clash.status_code == 409
    assert len([op for op in teal.request("GET", "/operations") if op["requestId"] == "R1"]) == 1
    teal.configure(max_entries=1)
    assert api("POST", "/esims/enable", params={"requestId": "R2"}, json={"entries": EIDS[:2]}).status_code == 400
    assert api("GET", "/operation-result", params={"requestId": "unknown"}).status_code == 404


def test_reads_list_and_info(api, teal):
    page = api("GET", "/esims", params={"limit": 3, "offset": 0}).json()
    assert page["total"] == 4 and len(page["entries"]) == 3
    assert api("GET", "/esims", params={"limit": 101}).status_code == 400
    info = api("GET", "/esims/info", params={"eid": EIDS[2]}).json()
    assert info["iccid"] == ICCIDS[2] and info["deviceStatus"] == "STOPPED"
    assert api("GET", "/esims/info", params={"eid": "nope"}).status_code == 404


def test_rate_limit_answers_429_with_retry_after(api, teal):
    teal.configure(rate_limit=2)
    limited = [r for r in (api("GET", "/esims") for _ in range(5)) if r.status_code == 429]
    assert limited and float(limited[0].headers["Retry-After"]) > 0
    assert limited[0].json()["success"] is False


def test_cli_seeds_telegence_lines_and_teal_esims():
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "include")}
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "serve", "--port", "0", "--seed-telegence", "2",
                             "--seed-teal", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = re.search(r"on (http://\S+)", proc.stdout.readline()).group(1)
        lines = requests.get(f"{base}/telegence/_control/devices", timeout=5).json()
        esims = requests.get(f"{base}/teal/_control/devices", timeout=5).json()
        assert lines["total"] == 2 and {d["subscriberStatus"] for d in lines["devices"]} == {"A"}
        assert all(d["msisdn"] for d in lines["devices"]) and lines["devices"][0]["iccid"] == make_iccid(1)
        assert esims["total"] == 3 and {d["deviceStatus"] for d in esims["devices"]} == {"ONLINE"}
        r = requests.get(f"{base}/teal/api/v1/esims/info", params={"eid": make_eid(make_iccid(3))},
                         headers={"ApiKey": "demo-teal-key", "ApiSecret": "demo-teal-secret"}, timeout=5)
        assert r.status_code == 200 and r.json()["iccid"] == make_iccid(3)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
