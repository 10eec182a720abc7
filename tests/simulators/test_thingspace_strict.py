"""The ThingSpace simulator refuses what Verizon refuses (contract: include/simulators/contracts/thingspace.md):
body fields the SDK's request models do not name, wrong JSON types, service plans the account does not
have, date-times without an offset, bodies not sent as JSON; and, walked pair by pair, every state
change the pipeline's rules would send is one the simulator accepts."""
import importlib
import json

import pytest

from bulkchange.models import Integration
from bulkchange.rules import TRANSITIONS, RuleError, check_transition
from bulkchange.changes.status_update.thingspace import thingspace_action
from simulators.devices import make_iccid
from simulators.thingspace import BODY_FIELDS, DEVICE_FIELDS, DEVICE_ID_FIELDS, STATES
from tests.simulators.test_thingspace_sdk import ACCOUNT, api, ts  # noqa: F401

SDK_MODELS = {  # our field lists -> the published SDK model that names them
    "activate": "carrier_activate_request.CarrierActivateRequest",
    "suspend": "carrier_actions_request.CarrierActionsRequest",
    "restore": "carrier_actions_request.CarrierActionsRequest",
    "deactivate": "carrier_deactivate_request.CarrierDeactivateRequest",
    "plan": "service_plan_update_request.ServicePlanUpdateRequest",
    "deviceId": "change_device_id_request.ChangeDeviceIdRequest",
    "costCenter": "device_cost_center_request.DeviceCostCenterRequest",
    "customFields": "custom_fields_update_request.CustomFieldsUpdateRequest",
    "list": "account_device_list_request.AccountDeviceListRequest",
    "history": "device_provisioning_history_list_request.DeviceProvisioningHistoryListRequest",
    "login": "log_in_request.LogInRequest",
    "add": "add_devices_request.AddDevicesRequest",
}


def sdk_names(dotted: str) -> set[str]:
    module, cls = dotted.rsplit(".", 1)
    return set(getattr(importlib.import_module(f"verizon.models.{module}"), cls)._names.values())


@pytest.mark.parametrize("kind", sorted(SDK_MODELS))
def test_body_fields_are_the_sdk_models_fields(kind):
    assert set(BODY_FIELDS[kind]) == sdk_names(SDK_MODELS[kind])


def test_nested_fields_are_the_sdk_models_fields():
    assert set(DEVICE_FIELDS) == sdk_names("account_device_list.AccountDeviceList")
    assert set(DEVICE_ID_FIELDS) == sdk_names("device_id.DeviceId")


def post(api, path, body, **headers):
    return api.http.post(api.root + "/m2m/v1" + path, data=json.dumps(body), timeout=10,
                         headers={**api.headers, **headers})


def one(iccid):
    return [{"deviceIds": [{"id": iccid, "kind": "iccid"}]}]


def test_unknown_fields_types_plans_dates_and_content_types_are_refused(api, ts):
    iccid = make_iccid(95_001)
    ts.seed_devices([{"iccid": iccid, "state": "active", "servicePlan": "M2M-5GB", "accountName": ACCOUNT}])
    suspend = {"accountName": ACCOUNT, "devices": one(iccid)}

    def refused(resp, status, code_part):
        assert resp.status_code == status, resp.text
        body = resp.json()
        assert set(body) == {"errorCode", "errorMessage"} and code_part in body["errorCode"], body

    refused(post(api, "/devices/actions/suspend", {**suspend, "imei": "1"}), 400, "INPUT_INVALID.imei.Unrecognized")
    refused(post(api, "/devices/actions/suspend", {**suspend, "devices": [
        {"deviceIds": [{"id": iccid, "kind": "iccid"}], "state": "x"}]}), 400, "Unrecognized")
    refused(post(api, "/devices/actions/suspend", {**suspend, "devices": [
        {"deviceIds": [{"id": iccid, "kind": "iccid", "primary": True}]}]}), 400, "Unrecognized")
    refused(post(api, "/devices/actions/suspend", {**suspend, "withBilling": "yes"}), 400,
            "INPUT_INVALID.withBilling.Invalid")
    refused(post(api, "/devices/actions/deactivate", {**suspend, "reasonCode": "XX"}), 400, "ReasonCode.Invalid")
    refused(post(api, "/devices/actions/activate", {**suspend, "servicePlan": "NO-SUCH-PLAN", "mdnZipCode": "30004"}),
            400, "REQUEST_FAILED._servicePlan_.NotFound")
    plan = {"accountName": ACCOUNT, "devices": one(iccid), "servicePlan": "M2M-1GB"}
    for when in ("2030-01-01T00:00:00", "2030-01-01", "01/01/2030 00:00"):
        refused(api.http.put(api.root + "/m2m/v1/devices/actions/plan", data=json.dumps({**plan, "takeEffect": when}),
                             headers=api.headers, timeout=10), 400, "takeEffect.Invalid")
    history = {"deviceId": {"id": iccid, "kind": "iccid"}, "earliest": "2030-01-01T00:00:00",
               "latest": "2030-01-02T00:00:00Z"}
    refused(post(api, "/devices/history/actions/list", history), 400, "DateRange.Invalid")
    refused(post(api, "/devices/actions/suspend", suspend, **{"Content-Type": "text/plain"}), 415, "ContentType")
    assert ts.calls(path_contains="/actions/") and ts.device(iccid)["state"] == "active"
    assert ts.run_scheduled(60) == 0  # nothing was accepted
    # plans the account has: listed by GET /plans/{aname} (SDK ServicePlan) and accepted
    names = [p["name"] for p in api.get(f"/plans/{ACCOUNT}").json()]
    assert "M2M-1GB" in names and "NO-SUCH-PLAN" not in names
    ok = api.http.put(api.root + "/m2m/v1/devices/actions/plan", headers=api.headers, timeout=10,
                      data=json.dumps({**plan, "takeEffect": "2030-01-01T05:00:00+05:00"}))
    assert ok.status_code == 200, ok.text
    # the assumed rules are switchable, never silently lenient
    ts.configure(refuse_unknown_fields=False, require_json_content_type=False, validate_service_plans=False,
                 require_offsets=False)
    assert post(api, "/devices/actions/suspend", {**suspend, "imei": "1"}, **{"Content-Type": "text/plain"}
                ).status_code == 200
    assert post(api, "/devices/history/actions/list", history).status_code == 200
    assert post(api, "/devices/actions/activate", {**suspend, "servicePlan": "NO-SUCH-PLAN",
                                                    "mdnZipCode": "30004"}).status_code == 200


