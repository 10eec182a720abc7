"""The ThingSpace simulator against Verizon's published SDK models (PyPI ``sdksio-verizon-apis-sdk``).

Requests are built with the SDK's request models and serialized by the SDK's own serializer, sent
to our simulator over HTTP, and every answer is parsed with the SDK's response models, so the
simulator cannot drift from the published API shapes without this test failing.
"""
import json
import time

import pytest
import requests
from verizon.api_helper import APIHelper
from verizon.exceptions.connectivity_management_result_exception import ConnectivityManagementResultException
from verizon.models.account_device_list import AccountDeviceList
from verizon.models.account_device_list_request import AccountDeviceListRequest
from verizon.models.account_device_list_result import AccountDeviceListResult
from verizon.models.asynchronous_request_result import AsynchronousRequestResult
from verizon.models.carrier_actions_request import CarrierActionsRequest
from verizon.models.carrier_activate_request import CarrierActivateRequest
from verizon.models.carrier_deactivate_request import CarrierDeactivateRequest
from verizon.models.device_id import DeviceId
from verizon.models.device_management_result import DeviceManagementResult
from verizon.models.log_in_request import LogInRequest
from verizon.models.log_in_result import LogInResult
from verizon.models.oauth_token import OauthToken
from verizon.models.request_status_enum import RequestStatusEnum

from simulators.devices import make_iccid, make_imei

ACCOUNT = "0000000000-00001"


@pytest.fixture
def ts(simulator):
    control = simulator.control("thingspace")
    control.reset()
    control.configure(action_delay_s=0.2)
    carrier = simulator.carrier("thingspace")
    carrier.clients["sdk-key"] = "sdk-secret"
    carrier.users["sdk-user"] = "sdk-password"
    return control


class Api:
    """Plain HTTP with the SDK's serializer for bodies."""

    def __init__(self, root: str):
        self.root = root
        self.http = requests.Session()
        self.headers: dict[str, str] = {}

    def token(self, key="sdk-key", secret="sdk-secret") -> requests.Response:
        return self.http.post(self.root + "/ts/v1/oauth2/token", data={"grant_type": "client_credentials"},
                              auth=(key, secret), timeout=10)

    def login(self) -> None:
        token = OauthToken.from_dictionary(self.token().json())
        body = APIHelper.json_serialize(LogInRequest(username="sdk-user", password="sdk-password"))
        resp = self.http.post(self.root + "/m2m/v1/session/login", data=body, timeout=10,
                              headers={"Authorization": f"Bearer {token.access_token}",
                                       "Content-Type": "application/json"})
        assert resp.status_code == 200, resp.text
        session = LogInResult.from_dictionary(resp.json()).session_token
        self.headers = {"Authorization": f"Bearer {token.access_token}", "VZ-M2M-Token": session,
                        "Content-Type": "application/json", "accept": "application/json"}

    def post(self, path: str, model) -> requests.Response:
        return self.http.post(self.root + "/m2m/v1" + path, data=APIHelper.json_serialize(model),
                              headers=self.headers, timeout=10)

    def get(self, path: str) -> requests.Response:
        return self.http.get(self.root + "/m2m/v1" + path, headers=self.headers, timeout=10)


@pytest.fixture
def api(simulator, ts):
    a = Api(simulator.url_for("thingspace"))
    a.login()
    yield a
    a.http.close()


def devices(*iccids):
    return [AccountDeviceList(device_ids=[DeviceId(id=i, kind="iccid")]) for i in iccids]


def wait_status(api, request_id, timeout=10.0) -> AsynchronousRequestResult:
    deadline = time.monotonic() + timeout
    while True:
        resp = api.get(f"/accounts/{ACCOUNT}/requests/{request_id}/status")
        assert resp.status_code == 200, resp.text
        result = AsynchronousRequestResult.from_dictionary(resp.json())
        assert result.request_id == request_id
        assert result.status in (RequestStatusEnum.PENDING, RequestStatusEnum.SUCCESS, RequestStatusEnum.FAILURE)
        if result.status != RequestStatusEnum.PENDING or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def list_one(api, iccid):
    resp = api.post("/devices/actions/list", AccountDeviceListRequest(device_id=DeviceId(id=iccid, kind="iccid")))
    assert resp.status_code == 200, resp.text
    result = AccountDeviceListResult.from_dictionary(resp.json())
    assert result.has_more_data is False and len(result.devices) == 1
    return result.devices[0]


