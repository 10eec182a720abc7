"""Verizon ThingSpace Connectivity Management (M2M) client.

Two tokens (carrier_apis.md section 2): an OAuth2 client-credentials access token
(``POST /ts/v1/oauth2/token``, Basic key:secret, valid ``expires_in`` seconds) and an M2M session
token (``POST /m2m/v1/session/login`` with the UWS username/password, expires after 20 minutes
idle). Both are cached and shared by the client's threads; a 401 or
``REQUEST_FAILED.SessionToken.Expired`` drops them so the engine's single re-authentication
retry logs in again. Device actions answer a ``requestId`` at once and finish later: callers
poll ``request_status`` or ``get_device``.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import requests

from bulkchange.carriers.http import path_segment
from bulkchange.carriers.base import (
    AuthError,
    CallLog,
    HttpCarrierClient,
    PermanentError,
    TransientError,
    classify_response,
)

# The API takes up to 10,000 devices per action request; we send far fewer per call.
MAX_DEVICES_PER_ACTION = 10_000
LIST_PAGE = 100


class ThingSpaceClient(HttpCarrierClient):
    carrier_name = "ThingSpace"

    def __init__(self, base_url: str, client_key: str, client_secret: str, username: str, password: str,
                 account_name: str, **kw: Any):
        super().__init__(base_url, **kw)
        missing = [n for n, v in (("client key (login)", client_key), ("client secret (password)", client_secret),
                                  ("extra.uws_username", username), ("extra.uws_password", password),
                                  ("extra.account_name", account_name)) if not v]
        if missing:
            raise ValueError(f"ThingSpace needs {', '.join(missing)}")
        self.client_key, self.client_secret = client_key, client_secret
        self.username, self.password, self.account_name = username, password, account_name
        for secret in (client_secret, password):
            self.add_secret(secret)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._session: str | None = None

    # -- authentication --------------------------------------------------------------------------
    def reauthenticate(self) -> None:
        with self._lock:
            self._token, self._session, self._token_expires = None, None, 0.0

    def _login(self) -> None:
        """Fetch whichever token is missing (called under the lock)."""
        if self._token is None or time.monotonic() >= self._token_expires - 60:
            resp = self._post_raw("/ts/v1/oauth2/token", data={"grant_type": "client_credentials"},
                                  auth=(self.client_key, self.client_secret))
            body = resp.json()
            self._token = body["access_token"]
            self._token_expires = time.monotonic() + float(body.get("expires_in", 3600))
            self._session = None
            self.add_secret(self._token)
        if self._session is None:
            resp = self._post_raw("/m2m/v1/session/login", json={"username": self.username, "password": self.password},
                                  headers={"Authorization": f"Bearer {self._token}"})
            self._session = resp.json()["sessionToken"]
            self.add_secret(self._session)

    def _post_raw(self, path: str, **kw: Any) -> requests.Response:
        try:
            resp = self.session.post(self.base_url + path, timeout=self.timeout, **kw)
        except requests.Timeout as exc:
            raise TransientError("timeout logging in to ThingSpace") from exc
        except requests.ConnectionError as exc:
            raise TransientError(f"connection error logging in to ThingSpace: {type(exc).__name__}") from exc
        if resp.status_code in (400, 401, 403):
            # refused credentials are not worth retrying, and must not trigger another re-login
            raise PermanentError(f"ThingSpace refused the {'OAuth client' if 'oauth2' in path else 'UWS login'}: "
                                 f"HTTP {resp.status_code}", status_code=resp.status_code)
        classify_response(resp)
        return resp

    def _auth_headers(self) -> dict[str, str]:
        with self._lock:
            self._login()
            return {"Authorization": f"Bearer {self._token}", "VZ-M2M-Token": self._session or ""}

    def _classify(self, resp: requests.Response) -> None:
        if resp.status_code == 400 and "SessionToken.Expired" in resp.text:
            raise AuthError("ThingSpace session token expired", status_code=400, response_text=resp.text[:500])
        classify_response(resp)

    # -- device actions --------------------------------------------------------------------------
    @staticmethod
    def _devices(iccids: list[str]) -> list[dict]:
        return [{"deviceIds": [{"id": i, "kind": "iccid"}]} for i in iccids]

    def action(self, action: str, iccids: list[str], *, service_plan: str | None = None,
               mdn_zip_code: str | None = None, reason_code: str | None = None,
               log: CallLog | None = None) -> str:
        """activate / suspend / restore / deactivate; returns the carrier's requestId."""
        if not 0 < len(iccids) <= MAX_DEVICES_PER_ACTION:
            raise ValueError(f"1..{MAX_DEVICES_PER_ACTION} devices per ThingSpace action, got {len(iccids)}")
        body: dict[str, Any] = {"devices": self._devices(iccids), "accountName": self.account_name}
        if action == "activate":
            body.update(servicePlan=service_plan, mdnZipCode=mdn_zip_code)
        if action == "deactivate":
            body["reasonCode"] = reason_code or "FF"
        answer = self._call("POST", f"/m2m/v1/devices/actions/{path_segment(action)}", json_body=body, log=log,
                            description=f"ThingSpace {action.capitalize()}: ThingSpace API") or {}
        request_id = answer.get("requestId")
        if not request_id:
            raise TransientError(f"ThingSpace {action} answered without a requestId")
        return str(request_id)

    def change_plan(self, iccids: list[str], service_plan: str, *, current_service_plan: str | None = None,
                    log: CallLog | None = None) -> str:
        """``PUT /m2m/v1/devices/actions/plan`` (ServicePlanUpdateRequest); returns the requestId."""
        if not 0 < len(iccids) <= MAX_DEVICES_PER_ACTION:
            raise ValueError(f"1..{MAX_DEVICES_PER_ACTION} devices per ThingSpace plan change, got {len(iccids)}")
        body: dict[str, Any] = {"devices": self._devices(iccids), "accountName": self.account_name,
                                "servicePlan": service_plan}
        if current_service_plan:
            body["currentServicePlan"] = current_service_plan
        answer = self._call("PUT", "/m2m/v1/devices/actions/plan", json_body=body, log=log,
                            description="Update ThingSpace Rate Plan: ThingSpace API") or {}
        return _request_id(answer, "plan change")

    # ``{serviceType}`` of the device id change: the SDK calls it "identifier type" and lists no
    # values (assumed ``4g``, the LTE devices AMOP manages).
    change_identifier_service_type = "4g"

    def change_device_id(self, iccid: str, kind: str, new_id: str, *, service_plan: str | None = None,
                         zip_code: str | None = None, log: CallLog | None = None) -> str:
        """``PUT /m2m/v1/devices/{serviceType}/actions/deviceId`` (ChangeDeviceIdRequest): the line
        of service moves to a new SIM (``kind`` ``iccid``) or new equipment (``imei``)."""
        kind = kind.lower()
        if kind not in ("iccid", "imei"):
            raise ValueError(f"a ThingSpace device id change is by iccid or imei, not {kind!r}")
        body: dict[str, Any] = {"deviceIds": [{"id": iccid, "kind": "iccid"}],
                                "deviceIdsTo": [{"id": new_id, "kind": kind}],
                                "change4gOption": "ChangeICCID" if kind == "iccid" else "ChangeIMEI"}
        if service_plan:
            body["servicePlan"] = service_plan
        if zip_code:
            body["zipCode"] = zip_code
        answer = self._call("PUT", f"/m2m/v1/devices/{path_segment(self.change_identifier_service_type)}/actions/deviceId",
                            json_body=body, log=log,
                            description=f"Change ThingSpace {kind.upper()}: ThingSpace API") or {}
        return _request_id(answer, f"{kind.upper()} change")

    def request_status(self, request_id: str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"/m2m/v1/accounts/{path_segment(self.account_name)}/requests/{path_segment(request_id)}/status", log=log,
                          description="ThingSpace Request Status: ThingSpace API") or {}

    def get_device(self, iccid: str, *, log: CallLog | None = None) -> dict:
        body = self._call("POST", "/m2m/v1/devices/actions/list", json_body={"deviceId": {"id": iccid, "kind": "iccid"}},
                          description="ThingSpace List Device: ThingSpace API", log=log) or {}
        devices = body.get("devices") or []
        if not devices:
            raise PermanentError(f"ThingSpace does not know device {iccid}")
        return devices[0]

    def iter_devices(self) -> Iterator[dict]:
        """Every device of the account, page by page (largestDeviceIdSeen paging)."""
        after = None
        while True:
            body: dict[str, Any] = {"accountName": self.account_name, "maxNumberOfDevices": LIST_PAGE}
            if after:
                body["largestDeviceIdSeen"] = after
            page = self._call("POST", "/m2m/v1/devices/actions/list", json_body=body,
                              description="ThingSpace List Devices: ThingSpace API") or {}
            devices = page.get("devices") or []
            yield from devices
            if not page.get("hasMoreData") or not devices:
                return
            after = device_id(devices[-1], "iccid")


def _request_id(answer: dict, what: str) -> str:
    request_id = answer.get("requestId") if isinstance(answer, dict) else None
    if not request_id:
        raise TransientError(f"ThingSpace {what} answered without a requestId")
    return str(request_id)


def device_id(device: dict, kind: str) -> str | None:
    for ident in device.get("deviceIds") or []:
        if str(ident.get("kind", "")).lower() == kind:
            return str(ident.get("id"))
    return None


def device_plan(device: dict) -> str | None:
    infos = device.get("carrierInformations") or []
    return str(infos[0].get("servicePlan")) if infos and infos[0].get("servicePlan") else None


def device_state(device: dict) -> str | None:
    infos = device.get("carrierInformations") or []
    return str(infos[0].get("state")).lower() if infos and infos[0].get("state") else None
