"""The Jasper simulator over real HTTP: API shapes, auth, limits, faults, control API."""
import base64
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests

from bulkchange.db.seed import make_iccid

ICCID = make_iccid(1)


@pytest.fixture
def jasper(simulator):
    control = simulator.control("jasper")
    control.reset()
    simulator.set_account("jasper", "sim", "sim-key")
    control.seed_devices([{"iccid": make_iccid(i), "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in range(1, 6)])
    return control


@pytest.fixture
def api(simulator):
    session = requests.Session()
    session.headers["Authorization"] = "Basic " + base64.b64encode(b"sim:sim-key").decode()
    root = simulator.url_for("jasper")

    def call(method, path, **kw):
        kw.setdefault("timeout", 10)
        return session.request(method, root + path, **kw)
    return call


def test_auth_errors_have_the_documented_shapes(simulator, jasper):
    root = simulator.url_for("jasper")
    r = requests.get(f"{root}/devices/{ICCID}", timeout=5)
    assert r.status_code == 401 and r.json() == {"errorMessage": "Full authentication is required to access this resource"}
    bad = "Basic " + base64.b64encode(b"sim:wrong").decode()
    r = requests.get(f"{root}/devices/{ICCID}", headers={"Authorization": bad}, timeout=5)
    assert r.status_code == 401 and r.json()["errorCode"] == "10000001"


def test_get_edit_and_audit_trail(api, jasper):
    assert api("GET", f"/devices/{ICCID}").json()["status"] == "ACTIVATED"
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED", "ratePlan": "IOT-0"})
    assert r.status_code == 200 and r.json() == {"iccid": ICCID}
    dev = jasper.device(ICCID)
    assert (dev["status"], dev["ratePlan"]) == ("DEACTIVATED", "IOT-0")
    trail = api("GET", f"/devices/{ICCID}/auditTrails").json()["deviceAuditTrails"]
    assert {(t["field"], t["priorValue"], t["value"], t["user"]) for t in trail} == \
        {("status", "ACTIVATED", "DEACTIVATED", "sim"), ("ratePlan", "IOT-1GB", "IOT-0", "sim")}
    assert api("GET", "/devices/8901260000000099999").status_code == 404


@pytest.mark.parametrize("body,code", [({"status": "SLEEPING"}, "10000024"), ({}, "10000004"),
                                       ({"color": "red"}, "10000004")])
def test_bad_edits_are_400(api, jasper, body, code):
    r = api("PUT", f"/devices/{ICCID}", json=body)
    assert r.status_code == 400 and r.json()["errorCode"] == code


def test_illegal_transition_is_refused(api, jasper):
    assert api("PUT", f"/devices/{ICCID}", json={"status": "RETIRED"}).status_code == 200
    r = api("PUT", f"/devices/{ICCID}", json={"status": "ACTIVATED"})
    assert r.status_code == 400 and "not allowed" in r.json()["errorMessage"]


def test_future_effective_date_is_scheduled_not_applied(api, jasper):
    when = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    assert api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-0", "effectiveDate": when}).status_code == 200
    assert jasper.device(ICCID)["ratePlan"] == "IOT-1GB"
    too_far = (datetime.now(timezone.utc) + timedelta(days=200)).isoformat()
    assert api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-0", "effectiveDate": too_far}).status_code == 400


def test_search_requires_modified_since_and_pages(api, jasper):
    r = api("GET", "/devices")
    assert r.status_code == 400 and r.json() == {"errorMessage": "ModifiedSince is required.", "errorCode": "10000003"}
    page = api("GET", "/devices", params={"modifiedSince": "2020-01-01T00:00:00Z", "pageSize": 2}).json()
    assert len(page["devices"]) == 2 and page["lastPage"] is False
    last = api("GET", "/devices", params={"modifiedSince": "2020-01-01T00:00:00Z", "pageSize": 2,
                                          "pageNumber": 3}).json()
    assert len(last["devices"]) == 1 and last["lastPage"] is True
    assert api("GET", "/devices", params={"modifiedSince": "2020-01-01T00:00:00Z", "pageSize": 51}).status_code == 400


def test_rate_limit_answers_429_with_retry_after(api, jasper):
    jasper.configure(rate_limit=5)
    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(lambda _: api("GET", f"/devices/{ICCID}"), range(30)))
    limited = [r for r in codes if r.status_code == 429]
    assert limited and all(0 < float(r.headers["Retry-After"]) <= 1.0 for r in limited)
    assert jasper.stats()["max_rps_admitted"] <= 5


def test_concurrency_limit(api, jasper):
    jasper.configure(max_concurrency=1, latency_ms=150)
    with ThreadPoolExecutor(4) as pool:
        codes = [r.status_code for r in pool.map(lambda _: api("GET", f"/devices/{ICCID}"), range(4))]
    assert codes.count(200) >= 1 and codes.count(429) >= 1
    assert jasper.stats()["peak_in_flight"] == 1


def test_faults(api, jasper):
    jasper.configure(error_rate=1.0)
    assert api("GET", f"/devices/{ICCID}").status_code in (500, 503)
    jasper.configure(error_rate=0.0, malformed_rate=1.0)
    r = api("GET", f"/devices/{ICCID}")
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    jasper.configure(malformed_rate=0.0, timeout_rate=1.0, timeout_s=2)
    with pytest.raises(requests.Timeout):
        api("GET", f"/devices/{ICCID}", timeout=0.3)
    jasper.configure(timeout_rate=0.0, fail_iccids={ICCID: 409})
    assert api("GET", f"/devices/{ICCID}").status_code == 409


def test_call_log_filters_and_reset(api, jasper):
    since = time.time()
    api("GET", f"/devices/{ICCID}")
    api("PUT", f"/devices/{make_iccid(2)}", json={"status": "DEACTIVATED"})
    assert [c["method"] for c in jasper.calls(iccid=ICCID)] == ["GET"]
    puts = jasper.calls(method="put", since=since)
    assert len(puts) == 1 and puts[0]["body"] == {"status": "DEACTIVATED"} and puts[0]["account"] == "sim"
    assert jasper.calls(path_contains="auditTrails") == []
    jasper.reset()
    assert jasper.calls() == [] and jasper.config()["rate_limit"] is None


def test_seeding_ten_thousand_devices_in_one_request(jasper):
    result = jasper.seed_devices([{"iccid": make_iccid(100_000 + i)} for i in range(10_000)])
    assert result["seeded"] == 10_000 and result["total"] == 10_005
    assert jasper.device(make_iccid(109_999))["status"] == "ACTIVATED"
