"""Control API (seed, config, call log, stats, reset), SimulatorServer and the CLI, over real HTTP."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from simulators.devices import demo_devices, luhn_valid, make_iccid
from simulators.server import CARRIER_CLASSES, SimulatorServer

ICCID = make_iccid(1)
INCLUDE = Path(__file__).resolve().parents[2] / "include"


def test_config_defaults_and_merge(jasper):
    config = jasper.config()
    assert config == {"latency_ms": 0.0, "jitter_ms": 0.0, "rate_limit": None, "max_concurrency": None,
                      "error_rate": 0.0, "error_statuses": [500, 503], "timeout_rate": 0.0, "timeout_s": 30.0,
                      "malformed_rate": 0.0, "applied_error_rate": 0.0, "fault_methods": None, "seed": None, "fail_iccids": {}, "integer_retry_after": False,
                      "call_log_limit": 500_000, "validate_rate_plans": True,
                      "validate_communication_plans": True, "enforce_terminal_statuses": True,
                      "require_json_content_type": True, "require_date_offset": True}
    merged = jasper.configure(latency_ms=5, rate_limit=10)
    assert (merged["latency_ms"], merged["rate_limit"], merged["error_rate"]) == (5, 10, 0.0)
    merged = jasper.configure(rate_limit=0, fail_iccids={ICCID: 503})
    assert merged["rate_limit"] is None and merged["latency_ms"] == 5 and merged["fail_iccids"] == {ICCID: 503}


def test_call_log_records_and_filters(api, api_other, jasper, simulator):
    since = time.time()
    api("GET", f"/devices/{ICCID}")
    api("PUT", f"/devices/{make_iccid(2)}", json={"status": "DEACTIVATED"})
    api_other("GET", f"/devices/{ICCID}/auditTrails", params={"pageSize": 5})
    requests.get(f"{simulator.url_for('jasper')}/echo/hello", timeout=5)  # 401, no account
    jasper.device(ICCID)  # control calls are not logged
    calls = jasper.calls()
    assert len(calls) == 4
    assert [c["ts"] for c in calls] == sorted(c["ts"] for c in calls) and calls[0]["ts"] >= since
    get = calls[0]
    assert (get["method"], get["path"], get["iccid"], get["account"], get["body"], get["status"]) == \
        ("GET", f"/jasper/rws/api/v1/devices/{ICCID}", ICCID, "sim", None, 200)
    assert get["duration_ms"] >= 0 and get["fault"] is None
    assert [c["method"] for c in jasper.calls(iccid=ICCID)] == ["GET", "GET"]
    [put] = jasper.calls(method="put", since=since)
    assert put["body"] == {"status": "DEACTIVATED"} and put["iccid"] == make_iccid(2)
    [audit] = jasper.calls(path_contains="auditTrails")
    assert audit["account"] == "other" and audit["query"] == "pageSize=5"
    [unauth] = jasper.calls(status=401)
    assert unauth["account"] is None and unauth["iccid"] is None
    assert len(jasper.calls(account="sim")) == 2
    assert jasper.calls(since=time.time() + 60) == []
    assert [c["method"] for c in jasper.calls(limit=1)] == ["GET"] and jasper.calls(limit=1)[0]["status"] == 401
    stats = jasper.stats()
    assert stats["calls"] == 4 and stats["by_status"] == {"200": 3, "401": 1}
    assert stats["by_method"] == {"GET": 3, "PUT": 1}
    assert stats["peak_in_flight"] >= 1 and stats["in_flight"] == 0 and stats["devices"] == 5
    assert stats["max_rps_all"] >= 1 and stats["max_rps_admitted"] >= 1


def test_call_log_keeps_the_newest_entries_beyond_its_limit(api, jasper):
    jasper.configure(call_log_limit=100)
    for i in range(130):
        api("GET", f"/devices/{make_iccid(1 + i % 5)}")
    stats = jasper.stats()
    assert stats["calls"] == 130 and stats["by_status"] == {"200": 130}
    assert stats["calls_kept"] + stats["calls_dropped"] == 130 and stats["calls_kept"] <= 100
    kept = jasper.calls()
    assert len(kept) == stats["calls_kept"]
    assert sum(len(jasper.calls(iccid=make_iccid(i))) for i in range(1, 6)) == len(kept)


def test_reset_clears_devices_calls_and_config_but_keeps_accounts(api, jasper):
    jasper.configure(rate_limit=1, latency_ms=3)
    api("GET", f"/devices/{ICCID}")
    jasper.reset()
    assert jasper.calls() == [] and jasper.stats()["calls"] == 0
    assert jasper.config()["rate_limit"] is None and jasper.config()["latency_ms"] == 0
    assert jasper.devices()["total"] == 0
    with pytest.raises(requests.HTTPError) as err:
        jasper.device(ICCID)
    assert err.value.response.status_code == 404
    assert api("GET", f"/devices/{ICCID}").status_code == 404  # still authenticated


def test_seeding_ten_thousand_devices_in_one_request(api, jasper):
    devices = demo_devices(10_000, start=100_000, status="ACTIVATED", ratePlan="IOT-1GB")
    assert all(luhn_valid(d["iccid"]) and len(d["iccid"]) == 19 for d in devices[:100])
    result = jasper.seed_devices(devices)
    assert result == {"seeded": 10_000, "total": 10_005}
    last = make_iccid(109_999)
    assert jasper.device(last)["status"] == "ACTIVATED"
    assert api("GET", f"/devices/{last}").json()["imsi"] == devices[-1]["imsi"]
    page = api("GET", "/devices", params={"modifiedSince": "2020-01-01T00:00:00Z", "pageNumber": 201}).json()
    assert len(page["devices"]) == 5 and page["lastPage"] is True
    assert jasper.devices(limit=3)["total"] == 10_005 and len(jasper.devices(limit=3)["devices"]) == 3


def test_bad_seeds_are_refused_whole(jasper):
    for bad in ([{"iccid": make_iccid(7)}, {"iccid": make_iccid(8), "status": "SLEEPING"}], [{"imsi": "1"}],
                {"not": "a list"}):
        with pytest.raises(requests.HTTPError) as err:
            jasper.seed_devices(bad) if isinstance(bad, list) else jasper.request("POST", "/devices", json=bad)
        assert err.value.response.status_code == 400
    assert jasper.devices()["total"] == 5
    assert jasper.request("POST", "/devices", json={"devices": [{"iccid": make_iccid(9)}]})["total"] == 6


def test_accounts_can_be_added_at_runtime(simulator, jasper):
    assert {"sim", "other", "demo"} <= set(jasper.set_accounts({"late": "late-key"}))
    r = requests.get(f"{simulator.url_for('jasper')}/devices/{ICCID}", auth=("late", "late-key"), timeout=5)
    assert r.status_code == 200


def test_server_options_urls_and_baseline_knobs():
    with SimulatorServer(latency_ms=1, jasper={"rate_limit": 7, "accounts": {"a": "k"}}) as sims:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sims.base_url) and sims.port > 0
        assert sims.url_for("jasper") == f"{sims.base_url}/jasper/rws/api/v1"
        control = sims.control("jasper")
        assert (control.config()["latency_ms"], control.config()["rate_limit"]) == (1, 7)
        control.configure(rate_limit=None, error_rate=0.5)
        control.reset()  # back to the constructor's knobs
        assert (control.config()["rate_limit"], control.config()["error_rate"]) == (7, 0.0)
        assert requests.get(sims.url_for("jasper") + "/echo/hello", auth=("a", "k"), timeout=5).status_code == 200
        assert requests.get(sims.url_for("jasper") + "/echo/hello", auth=("demo", "demo-api-key"),
                            timeout=5).status_code == 401
        assert requests.get(sims.base_url + "/health", timeout=5).json()["carriers"] == sorted(CARRIER_CLASSES)
    with pytest.raises(requests.ConnectionError):
        requests.get(sims.base_url + "/health", timeout=2)
    with pytest.raises(ValueError):
        SimulatorServer(no_such_knob=1)


def test_cli_serves_in_the_foreground():
    env = {**os.environ, "PYTHONPATH": str(INCLUDE)}
    proc = subprocess.Popen([sys.executable, "-m", "simulators", "serve", "--port", "0", "--seed-jasper", "3",
                             "--jasper-username", "u1", "--jasper-api-key", "k1", "--jasper-account", "u2:k2",
                             "--rate-limit", "50", "--set", "jasper.latency_ms=2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        base = re.search(r"on (http://\S+)", lines[0]).group(1)
        api_root = re.search(r"API (\S+)", lines[1]).group(1)
        assert api_root == base + "/jasper/rws/api/v1"
        for user, key in (("u1", "k1"), ("u2", "k2")):
            r = requests.get(f"{api_root}/devices/{make_iccid(3)}", auth=(user, key), timeout=5)
            assert r.status_code == 200 and r.json()["status"] == "ACTIVATED"
        config = requests.get(f"{base}/jasper/_control/config", timeout=5).json()
        assert (config["rate_limit"], config["latency_ms"]) == (50, 2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
