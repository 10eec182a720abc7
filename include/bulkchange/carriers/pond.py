"""POND IoT client.

Known from the legacy AMOP code (carrier_apis.md section 5): the distributor id is part of every
path (``{base}/{distributorId}/...``); a SIM has packages that are listed, added with a
``packageTypeId`` (the answer carries ``packageId`` and ``status``), set ``ACTIVE`` and
``TERMINATED``; its services are enabled ("enable all services") or disabled as a whole.

**Assumed** (POND publishes no API documentation): the credential type (HTTP Basic with the
connection's login and password), the paths and bodies below and the error body. Every path is a
template read from the connection extra, so a real account can be pointed at the real ones:

=====================  =============================================================  ====================
extra key              default                                                        method / body
=====================  =============================================================  ====================
``sim_path``           ``/{distributor_id}/sims/{iccid}``                              GET
``packages_path``      ``/{distributor_id}/sims/{iccid}/packages``                     GET; POST ``{"packageTypeId"}``
``package_status_path`` ``/{distributor_id}/sims/{iccid}/packages/{package_id}/status`` PUT ``{"status"}``
``service_status_path`` ``/{distributor_id}/sims/{iccid}/services/status``              PUT ``{"enable": bool}``
``package_types_path``  ``/{distributor_id}/package-types``                             GET (the connection test)
=====================  =============================================================  ====================
"""
from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from bulkchange.carriers.base import CallLog, HttpCarrierClient, TransientError

DEFAULT_PATHS = {
    "sim_path": "/{distributor_id}/sims/{iccid}",
    "packages_path": "/{distributor_id}/sims/{iccid}/packages",
    "package_status_path": "/{distributor_id}/sims/{iccid}/packages/{package_id}/status",
    "service_status_path": "/{distributor_id}/sims/{iccid}/services/status",
    "package_types_path": "/{distributor_id}/package-types",
}
ACTIVE, TERMINATED, PENDING = "ACTIVE", "TERMINATED", "PENDING"


class PondClient(HttpCarrierClient):
    carrier_name = "POND"

    def __init__(self, base_url: str, username: str, password: str, distributor_id: str, *,
                 paths: dict[str, str] | None = None, **kw: Any):
        super().__init__(base_url, **kw)
        missing = [n for n, v in (("a login", username), ("a password", password),
                                  ("extra.distributor_id", distributor_id)) if not v]
        if missing:
            raise ValueError(f"POND needs {', '.join(missing)}")
        self.distributor_id = str(distributor_id)
        self.paths = {**DEFAULT_PATHS, **{k: v for k, v in (paths or {}).items() if k in DEFAULT_PATHS and v}}
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        self._auth = f"Basic {token}"
        self.add_secret(password)
        self.add_secret(token)

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": self._auth}

    def _path(self, name: str, **values: Any) -> str:
        return self.paths[name].format(distributor_id=quote(self.distributor_id, safe=""),
                                       **{k: quote(str(v), safe="") for k, v in values.items()})

    def get_sim(self, iccid: str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", self._path("sim_path", iccid=iccid), description="Get Pond SIM: Pond API",
                          log=log) or {}

    def package_types(self) -> list[dict]:
        """The distributor's package types: one cheap authenticated read (the connection test)."""
        body = self._call("GET", self._path("package_types_path"), description="Get Pond Package Types: Pond API") or {}
        types = body.get("packageTypes") if isinstance(body, dict) else body
        return [p for p in types or [] if isinstance(p, dict)]

    def package_type_ids(self) -> list[str]:
        """The ids of the package types the distributor can add now (status ACTIVE): what a rate
        plan change may name."""
        return sorted({str(p["packageTypeId"]) for p in self.package_types()
                       if p.get("packageTypeId") is not None and str(p.get("status") or "ACTIVE").upper() == "ACTIVE"})

    def get_packages(self, iccid: str, *, log: CallLog | None = None) -> list[dict]:
        body = self._call("GET", self._path("packages_path", iccid=iccid), description="Get Pond Packages: Pond API",
                          log=log) or {}
        packages = body.get("packages") if isinstance(body, dict) else body
        return [p for p in packages or [] if isinstance(p, dict)]

    def add_package(self, iccid: str, package_type_id: str, *, log: CallLog | None = None) -> dict:
        """POST a package once (``_call(once=True)``; 429s, where nothing was added, are retried by the
        policy). The caller adds only a type the SIM has no live (ACTIVE / PENDING) package of, so
        after an unknown outcome (5xx, timeout, lost answer) a live package of that type in the SIM's
        package list is the add's result; it is sent again once only when the list shows none."""
        def verify() -> dict | None:
            live = [p for p in self.get_packages(iccid, log=log)
                    if str(p.get("packageTypeId")) == str(package_type_id) and p.get("status") in (ACTIVE, PENDING)
                    and p.get("packageId")]
            return max(live, key=lambda p: (str(p.get("createdDate") or ""), str(p.get("packageId")))) \
                if live else None

        body = self._call("POST", self._path("packages_path", iccid=iccid), json_body={"packageTypeId": package_type_id},
                          description="Add Pond Package: Pond API", log=log, once=True, verify=verify) or {}
        if not isinstance(body, dict) or not body.get("packageId"):
            raise TransientError("POND add package answered without a packageId")
        return body

    def set_package_status(self, iccid: str, package_id: str, status: str, *,
                           log: CallLog | None = None) -> dict:
        return self._call("PUT", self._path("package_status_path", iccid=iccid, package_id=package_id),
                          json_body={"status": status}, log=log,
                          description=f"Set Pond Package {status}: Pond API") or {}

    def update_service_status(self, iccid: str, enable: bool, *, log: CallLog | None = None) -> dict:
        return self._call("PUT", self._path("service_status_path", iccid=iccid), json_body={"enable": enable},
                          log=log, description="Update Pond Status: Pond API") or {}


def sim_state(sim: dict) -> tuple[str | None, str | None]:
    """(status, rate plan) of a SIM as ``GET sims/{iccid}`` shows it, in the words the StatusUpdate
    handler leaves in ``Device`` (changes/status_update/pond.py): ``ACTIVE`` = services enabled with an
    ACTIVE package; ``SUSPENDED`` = services disabled, a package still live (ACTIVE or PENDING);
    ``TERMINATED`` = services disabled, every package terminated; ``INVENTORY`` = services disabled,
    no package ever. Services enabled without an ACTIVE package match none of them: status None (not
    compared). The rate plan is the package type of the newest ACTIVE package (None without one)."""
    packages = [p for p in (sim or {}).get("packages") or [] if isinstance(p, dict)]
    active = [p for p in packages if p.get("status") == ACTIVE]
    enabled = str((sim or {}).get("serviceStatus") or "").upper() == "ENABLED"
    if enabled:
        status = ACTIVE if active else None
    elif any(p.get("status") in (ACTIVE, PENDING) for p in packages):
        status = "SUSPENDED"
    else:
        status = TERMINATED if packages else "INVENTORY"
    newest = max(active, key=lambda p: (str(p.get("activatedDate") or p.get("createdDate") or ""),
                                        str(p.get("packageId"))), default=None)
    plan = str(newest["packageTypeId"]) if newest and newest.get("packageTypeId") is not None else None
    return status, plan
