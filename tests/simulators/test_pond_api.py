"""The POND simulator over HTTP: auth, distributor scoping, the package life cycle and service status."""
import base64

import pytest
import requests

from simulators.devices import make_iccid

DIST = "1001"
ICCIDS = [make_iccid(300 + i) for i in range(3)]


@pytest.fixture
def pond(simulator):
    control = simulator.control("pond")
    control.reset()
    control.set_accounts({"pond-user": "pond-secret"})
    control.seed_devices([
        {"iccid": ICCIDS[0], "serviceStatus": "DISABLED"},
        {"iccid": ICCIDS[1], "packages": [{"packageTypeId": "101", "status": "ACTIVE"}]},
        {"iccid": ICCIDS[2], "distributorId": "2002"},
    ])
    yield control
    control.reset()
    control.close()


@pytest.fixture
def api(simulator, pond):
    session = requests.Session()
    session.headers["Authorization"] = "Basic " + base64.b64encode(b"pond-user:pond-secret").decode()
    root = simulator.url_for("pond")

    def call(method, path, **kw):
        kw.setdefault("timeout", 10)
        return session.request(method, root + path, **kw)

    yield call
    session.close()


def test_auth_is_required(simulator, pond):
    root = simulator.url_for("pond")
    assert requests.get(f"{root}/{DIST}/sims/{ICCIDS[0]}", timeout=10).status_code == 401
    bad = "Basic " + base64.b64encode(b"pond-user:wrong").decode()
    resp = requests.get(f"{root}/{DIST}/sims/{ICCIDS[0]}", headers={"Authorization": bad}, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "UNAUTHORIZED"


def test_sims_are_scoped_to_their_distributor(api):
    assert api("GET", f"/{DIST}/sims/{ICCIDS[0]}").json()["serviceStatus"] == "DISABLED"
    assert api("GET", f"/{DIST}/sims/{ICCIDS[2]}").status_code == 404
    assert api("GET", f"/2002/sims/{ICCIDS[2]}").status_code == 200
    assert api("GET", f"/{DIST}/sims/{make_iccid(999)}").status_code == 404


def test_package_life_cycle_leaves_one_active(api, pond):
    iccid = ICCIDS[1]
    old = api("GET", f"/{DIST}/sims/{iccid}/packages").json()["packages"]
    assert [p["status"] for p in old] == ["ACTIVE"]
    added = api("POST", f"/{DIST}/sims/{iccid}/packages", json={"packageTypeId": "102"})
    assert added.status_code == 201
    new = added.json()
    assert new["status"] == "PENDING" and new["packageTypeId"] == "102" and new["packageId"]
    assert api("PUT", f"/{DIST}/sims/{iccid}/packages/{new['packageId']}/status",
               json={"status": "ACTIVE"}).json()["status"] == "ACTIVE"
    assert api("PUT", f"/{DIST}/sims/{iccid}/packages/{old[0]['packageId']}/status",
               json={"status": "TERMINATED"}).json()["status"] == "TERMINATED"
    state = pond.device(iccid)
    assert sorted((p["packageTypeId"], p["status"]) for p in state["packages"]) == [
        ("101", "TERMINATED"), ("102", "ACTIVE")]
    # a terminated package cannot come back
    back = api("PUT", f"/{DIST}/sims/{iccid}/packages/{old[0]['packageId']}/status", json={"status": "ACTIVE"})
    assert back.status_code == 409 and back.json()["error"]["code"] == "PACKAGE_TERMINATED"


def test_package_requests_are_validated(api):
    iccid = ICCIDS[0]
    assert api("POST", f"/{DIST}/sims/{iccid}/packages", json={}).status_code == 400
    unknown = api("POST", f"/{DIST}/sims/{iccid}/packages", json={"packageTypeId": "999"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "UNKNOWN_PACKAGE_TYPE"
    assert api("PUT", f"/{DIST}/sims/{iccid}/packages/123/status", json={"status": "ACTIVE"}).status_code == 404
    pkg = api("POST", f"/{DIST}/sims/{iccid}/packages", json={"packageTypeId": "101"}).json()
    assert api("PUT", f"/{DIST}/sims/{iccid}/packages/{pkg['packageId']}/status",
               json={"status": "PAUSED"}).status_code == 400
    types = api("GET", f"/{DIST}/package-types").json()["packageTypes"]
    assert {t["packageTypeId"] for t in types} == {"101", "102", "103"}


def test_service_status_enable_disable(api, pond):
    iccid = ICCIDS[1]  # services are enabled on a SIM with an ACTIVE package (contracts/pond.md)
    assert api("PUT", f"/{DIST}/sims/{iccid}/services/status", json={"enable": False}).json()["serviceStatus"] == \
        "DISABLED"
    assert api("PUT", f"/{DIST}/sims/{iccid}/services/status", json={"enable": True}).json() == {
        "iccid": iccid, "serviceStatus": "ENABLED"}
    assert pond.device(iccid)["serviceStatus"] == "ENABLED"
    assert api("PUT", f"/{DIST}/sims/{iccid}/services/status", json={"enable": "yes"}).status_code == 400
    calls = pond.calls(iccid=iccid, method="PUT")
    assert [c["status"] for c in calls] == [200, 200, 400]


def test_seed_refuses_bad_devices(pond):
    with pytest.raises(requests.HTTPError):
        pond.seed_devices([{"iccid": make_iccid(400), "serviceStatus": "MAYBE"}])
    with pytest.raises(requests.HTTPError):
        pond.seed_devices([{"iccid": make_iccid(401), "packages": [{"packageTypeId": "101", "status": "GONE"}]}])


def test_cli_seeds_pond_sims():
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "include")}
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "serve", "--port", "0", "--seed-pond", "3"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = re.search(r"on (http://\S+)", proc.stdout.readline()).group(1)
        sims = requests.get(f"{base}/pond/_control/devices", timeout=5).json()
        assert sims["total"] == 3 and sims["devices"][0]["iccid"] == make_iccid(1)
        assert {(d["serviceStatus"], len(d["packages"]), d["packages"][0]["status"]) for d in sims["devices"]} == {
            ("ENABLED", 1, "ACTIVE")}
        auth = "Basic " + base64.b64encode(b"demo:demo-pond-secret").decode()
        r = requests.get(f"{base}/pond/api/v1/{DIST}/sims/{make_iccid(2)}/packages", headers={"Authorization": auth},
                         timeout=5)
        assert r.status_code == 200 and r.json()["packages"][0]["packageTypeId"] == "101"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