def pipeline_sends(current: str, target: str, ignore: bool) -> bool:
    try:
        check = check_transition(Integration.THINGSPACE, current, target, ignore)
    except RuleError:
        return False
    return not check.already_there


def test_every_pair_the_pipeline_sends_is_accepted_by_the_simulator(api, ts):
    targets = sorted(TRANSITIONS[Integration.THINGSPACE])
    pairs = [(cur, target) for cur in STATES for target in targets if cur != target]
    iccids = {pair: make_iccid(96_000 + i) for i, pair in enumerate(pairs)}
    ts.seed_devices([{"iccid": iccid, "state": cur, "servicePlan": "M2M-5GB", "accountName": ACCOUNT}
                     for (cur, _), iccid in iccids.items()])
    requests_ = {}
    for (cur, target), iccid in iccids.items():
        action = thingspace_action(cur, target)
        body = {"accountName": ACCOUNT, "devices": one(iccid)}
        if action == "activate":
            body.update(servicePlan="M2M-5GB", mdnZipCode="30004")
        if action == "deactivate":
            body["reasonCode"] = "FF"
        resp = post(api, f"/devices/actions/{action}", body)
        assert resp.status_code == 200, resp.text
        requests_[(cur, target)] = resp.json()["requestId"]
    ts.run_scheduled(60)
    answers = {pair: ts.request("GET", f"/requests/{rid}")["status"] for pair, rid in requests_.items()}
    too_loose, sent, refused_by_pipeline = [], 0, 0
    for ignore in (False, True):
        for pair, status in answers.items():
            if pipeline_sends(*pair, ignore):
                sent += 1
                if status != "Success":
                    too_loose.append((pair, ignore, status))
            else:
                refused_by_pipeline += 1
    assert too_loose == [], f"the pipeline would send what the carrier refuses: {too_loose}"
    assert sent and refused_by_pipeline
    assert answers[("preactive", "suspend")] == "Failure" and answers[("suspend", "active")] == "Success"


