"""The ThingSpace simulator's plan change and device id change against Verizon's published SDK
models: requests built and serialized by the SDK (ServicePlanUpdateRequest, ChangeDeviceIdRequest),
answers parsed with its DeviceManagementResult / AsynchronousRequestResult."""
from verizon.api_helper import APIHelper
from verizon.models.change_device_id_request import ChangeDeviceIdRequest
from verizon.models.device_id import DeviceId
from verizon.models.device_management_result import DeviceManagementResult
from verizon.models.request_status_enum import RequestStatusEnum
from verizon.models.service_plan_update_request import ServicePlanUpdateRequest

from simulators.devices import make_iccid, make_imei
from tests.simulators.test_thingspace_sdk import ACCOUNT, api, devices, list_one, ts, wait_status  # noqa: F401


def put(api, path, model):
    return api.http.put(api.root + "/m2m/v1" + path, data=APIHelper.json_serialize(model), headers=api.headers,
                        timeout=10)


def faults(ts, request_id):
    return {d["deviceIds"][0]["id"]: (d.get("faultResponse") or {}).get("faultcode")
            for d in ts.request("GET", f"/requests/{request_id}")["devices"]}


def test_service_plan_change_built_with_the_sdk(api, ts):
    active, suspended = make_iccid(7_100), make_iccid(7_101)
    ts.seed_devices([{"iccid": active, "state": "active", "servicePlan": "OLD", "accountName": ACCOUNT},
                     {"iccid": suspended, "state": "suspend", "servicePlan": "OLD", "accountName": ACCOUNT}])
    ts.add_service_plans(["M2M-10GB"])  # the account must have the plan (else _servicePlan_.NotFound)
    resp = put(api, "/devices/actions/plan", ServicePlanUpdateRequest(
        service_plan="M2M-10GB", account_name=ACCOUNT, devices=devices(active, suspended)))
    assert resp.status_code == 200, resp.text
    request_id = DeviceManagementResult.from_dictionary(resp.json()).request_id
    assert wait_status(api, request_id).status == RequestStatusEnum.SUCCESS  # one of two succeeded
    assert ts.device(active)["servicePlan"] == "M2M-10GB" and ts.device(suspended)["servicePlan"] == "OLD"
    assert faults(ts, request_id) == {active: None, suspended: "UnifiedWebService.INPUT_INVALID.DeviceState.Invalid"}
    missing = api.http.put(api.root + "/m2m/v1/devices/actions/plan", headers=api.headers, timeout=10,
                           json={"accountName": ACCOUNT, "devices": [{"deviceIds": [{"id": active, "kind": "iccid"}]}]})
    assert missing.status_code == 400 and "servicePlan" in missing.json()["errorMessage"]


def test_device_id_change_built_with_the_sdk(api, ts):
    old, new, other = make_iccid(7_200), make_iccid(7_201), make_iccid(7_202)
    ts.seed_devices([{"iccid": old, "state": "active", "imei": make_imei(7_200), "accountName": ACCOUNT},
                     {"iccid": other, "state": "active", "imei": make_imei(7_202), "accountName": ACCOUNT}])
    ts.add_service_plans(["4G 2GB"])
    resp = put(api, "/devices/4g/actions/deviceId", ChangeDeviceIdRequest(
        device_ids=[DeviceId(id=old, kind="iccid")], change_4_g_option="ChangeICCID",
        device_ids_to=[DeviceId(id=new, kind="iccid")], service_plan="4G 2GB", zip_code="98802"))
    assert resp.status_code == 200, resp.text
    request_id = DeviceManagementResult.from_dictionary(resp.json()).request_id
    assert wait_status(api, request_id).status == RequestStatusEnum.SUCCESS
    moved = list_one(api, new)
    assert {(i.kind, i.id) for i in moved.device_ids} >= {("iccid", new), ("imei", make_imei(7_200))}
    # a new IMEI another device already has fails for that device, asynchronously
    resp = put(api, "/devices/4g/actions/deviceId", ChangeDeviceIdRequest(
        device_ids=[DeviceId(id=new, kind="iccid")], change_4_g_option="ChangeIMEI",
        device_ids_to=[DeviceId(id=make_imei(7_202), kind="imei")]))
    request_id = DeviceManagementResult.from_dictionary(resp.json()).request_id
    assert wait_status(api, request_id).status == RequestStatusEnum.FAILURE
    assert faults(ts, request_id) == {new: "UnifiedWebService.REQUEST_FAILED.DeviceAlreadyExists"}
    bad = put(api, "/devices/4g/actions/deviceId", ChangeDeviceIdRequest(
        device_ids=[DeviceId(id=new, kind="iccid")], change_4_g_option="ChangeMSISDN"))
    assert bad.status_code == 400 and "change4gOption" in bad.json()["errorMessage"]


def test_device_id_change_results_come_by_callback_unless_callbacks_are_dropped(api, ts, callback_listener):
    received = callback_listener.received
    url = callback_listener.url
    resp = api.http.post(api.root + f"/m2m/v1/callbacks/{ACCOUNT}", headers=api.headers, timeout=10,
                         json={"name": "CarrierService", "url": url, "username": "u", "password": "shared-7"})
    assert resp.status_code == 200, resp.text
    old, new, held, other = make_iccid(7_300), make_iccid(7_301), make_iccid(7_302), make_iccid(7_303)
    ts.seed_devices([{"iccid": old, "state": "active", "accountName": ACCOUNT},
                     {"iccid": held, "state": "active", "accountName": ACCOUNT},
                     {"iccid": other, "state": "active", "accountName": ACCOUNT}])
    ok = put(api, "/devices/4g/actions/deviceId", ChangeDeviceIdRequest(
        device_ids=[DeviceId(id=old, kind="iccid")], change_4_g_option="ChangeICCID",
        device_ids_to=[DeviceId(id=new, kind="iccid")])).json()["requestId"]
    refused = put(api, "/devices/4g/actions/deviceId", ChangeDeviceIdRequest(
        device_ids=[DeviceId(id=held, kind="iccid")], change_4_g_option="ChangeICCID",
        device_ids_to=[DeviceId(id=other, kind="iccid")])).json()["requestId"]
    callback_listener.wait_for(2)  # nobody polls: the callbacks alone tell the results
    by_request = {body["requestId"]: body for body in received}
    assert by_request[ok]["status"] == "Success" and by_request[ok]["deviceIds"] == [{"id": old, "kind": "iccid"}]
    assert by_request[refused]["status"] == "Failed"
    assert by_request[refused]["faultResponse"]["faultcode"].endswith("DeviceAlreadyExists")
    assert {(b["username"], b["password"]) for b in received} == {("u", "shared-7")}  # echoed

    ts.configure(drop_callbacks=True)
    lost = put(api, "/devices/4g/actions/deviceId", ChangeDeviceIdRequest(
        device_ids=[DeviceId(id=new, kind="iccid")], change_4_g_option="ChangeICCID",
        device_ids_to=[DeviceId(id=old, kind="iccid")])).json()["requestId"]
    assert wait_status(api, lost).status == RequestStatusEnum.SUCCESS  # done, and only polling tells
    dropped = [d for d in ts.request("GET", "/deliveries") if d["requestId"] == lost]
    assert len(received) == 2 and len(dropped) == 1 and dropped[0]["dropped"] and not dropped[0]["delivered"]
