"""The Rev.io simulator refuses what it is strict about (contract: include/simulators/contracts/revio.md):
undocumented fields, ids that are not integers, malformed dates, the wrong media types, a status change
of a disconnected or denied service product; and the status pairs of a service product, walked one by one."""
import json

import requests

from simulators.revio import PRODUCT_STATUSES
from tests.simulators.test_revio_api import headers, revio  # noqa: F401

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def test_unknown_fields_types_dates_and_media_types_are_refused(simulator, revio):
    root = simulator.url_for("revio")

    def refused(resp, status, text):
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert body["ok"] is False and body["code"] == str(status) and text in body["message"], body

    service = {"customer_id": 1, "provider_id": 2}
    refused(requests.post(f"{root}/Services", json={**service, "iccid": "1"}, headers=headers(), timeout=10),
            400, "iccid")
    refused(requests.post(f"{root}/Services", json={**service, "provider_id": "2"}, headers=headers(), timeout=10),
            400, "provider_id must be an integer")
    for when in ("30/11/2026", "2026-11-30T10:00:00", "2026-11-30 10:00", "2026-02-30Z", "2026-11-30T25:00:00Z"):
        refused(requests.post(f"{root}/Services", json={**service, "effective_date": when}, headers=headers(),
                              timeout=10), 400, "effective_date")
    refused(requests.post(f"{root}/Services", data=json.dumps(service), timeout=10,
                          headers={**headers(), "Content-Type": "text/plain"}), 415, "application/json")
    assert revio.request("GET", "/services") == []  # nothing created
    for when in ("2026-11-30", "2026-11-30Z", "2026-11-30T10:00:00-08:00"):
        ok = requests.post(f"{root}/Services", json={**service, "effective_date": when}, headers=headers(), timeout=10)
        assert ok.status_code == 201, ok.text
    sid = ok.json()["id"]
    patch = [{"op": "replace", "path": "/description", "value": "x"}]
    refused(requests.patch(f"{root}/Services/{sid}", json=patch, headers=headers(), timeout=10), 415,
            "application/json-patch+json")
    refused(requests.patch(f"{root}/Services/{sid}", json=[{**patch[0], "note": "n"}], timeout=10,
                           headers={**headers(), **JSON_PATCH}), 400, "note")
    product = {"service_id": sid, "product_id": 7, "generate_proration": False}
    refused(requests.post(f"{root}/ServiceProduct", json={**product, "price": 1}, headers=headers(), timeout=10),
            400, "price")
    # the assumed rules are switchable, never silently lenient
    revio.configure(refuse_unknown_fields=False, strict_dates=False, require_content_types=False)
    assert requests.post(f"{root}/Services", data=json.dumps({**service, "iccid": "1", "effective_date": "30/11"}),
                         headers={**headers(), "Content-Type": "text/plain"}, timeout=10).status_code == 201
    assert requests.patch(f"{root}/Services/{sid}", json=patch, headers=headers(), timeout=10).status_code == 200


def test_every_service_product_status_pair(simulator, revio):
    """The pipeline never changes a service product's status (it creates products, rules.py has no Rev.io
    table), so nothing it sends can be refused here; the simulator keeps DISCONNECTED and DENIED final."""
    from bulkchange.rules import TRANSITIONS
    assert not any(i.value.lower().startswith("rev") for i in TRANSITIONS)
    root = simulator.url_for("revio")
    sid = requests.post(f"{root}/Services", json={"customer_id": 1, "provider_id": 2}, headers=headers(),
                        timeout=10).json()["id"]
    answers = {}
    for cur in PRODUCT_STATUSES:
        for target in PRODUCT_STATUSES:
            if cur == target:
                continue
            pid = requests.post(f"{root}/ServiceProduct", headers=headers(), timeout=10, json={
                "service_id": sid, "product_id": 7, "generate_proration": False, "status": cur}).json()["id"]
            answers[(cur, target)] = requests.put(f"{root}/ServiceProduct/{pid}", json={"status": target},
                                                  headers=headers(), timeout=10).status_code
    refused = {pair for pair, status in answers.items() if status != 200}
    assert refused == {(cur, t) for cur in ("DISCONNECTED", "DENIED") for t in PRODUCT_STATUSES if t != cur}
    revio.configure(final_product_statuses=False)
    pid = requests.post(f"{root}/ServiceProduct", headers=headers(), timeout=10, json={
        "service_id": sid, "product_id": 7, "generate_proration": False, "status": "DISCONNECTED"}).json()["id"]
    assert requests.put(f"{root}/ServiceProduct/{pid}", json={"status": "ACTIVE"}, headers=headers(),
                        timeout=10).status_code == 200
