"""The fault-injecting proxy (simulators/faultproxy.py) in front of the Jasper simulator, over real HTTP:
each fault does what it says to the request (forwarded or not) and to the answer, and is recorded."""
import pytest
import requests

from simulators.faultproxy import FaultProxy
from tests.simulators.conftest import ACCOUNTS, ICCIDS, basic


@pytest.fixture
def proxy(simulator, jasper):
    with FaultProxy(simulator.base_url, seed=1, retry_after="0.25") as p:
        yield p


def session():
    s = requests.Session()
    s.headers["Authorization"] = basic("sim", ACCOUNTS["sim"])
    return s


def put_status(proxy, simulator, iccid, status="DEACTIVATED", s=None):
    url = proxy.rewrite(simulator.url_for("jasper")) + f"/devices/{iccid}"
    return (s or session()).put(url, json={"status": status}, timeout=10)


def test_passes_requests_through_and_records_them(proxy, simulator, jasper):
    resp = put_status(proxy, simulator, ICCIDS[0])
    assert resp.status_code == 200 and resp.json() == {"iccid": ICCIDS[0]}
    assert jasper.device(ICCIDS[0])["status"] == "DEACTIVATED"
    [seen] = proxy.requests()
    assert (seen["method"], seen["fault"], seen["forwarded"], seen["upstream_status"], seen["status"]) == \
        ("PUT", None, True, 200, 200)
    assert seen["path"].endswith(f"/devices/{ICCIDS[0]}") and '"DEACTIVATED"' in seen["body"]
    assert len(jasper.calls(method="PUT")) == 1


@pytest.mark.parametrize("fault", ["error_5xx", "rate_429", "drop_before"])
def test_faults_before_forwarding_leave_the_carrier_untouched(proxy, simulator, jasper, fault):
    proxy.configure(**{fault: 1.0})
    if fault == "drop_before":
        with pytest.raises(requests.ConnectionError):
            put_status(proxy, simulator, ICCIDS[0])
    else:
        resp = put_status(proxy, simulator, ICCIDS[0])
        assert resp.status_code in ({"error_5xx": (500, 503), "rate_429": (429,)}[fault])
        if fault == "rate_429":
            assert resp.headers["Retry-After"] == "0.25"
    assert jasper.calls(method="PUT") == []
    assert jasper.device(ICCIDS[0])["status"] == "ACTIVATED"
    [seen] = proxy.requests()
    assert (seen["fault"], seen["forwarded"], seen["upstream_status"]) == (fault, False, None)


@pytest.mark.parametrize("fault", ["applied_502", "garbage", "drop_after"])
def test_faults_after_forwarding_lose_the_answer_of_an_applied_change(proxy, simulator, jasper, fault):
    proxy.configure(**{fault: 1.0})
    if fault == "drop_after":
        with pytest.raises(requests.ConnectionError):
            put_status(proxy, simulator, ICCIDS[0])
    else:
        resp = put_status(proxy, simulator, ICCIDS[0])
        if fault == "applied_502":
            assert resp.status_code == 502
        else:
            assert resp.status_code == 200
            with pytest.raises(ValueError):
                resp.json()
    assert len(jasper.calls(method="PUT")) == 1
    assert jasper.device(ICCIDS[0])["status"] == "DEACTIVATED"  # applied at the carrier
    [seen] = proxy.requests()
    assert (seen["fault"], seen["forwarded"], seen["upstream_status"]) == (fault, True, 200)


def test_fault_counts_sum_up_the_recorded_faults(proxy, simulator, jasper):
    proxy.configure(error_5xx=1.0)
    put_status(proxy, simulator, ICCIDS[0])
    put_status(proxy, simulator, ICCIDS[1])
    proxy.configure(error_5xx=0.0, applied_502=1.0)
    put_status(proxy, simulator, ICCIDS[2])
    proxy.off()
    put_status(proxy, simulator, ICCIDS[3])  # passed through: not a fault
    assert len(proxy.requests()) == 4
    counts = proxy.fault_counts()
    assert counts == {"error_5xx": 2, "applied_502": 1}
    assert counts["garbage"] == 0  # a fault never drawn counts 0
    proxy.clear()
    assert proxy.fault_counts() == {}


def test_a_dropped_connection_does_not_break_the_next_request(proxy, simulator, jasper):
    s = session()
    proxy.configure(drop_before=1.0)
    with pytest.raises(requests.ConnectionError):
        put_status(proxy, simulator, ICCIDS[0], s=s)
    proxy.off()
    assert put_status(proxy, simulator, ICCIDS[0], s=s).status_code == 200


def test_filters_spare_control_calls_other_paths_methods_and_logins(proxy, simulator, jasper):
    proxy.configure(error_5xx=1.0, fault_methods=["PUT"])
    control_url = proxy.rewrite(simulator.control_url("jasper")) + "/_control/stats"
    assert requests.get(control_url, timeout=10).status_code == 200  # /_control is never faulted
    root = proxy.rewrite(simulator.url_for("jasper"))
    assert session().get(root + f"/devices/{ICCIDS[0]}", timeout=10).status_code == 200  # GET not faulted
    assert put_status(proxy, simulator, ICCIDS[0]).status_code in (500, 503)
    proxy.configure(fault_methods=None, fault_paths=[r"/devices/[^/]+$"])
    assert session().get(root + "/rateplans", timeout=10).status_code == 200  # another path
    # login endpoints only with fault_auth
    ts_token = proxy.rewrite(simulator.url_for("thingspace")).split("/m2m")[0] + "/ts/v1/oauth2/token"
    proxy.configure(fault_paths=None)
    requests.post(ts_token, data={"grant_type": "client_credentials"}, timeout=10)
    assert proxy.requests(path_contains="oauth2")[-1]["fault"] is None
    proxy.configure(fault_auth=True)
    assert requests.post(ts_token, data={"grant_type": "client_credentials"}, timeout=10).status_code in (500, 503)
    assert proxy.requests(path_contains="oauth2")[-1]["fault"] == "error_5xx"


def test_the_fault_mix_is_seeded_and_independent_of_order(simulator, jasper):
    mix = dict(error_5xx=0.2, rate_429=0.1, drop_before=0.05, applied_502=0.1, garbage=0.05, drop_after=0.05)
    draws = []
    for order in (ICCIDS, list(reversed(ICCIDS))):
        with FaultProxy(simulator.base_url, seed=7, **mix) as p:
            draws.append({(path, n): p._draw("PUT", path)[0] for path in (f"/d/{i}" for i in order)
                          for n in range(40)})
    assert draws[0] == draws[1]
    assert {f for f in draws[0].values()} >= {None, "error_5xx", "rate_429", "applied_502"}
    with pytest.raises(ValueError):
        FaultProxy(simulator.base_url, error_5xx=0.8, garbage=0.3)
