"""POND IoT simulator; API root ``/pond/api/v1`` (the distributor id is the first path segment).

POND publishes no API documentation (carrier_apis.md section 5: only the legacy AMOP C# code is
known). What the legacy code shows: the distributor id in the path, device packages that are
added with a ``packageTypeId`` (answer: ``packageId``, ``status``), set ``ACTIVE`` and older ones
``TERMINATED``, and a per-SIM service status that is enabled ("enable all services") or disabled.

Endpoints (all **assumed**: paths, bodies and answers are our choice; the client reads every
path from its connection so a real POND account can be pointed at the right ones):

* ``GET  /{distributorId}/sims/{iccid}``                               -> the SIM: ``{iccid, distributorId,
  serviceStatus: ENABLED|DISABLED, packages: [...]}``
* ``GET  /{distributorId}/sims/{iccid}/packages``                      -> ``{"packages": [package, ...]}``
* ``POST /{distributorId}/sims/{iccid}/packages`` ``{"packageTypeId"}``  -> 201 ``package`` (status ``PENDING``)
* ``PUT  /{distributorId}/sims/{iccid}/packages/{packageId}/status`` ``{"status": "ACTIVE"|"TERMINATED"}``
  -> the package; a TERMINATED package cannot come back (409)
* ``PUT  /{distributorId}/sims/{iccid}/services/status`` ``{"enable": true|false}`` -> ``{iccid, serviceStatus}``
* ``GET  /{distributorId}/package-types``                              -> ``{"packageTypes": [...]}``

A package: ``{packageId, packageTypeId, status: PENDING|ACTIVE|TERMINATED, dataUsageAllowanceInBytes,
dataUsageRemainingInBytes, createdDate, activatedDate, terminatedDate}``.

Auth (**assumed**, POND's credential type is not known): ``Authorization: Basic
base64(username:password)`` against ``accounts`` (default ``demo`` / ``demo-pond-secret``). Every
device belongs to one distributor (``distributorId``, default ``"1001"``); a SIM asked for under
another distributor is 404. Errors: ``{"error": {"code", "message"}}`` (assumed).

Strict by choice (nothing is published; each switchable in ``PondKnobs``, contract ``contracts/pond.md``):
a body field other than the one each endpoint takes is 400 ``VALIDATION_ERROR`` naming it, and
``packageTypeId`` must be a string or integer, ``status`` exactly ``ACTIVE``/``TERMINATED``
(``refuse_unknown_fields``); a JSON body must be sent as ``application/json`` (415
``UNSUPPORTED_MEDIA_TYPE``, ``require_json_content_type``); a package type that is not ``ACTIVE`` cannot
be added (400 ``UNKNOWN_PACKAGE_TYPE``, always); services cannot be enabled on a SIM without an
``ACTIVE`` package (409 ``NO_ACTIVE_PACKAGE``, ``require_active_package``).
"""
from __future__ import annotations

import base64
import binascii
import itertools
import time
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request

from pydantic import Field

from simulators.core import Call, Knobs, SimulatedCarrier

ROOT = "/api/v1"
PACKAGE_STATUSES = ("PENDING", "ACTIVE", "TERMINATED")
DEFAULT_DISTRIBUTOR = "1001"
DEFAULT_PACKAGE_TYPES = [
    {"packageTypeId": "101", "name": "POND 100MB", "status": "ACTIVE", "dataUsageAllowanceInBytes": 100 * 2 ** 20},
    {"packageTypeId": "102", "name": "POND 1GB", "status": "ACTIVE", "dataUsageAllowanceInBytes": 2 ** 30},
    {"packageTypeId": "103", "name": "POND 5GB", "status": "ACTIVE", "dataUsageAllowanceInBytes": 5 * 2 ** 30},
]


class PondKnobs(Knobs):
    refuse_unknown_fields: bool = Field(True, description="undocumented body fields and wrongly typed values are "
                                        "refused with 400 (assumed)")
    require_json_content_type: bool = Field(True, description="a JSON body must be sent as application/json, "
                                            "else 415 (assumed)")
    require_active_package: bool = Field(True, description="services cannot be enabled on a SIM without an "
                                         "ACTIVE package (409, assumed)")