def test_oauth_token_parses_and_is_reused_within_its_lifetime(simulator, ts):
    api = Api(simulator.url_for("thingspace"))
    first = OauthToken.from_dictionary(api.token().json())
    second = OauthToken.from_dictionary(api.token().json())
    assert first.access_token and first.token_type == "Bearer" and 0 < first.expires_in <= 3600
    assert second.access_token == first.access_token
    assert api.token(secret="wrong").status_code == 401


def test_activate_built_with_the_sdk_assigns_mdn_and_ip(api, ts):
    iccid = make_iccid(90_001)
    ts.seed_devices([{"iccid": iccid, "state": "preactive", "accountName": ACCOUNT, "imei": make_imei(90_001)}])
    request = CarrierActivateRequest(devices=devices(iccid), service_plan="M2MPlan5GB", mdn_zip_code="30004",
                                     account_name=ACCOUNT)
    sent = json.loads(APIHelper.json_serialize(request))
    assert sent == {"devices": [{"deviceIds": [{"id": iccid, "kind": "iccid"}]}], "servicePlan": "M2MPlan5GB",
                    "mdnZipCode": "30004", "accountName": ACCOUNT}
    resp = api.post("/devices/actions/activate", request)
    assert resp.status_code == 200, resp.text
    request_id = DeviceManagementResult.from_dictionary(resp.json()).request_id
    assert request_id
    assert wait_status(api, request_id).status == RequestStatusEnum.SUCCESS
    device = list_one(api, iccid)
    kinds = {d.kind: d.id for d in device.device_ids}
    assert device.carrier_informations[0].state == "active"
    assert device.carrier_informations[0].service_plan == "M2MPlan5GB"
    assert kinds["iccid"] == iccid and kinds["imei"] == make_imei(90_001) and kinds["msisdn"] == kinds["mdn"]
    assert device.ipaddress and device.account_name == ACCOUNT


def test_suspend_restore_deactivate_built_with_the_sdk(api, ts):
    iccid = make_iccid(90_002)
    ts.seed_devices([{"iccid": iccid, "state": "active", "accountName": ACCOUNT, "msisdn": "14705550002"}])
    for path, model, state in (
            ("suspend", CarrierActionsRequest(account_name=ACCOUNT, devices=devices(iccid)), "suspend"),
            ("restore", CarrierActionsRequest(account_name=ACCOUNT, devices=devices(iccid)), "active"),
            ("deactivate", CarrierDeactivateRequest(account_name=ACCOUNT, devices=devices(iccid), reason_code="FF"),
             "deactive")):
        resp = api.post(f"/devices/actions/{path}", model)
        assert resp.status_code == 200, resp.text
        result = wait_status(api, DeviceManagementResult.from_dictionary(resp.json()).request_id)
        assert result.status == RequestStatusEnum.SUCCESS, path
        assert list_one(api, iccid).carrier_informations[0].state == state


def test_documented_failures_parse_as_the_sdk_error(api, ts):
    active, preactive = make_iccid(90_003), make_iccid(90_004)
    ts.seed_devices([{"iccid": active, "state": "active", "accountName": ACCOUNT},
                     {"iccid": preactive, "state": "preactive", "accountName": ACCOUNT}])
    # asynchronous failures: the request fails, with the documented fault code per device
    for path, model, fault in (
            ("activate", CarrierActivateRequest(devices=devices(active), service_plan="M2MPlan5GB", mdn_zip_code="30004",
                                                account_name=ACCOUNT), "REQUEST_FAILED.DeviceAlreadyActive"),
            ("suspend", CarrierActionsRequest(account_name=ACCOUNT, devices=devices(preactive)),
             "INPUT_INVALID.DeviceState.Invalid"),
            ("suspend", CarrierActionsRequest(account_name=ACCOUNT, devices=devices(make_iccid(90_999))),
             "REQUEST_FAILED.DeviceNotFound")):
        resp = api.post(f"/devices/actions/{path}", model)
        request_id = DeviceManagementResult.from_dictionary(resp.json()).request_id
        assert wait_status(api, request_id).status == RequestStatusEnum.FAILURE
        detail = api.get(f"/accounts/{ACCOUNT}/requests/{request_id}/status").json()
        assert detail["devices"][0]["faultResponse"]["faultcode"].endswith(fault)
    # synchronous failures: 400 with the error body the SDK's exception unboxes
    for path, model, code in (
            ("deactivate", CarrierDeactivateRequest(account_name=ACCOUNT, devices=devices(active), reason_code="XX"),
             "INPUT_INVALID.ReasonCode.Invalid"),
            ("suspend", CarrierActionsRequest(account_name="9999999999-99999", devices=devices(active)),
             "REQUEST_FAILED.AccountNotFound"),
            ("list", AccountDeviceListRequest(device_id=DeviceId(id=make_iccid(90_999), kind="iccid")),
             "REQUEST_FAILED.DeviceNotFound")):
        resp = api.post(f"/devices/actions/{path}", model)
        assert resp.status_code == 400
        error = ConnectivityManagementResultException("Error response.", resp)
        assert error.error_code.endswith(code) and error.error_message


