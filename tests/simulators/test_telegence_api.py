"""The Telegence simulator over HTTP: auth, line config PATCH/GET, paging, asynchronous activation,
errors and the rate limit."""
import time

import pytest
import requests

from simulators.devices import make_iccid
from simulators.telegence import ACTIVATION, LINECONFIG

APP, SECRET = "tg-app", "tg-secret-1"
LINES = [{"iccid": make_iccid(900 + i), "msisdn": f"1404555{i:04d}", "status": "A"} for i in range(5)]
SPARE = [{"iccid": make_iccid(950 + i)} for i in range(3)]  # SIMs without a line


@pytest.fixture
def tg(simulator):
    control = simulator.control("telegence")
    control.reset()
    control.set_accounts({APP: SECRET})
    control.seed_devices(LINES + SPARE)
    yield control
    control.reset()


@pytest.fixture
def api(simulator):
    root = simulator.url_for("telegence")
    session = requests.Session()
    session.headers.update({"app-id": APP, "app-secret": SECRET})

    def call(method, path, **kw):
        kw.setdefault("timeout", 10)
        return session.request(method, root + path, **kw)
    return call


def chars(body):
    return {c["name"]: c["value"] for c in body["serviceCharacteristic"]}


def test_auth_headers_are_required_and_checked(simulator, tg):
    url = simulator.url_for("telegence") + f"{LINECONFIG}/{LINES[0]['msisdn']}"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401 and "Missing app-id" in missing.json()["description"]
    wrong = requests.get(url, headers={"app-id": APP, "app-secret": "nope"}, timeout=10)
    assert wrong.status_code == 401 and set(wrong.json()) >= {"id", "description"}
    ok = requests.get(url, headers={"app-id": APP, "app-secret": SECRET}, timeout=10)
    assert ok.status_code == 200 and chars(ok.json())["subscriberStatus"] == "A"


def test_patch_changes_the_status_and_refuses_bad_transitions(api, tg):
    number = LINES[1]["msisdn"]
    r = api("PATCH", f"{LINECONFIG}/{number}", json={"effectiveDate": "2026-11-24", "serviceCharacteristic": [
        {"name": "subscriberStatus", "value": "S"}, {"name": "statusReasonCode", "value": "CR"}]})
    assert r.status_code == 200 and chars(r.json())["subscriberStatus"] == "S"
    assert chars(api("GET", f"{LINECONFIG}/{number}").json())["statusReasonCode"] == "CR"
    assert api("PATCH", f"{LINECONFIG}/{number}", json={"serviceCharacteristic": [
        {"name": "subscriberStatus", "value": "C"}]}).status_code == 200
    back = api("PATCH", f"{LINECONFIG}/{number}", json={"serviceCharacteristic": [
        {"name": "subscriberStatus", "value": "A"}]})
    assert back.status_code == 400 and "cannot change from C to A" in back.json()["description"]
    bad = api("PATCH", f"{LINECONFIG}/{LINES[2]['msisdn']}", json={"serviceCharacteristic": [
        {"name": "subscriberStatus", "value": "X"}]})
    assert bad.status_code == 400
    assert api("PATCH", f"{LINECONFIG}/{LINES[2]['msisdn']}", json={"nothing": 1}).status_code == 400
    assert api("PATCH", f"{LINECONFIG}/{LINES[2]['msisdn']}", data="{no",
               headers={"Content-Type": "application/json"}).status_code == 400