def pond_ts(epoch: float | None = None) -> str:
    dt = datetime.fromtimestamp(time.time() if epoch is None else epoch, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


class PondSimulator(SimulatedCarrier):
    name = "pond"
    prefix = "/pond"
    api_root = ROOT
    knobs_model = PondKnobs
    rate_limit_message = ("Too many requests", "RATE_LIMITED")
    concurrency_message = ("Too many concurrent requests", "RATE_LIMITED")

    def __init__(self, accounts: dict[str, str] | None = None, package_types: list[dict] | None = None,
                 **knobs: Any):
        self._base_package_types = [dict(p) for p in (package_types or DEFAULT_PACKAGE_TYPES)]
        self.package_types = [dict(p) for p in self._base_package_types]
        self._package_seq = itertools.count(500_001)
        super().__init__(accounts=accounts if accounts is not None else {"demo": "demo-pond-secret"}, **knobs)

    # ---------------------------------------------------------------- framework hooks
    def reset_state(self) -> None:
        self.package_types = [dict(p) for p in self._base_package_types]
        self._package_seq = itertools.count(500_001)

    def error_body(self, status: int, message: str, code: str | None) -> Any:
        return {"error": {"code": code or str(status), "message": message}}

    def bad_json(self):
        return self.error(400, "Request body is not valid JSON", "VALIDATION_ERROR")

    def content_type_error(self, request: Request):
        if not self.knobs.require_json_content_type:
            return None
        return self.media_type_refusal(request, code="UNSUPPORTED_MEDIA_TYPE")

    def check_body(self, call: Call, allowed: set[str]) -> dict:
        body = call.body if isinstance(call.body, dict) else None
        if body is None:
            raise self.error(400, "Request body must be a JSON object", "VALIDATION_ERROR")
        unknown = sorted(set(body) - allowed)
        if unknown and self.knobs.refuse_unknown_fields:
            raise self.error(400, f"unrecognized field(s): {', '.join(unknown)}", "VALIDATION_ERROR")
        return body

    def normalize_device(self, device: dict) -> dict:
        """Seed fields: iccid, distributorId, serviceStatus (ENABLED|DISABLED), packages (list of
        ``{packageTypeId, status}`` or full package dicts)."""
        device = super().normalize_device(device)
        out = {"distributorId": DEFAULT_DISTRIBUTOR, "serviceStatus": "ENABLED", "packages": []}
        out.update(device)
        out["distributorId"] = str(out["distributorId"])
        if out["serviceStatus"] not in ("ENABLED", "DISABLED"):
            raise ValueError(f"{out['iccid']}: serviceStatus must be ENABLED or DISABLED")
        packages = []
        for p in out["packages"] or []:
            status = p.get("status", "ACTIVE")
            if status not in PACKAGE_STATUSES:
                raise ValueError(f"{out['iccid']}: package status {status!r} is not one of {PACKAGE_STATUSES}")
            packages.append(self._new_package(str(p.get("packageTypeId", "101")), status, p.get("packageId")))
        out["packages"] = packages
        return out

    def control_view(self, device: dict) -> dict:
        return {**device, "packages": [dict(p) for p in device["packages"]]}

    def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token.strip():
            raise self.error(401, "Authentication required", "UNAUTHORIZED")
        try:
            user, sep, secret = base64.b64decode(token.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise self.error(401, "Invalid credentials", "UNAUTHORIZED") from None
        if not sep or not secret or self.accounts.get(user) != secret:
            raise self.error(401, "Invalid credentials", "UNAUTHORIZED")
        return user

    # ---------------------------------------------------------------- routes
    def add_routes(self) -> None:
        @self.route("GET", "/{distributor_id}/package-types")
        def package_types(call: Call):
            return {"packageTypes": [dict(p) for p in self.package_types]}

        @self.route("GET", "/{distributor_id}/sims/{iccid}")
        def get_sim(call: Call):
            return self.control_view(self._sim(call))

        @self.route("GET", "/{distributor_id}/sims/{iccid}/packages")
        def list_packages(call: Call):
            return {"packages": [dict(p) for p in self._sim(call)["packages"]]}

        @self.route("POST", "/{distributor_id}/sims/{iccid}/packages")
        def add_package(call: Call):
            sim = self._sim(call)
            body = self.check_body(call, {"packageTypeId"})
            type_id = body.get("packageTypeId")
            if type_id in (None, ""):
                raise self.error(400, "packageTypeId is required", "VALIDATION_ERROR")
            if self.knobs.refuse_unknown_fields and (isinstance(type_id, bool) or not isinstance(type_id, (str, int))):
                raise self.error(400, "packageTypeId must be a string or an integer", "VALIDATION_ERROR")
            ptype = next((p for p in self.package_types if str(p["packageTypeId"]) == str(type_id)), None)
            if ptype is None or str(ptype.get("status") or "ACTIVE").upper() != "ACTIVE":
                known = ", ".join(str(p["packageTypeId"]) for p in self.package_types
                                  if str(p.get("status") or "ACTIVE").upper() == "ACTIVE")
                raise self.error(400, f"unknown packageTypeId {type_id} (available: {known})", "UNKNOWN_PACKAGE_TYPE")
            package = self._new_package(str(type_id), "PENDING")
            sim["packages"].append(package)
            return 201, dict(package)

        @self.route("PUT", "/{distributor_id}/sims/{iccid}/packages/{package_id}/status")
        def set_package_status(call: Call):
            sim = self._sim(call)
            package_id = str(call.path_params["package_id"])
            package = next((p for p in sim["packages"] if str(p["packageId"]) == package_id), None)
            if package is None:
                raise self.error(404, f"package {package_id} not found on SIM {sim['iccid']}", "NOT_FOUND")
            body = self.check_body(call, {"status"})
            status = str(body.get("status") or "")
            if not self.knobs.refuse_unknown_fields:
                status = status.upper()
            if status not in ("ACTIVE", "TERMINATED"):
                raise self.error(400, "status must be ACTIVE or TERMINATED", "VALIDATION_ERROR")
            if package["status"] == "TERMINATED" and status != "TERMINATED":
                raise self.error(409, f"package {package_id} is terminated", "PACKAGE_TERMINATED")
            if package["status"] != status:
                package["status"] = status
                package["activatedDate" if status == "ACTIVE" else "terminatedDate"] = pond_ts()
            return dict(package)

        @self.route("PUT", "/{distributor_id}/sims/{iccid}/services/status")
        def service_status(call: Call):
            sim = self._sim(call)
            body = self.check_body(call, {"enable"})
            enable = body.get("enable")
            if not isinstance(enable, bool):
                raise self.error(400, "enable must be true or false", "VALIDATION_ERROR")
            if enable and self.knobs.require_active_package and not active_packages(sim):
                raise self.error(409, f"SIM {sim['iccid']} has no ACTIVE package; add and activate one first",
                                 "NO_ACTIVE_PACKAGE")
            sim["serviceStatus"] = "ENABLED" if enable else "DISABLED"
            return {"iccid": sim["iccid"], "serviceStatus": sim["serviceStatus"]}

    def add_control_routes(self, router: APIRouter) -> None:
        @router.get("/package-types")
        async def get_package_types():
            return {"packageTypes": self.package_types}

    # ---------------------------------------------------------------- behaviour
    def _sim(self, call: Call) -> dict:
        sim = self.devices.get(call.iccid or "")
        if sim is None or sim["distributorId"] != str(call.path_params.get("distributor_id")):
            raise self.error(404, f"SIM {call.iccid} not found for distributor "
                                  f"{call.path_params.get('distributor_id')}", "NOT_FOUND")
        return sim

    def _new_package(self, type_id: str, status: str, package_id: Any = None) -> dict:
        ptype = next((p for p in self.package_types if str(p["packageTypeId"]) == type_id), {})
        allowance = int(ptype.get("dataUsageAllowanceInBytes") or 0)
        now = pond_ts()
        return {"packageId": str(package_id or next(self._package_seq)), "packageTypeId": type_id, "status": status,
                "dataUsageAllowanceInBytes": allowance, "dataUsageRemainingInBytes": allowance,
                "createdDate": now, "activatedDate": now if status == "ACTIVE" else None,
                "terminatedDate": now if status == "TERMINATED" else None}


def active_packages(device: dict) -> list[dict]:
    return [p for p in device.get("packages") or [] if p.get("status") == "ACTIVE"]