def test_add_devices_built_with_the_sdk_and_its_refusals(api, ts):
    """POST /devices/actions/add (contract rule 20): the SDK's AddDevicesRequest is accepted and its
    answer parses as a list of AddDevicesResult; an existing device answers "Error. Device already
    exists."; malformed requests are refused as the carrier would and add nothing."""
    from verizon.models.account_device_list import AccountDeviceList
    from verizon.models.add_devices_request import AddDevicesRequest
    from verizon.models.add_devices_result import AddDevicesResult
    from verizon.models.device_id import DeviceId

    from simulators.devices import make_imei

    new, known, elsewhere = make_iccid(97_001), make_iccid(97_002), make_iccid(97_003)
    imeis = [make_imei(97_001 + i) for i in range(4)]
    ts.seed_devices([{"iccid": known, "imei": imeis[1], "state": "preactive", "accountName": ACCOUNT},
                     {"iccid": elsewhere, "imei": imeis[2], "state": "active", "accountName": ACCOUNT}])

    def pair(iccid, imei):
        return AccountDeviceList(device_ids=[DeviceId(id=iccid, kind="iccid"), DeviceId(id=imei, kind="imei")])

    resp = api.post("/devices/actions/add", AddDevicesRequest(
        state="preactive", devices_to_add=[pair(new, imeis[0]), pair(known, imeis[1]),
                                           pair(make_iccid(97_004), imeis[2])], account_name=ACCOUNT))
    assert resp.status_code == 200, resp.text
    results = [AddDevicesResult.from_dictionary(r) for r in resp.json()]
    assert [r.response for r in results] == ["Success", "Error. Device already exists.",
                                            "Error. Device belongs to another account."]
    assert (ts.device(new)["state"], ts.device(new)["imei"], ts.device(new)["msisdn"]) == ("preactive", imeis[0], None)

    def refused(body, code_part, status=400):
        r = post(api, "/devices/actions/add", body)
        assert r.status_code == status and code_part in r.json()["errorCode"], r.text

    fresh = make_iccid(97_005)
    ok = {"state": "preactive", "accountName": ACCOUNT,
          "devicesToAdd": [{"deviceIds": [{"id": fresh, "kind": "iccid"}, {"id": imeis[3], "kind": "imei"}]}]}
    refused({**ok, "state": "active"}, "INPUT_INVALID.State.Invalid")
    refused({k: v for k, v in ok.items() if k != "accountName"}, "accountName.Required")
    refused({**ok, "accountName": "9999999999-99999"}, "REQUEST_FAILED.AccountNotFound")
    refused({**ok, "devicesToAdd": [{"deviceIds": [{"id": fresh, "kind": "iccid"}]}]},
            "INPUT_INVALID.Device.Identifier.Invalid")  # no IMEI
    refused({**ok, "devicesToAdd": [{"deviceIds": [{"id": "123", "kind": "iccid"}, {"id": imeis[3], "kind": "imei"}]}]},
            "INPUT_INVALID.Device.Identifier.Invalid")
    refused({**ok, "devices": ok["devicesToAdd"]}, "INPUT_INVALID.devices.Unrecognized")
    refused({**ok, "devicesToAdd": [{"deviceIds": [{"id": fresh, "kind": "iccid", "x": 1}]}]}, "Unrecognized")
    refused({**ok, "devicesToAdd": ok["devicesToAdd"] * 201}, "INPUT_INVALID.NumberofDevices")
    refused({**ok, "devicesToAdd": []}, "INPUT_INVALID.Devices.Required")
    assert fresh not in {d["iccid"] for d in ts.devices(limit=1000)["devices"]}


def test_nested_place_of_use_fields_are_the_sdk_models_fields():
    from simulators.thingspace import ADDRESS_FIELDS, ADDRESS_REQUIRED, CUSTOMER_NAME_FIELDS, CUSTOMER_NAME_REQUIRED, \
        PLACE_FIELDS

    assert set(PLACE_FIELDS) == sdk_names("place_of_use.PlaceOfUse")
    assert set(ADDRESS_FIELDS) == sdk_names("address.Address")
    assert set(CUSTOMER_NAME_FIELDS) == sdk_names("customer_name.CustomerName")
    from verizon.models.address import Address
    from verizon.models.customer_name import CustomerName

    # the required fields are those the SDK does not list as optional
    assert set(ADDRESS_REQUIRED) == {Address._names[n] for n in Address._names if n not in Address._optionals}
    assert set(CUSTOMER_NAME_REQUIRED) == {CustomerName._names[n] for n in CustomerName._names
                                           if n not in CustomerName._optionals}


def test_a_malformed_primary_place_of_use_is_refused_and_a_full_one_accepted(api, ts):
    """Contract rule 21: primaryPlaceOfUse as the SDK's PlaceOfUse declares it, else 400 and nothing happens."""
    iccid = make_iccid(95_101)
    ts.seed_devices([{"iccid": iccid, "state": "preactive", "accountName": ACCOUNT}])
    name = {"firstName": "Ford", "lastName": "Prefectus"}
    address = {"addressLine1": "42 Betelgeuse Way", "city": "Atlanta", "state": "GA", "zip": "30004",
               "country": "USA"}
    activate = {"accountName": ACCOUNT, "devices": one(iccid), "servicePlan": "M2M-5GB", "mdnZipCode": "30004"}

    def refused(place, code_part):
        resp = post(api, "/devices/actions/activate", {**activate, "primaryPlaceOfUse": place})
        assert resp.status_code == 400, resp.text
        assert code_part in resp.json()["errorCode"], resp.json()

    refused("Ford Prefectus", "primaryPlaceOfUse.Invalid")
    refused({"customerName": name}, "primaryPlaceOfUse.address.Required")
    refused({"address": address}, "primaryPlaceOfUse.customerName.Required")
    refused({"address": address, "customerName": {"firstName": "Ford"}}, "customerName.lastName.Required")
    refused({"address": {**address, "country": ""}, "customerName": name}, "address.country.Required")
    refused({"address": {**address, "zip": 30004}, "customerName": name}, "address.zip.Invalid")
    refused({"address": address, "customerName": {**name, "nickname": "F"}}, "nickname.Unrecognized")
    refused({"address": address, "customerName": name, "placeName": "home"}, "placeName.Unrecognized")
    assert ts.run_scheduled(60) == 0 and ts.device(iccid)["state"] == "preactive"  # nothing was accepted
    resp = post(api, "/devices/actions/activate", {**activate, "primaryPlaceOfUse": {
        "address": {**address, "zip4": "0001", "phone": "4045550100"}, "customerName": {**name, "title": "Mr"}}})
    assert resp.status_code == 200 and resp.json()["requestId"], resp.text
