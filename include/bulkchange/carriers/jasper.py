"""Cisco IoT Control Center (Jasper) REST client.

Auth: ``Authorization: Basic base64(username:apiKey)``. Endpoints (carrier_apis.md section 1):
``GET /devices/{iccid}``, ``PUT /devices/{iccid}`` (Edit Device Details), ``GET
/devices/{iccid}/auditTrails``. Success of an edit means a 2xx whose body names the ICCID, as the
legacy code required. POD19, TMobileJasper and Rogers use this same client.
"""
from __future__ import annotations

import base64
from typing import Any

from bulkchange.carriers.http import path_segment
from bulkchange.carriers.base import CallLog, HttpCarrierClient, TransientError


class JasperClient(HttpCarrierClient):
    carrier_name = "Jasper"

    def __init__(self, base_url: str, username: str, api_key: str, **kw: Any):
        super().__init__(base_url, **kw)
        if not username or not api_key:
            raise ValueError("Jasper needs a username (login) and an API key (password)")
        token = base64.b64encode(f"{username}:{api_key}".encode()).decode()
        self._auth = f"Basic {token}"
        self.add_secret(api_key)
        self.add_secret(token)

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": self._auth}

    def get_device(self, iccid: str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"/devices/{path_segment(iccid)}", description="Get Device Details: Jasper API", log=log)

    def edit_device(self, iccid: str, changes: dict[str, Any], *, description: str,
                    log: CallLog | None = None) -> dict:
        """PUT Edit Device Details; raises unless the carrier's 2xx answer names the ICCID.

        An attempt whose outcome is unknown (5xx, timeout, dropped connection, unreadable answer) is
        settled with ``GET /devices/{iccid}`` before any resend and before the call gives up: a
        device that already shows every edited field is the call's answer (the carrier's view), one
        that does not is sent again or fails with that evidence (``HttpCarrierClient._call``). A
        future-dated edit (``effectiveDate``) is not visible on the device yet, so it is not checked.
        """
        shown = {k: v for k, v in changes.items() if k != "effectiveDate"}

        def verify() -> dict | None:
            current = self.get_device(iccid, log=log)
            return current if shows(current, shown) else None

        return self._call("PUT", f"/devices/{path_segment(iccid)}", json_body=changes, description=description,
                          log=log, parse=_json_naming_iccid(iccid),
                          verify=verify if shown and "effectiveDate" not in changes else None)

    def update_status(self, iccid: str, status: str, *, log: CallLog | None = None) -> dict:
        return self.edit_device(iccid, {"status": status}, description="Update Jasper Status: Jasper API", log=log)

    def update_rate_plan(self, iccid: str, rate_plan: str, communication_plan: str | None = None, *,
                         effective_date: str | None = None, log: CallLog | None = None) -> dict:
        changes: dict[str, Any] = {"ratePlan": rate_plan}
        if communication_plan:
            changes["communicationPlan"] = communication_plan
        if effective_date:
            changes["effectiveDate"] = effective_date
        return self.edit_device(iccid, changes, description="Update Jasper Rate Plan: Jasper API", log=log)

    # -- identifier change (ChangeICCIDAndIMEI) ------------------------------------------------
    # **Assumed** (Cisco publishes no SIM-swap call): the IMEI of the equipment a SIM sits in is the
    # editable ``deviceID`` field (the network-reported ``imei`` is read-only); a new SIM takes over a
    # device through Edit Device Details on the new ICCID (the old SIM's rate and communication plan
    # and status) and the old SIM is then deactivated.
    EQUIPMENT_ID_FIELD = "deviceID"

    def set_equipment_imei(self, iccid: str, imei: str, *, log: CallLog | None = None) -> dict:
        return self.edit_device(iccid, {self.EQUIPMENT_ID_FIELD: imei}, log=log,
                                description="Update Jasper IMEI (deviceID): Jasper API")

    def audit_trail(self, iccid: str, *, days: int = 30, log: CallLog | None = None) -> list[dict]:
        body = self._call("GET", f"/devices/{path_segment(iccid)}/auditTrails", params={"daysOfHistory": days},
                          description="Get Device Audit Trail: Jasper API", log=log) or {}
        return body.get("deviceAuditTrails") or body.get("auditTrails") or []


    # -- username (EditUsernameCostCenter) ---------------------------------------------------------
    # Paths as the legacy settings JASPER_DEVICE_USERNAME_UPDATE_PATH / JASPER_DEVICE_AUDIT_TRAIL_PATH
    # name them (``{iccid}`` is filled in); the username is one Edit Device Details field (assumed
    # ``accountCustom1``; env JASPER_DEVICE_USERNAME_FIELD), confirmed through the audit trail.
    def edit_username(self, iccid: str, username: str, *, field: str, path: str,
                      log: CallLog | None = None) -> dict:
        return self._call("PUT", path.format(iccid=path_segment(iccid)), json_body={field: username}, log=log,
                          description="Update Jasper Username: Jasper API", parse=_json_naming_iccid(iccid))

    def audit_records(self, iccid: str, *, path: str, days: int = 1, log: CallLog | None = None) -> list[dict]:
        """The device's audit records of the last ``days`` days, newest first (first page, 50 records)."""
        body = self._call("GET", path.format(iccid=path_segment(iccid)), params={"daysOfHistory": days, "pageSize": 50},
                          description="Get Device Audit Trail: Jasper API", log=log) or {}
        return body.get("deviceAuditTrails") or body.get("auditTrails") or []

    def rate_plan_names(self, *, page_size: int = 50, max_pages: int = 200,
                        log: CallLog | None = None) -> list[str]:
        """The names of the account's rate plans (``GET /rateplans``, paged until ``lastPage``)."""
        names: list[str] = []
        for page in range(1, max_pages + 1):
            body = self._call("GET", "/rateplans", params={"pageNumber": page, "pageSize": page_size},
                              description="Get Rate Plans: Jasper API", log=log) or {}
            plans = body.get("ratePlans") or []
            names.extend(str(p["name"]) for p in plans if isinstance(p, dict) and p.get("name"))
            if body.get("lastPage", True) or not plans:
                return names
        raise TransientError(f"Jasper rate plan listing did not end within {max_pages} pages")

    def iter_devices(self, modified_since: str = "2000-01-01T00:00:00Z", page_size: int = 50):
        """Every device of the account (Search Devices, 50 per page, oldest change first)."""
        page = 1
        while True:
            body = self._call("GET", "/devices", params={"modifiedSince": modified_since, "pageSize": page_size,
                                                         "pageNumber": page},
                              description="Search Devices: Jasper API") or {}
            yield from body.get("devices") or []
            if body.get("lastPage", True) or not body.get("devices"):
                return
            page += 1


def shows(device: dict | None, fields: dict[str, Any]) -> bool:
    """The carrier's device already has every one of ``fields`` (status compared case-blind)."""
    if not isinstance(device, dict):
        return False
    for key, want in fields.items():
        have = device.get(key)
        if key == "status":
            if str(have or "").upper() != str(want or "").upper():
                return False
        elif str(have) != str(want):
            return False
    return True


def _json_naming_iccid(iccid: str):
    def parse(resp):
        try:
            body = resp.json()
        except ValueError as exc:
            raise TransientError("malformed JSON from Jasper", status_code=resp.status_code) from exc
        if not isinstance(body, dict) or str(body.get("iccid") or "") != iccid:
            raise TransientError(f"Jasper answered {resp.status_code} without naming ICCID {iccid}",
                                 status_code=resp.status_code)
        return body
    return parse
