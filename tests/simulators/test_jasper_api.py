"""The Jasper (Cisco Control Center) simulator's REST API over real HTTP: auth, device details,
Edit Device Details, audit trail, search, misc endpoints."""
import base64
import re
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from simulators.devices import make_iccid
from simulators.jasper import CUSTOM_FIELDS, DEVICE_FIELDS

ICCID = make_iccid(1)
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()


# ------------------------------------------------------------------------------------------- auth
def test_missing_and_wrong_credentials_are_401_with_cisco_bodies(simulator, jasper):
    url = f"{simulator.url_for('jasper')}/devices/{ICCID}"
    r = requests.get(url, timeout=5)
    assert r.status_code == 401
    assert r.json() == {"errorMessage": "Full authentication is required to access this resource"}
    for header in ("Basic " + base64.b64encode(b"sim:wrong").decode(),
                   "Basic " + base64.b64encode(b"nobody:sim-key").decode(),
                   "Basic " + base64.b64encode(b"sim").decode(),
                   "Basic !!!not-base64!!!"):
        r = requests.get(url, headers={"Authorization": header}, timeout=5)
        assert r.status_code == 401, header
        assert r.json() == {"errorMessage": "Invalid credentials", "errorCode": "10000001"}
    r = requests.get(url, headers={"Authorization": "Bearer abc"}, timeout=5)
    assert r.status_code == 401 and "errorCode" not in r.json()
    # the default demo account exists too
    r = requests.get(url, auth=("demo", "demo-api-key"), timeout=5)
    assert r.status_code == 200


# ------------------------------------------------------------------------------------------- devices
def test_get_device_details_has_every_field(api):
    r = api("GET", f"/devices/{ICCID}")
    assert r.status_code == 200
    dev = r.json()
    assert set(DEVICE_FIELDS) <= set(dev)
    assert {f"accountCustom{i}" for i in range(1, 11)} == set(CUSTOM_FIELDS) <= set(dev)
    assert not any(k.startswith("_") for k in dev)
    assert (dev["iccid"], dev["status"], dev["ratePlan"], dev["communicationPlan"]) == \
        (ICCID, "ACTIVATED", "IOT-1GB", "COMM-1")
    assert dev["imsi"] and dev["msisdn"] and dev["imei"]
    assert TS.match(dev["dateUpdated"]) and TS.match(dev["dateActivated"])


def test_unknown_device_is_404(api):
    r = api("GET", f"/devices/{make_iccid(999_999)}")
    assert r.status_code == 404
    assert r.json() == {"errorMessage": "Resource not found - Invalid iccid.", "errorCode": "20000001"}
    assert api("PUT", f"/devices/{make_iccid(999_999)}", json={"status": "DEACTIVATED"}).status_code == 404
    assert api("GET", f"/devices/{make_iccid(999_999)}/auditTrails").status_code == 404


def test_edit_device_applies_changes_and_writes_the_audit_trail(api, api_other, jasper):
    before = jasper.device(ICCID)
    time.sleep(0.01)
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED", "ratePlan": "IOT-SUSPEND-0"})
    assert r.status_code == 200 and r.json() == {"iccid": ICCID}
    dev = api("GET", f"/devices/{ICCID}").json()
    assert (dev["status"], dev["ratePlan"]) == ("DEACTIVATED", "IOT-SUSPEND-0")
    assert dev["dateUpdated"] > before["dateUpdated"]
    assert jasper.device(ICCID)["status"] == "DEACTIVATED"

    r = api_other("PUT", f"/devices/{ICCID}", json={"customer": "ACME", "accountCustom3": "cost-center-7",
                                                     "overageLimitOverride": "TEMPORARY_OVERRIDE"})
    assert r.status_code == 200
    trail = api("GET", f"/devices/{ICCID}/auditTrails").json()
    assert trail["iccid"] == ICCID and TS.match(trail["timestamp"])
    assert trail["pageNumber"] == 1 and trail["lastPage"] is True
    records = trail["deviceAuditTrails"]
    assert [(t["field"], t["priorValue"], t["value"], t["user"]) for t in records] == [
        # newest first; within one edit, the body's field order reversed
        ("overageLimitOverride", "DEFAULT", "TEMPORARY_OVERRIDE", "other"),
        ("accountCustom3", None, "cost-center-7", "other"),
        ("customer", None, "ACME", "other"),
        ("ratePlan", "IOT-1GB", "IOT-SUSPEND-0", "sim"),
        ("status", "ACTIVATED", "DEACTIVATED", "sim"),
    ]
    for t in records:
        assert t["status"] == "Executed" and TS.match(t["timestamp"]) and TS.match(t["effectiveDate"])
    # setting the same value again changes nothing and adds no record
    assert api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED"}).status_code == 200
    assert len(api("GET", f"/devices/{ICCID}/auditTrails").json()["deviceAuditTrails"]) == 5


