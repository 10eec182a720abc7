"""AT&T Telegence (APEX Mobility) client.

Auth: headers ``app-id`` and ``app-secret`` (no OAuth). Lines are addressed by subscriber number
(MDN/MSISDN) under the line-config path (carrier_apis.md section 3):

* ``GET|PATCH {service_path}/{subscriberNumber}``, TMF-style ``serviceCharacteristic`` name/value
  pairs; ``GET {service_path}`` lists lines, paged by the request headers ``current-page`` /
  ``page-size`` with the page count in the response header ``page-total``;
* ``POST {activation_path}`` with up to 200 activation requests, answered with one ``id`` and
  ``service.status`` (pending / reserved / active / rejected) per line; ``GET
  {activation_path}/{id}`` polls one of them until it settles.

Documented: the headers, the line-config path and characteristics, status letter ``C`` (cancelled)
and ``A`` (activate), the 200-line activation limit and its statuses. **Assumed** (carrier_apis.md:
NOT FOUND): suspend / restore / cancel are a PATCH of the characteristic ``subscriberStatus``
(``S`` / ``A`` / ``C``) with ``statusReasonCode``; the activation path
(``/sp/mobility/activation/api/v1/service``) and body (characteristics ``sim``, ``singleUserCode``,
``serviceZipCode``, optional ``IMEI``; ``billingAccount.id``). Both paths are configurable on the
connection extra (``service_path``, ``activation_path``).
"""
from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any, Iterator

from bulkchange.carriers.http import path_segment
from bulkchange.carriers.base import CallLog, HttpCarrierClient, OutcomeUnknown, TransientError


class ActivationOutcomeUnknown(OutcomeUnknown):
    """The activation request may have been accepted but its answer was lost (an unreadable 2xx): whether
    lines were activated is only known by looking them up (never by sending the request again)."""


SERVICE_PATH = "/sp/mobility/lineconfig/api/v1/service"
ACTIVATION_PATH = "/sp/mobility/activation/api/v1/service"
MAX_ACTIVATIONS = 200
# static IP provisioning (legacy TelegenceIPAddressesURL / IPProvisioningURL / IPProvisionRequestStatusURL)
IP_ADDRESSES_PATH = "/sp/mobility/ipprovisioning/api/v1/ipaddresses"
IP_PROVISIONING_PATH = "/sp/mobility/ipprovisioning/api/v1/provisioning"
IP_PROVISION_STATUS_PATH = "/sp/mobility/ipprovisioning/api/v1/provisioning/status"
LIST_PAGE = 500
# characteristics a GET of the line shows as they were set (carrier_apis.md section 3: "names seen on GET")
READABLE = frozenset({"subscriberStatus", "singleUserCode", "serviceZipCode", "contactName", "sim", "IMEI"})


def characteristic(service: dict | None, name: str) -> Any:
    """The value of one ``serviceCharacteristic`` of a line / activation answer (None if absent)."""
    for item in (service or {}).get("serviceCharacteristic") or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item.get("value")
    return None


def offering_codes(service: dict | None) -> list[str]:
    """The SOCs (``offeringCodeN`` characteristics) a line carries."""
    return [str(i.get("value")) for i in (service or {}).get("serviceCharacteristic") or []
            if isinstance(i, dict) and str(i.get("name", "")).startswith("offeringCode") and i.get("value")]


def chars(**values: Any) -> list[dict]:
    return [{"name": k, "value": v} for k, v in values.items() if v not in (None, "")]


