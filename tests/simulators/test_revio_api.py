"""The Rev.io simulator over HTTP (auth with the APIM key, services, service products, JSON Patch of
custom fields, paging, the per-minute limit) and the Rev.io client against it."""
import base64

import pytest
import requests

from bulkchange.carriers.base import CallLog, OutcomeUnknown, PermanentError, TransientError
from bulkchange.carriers.revio import RevioClient, field_index
from bulkchange.engine import CallPolicy, RateLimiter, RetryPolicy

USER, CLIENT, PASSWORD, KEY = "api", "acme", "rev-password-123", "rev-subscription-key-456"


@pytest.fixture
def revio(simulator):
    control = simulator.control("revio")
    control.reset()
    control.set_accounts({f"{USER}@{CLIENT}": PASSWORD})
    control.request("PUT", "/subscription_keys", json={CLIENT: KEY})
    control.configure(calls_per_minute=0)
    yield control
    control.reset()
    control.close()


def headers(user=f"{USER}@{CLIENT}", password=PASSWORD, key=KEY):
    out = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if key is not None:
        out["Ocp-Apim-Subscription-Key"] = key
    return out


@pytest.fixture
def client(simulator, revio):
    c = RevioClient(simulator.url_for("revio"), USER, CLIENT, PASSWORD, KEY,
                    policy=CallPolicy(RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0.01)))
    yield c
    c.close()


def test_basic_auth_and_subscription_key_are_both_required(simulator, revio):
    url = simulator.url_for("revio") + "/Services"
    assert requests.get(url, headers=headers(), timeout=10).status_code == 200
    no_key = requests.get(url, headers=headers(key=None), timeout=10)
    assert no_key.status_code == 401 and no_key.json()["ok"] is False
    assert "subscription key" in no_key.json()["message"]
    assert requests.get(url, headers=headers(key="wrong"), timeout=10).status_code == 401
    assert requests.get(url, headers=headers(password="wrong"), timeout=10).status_code == 401
    assert requests.get(url, headers=headers(user=USER), timeout=10).status_code == 401  # no @clientcode


def test_services_create_read_search_and_page(simulator, revio):
    url = simulator.url_for("revio") + "/Services"
    missing = requests.post(url, json={"customer_id": 5}, headers=headers(), timeout=10)
    assert missing.status_code == 400 and "provider_id" in missing.json()["message"]
    ids = []
    for i in range(12):
        resp = requests.post(url, json={"customer_id": 5 if i < 11 else 6, "provider_id": 2, "number": f"555{i:04d}",
                                        "number2": f"8901{i:015d}"}, headers=headers(), timeout=10)
        assert resp.status_code == 201 and resp.json()["ok"] is True
        ids.append(resp.json()["id"])
    assert len(set(ids)) == 12
    one = requests.get(f"{url}/{ids[0]}", headers=headers(), timeout=10).json()
    assert one["service_id"] == ids[0] and one["number"] == "5550000"
    assert [f["label"] for f in one["fields"]] == ["Username", "Cost Center 1", "Cost Center 2", "Cost Center 3"]
    page1 = requests.get(url, params={"search.customer_id": 5}, headers=headers(), timeout=10).json()
    assert page1["record_count"] == 11 and len(page1["records"]) == 10 and page1["has_more"] is True
    page2 = requests.get(url, params={"search.customer_id": 5, "page": 2}, headers=headers(), timeout=10).json()
    assert len(page2["records"]) == 1 and page2["has_more"] is False
    hit = requests.get(url, params={"search.number": "5550003"}, headers=headers(), timeout=10).json()
    assert [r["service_id"] for r in hit["records"]] == [ids[3]]
    assert requests.get(url, params={"page_size": 501}, headers=headers(), timeout=10).status_code == 400
    assert requests.get(f"{url}/999999", headers=headers(), timeout=10).status_code == 404


def test_json_patch_by_index_and_its_errors(simulator, revio):
    url = simulator.url_for("revio") + "/Services"
    sid = requests.post(url, json={"customer_id": 1, "provider_id": 1}, headers=headers(), timeout=10).json()["id"]
    patch = [{"op": "replace", "path": "/fields/2/value", "value": "CC-2"},
             {"op": "replace", "path": "/description", "value": "fleet 7"}]
    resp = requests.patch(f"{url}/{sid}", json=patch, timeout=10,
                          headers={**headers(), "Content-Type": "application/json-patch+json"})
    assert resp.status_code == 200
    svc = requests.get(f"{url}/{sid}", headers=headers(), timeout=10).json()
    assert svc["fields"][2]["value"] == "CC-2" and svc["description"] == "fleet 7"
    for bad in ([{"op": "replace", "path": "/fields/9/value", "value": "x"}],
                [{"op": "remove", "path": "/description"}], [{"op": "replace", "path": "/customer_id", "value": 3}],
                {"op": "replace"}):
        assert requests.patch(f"{url}/{sid}", json=bad, timeout=10, headers={
            **headers(), "Content-Type": "application/json-patch+json"}).status_code == 400
    # a refused patch changes nothing, not even its valid operations
    mixed = [{"op": "replace", "path": "/description", "value": "changed"},
             {"op": "replace", "path": "/fields/9/value", "value": "x"}]
    assert requests.patch(f"{url}/{sid}", json=mixed, timeout=10, headers={
        **headers(), "Content-Type": "application/json-patch+json"}).status_code == 400
    assert requests.get(f"{url}/{sid}", headers=headers(), timeout=10).json()["description"] == "fleet 7"


