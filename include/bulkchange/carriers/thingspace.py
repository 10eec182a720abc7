"""Verizon ThingSpace Connectivity Management (M2M) client.

Two tokens (carrier_apis.md section 2): an OAuth2 client-credentials access token
(``POST /ts/v1/oauth2/token``, Basic key:secret, valid ``expires_in`` seconds) and an M2M session
token (``POST /m2m/v1/session/login`` with the UWS username/password, expires after 20 minutes
idle). Both are cached per account for the whole process (every client and thread), fetched with
their own retries outside the call's attempts; a 401 or ``REQUEST_FAILED.SessionToken.Expired``
drops them so the engine's single re-authentication retry logs in again. Device actions answer a
``requestId`` at once and finish later: callers poll ``request_status`` or ``get_device``. An
action is never re-sent after an unknown outcome (``UnknownOutcome``; docs/carriers/thingspace.md).
"""
from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import requests
import tenacity

from bulkchange.carriers.http import path_segment
from bulkchange.carriers.base import (
    AuthError,
    CallLog,
    HttpCarrierClient,
    OutcomeUnknown,
    PermanentError,
    TransientError,
    classify_response,
)

# The API takes up to 10,000 devices per action request; we send far fewer per call.
MAX_DEVICES_PER_ACTION = 10_000
LIST_PAGE = 100
TOKEN_MARGIN_S = 120.0   # an access token is renewed this long before it expires
SESSION_IDLE_S = 15 * 60  # the carrier drops a session after 20 minutes unused; we renew it sooner


class _TokenPair:
    """One account's access and session tokens (never printed: they are secrets)."""

    __slots__ = ("access_token", "access_expires", "session_token", "session_used")  # expires: renew-by time

    def __init__(self, access_token: str, access_expires: float, session_token: str, session_used: float):
        self.access_token, self.access_expires = access_token, access_expires
        self.session_token, self.session_used = session_token, session_used

    def __repr__(self) -> str:
        return "_TokenPair(***)"

    def fresh(self, now: float) -> bool:
        return now < self.access_expires and now - self.session_used < SESSION_IDLE_S