def test_expired_session_is_the_documented_error(api, ts):
    ts.request("POST", "/expire-tokens")
    resp = api.post("/devices/actions/list", AccountDeviceListRequest(account_name=ACCOUNT))
    assert resp.status_code == 401  # the access token went with it
    api.login()
    api.headers["VZ-M2M-Token"] = "not-a-session"
    resp = api.post("/devices/actions/list", AccountDeviceListRequest(account_name=ACCOUNT))
    assert resp.status_code == 400
    assert ConnectivityManagementResultException("x", resp).error_code.endswith("REQUEST_FAILED.SessionToken.Expired")


def test_account_listing_pages_with_largest_device_id_seen(api, ts):
    iccids = sorted(make_iccid(91_000 + i) for i in range(7))
    ts.seed_devices([{"iccid": i, "state": "active", "accountName": ACCOUNT} for i in iccids])
    seen, after = [], None
    while True:
        request = AccountDeviceListRequest(account_name=ACCOUNT, max_number_of_devices=3, largest_device_id_seen=after)
        resp = api.post("/devices/actions/list", request)
        page = AccountDeviceListResult.from_dictionary(resp.json())
        seen += [next(d.id for d in dev.device_ids if d.kind == "iccid") for dev in page.devices]
        if not page.has_more_data:
            break
        after = seen[-1]
    assert seen == iccids


def test_rate_limit_answers_429_with_retry_after(api, ts):
    ts.configure(rate_limit=2)
    codes = [api.post("/devices/actions/list", AccountDeviceListRequest(account_name=ACCOUNT)) for _ in range(4)]
    limited = [r for r in codes if r.status_code == 429]
    assert limited and float(limited[0].headers["Retry-After"]) > 0
    assert ConnectivityManagementResultException("x", limited[0]).error_code.endswith("RateLimitExceeded")


def test_carrier_service_callback_is_delivered_to_a_loopback_listener(api, ts, callback_listener):
    received = callback_listener.received
    url = callback_listener.url
    resp = api.http.post(api.root + f"/m2m/v1/callbacks/{ACCOUNT}", headers=api.headers, timeout=10,
                         json={"name": "CarrierService", "url": url})
    assert resp.json() == {"accountName": ACCOUNT, "serviceName": "CarrierService"}
    refused = api.http.post(api.root + f"/m2m/v1/callbacks/{ACCOUNT}", headers=api.headers, timeout=10,
                            json={"name": "CarrierService", "url": "http://192.0.2.1/x"})
    assert refused.status_code == 400  # never sends traffic off this machine
    iccid = make_iccid(90_010)
    ts.seed_devices([{"iccid": iccid, "state": "preactive", "accountName": ACCOUNT}])
    request = CarrierActivateRequest(devices=devices(iccid), service_plan="M2MPlan5GB", mdn_zip_code="30004",
                                     account_name=ACCOUNT)
    request_id = DeviceManagementResult.from_dictionary(api.post("/devices/actions/activate", request).json()).request_id
    callback_listener.wait_for(1)  # nobody polls: the callback alone tells the result
    assert len(received) == 1
    body = received[0]
    assert body["requestId"] == request_id and body["status"] == "Success"
    ids = {d["kind"]: d["id"] for d in body["deviceResponse"]["activateResponse"]["deviceIds"]}
    assert ids["iccid"] == iccid and ids["msisdn"] and body["deviceResponse"]["activateResponse"]["ipAddress"]