def test_service_products(simulator, revio):
    root = simulator.url_for("revio")
    sid = requests.post(root + "/Services", json={"customer_id": 4, "provider_id": 1}, headers=headers(),
                        timeout=10).json()["id"]
    body = {"service_id": sid, "product_id": 77, "rate": 9.5}
    assert requests.post(root + "/ServiceProduct", json=body, headers=headers(), timeout=10).status_code == 400
    body["generate_proration"] = False
    resp = requests.post(root + "/ServiceProduct", json=body, headers=headers(), timeout=10)
    assert resp.status_code == 201
    spid = resp.json()["id"]
    got = requests.get(f"{root}/ServiceProduct/{spid}", headers=headers(), timeout=10).json()
    assert got["service_id"] == sid and got["customer_id"] == 4 and got["status"] == "ACTIVE" and got["quantity"] == 1
    put = requests.put(f"{root}/ServiceProduct/{spid}", json={"status": "DISCONNECTED"}, headers=headers(), timeout=10)
    assert put.json()["status"] == "DISCONNECTED"
    assert requests.put(f"{root}/ServiceProduct/{spid}", json={"status": "GONE"}, headers=headers(),
                        timeout=10).status_code == 400
    orphan = requests.post(root + "/ServiceProduct", json={**body, "service_id": 424242}, headers=headers(),
                           timeout=10)
    assert orphan.status_code == 400


def test_per_minute_limit_answers_429_with_retry_after(simulator, revio):
    revio.configure(calls_per_minute=5)
    url = simulator.url_for("revio") + "/Services"
    statuses = [requests.get(url, headers=headers(), timeout=10) for _ in range(7)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429, 429]
    refused = statuses[-1]
    assert float(refused.headers["Retry-After"]) > 1 and refused.json()["ok"] is False
    assert revio.stats()["by_status"] == {"200": 5, "429": 2}


def test_client_creates_finds_and_patches_custom_fields(client, revio):
    log = CallLog()
    sid = client.create_service({"customer_id": 12, "provider_id": 3, "number": "5551234", "number2": "8901"},
                                log=log)
    assert [s["service_id"] for s in client.find_services(customer_id=12, number="5551234", log=log)] == [sid]
    assert client.find_services(customer_id=12, number="000", log=log) == []
    service = client.get_service(sid, log=log)
    assert field_index(service, "CostCenter1", "Cost Center") == 1  # whitespace and case do not matter
    assert field_index(service, "Nope") is None
    assert client.update_custom_field(sid, ["CostCenter2", "Cost Center"], "CC-XYZ", log=log) == 2
    assert client.get_service(sid)["fields"][2]["value"] == "CC-XYZ"
    with pytest.raises(PermanentError, match="no custom field labelled"):
        client.update_custom_field(sid, "Cost Centre 9", "x", log=log)
    spid = client.create_service_product({"service_id": sid, "product_id": 5, "generate_proration": True}, log=log)
    assert client.get_service_product(spid)["product_id"] == 5
    assert [p["service_product_id"] for p in client.find_service_products(service_id=sid, log=log)] == [spid]
    patch = revio.calls(method="PATCH")
    assert patch and patch[-1]["body"] == [{"op": "replace", "path": "/fields/2/value", "value": "CC-XYZ"}]
    text = " ".join(r.request_text + r.response_text + (r.error or "") for r in log.records)
    assert PASSWORD not in text and KEY not in text and "Basic " not in text


def test_client_pages_through_search_results(client):
    for i in range(7):
        client.create_service({"customer_id": 99, "provider_id": 1, "number": f"n{i}"})
    assert len(client.find_services(customer_id=99, page_size=3)) == 7


def test_client_waits_out_429_on_create_but_never_replays_an_ambiguous_create(client, revio):
    revio.configure(calls_per_minute=0, rate_limit=1)
    client.create_service({"customer_id": 1, "provider_id": 1})
    client.create_service({"customer_id": 1, "provider_id": 1})  # 429 first, waited out, then created
    assert len(revio.request("GET", "/services")) == 2
    assert len(revio.calls(method="POST", status=429)) >= 1
    revio.configure(rate_limit=0, error_rate=1.0, error_statuses=[503])
    # the 503 may hide a create: the look-up that follows cannot read the carrier either, so the
    # outcome stays unknown and the create is not sent again
    with pytest.raises(OutcomeUnknown):
        client.create_service({"customer_id": 1, "provider_id": 1})
    assert len(revio.calls(method="POST", status=503)) == 1  # one attempt, no blind replay


def test_client_refuses_incomplete_settings(simulator):
    with pytest.raises(ValueError, match="subscription_key"):
        RevioClient(simulator.url_for("revio"), USER, CLIENT, PASSWORD, "")
    c = RevioClient(simulator.url_for("revio"), f"{USER}@{CLIENT}", "", PASSWORD, KEY)  # login user@clientcode
    c.close()