class _TokenCache:
    """Process-wide ThingSpace tokens per (base URL, OAuth client, UWS user, account): one login
    serves every client and thread of a worker process. One lock per key, so one thread logs in
    while the others of that account wait for its tokens (not a login each)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pairs: dict[tuple, _TokenPair] = {}
        self._key_locks: dict[tuple, threading.Lock] = {}

    def peek(self, key: tuple) -> _TokenPair | None:
        with self._lock:
            return self._pairs.get(key)

    def get(self, key: tuple, login: Any) -> _TokenPair:
        now = time.monotonic()
        with self._lock:
            pair = self._pairs.get(key)
            if pair is not None and pair.fresh(now):
                pair.session_used = now
                return pair
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                pair = self._pairs.get(key)
            now = time.monotonic()
            if pair is not None and pair.fresh(now):
                pair.session_used = now
                return pair
            pair = login(pair)
            with self._lock:
                self._pairs[key] = pair
            return pair

    def drop(self, key: tuple, used: _TokenPair | None) -> None:
        """Forget the tokens a refused call sent (not newer ones another thread fetched since)."""
        with self._lock:
            if used is None or self._pairs.get(key) is used:
                self._pairs.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._pairs.clear()


_TOKENS = _TokenCache()


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
        self._used = threading.local()  # the tokens this thread's last call sent (for a 401)

    # bounded retries of each login POST (tests shorten the backoff)
    # how long an action with a lost answer is given to show up at the carrier (line state or
    # provisioning history) before it may be sent again (connection extra unknown_outcome_wait_s)
    unknown_outcome_wait_s = 900.0
    login_attempts = 5
    login_backoff_s = 0.5
    _login_sleep = staticmethod(time.sleep)

    @property
    def _token(self) -> str | None:
        pair = _TOKENS.peek(self._cache_key())
        return pair.access_token if pair else None

    @property
    def _session(self) -> str | None:
        pair = _TOKENS.peek(self._cache_key())
        return pair.session_token if pair else None

    # -- authentication --------------------------------------------------------------------------
    # Tokens live in a process-wide cache (``_TOKENS``) keyed by base URL + OAuth client + UWS user +
    # account, so every client of a worker process (every batch task) shares one login until
    # shortly before it expires. Logging in has its own bounded retries (``_login``): a login hiccup
    # never uses up an action's attempts. A 401 (or an expired session) drops the token the failing
    # call used, once; the policy's single re-authentication then logs in again.
    def _cache_key(self) -> tuple[str, str, str, str]:
        return (self.base_url, self.client_key, self.username, self.account_name)

    def reauthenticate(self) -> None:
        used = getattr(self._used, "tokens", None)
        _TOKENS.drop(self._cache_key(), used)

    def _tokens(self) -> "_TokenPair":
        """The cached tokens, logging in (with retries) for whichever is missing or about to expire."""
        return _TOKENS.get(self._cache_key(), self._login)

    def _login(self, current: "_TokenPair | None") -> "_TokenPair":
        """Fetch whichever token is missing or stale; each POST retried on transient failures
        (5xx, 429, timeouts, dropped connections, garbled bodies), refused credentials at once."""
        now = time.monotonic()
        if current is not None and current.access_token and now < current.access_expires:
            token, expires = current.access_token, current.access_expires
        else:
            body = self._login_post("/ts/v1/oauth2/token", "access_token", data={"grant_type": "client_credentials"},
                                    auth=(self.client_key, self.client_secret))
            token = str(body["access_token"])
            try:
                lifetime = float(body.get("expires_in", 3600))
            except (TypeError, ValueError):
                lifetime = 3600.0
            # renewed shortly before it expires (a tenth of a short lifetime)
            expires = now + max(lifetime, 0.0) - min(TOKEN_MARGIN_S, max(lifetime, 0.0) / 10)
            current = None  # a new access token: the session is logged in again with it
            self.add_secret(token)
        if current is not None and current.session_token and now - current.session_used < SESSION_IDLE_S:
            session = current.session_token
        else:
            body = self._login_post("/m2m/v1/session/login", "sessionToken",
                                    json={"username": self.username, "password": self.password},
                                    headers={"Authorization": f"Bearer {token}"})
            session = str(body["sessionToken"])
            self.add_secret(session)
        return _TokenPair(token, expires, session, now)

    def _login_post(self, path: str, field_name: str, **kw: Any) -> dict:
        what = "OAuth token" if "oauth2" in path else "session login"
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientError),
            stop=tenacity.stop_after_attempt(self.login_attempts),
            wait=tenacity.wait_exponential_jitter(initial=self.login_backoff_s, max=5.0),
            sleep=self._login_sleep, reraise=True)
        for attempt in retrying:
            with attempt:
                resp = self._post_raw(path, **kw)
                try:
                    body = resp.json()
                except ValueError as exc:
                    raise TransientError(f"ThingSpace {what}: the answer is not JSON (HTTP {resp.status_code})",
                                         status_code=resp.status_code) from exc
                if not isinstance(body, dict) or not body.get(field_name):
                    raise TransientError(f"ThingSpace {what}: the answer has no {field_name}",
                                         status_code=resp.status_code)
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_raw(self, path: str, **kw: Any) -> requests.Response:
        if self.policy is not None and getattr(self.policy, "rate_limiter", None) is not None:
            self.policy.rate_limiter.acquire()
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
        pair = self._tokens()
        self._used.tokens = pair
        return {"Authorization": f"Bearer {pair.access_token}", "VZ-M2M-Token": pair.session_token}

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        # Log in before the call's attempts start: a login that fails even after its own retries
        # fails this call without costing (or sending) any attempt of it.
        self._tokens()
        return super()._call(method, path, **kw)

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
               primary_place_of_use: dict | None = None, log: CallLog | None = None) -> str:
        """activate / suspend / restore / deactivate; returns the carrier's requestId. An activation
        with ``primary_place_of_use`` (``{customerName, address}``, ``place_of_use``) is the PPU
        variant: the carrier records the subscriber and the address for every device of the request."""
        if not 0 < len(iccids) <= MAX_DEVICES_PER_ACTION:
            raise ValueError(f"1..{MAX_DEVICES_PER_ACTION} devices per ThingSpace action, got {len(iccids)}")
        body: dict[str, Any] = {"devices": self._devices(iccids), "accountName": self.account_name}
        if action == "activate":
            body.update(servicePlan=service_plan, mdnZipCode=mdn_zip_code)
            if primary_place_of_use:
                body["primaryPlaceOfUse"] = primary_place_of_use
        elif primary_place_of_use:
            raise ValueError(f"a primary place of use goes with an activation, not a {action}")
        if action == "deactivate":
            body["reasonCode"] = reason_code or "FF"
        return self._post_action_once(f"/m2m/v1/devices/actions/{path_segment(action)}", body, action, log)

    def _post_action_once(self, path: str, body: dict, action: str, log: CallLog | None) -> str:
        """POST an action that must never be applied twice: the base ``_call(once=True)`` retries it
        only when the carrier surely did not take it (a refused attempt: 429, a connection never
        opened, a 401 before re-login); after any other failure (5xx, timeout, dropped connection,
        garbled answer) and after an id-less answer it raises ``UnknownOutcome``: the caller looks
        for the accepted request before anything is sent again."""
        try:
            answer = self._call("POST", path, json_body=body, log=log, once=True,
                                description=f"ThingSpace {action.capitalize()}: ThingSpace API")
        except OutcomeUnknown as exc:
            unknown = UnknownOutcome(f"ThingSpace {action}: no usable answer ({exc}); the request may have been "
                                     f"applied, so it is not sent again blindly",
                                     status_code=exc.status_code, response_text=exc.response_text)
            unknown.attempts = getattr(exc, "attempts", 1)  # type: ignore[attr-defined]
            raise unknown from exc
        request_id = answer.get("requestId") if isinstance(answer, dict) else None
        if not request_id:
            raise UnknownOutcome(f"ThingSpace {action} answered without a requestId")
        return str(request_id)

    # ``POST /m2m/v1/devices/actions/add`` takes at most 200 devices (carrier_apis.md section 2)
    MAX_DEVICES_PER_ADD = 200
    # the per-device answers AMOP counted as added (legacy_behaviour.md 3.1, "pending activation")
    ADD_OK = ("success", "error. device already exists.")

    def add_devices(self, devices: list[tuple[str, str]], *, log: CallLog | None = None) -> dict[str, str]:
        """Add devices ``[(iccid, imei)]`` to the account in the pre-active state (SDK AddDevicesRequest,
        ``state`` ``preactive``); returns ICCID -> the carrier's per-device ``response`` (``Success``,
        ``Error. Device already exists.`` or another error). The answer is synchronous; a device the
        answer does not name maps to None. Adding is idempotent at the carrier (an existing device
        answers "already exists"), so it is retried like a read."""
        if not 0 < len(devices) <= self.MAX_DEVICES_PER_ADD:
            raise ValueError(f"1..{self.MAX_DEVICES_PER_ADD} devices per ThingSpace add, got {len(devices)}")
        body = {"devicesToAdd": [{"deviceIds": [{"id": iccid, "kind": "iccid"}, {"id": imei, "kind": "imei"}]}
                                 for iccid, imei in devices],
                "accountName": self.account_name, "state": "preactive"}
        answer = self._call("POST", "/m2m/v1/devices/actions/add", json_body=body, log=log,
                            description="ThingSpace Add Devices: ThingSpace API") or []
        out: dict[str, str] = {}
        for entry in answer if isinstance(answer, list) else [answer]:
            if isinstance(entry, dict):
                iccid = device_id(entry, "iccid")
                if iccid:
                    out[iccid] = str(entry.get("response") or "")
        return out

    @classmethod
    def added(cls, response: str | None) -> bool:
        """True when the per-device answer of an add means the account has the device."""
        return (response or "").strip().lower() in cls.ADD_OK

    def provisioning_history(self, iccid: str, earliest: float, latest: float, *,
                             log: CallLog | None = None) -> list[dict]:
        """``POST /m2m/v1/devices/history/actions/list``: the line's completed provisioning events
        (``eventType`` Activate/Suspend/Restore/Deactivate, ``status``, ``occurredAt``), oldest first."""
        body = {"deviceId": {"id": iccid, "kind": "iccid"}, "earliest": _iso(earliest), "latest": _iso(latest)}
        answer = self._call("POST", "/m2m/v1/devices/history/actions/list", json_body=body, log=log,
                            description="ThingSpace Provisioning History: ThingSpace API") or []
        events: list[dict] = []
        for result in answer if isinstance(answer, list) else [answer]:
            if isinstance(result, dict):
                events.extend(e for e in result.get("provisioningHistory") or [] if isinstance(e, dict))
        return events

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

    def service_plan_names(self, *, log: CallLog | None = None) -> list[str]:
        """The account's service plans (``GET /m2m/v1/plans/{accountName}``, SDK
        ``ServicePlansController.list_account_service_plans``): each plan's ``name`` and ``code``."""
        answer = self._call("GET", f"/m2m/v1/plans/{path_segment(self.account_name)}", log=log,
                            description="Get Service Plans: ThingSpace API") or []
        plans = answer if isinstance(answer, list) else answer.get("servicePlans") or [] if isinstance(answer, dict) \
            else []
        return sorted({str(p[k]) for p in plans if isinstance(p, dict) for k in ("name", "code") if p.get(k)})

    CALLBACK_SERVICE = "CarrierService"

    def register_callback(self, url: str, username: str, secret: str, *, log: CallLog | None = None) -> dict:
        """``POST /m2m/v1/callbacks/{accountName}`` ``{name: "CarrierService", url, username, password}``
        (carrier_apis.md): ThingSpace posts every request result to ``url`` from now on, echoing
        ``username`` and ``password`` (the account's shared callback secret) in each callback."""
        if not url or not secret:
            raise ValueError("a ThingSpace callback registration needs the URL and the shared secret")
        self.add_secret(secret)
        return self._call("POST", f"/m2m/v1/callbacks/{path_segment(self.account_name)}", log=log,
                          json_body={"name": self.CALLBACK_SERVICE, "url": url, "username": username,
                                     "password": secret},
                          description="Register ThingSpace Callback: ThingSpace API") or {}

    def callbacks(self, *, log: CallLog | None = None) -> list[dict]:
        """The account's registered callbacks (``GET /m2m/v1/callbacks/{accountName}``)."""
        answer = self._call("GET", f"/m2m/v1/callbacks/{path_segment(self.account_name)}", log=log,
                            description="List ThingSpace Callbacks: ThingSpace API") or []
        return [c for c in answer if isinstance(c, dict)] if isinstance(answer, list) else []

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

    def list_page(self, after: str | None = None) -> tuple[list[dict], bool]:
        """One page of the account's devices after ICCID ``after``: (devices, has more)."""
        body: dict[str, Any] = {"accountName": self.account_name, "maxNumberOfDevices": LIST_PAGE}
        if after:
            body["largestDeviceIdSeen"] = after
        page = self._call("POST", "/m2m/v1/devices/actions/list", json_body=body,
                          description="ThingSpace List Devices: ThingSpace API") or {}
        devices = [d for d in page.get("devices") or [] if isinstance(d, dict)] if isinstance(page, dict) else []
        return devices, bool(page.get("hasMoreData")) if isinstance(page, dict) else False

    def iter_devices(self) -> Iterator[dict]:
        """Every device of the account, page by page (largestDeviceIdSeen paging)."""
        after = None
        while True:
            devices, more = self.list_page(after)
            yield from devices
            if not more or not devices:
                return
            after = device_id(devices[-1], "iccid")


class UnknownOutcome(OutcomeUnknown):
    """An action whose answer was lost: the carrier may have accepted it (5xx after it arrived, a
    timeout, a dropped connection, a garbled or id-less answer). Never re-sent blindly (and, being
    an ``OutcomeUnknown``, never retried by ``CallPolicy``)."""


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
