"""Framework behaviour through the Jasper simulator over real HTTP: rate and concurrency limits,
latency, fault injection (deterministic with a seed), per-device failures.

Timing assertions here only check the simulator's own limiting behaviour (a 429 carries a usable
Retry-After, a hang lasts timeout_s), never how fast the simulator is."""
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from simulators.devices import make_iccid

ICCID = make_iccid(1)


def fire(api, n, workers=10, path=f"/devices/{ICCID}"):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda _: api("GET", path), range(n)))


# ------------------------------------------------------------------------------------------- limits
def test_rate_limit_answers_429_with_retry_after_and_admits_at_most_the_limit(api, jasper):
    jasper.configure(rate_limit=5)
    responses = fire(api, 30)
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) >= 5 and limited
    for r in limited:
        assert 0 < float(r.headers["Retry-After"]) <= 1.0
        assert r.json() == {"errorMessage": "license has exceeded the rate limit", "errorCode": "40000029"}
    stats = jasper.stats()
    assert stats["max_rps_admitted"] <= 5
    assert stats["by_status"]["429"] == len(limited)
    assert stats["max_rps_all"] >= stats["max_rps_admitted"]
    assert {c["fault"] for c in jasper.calls(status=429)} == {"rate_limit"}


def test_retry_after_is_honest(api, jasper):
    jasper.configure(rate_limit=3)
    assert [api("GET", f"/devices/{ICCID}").status_code for _ in range(3)] == [200, 200, 200]
    r = api("GET", f"/devices/{ICCID}")
    assert r.status_code == 429
    wait = float(r.headers["Retry-After"])
    assert 0 < wait <= 1.0
    time.sleep(wait + 0.05)
    assert api("GET", f"/devices/{ICCID}").status_code == 200


def test_rate_limit_is_per_account(api, api_other, jasper):
    jasper.configure(rate_limit=2)
    assert [r.status_code for r in fire(api, 6, workers=1)].count(200) == 2
    assert [api_other("GET", f"/devices/{ICCID}").status_code for _ in range(2)] == [200, 200]
    assert api_other("GET", f"/devices/{ICCID}").status_code == 429
    by_account = jasper.stats()["by_account"]
    assert by_account == {"sim": 6, "other": 3}


def test_slow_rate_and_integer_retry_after(api, jasper):
    jasper.configure(rate_limit=0.5)  # one call per two seconds
    assert api("GET", f"/devices/{ICCID}").status_code == 200
    r = api("GET", f"/devices/{ICCID}")
    assert r.status_code == 429 and 1.0 < float(r.headers["Retry-After"]) <= 2.0
    jasper.configure(integer_retry_after=True)
    r = api("GET", f"/devices/{ICCID}")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"


def test_concurrency_limit(api, api_other, jasper):
    jasper.configure(max_concurrency=1, latency_ms=300)
    barrier = threading.Barrier(4)

    def one(_):
        barrier.wait()
        return api("GET", f"/devices/{ICCID}")

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(one, range(4)))
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 1 and codes.count(429) >= 1
    for r in responses:
        if r.status_code == 429:
            assert float(r.headers["Retry-After"]) > 0 and r.json()["errorCode"] == "40000029"
    stats = jasper.stats()
    assert stats["peak_in_flight"] == 1
    assert {c["fault"] for c in jasper.calls(status=429)} == {"concurrency"}
    # another account has its own allowance
    assert api_other("GET", f"/devices/{ICCID}").status_code == 200


def test_latency_is_concurrent_not_serialized(api, jasper):
    jasper.configure(latency_ms=200)
    started = time.monotonic()
    assert api("GET", f"/devices/{ICCID}").status_code == 200
    assert time.monotonic() - started >= 0.2
    barrier = threading.Barrier(5)

    def one(_):
        barrier.wait()
        return api("GET", f"/devices/{ICCID}").status_code

    with ThreadPoolExecutor(5) as pool:
        assert list(pool.map(one, range(5))) == [200] * 5
    assert jasper.stats()["peak_in_flight_total"] >= 2  # requests really overlap inside the simulator