class TelegenceClient(HttpCarrierClient):
    carrier_name = "Telegence"

    def __init__(self, base_url: str, app_id: str, app_secret: str, *, service_path: str = SERVICE_PATH,
                 activation_path: str = ACTIVATION_PATH, billing_account: str | None = None,
                 ip_paths: dict[str, str] | None = None, **kw: Any):
        super().__init__(base_url, **kw)
        if not app_id or not app_secret:
            raise ValueError("Telegence needs an app-id (login) and an app-secret (password)")
        self._headers = {"app-id": app_id, "app-secret": app_secret}
        self.add_secret(app_secret)
        self.service_path = "/" + service_path.strip("/")
        self.activation_path = "/" + activation_path.strip("/")
        self.billing_account = billing_account
        self.ip_paths = {"addresses": IP_ADDRESSES_PATH, "provisioning": IP_PROVISIONING_PATH,
                         "status": IP_PROVISION_STATUS_PATH, **(ip_paths or {})}
        self._local = threading.local()  # per-thread extra request headers (paging)

    def _auth_headers(self) -> dict[str, str]:
        extra = getattr(self._local, "headers", None)
        return {**self._headers, **extra} if extra else dict(self._headers)

    # -- lines --------------------------------------------------------------------------------
    def get_service(self, number: str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"{self.service_path}/{path_segment(number)}", log=log,
                          description="Get Telegence Subscriber: Telegence API") or {}

    def update_service(self, number: str, values: dict[str, Any], *, description: str,
                       effective_date: str | None = None, log: CallLog | None = None) -> dict:
        """PATCH characteristics of a line. An attempt whose outcome is unknown (5xx, timeout, lost
        answer) is settled with ``GET`` of the line before any resend and before the call gives up
        (``_call(verify=...)``): a line that already shows every readable value sent is the answer.
        Write-only characteristics (reason codes, technology type) are not compared; a future-dated
        change is not visible yet, so it is not checked."""
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        body: dict[str, Any] = {"effectiveDate": effective_date or today, "serviceCharacteristic": chars(**values)}
        shown = {k: v for k, v in values.items() if k in READABLE and v not in (None, "")}

        def verify() -> dict | None:
            line = self.get_service(number, log=log)
            return line if all(str(characteristic(line, k)) == str(v) for k, v in shown.items()) else None

        checkable = bool(shown) and body["effectiveDate"] <= today
        return self._call("PATCH", f"{self.service_path}/{path_segment(number)}", json_body=body, log=log,
                          description=description, verify=verify if checkable else None) or {}

    def remove_offerings(self, number: str, codes: list[str], *, log: CallLog | None = None) -> dict:
        """PATCH one ``removeOfferingCode`` item per SOC (legacy PNSA, after a new activation). An
        unknown outcome is settled by reading the line: done when none of the SOCs is on it any more."""
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        body = {"effectiveDate": today,
                "serviceCharacteristic": [{"name": "removeOfferingCode", "value": c} for c in codes]}

        def verify() -> dict | None:
            line = self.get_service(number, log=log)
            return None if set(offering_codes(line)) & set(codes) else line

        return self._call("PATCH", f"{self.service_path}/{path_segment(number)}", json_body=body, log=log,
                          description="Telegence Update Mobility Configuration: Telegence API", verify=verify) or {}

    def set_status(self, number: str, status: str, *, reason_code: str | None = None,
                   log: CallLog | None = None) -> dict:
        """PATCH subscriberStatus (A / S / C); raises unless the answer shows the new status."""
        answer = self.update_service(number, {"subscriberStatus": status, "statusReasonCode": reason_code},
                                     description="Update Telegence Subscriber: Telegence API", log=log)
        now = characteristic(answer, "subscriberStatus")
        if now != status:
            raise TransientError(f"Telegence answered without subscriberStatus {status} for {number} (got {now!r})")
        return answer

    def active_lines(self) -> dict[str, str]:
        """ICCID (characteristic ``sim``) -> subscriber number of every active line of the account."""
        out: dict[str, str] = {}
        for line in self.iter_services():
            sim, number = characteristic(line, "sim"), line.get("subscriberNumber")
            if sim and number and characteristic(line, "subscriberStatus") == "A":
                out[str(sim)] = str(number)
        return out

    def iter_services(self, page_size: int = LIST_PAGE) -> Iterator[dict]:
        """Every line of the account, page by page."""
        page = 1
        while True:
            self._local.headers = {"current-page": str(page), "page-size": str(page_size)}
            try:
                lines, total = self._call("GET", self.service_path, description="List Telegence Subscribers",
                                          parse=lambda r: (r.json(), r.headers.get("page-total")))
            finally:
                self._local.headers = None
            yield from lines or []
            try:
                total_pages = int(total or 1)
            except ValueError:
                total_pages = 1
            if page >= total_pages or not lines:
                return
            page += 1

    # -- activation ------------------------------------------------------------------------------
    def activation_request(self, iccid: str, *, plan: str, zip_code: str, imei: str | None = None,
                           billing_account: str | None = None) -> dict:
        """One line of an activation request (assumed shape, see the module docstring)."""
        item: dict[str, Any] = {"service": {"serviceCharacteristic": chars(
            sim=iccid, singleUserCode=plan, serviceZipCode=zip_code, IMEI=imei)}}
        ban = billing_account or self.billing_account
        if ban:
            item["billingAccount"] = {"id": ban}
        return item

    def activate(self, lines: list[dict], *, log: CallLog | None = None) -> list[dict]:
        """POST up to 200 activation requests; one answer (``id``, ``service.status``) per line, in order."""
        if not 0 < len(lines) <= MAX_ACTIVATIONS:
            raise ValueError(f"1..{MAX_ACTIVATIONS} lines per Telegence activation request, got {len(lines)}")
        def parse(resp):
            # The carrier took the request (2xx) but its answer is unreadable: sending it again
            # could activate twice, so this is not retried; the lines are looked up instead.
            try:
                answer = resp.json()
            except ValueError:
                answer = None
            if not isinstance(answer, list) or len(answer) != len(lines):
                raise ActivationOutcomeUnknown(f"Telegence accepted the activation (HTTP {resp.status_code}) but its "
                                               f"answer is unreadable: {resp.text[:200]!r}",
                                               status_code=resp.status_code)
            return answer

        # A create: never replayed after an unknown outcome (5xx, timeout, dropped connection, lost
        # answer: ``OutcomeUnknown``); only refused attempts (429) are retried. The caller looks the
        # lines up at the carrier instead (changes/activate_new_service.py).
        return self._call("POST", self.activation_path, json_body=lines, log=log, parse=parse, once=True,
                          description=f"Activate {len(lines)} Telegence line(s): Telegence API")

    def activation_status(self, activation_id: str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", f"{self.activation_path}/{path_segment(activation_id)}", log=log,
                          description="Telegence Activation Status: Telegence API") or {}

    # -- static IP provisioning (ActivateNewService; paths and bodies assumed, see the simulator) ---
    def ip_addresses(self, pdp_name: str, quantity: int, *, log: CallLog | None = None) -> list[str]:
        body = self._call("POST", self.ip_paths["addresses"], json_body={"pdpName": pdp_name, "ipQuantity": quantity},
                          log=log, description="Get Telegence IP Addresses: Telegence API") or {}
        return [str(ip) for ip in body.get("ipAddresses") or []]

    def provision_ips(self, pdp_name: str, billing_account: str | None, subscribers: list[dict], *,
                      log: CallLog | None = None) -> str:
        """One provisioning request for ``[{subscriberNumber, ipAddressRecord, ...}]``; returns its batch id."""
        body = self._call("POST", self.ip_paths["provisioning"], log=log,
                          json_body={"pdpName": pdp_name, "billingAccountNumber": billing_account,
                                     "subscriber": subscribers},
                          description="Telegence IP Provisioning: Telegence API") or {}
        if not body.get("batchId"):
            raise TransientError(f"Telegence IP provisioning answered without a batchId: {str(body)[:200]}")
        return str(body["batchId"])

    def ip_provision_status(self, batch_id: str, *, log: CallLog | None = None) -> dict:
        return self._call("POST", self.ip_paths["status"], json_body={"batchId": batch_id}, log=log,
                          description="Telegence IP Provisioning Status: Telegence API") or {}