def test_audit_trail_paging_and_bounds(api, jasper):
    jasper.add_rate_plans([{"name": n, "dataMB": 1, "baseRate": 1} for n in ("P1", "P2", "P3")])
    for plan in ("P1", "P2", "P3"):
        assert api("PUT", f"/devices/{ICCID}", json={"ratePlan": plan}).status_code == 200
    p1 = api("GET", f"/devices/{ICCID}/auditTrails", params={"pageSize": 2}).json()
    p2 = api("GET", f"/devices/{ICCID}/auditTrails", params={"pageSize": 2, "pageNumber": 2}).json()
    assert [t["value"] for t in p1["deviceAuditTrails"]] == ["P3", "P2"] and p1["lastPage"] is False
    assert [t["value"] for t in p2["deviceAuditTrails"]] == ["P1"] and p2["lastPage"] is True
    for params in ({"pageSize": 51}, {"pageSize": 0}, {"daysOfHistory": 366}, {"daysOfHistory": "x"},
                   {"pageNumber": 0}):
        r = api("GET", f"/devices/{ICCID}/auditTrails", params=params)
        assert r.status_code == 400 and set(r.json()) == {"errorMessage", "errorCode"}, params


@pytest.mark.parametrize("body,code", [
    ({}, "10000004"),
    ({"color": "red"}, "10000028"),
    ({"effectiveDate": "2030-01-01"}, "10000004"),
    (["status", "DEACTIVATED"], "10000004"),
    ({"status": "SLEEPING"}, "10000024"),
    ({"status": None}, "10000024"),
    ({"overageLimitOverride": "SOMETIMES"}, "10000026"),
    ({"ratePlan": {"name": "x"}}, "10000024"),
    ({"ratePlan": "NO-SUCH-PLAN"}, "10000013"),
    ({"communicationPlan": "NO-SUCH-COMM"}, "10000014"),
    ({"ratePlan": "IOT-SUSPEND-0", "communicationPlan": "NO-SUCH-COMM"}, "10000014"),
    ({"status": "TEST_READY"}, "10000029"),
    ({"status": "ACTIVATED", "imei": "1"}, "10000028"),
    ({"status": "DEACTIVATED", "effectiveDate": 20300101}, "10000027"),
])
def test_bad_edits_are_400_and_change_nothing(api, jasper, body, code):
    r = api("PUT", f"/devices/{ICCID}", json=body)
    assert r.status_code == 400 and r.json()["errorCode"] == code and r.json()["errorMessage"]
    dev = jasper.device(ICCID)
    assert (dev["status"], dev["ratePlan"]) == ("ACTIVATED", "IOT-1GB")


def test_invalid_json_body_is_400(api):
    r = api("PUT", f"/devices/{ICCID}", data="{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json() == {"errorMessage": "Request body is not valid JSON",
                                                 "errorCode": "10000023"}