def test_unknown_fields_bad_dates_and_content_types_are_refused(api, tg):
    path = f"{LINECONFIG}/{LINES[2]['msisdn']}"
    status_a = {"serviceCharacteristic": [{"name": "subscriberStatus", "value": "A"}]}
    r = api("PATCH", path, json={**status_a, "imei": "1"})
    assert r.status_code == 400 and "unrecognized field(s): imei" in r.json()["description"]
    for when in ("2030-01-01T00:00:00", "01/02/2030", 20300101):
        r = api("PATCH", path, json={**status_a, "effectiveDate": when})
        assert r.status_code == 400 and "effectiveDate" in r.json()["description"], when
    r = api("PATCH", path, json={"serviceCharacteristic": [{"name": "subscriberStatus", "value": "X"}]})
    assert r.status_code == 400 and "Invalid subscriberStatus" in r.json()["description"]
    r = api("PATCH", path, json={"serviceCharacteristic": [{"name": "favouriteColour", "value": "red"}]})
    assert r.status_code == 400 and "favouriteColour" in r.json()["description"]
    import json as _json
    r = api("PATCH", path, data=_json.dumps(status_a), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and set(r.json()) == {"id", "description"}
    r = api("POST", ACTIVATION, json=[{"service": {"serviceCharacteristic": []}, "priority": "high"}])
    assert r.status_code == 400 and "priority" in r.json()["description"]
    assert tg.request("GET", "/activations") == []  # nothing created
    # the assumed rules are switchable, never silently lenient
    tg.configure(refuse_unknown_fields=False, require_json_content_type=False)
    assert api("PATCH", path, json={**status_a, "imei": "1"}).status_code == 200
    assert api("PATCH", path, data=_json.dumps(status_a), headers={"Content-Type": "text/plain"}).status_code == 200


def test_a_future_effective_date_takes_effect_at_the_start_of_its_utc_day(api, tg):
    from datetime import datetime, timedelta, timezone

    path = f"{LINECONFIG}/{LINES[3]['msisdn']}"
    soc = {"serviceCharacteristic": [{"name": "singleUserCode", "value": "IOTSOC9"}]}
    r = api("PATCH", path, json={**soc, "effectiveDate": "2030-02-30"})  # the shape, but no such day
    assert r.status_code == 400 and "is not a date" in r.json()["description"]
    now = datetime.now(timezone.utc)
    later = (now + timedelta(days=2)).strftime("%Y-%m-%d")
    r = api("PATCH", path, json={**soc, "effectiveDate": later})
    assert r.status_code == 200 and chars(r.json())["singleUserCode"] == "IOTSOC1"  # the line as it is until then
    assert [c["effectiveDate"] for c in tg.request("GET", "/pending_changes")] == [later]
    start = datetime.fromisoformat(later).replace(tzinfo=timezone.utc)
    assert tg.run_scheduled((start - now).total_seconds() - 60) == 0
    assert chars(api("GET", path).json())["singleUserCode"] == "IOTSOC1"
    assert tg.run_scheduled((start - now).total_seconds() + 60) == 1
    assert chars(api("GET", path).json())["singleUserCode"] == "IOTSOC9"
    today = now.strftime("%Y-%m-%d")  # today: at once
    r = api("PATCH", path, json={"effectiveDate": today, "serviceCharacteristic": [
        {"name": "singleUserCode", "value": "IOTSOC7"}]})
    assert chars(r.json())["singleUserCode"] == "IOTSOC7"


def test_unknown_line_is_the_documented_404(api, tg):
    r = api("GET", f"{LINECONFIG}/19999999999")
    assert r.status_code == 404 and r.json()["description"] == "/service/"


def test_line_list_pages_with_headers(api, tg):
    first = api("GET", LINECONFIG, headers={"current-page": "1", "page-size": "2"})
    assert first.status_code == 200 and first.headers["page-total"] == "3" and len(first.json()) == 2
    last = api("GET", LINECONFIG, headers={"current-page": "3", "page-size": "2"})
    assert len(last.json()) == 1
    assert api("GET", LINECONFIG, headers={"page-size": "0"}).status_code == 400


def _activation(iccid, **extra):
    chars_ = [{"name": "sim", "value": iccid}, {"name": "singleUserCode", "value": "IOT5GB"},
              {"name": "serviceZipCode", "value": "30004"}]
    return {"service": {"serviceCharacteristic": chars_ + [{"name": k, "value": v} for k, v in extra.items()]}}


def test_activation_is_pending_then_active_with_a_new_number(api, tg):
    tg.configure(activation_delay_s=3600)  # active when the test runs the carrier's clock forward
    spare = [d["iccid"] for d in SPARE]
    r = api("POST", ACTIVATION, json=[_activation(spare[0]), _activation(spare[1]),
                                      {"service": {"serviceCharacteristic": []}}])
    assert r.status_code == 201
    answers = r.json()
    assert [a["service"]["status"] for a in answers] == ["pending", "pending", "rejected"]
    assert "missing sim" in answers[2]["service"]["statusReason"]
    assert api("GET", f"{ACTIVATION}/{answers[0]['id']}").json()["service"]["status"] == "pending"
    assert tg.run_scheduled(3600) >= 1
    status = api("GET", f"{ACTIVATION}/{answers[0]['id']}").json()["service"]
    assert status["status"] == "active"
    number = status["subscriberNumber"]
    line = api("GET", f"{LINECONFIG}/{number}").json()
    assert chars(line)["sim"] == spare[0] and chars(line)["subscriberStatus"] == "A"
    assert api("GET", f"{ACTIVATION}/nope").status_code == 404


def test_remove_offering_code_takes_the_soc_off_the_line(api, tg):
    """A line activated on a plan carries the plan's bundled SOCs besides the request's own; a PATCH of
    ``removeOfferingCode`` items takes them off; a SOC the line does not carry is refused whole."""
    tg.configure(activation_delay_s=3600, plan_offerings={"IOT5GB": ["VOICEMAIL", "INTLROAM"]})
    r = api("POST", ACTIVATION, json=[_activation(SPARE[0]["iccid"], offeringCode1="DATA5G")])
    assert tg.run_scheduled(3600) >= 1
    number = api("GET", f"{ACTIVATION}/{r.json()[0]['id']}").json()["service"]["subscriberNumber"]
    socs = lambda: sorted(v for k, v in chars(api("GET", f"{LINECONFIG}/{number}").json()).items()  # noqa: E731
                          if k.startswith("offeringCode"))
    assert socs() == ["DATA5G", "INTLROAM", "VOICEMAIL"]
    refused = api("PATCH", f"{LINECONFIG}/{number}", json={"serviceCharacteristic": [
        {"name": "removeOfferingCode", "value": "VOICEMAIL"}, {"name": "removeOfferingCode", "value": "NOPE"}]})
    assert refused.status_code == 400 and "'NOPE' not on line" in refused.json()["description"]
    assert socs() == ["DATA5G", "INTLROAM", "VOICEMAIL"]  # nothing of the refused PATCH applied
    ok = api("PATCH", f"{LINECONFIG}/{number}", json={"effectiveDate": "2026-01-01", "serviceCharacteristic": [
        {"name": "removeOfferingCode", "value": "VOICEMAIL"}, {"name": "removeOfferingCode", "value": "INTLROAM"}]})
    assert ok.status_code == 200 and socs() == ["DATA5G"]


def test_activation_rejects_lines_that_exist_and_injected_sims(api, tg):
    tg.configure(activation_delay_s=0.0, reject_iccids=[SPARE[2]["iccid"]])
    r = api("POST", ACTIVATION, json=[_activation(LINES[0]["iccid"]), _activation(SPARE[2]["iccid"]),
                                      _activation(make_iccid(999_999))])
    ids = [a["id"] for a in r.json()]
    time.sleep(0.05)
    results = [api("GET", f"{ACTIVATION}/{i}").json()["service"] for i in ids]
    assert [s["status"] for s in results] == ["rejected"] * 3
    assert "already has subscriber" in results[0]["statusReason"]
    assert "injected" in results[1]["statusReason"] and "not found" in results[2]["statusReason"]


def test_activation_takes_at_most_200_lines(api, tg):
    r = api("POST", ACTIVATION, json=[_activation(make_iccid(i)) for i in range(201)])
    assert r.status_code == 400 and "at most 200" in r.json()["description"]
    assert api("POST", ACTIVATION, json=[]).status_code == 400


def test_rate_limit_answers_429_with_retry_after(api, tg):
    tg.configure(rate_limit=2)
    codes = [api("GET", f"{LINECONFIG}/{LINES[0]['msisdn']}") for _ in range(5)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and float(limited[0].headers["Retry-After"]) > 0
    assert "description" in limited[0].json()