# ------------------------------------------------------------------------------------------- faults
def test_error_rate_answers_5xx_with_a_json_error(api, jasper):
    jasper.configure(error_rate=1.0)
    codes = {r.status_code for r in fire(api, 20)}
    assert codes <= {500, 503} and codes
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED"})
    assert r.status_code in (500, 503) and r.json()["errorMessage"]
    assert jasper.device(ICCID)["status"] == "ACTIVATED"  # an injected error applies nothing
    jasper.configure(error_statuses=[502])
    assert api("GET", f"/devices/{ICCID}").status_code == 502
    assert jasper.stats()["by_fault"]["error"] == 22


def test_malformed_body_is_a_truncated_2xx_and_the_change_did_happen(api, jasper):
    jasper.configure(malformed_rate=1.0)
    r = api("GET", f"/devices/{ICCID}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with pytest.raises(ValueError):
        r.json()
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED"})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert jasper.device(ICCID)["status"] == "DEACTIVATED"
    assert api("GET", f"/devices/{make_iccid(999)}").status_code == 404  # errors stay errors


def test_applied_error_is_a_502_after_the_change_happened(api, jasper):
    jasper.configure(applied_error_rate=1.0, fault_methods=["PUT"])
    assert api("GET", f"/devices/{ICCID}").status_code == 200  # faults limited to PUT
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED"})
    assert r.status_code == 502 and "errorMessage" in r.json()
    assert jasper.device(ICCID)["status"] == "DEACTIVATED"
    assert jasper.calls(method="PUT")[-1]["fault"] == "applied_error"


def test_timeout_hangs_then_504(api, jasper):
    jasper.configure(timeout_rate=1.0, timeout_s=0.6)
    with pytest.raises(requests.Timeout):
        api("GET", f"/devices/{ICCID}", timeout=0.2)
    started = time.monotonic()
    r = api("GET", f"/devices/{ICCID}", timeout=5)
    assert r.status_code == 504 and time.monotonic() - started >= 0.55
    assert r.json()["errorMessage"]


def test_fail_iccids(api, jasper):
    jasper.configure(fail_iccids={ICCID: 409, make_iccid(2): 404})
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED"})
    assert r.status_code == 409 and r.json()["errorMessage"]
    assert api("GET", f"/devices/{make_iccid(2)}").status_code == 404
    assert api("GET", f"/devices/{make_iccid(3)}").status_code == 200
    assert jasper.device(ICCID)["status"] == "ACTIVATED"
    assert jasper.calls(iccid=ICCID)[0]["fault"] == "fail_iccid"


def test_seeded_faults_are_deterministic_whatever_the_interleaving(api, jasper):
    paths = [f"/devices/{make_iccid(i)}" for i in range(1, 6)] * 8  # each path 8 times

    def outcomes(workers):
        jasper.reset()
        jasper.seed_devices([{"iccid": make_iccid(i)} for i in range(1, 6)])
        jasper.configure(seed=1234, error_rate=0.3, malformed_rate=0.2)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda p: api("GET", p), paths))
        per_path: dict[str, list] = {}
        for c in jasper.calls():
            per_path.setdefault(c["path"], []).append(c["fault"])
        return per_path

    sequential = outcomes(1)
    assert sequential == outcomes(1)
    faults = [f for fs in sequential.values() for f in fs]
    assert "error" in faults and "malformed" in faults and None in faults
    # in parallel the k-th call of a path may be answered in another order, but the multiset per path holds
    parallel = outcomes(8)
    assert {p: sorted(map(str, f)) for p, f in parallel.items()} == \
        {p: sorted(map(str, f)) for p, f in sequential.items()}


def test_invalid_knobs_are_refused(jasper):
    for bad in ({"error_rate": 1.5}, {"no_such_knob": 1}, {"error_rate": 0.6, "timeout_rate": 0.6},
                {"latency_ms": -1}, {"fail_iccids": {ICCID: 200}}):
        with pytest.raises(requests.HTTPError) as err:
            jasper.configure(**bad)
        assert err.value.response.status_code == 400
    assert jasper.config()["error_rate"] == 0.0