def test_json_body_must_be_sent_as_application_json(api, jasper):
    for headers in ({"Content-Type": "text/plain"}, {}, {"Content-Type": "application/x-www-form-urlencoded"}):
        r = api("PUT", f"/devices/{ICCID}", data='{"status": "DEACTIVATED"}', headers=headers)
        assert r.status_code == 415 and set(r.json()) == {"errorMessage"}, headers
    assert jasper.device(ICCID)["status"] == "ACTIVATED"
    r = api("PUT", f"/devices/{ICCID}", data='{"status": "DEACTIVATED"}',
            headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200 and jasper.device(ICCID)["status"] == "DEACTIVATED"
    # the assumed rule can be switched off, never silently
    jasper.configure(require_json_content_type=False)
    r = api("PUT", f"/devices/{ICCID}", data='{"status": "ACTIVATED"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 200


def test_unknown_fields_next_to_known_ones_are_refused(api, jasper):
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED", "color": "red", "imei": "1"})
    assert r.status_code == 400
    assert r.json() == {"errorMessage": "Unrecognized parameter(s): color, imei", "errorCode": "10000028"}
    assert jasper.device(ICCID)["status"] == "ACTIVATED"


def test_unknown_query_parameters_are_refused(api):
    for path, params in ((f"/devices/{ICCID}", {"verbose": "1"}), (f"/devices/{ICCID}/auditTrails", {"days": 3}),
                         ("/devices", {"modifiedSince": "2020-01-01T00:00:00Z", "sort": "asc"}),
                         ("/rateplans", {"page": 1}), ("/echo/hello", {"x": 1})):
        r = api("GET", path, params=params)
        assert r.status_code == 400 and r.json()["errorCode"] == "10000028", path


def test_unknown_routes_are_404_in_the_carrier_shape(api):
    for method, path in (("GET", "/nothing/here"), ("GET", f"/devices/{ICCID}/usage"), ("POST", f"/devices/{ICCID}"),
                         ("DELETE", f"/devices/{ICCID}")):
        r = api(method, path)
        assert r.status_code == 404 and set(r.json()) == {"errorMessage"}, (method, path)
        assert r.json()["errorMessage"].startswith("Resource not found")


def test_status_transition_table(api, jasper):
    assert api("PUT", f"/devices/{ICCID}", json={"status": "RETIRED"}).status_code == 200
    r = api("PUT", f"/devices/{ICCID}", json={"status": "ACTIVATED"})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000025"
    assert "from RETIRED to ACTIVATED is not allowed" in r.json()["errorMessage"]
    assert jasper.device(ICCID)["status"] == "RETIRED"
    assert api("PUT", f"/devices/{ICCID}", json={"status": "PURGED"}).status_code == 200
    for target in ("ACTIVATED", "RETIRED", "INVENTORY"):
        assert api("PUT", f"/devices/{ICCID}", json={"status": target}).status_code == 400
    # once past activation a SIM never returns to a pre-activation state (published: 10000029)
    other = make_iccid(2)
    for target in ("TEST_READY", "INVENTORY", "ACTIVATION_READY"):
        r = api("PUT", f"/devices/{other}", json={"status": target})
        assert r.status_code == 400 and r.json()["errorCode"] == "10000029", target
        assert "pre-activation" in r.json()["errorMessage"]
    assert api("PUT", f"/devices/{other}", json={"status": "DEACTIVATED"}).status_code == 200
    assert api("PUT", f"/devices/{other}", json={"status": "INVENTORY"}).json()["errorCode"] == "10000029"
    # before activation the pre-activation states are free, and activation from any of them
    fresh = make_iccid(60)
    jasper.seed_devices([{"iccid": fresh, "status": "INVENTORY"}])
    for target in ("TEST_READY", "ACTIVATION_READY", "INVENTORY", "TEST_READY", "ACTIVATED", "DEACTIVATED",
                   "ACTIVATED", "REPLACED"):
        assert api("PUT", f"/devices/{fresh}", json={"status": target}).status_code == 200, target
    # the assumed end-of-life rules are switchable; the published one is not
    jasper.configure(enforce_terminal_statuses=False)
    assert api("PUT", f"/devices/{ICCID}", json={"status": "ACTIVATED"}).status_code == 200
    assert api("PUT", f"/devices/{ICCID}", json={"status": "TEST_READY"}).json()["errorCode"] == "10000029"


def test_effective_date_schedules_instead_of_applying(api, jasper):
    now = datetime.now(timezone.utc)
    r = api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-SUSPEND-0", "effectiveDate": iso(now + timedelta(days=3))})
    assert r.status_code == 200 and r.json() == {"iccid": ICCID}
    assert jasper.device(ICCID)["ratePlan"] == "IOT-1GB"
    assert api("GET", f"/devices/{ICCID}/auditTrails").json()["deviceAuditTrails"] == []
    [pending] = jasper.scheduled_edits(ICCID)
    assert pending["status"] == "Pending" and pending["changes"] == {"ratePlan": "IOT-SUSPEND-0"}
    assert pending["user"] == "sim"
    for when in (now - timedelta(minutes=1), now + timedelta(days=181)):
        r = api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-SUSPEND-0", "effectiveDate": iso(when)})
        assert r.status_code == 400 and r.json()["errorCode"] == "10000027"
    r = api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-SUSPEND-0", "effectiveDate": "next tuesday"})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000027"
    # a date-only effectiveDate of today means now
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED", "effectiveDate": now.date().isoformat()})
    assert r.status_code == 200 and jasper.device(ICCID)["status"] == "DEACTIVATED"


def test_scheduled_edit_lands_when_its_time_comes(api, jasper):
    when = datetime.now(timezone.utc) + timedelta(seconds=0.8)
    r = api("PUT", f"/devices/{ICCID}", json={"status": "DEACTIVATED", "effectiveDate": iso(when)})
    assert r.status_code == 200 and jasper.device(ICCID)["status"] == "ACTIVATED"
    time.sleep(max(0.0, when.timestamp() - time.time()) + 0.1)
    assert api("GET", f"/devices/{ICCID}").json()["status"] == "DEACTIVATED"
    [record] = api("GET", f"/devices/{ICCID}/auditTrails").json()["deviceAuditTrails"]
    assert (record["field"], record["value"], record["user"]) == ("status", "DEACTIVATED", "sim")
    assert record["effectiveDate"] == jasper.scheduled_edits(ICCID)[0]["effectiveDate"]
    assert jasper.scheduled_edits(ICCID)[0]["status"] == "Executed"


# ------------------------------------------------------------------------------------------- search
def test_search_requires_modified_since(api):
    r = api("GET", "/devices")
    assert r.status_code == 400
    assert r.json() == {"errorMessage": "ModifiedSince is required.", "errorCode": "10000003"}
    assert api("GET", "/devices", params={"modifiedSince": "yesterday"}).status_code == 400


def test_search_pages_oldest_change_first(api):
    since = "2020-01-01T00:00:00Z"
    time.sleep(0.01)
    changed = make_iccid(2)
    assert api("PUT", f"/devices/{changed}", json={"status": "DEACTIVATED"}).status_code == 200
    pages = [api("GET", "/devices", params={"modifiedSince": since, "pageSize": 2, "pageNumber": n}).json()
             for n in (1, 2, 3)]
    assert [len(p["devices"]) for p in pages] == [2, 2, 1]
    assert [p["lastPage"] for p in pages] == [False, False, True]
    assert [p["pageNumber"] for p in pages] == [1, 2, 3]
    listed = [d for p in pages for d in p["devices"]]
    assert listed[-1] == {"iccid": changed, "status": "DEACTIVATED", "ratePlan": "IOT-1GB",
                          "communicationPlan": "COMM-1"}
    assert len({d["iccid"] for d in listed}) == 5
    beyond = api("GET", "/devices", params={"modifiedSince": since, "pageSize": 2, "pageNumber": 4}).json()
    assert beyond["devices"] == [] and beyond["lastPage"] is True
    default = api("GET", "/devices", params={"modifiedSince": since}).json()
    assert len(default["devices"]) == 5 and default["lastPage"] is True
    for params in ({"pageSize": 51}, {"pageSize": 0}, {"pageNumber": -1}, {"status": "SLEEPING"}):
        assert api("GET", "/devices", params={"modifiedSince": since, **params}).status_code == 400, params


def test_search_filters_by_modified_since_status_and_account(api, jasper):
    jasper.seed_devices([{"iccid": make_iccid(50), "accountId": "200002", "status": "INVENTORY"}])
    time.sleep(0.01)
    cut = datetime.now(timezone.utc)
    time.sleep(0.01)
    changed = make_iccid(3)
    assert api("PUT", f"/devices/{changed}", json={"status": "DEACTIVATED"}).status_code == 200
    recent = api("GET", "/devices", params={"modifiedSince": iso(cut)}).json()["devices"]
    assert [d["iccid"] for d in recent] == [changed]
    # '+00:00' arriving unencoded (as a space) is understood too
    raw = api("GET", f"/devices?modifiedSince={iso(cut)}").json()["devices"]
    assert [d["iccid"] for d in raw] == [changed]
    old = "2020-01-01T00:00:00Z"
    inventory = api("GET", "/devices", params={"modifiedSince": old, "status": "INVENTORY"}).json()["devices"]
    assert [d["iccid"] for d in inventory] == [make_iccid(50)]
    acct = api("GET", "/devices", params={"modifiedSince": old, "accountId": "200002"}).json()["devices"]
    assert [d["iccid"] for d in acct] == [make_iccid(50)]


def test_seeded_date_updated_orders_the_search(api, jasper):
    jasper.reset()
    jasper.seed_devices([{"iccid": make_iccid(i), "dateUpdated": f"2024-0{i}-01T00:00:00.000Z"}
                         for i in (3, 1, 2)])
    found = api("GET", "/devices", params={"modifiedSince": "2024-01-15T00:00:00Z"}).json()["devices"]
    assert [d["iccid"] for d in found] == [make_iccid(2), make_iccid(3)]


# ------------------------------------------------------------------------------------------- misc
def test_echo_and_rate_plans(api, jasper):
    assert api("GET", "/echo/hello").json() == {"message": "hello"}
    plans = api("GET", "/rateplans").json()["ratePlans"]
    assert {"name", "dataMB", "baseRate"} <= set(plans[0])
    jasper.set_rate_plans([{"name": "P-0", "dataMB": 0, "baseRate": 0.5}, {"name": "P-1G", "dataMB": 1024,
                                                                            "baseRate": 4.0}])
    assert [p["name"] for p in api("GET", "/rateplans").json()["ratePlans"]] == ["P-0", "P-1G"]
    # only the account's rate plans are accepted (published 10000013), on by default
    r = api("PUT", f"/devices/{ICCID}", json={"ratePlan": "WHATEVER-ELSE"})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000013"
    assert jasper.device(ICCID)["ratePlan"] == "IOT-1GB"
    assert api("PUT", f"/devices/{ICCID}", json={"ratePlan": "P-0"}).status_code == 200
    jasper.configure(validate_rate_plans=False)
    assert api("PUT", f"/devices/{ICCID}", json={"ratePlan": "WHATEVER"}).status_code == 200
    jasper.reset()
    assert [p["name"] for p in api("GET", "/rateplans").json()["ratePlans"]] == \
        ["IOT-SUSPEND-0", "IOT-SUSPEND-500", "IOT-1GB"]


def test_communication_plans_of_the_account(api, jasper):
    r = api("PUT", f"/devices/{ICCID}", json={"communicationPlan": "CP-OTHER"})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000014"
    jasper.add_communication_plans(["CP-OTHER"])
    assert api("PUT", f"/devices/{ICCID}", json={"communicationPlan": "CP-OTHER"}).status_code == 200
    assert jasper.device(ICCID)["communicationPlan"] == "CP-OTHER"
    jasper.reset()
    jasper.seed_devices([{"iccid": ICCID}])
    assert api("PUT", f"/devices/{ICCID}", json={"communicationPlan": "CP-OTHER"}).json()["errorCode"] == "10000014"


def test_rate_plans_paging_and_fields(api, jasper):
    jasper.set_rate_plans([{"name": f"P-{i:02d}", "dataMB": i, "baseRate": i / 10} for i in range(7)])
    pages = [api("GET", "/rateplans", params={"pageSize": 3, "pageNumber": n}).json() for n in (1, 2, 3)]
    assert [[p["name"] for p in page["ratePlans"]] for page in pages] == \
        [["P-00", "P-01", "P-02"], ["P-03", "P-04", "P-05"], ["P-06"]]
    assert [(page["pageNumber"], page["lastPage"]) for page in pages] == [(1, False), (2, False), (3, True)]
    assert api("GET", "/rateplans").json()["lastPage"] is True
    only = api("GET", "/rateplans", params={"fields": "dataMB", "pageSize": 1}).json()["ratePlans"]
    assert only == [{"name": "P-00", "dataMB": 0}]
    for params in ({"pageSize": 51}, {"pageSize": 0}, {"pageNumber": 0}, {"fields": "name,color"}, {"fields": ""}):
        r = api("GET", "/rateplans", params=params)
        assert r.status_code == 400 and set(r.json()) == {"errorMessage", "errorCode"}, params


def test_get_device_honours_fields(api):
    r = api("GET", f"/devices/{ICCID}", params={"fields": "status,ratePlan"})
    assert r.json() == {"iccid": ICCID, "status": "ACTIVATED", "ratePlan": "IOT-1GB"}
    r = api("GET", f"/devices/{ICCID}", params={"fields": "status,shoeSize"})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000028" and "shoeSize" in r.json()["errorMessage"]


@pytest.mark.parametrize("zone", [timezone(timedelta(hours=5)), timezone(timedelta(hours=-8))])
def test_effective_date_offsets_are_honoured_across_midnight_utc(api, jasper, zone):
    """A future edit written in a +05:00 or -08:00 zone, whose local date differs from its UTC date,
    is scheduled at the same instant as its UTC form (the offset is not read as UTC)."""
    base = datetime.now(timezone.utc).replace(hour=0, minute=30, second=0, microsecond=0) + timedelta(days=2)
    # 00:30 UTC: the local date is the day before in -08:00; in +05:00 pick 22:30 UTC (next local day)
    when = base if zone.utcoffset(None) < timedelta(0) else base - timedelta(hours=2)
    local = when.astimezone(zone)
    assert local.date() != when.date()
    forms = [local.isoformat(timespec="milliseconds"), local.strftime("%Y-%m-%dT%H:%M:%S.000%z")]
    for i, form in enumerate(forms):
        iccid = make_iccid(2 + i)
        r = api("PUT", f"/devices/{iccid}", json={"ratePlan": "IOT-SUSPEND-0", "effectiveDate": form})
        assert r.status_code == 200, (form, r.text)
        [pending] = jasper.scheduled_edits(iccid)
        assert pending["effectiveDate"] == when.strftime("%Y-%m-%dT%H:%M:%S.000Z"), form


def test_date_times_without_offset_are_refused(api, jasper):
    naive = (datetime.now(timezone.utc) + timedelta(days=2)).replace(tzinfo=None).isoformat(timespec="seconds")
    r = api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-SUSPEND-0", "effectiveDate": naive})
    assert r.status_code == 400 and r.json()["errorCode"] == "10000027"
    r = api("GET", "/devices", params={"modifiedSince": "2020-01-01T00:00:00"})
    assert r.status_code == 400
    jasper.configure(require_date_offset=False)
    assert api("PUT", f"/devices/{ICCID}", json={"ratePlan": "IOT-SUSPEND-0", "effectiveDate": naive}).status_code == 200
