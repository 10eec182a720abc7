"""ActivateNewService: new Telegence lines for SIMs in inventory (legacy_behaviour.md 3.2).

Each device change carries the carrier's activation item as the portal built it
(``TelegenceActivationRequest``: ``billingAccount``, ``relatedParty``, ``service.serviceCharacteristic``
with ``singleUserCode``, ``serviceZipCode``, optional ``IMEI``, ``offeringCodeN``); the SIM is the
device change's ICCID. ``removeOfferingCode`` items are dropped before sending, as the legacy code did.

1. **Activation requests of up to 200 lines**: a batch's devices go to the carrier in groups of 200
   (``group_size``), one ``POST`` per group, logged on the group's first device change. Each line's
   answer: ``rejected`` -> API_FAILED with the carrier's reason; ``active`` -> settled at once (step
   3); ``pending`` / ``reserved`` -> the device change waits as PENDING_ACTIVATION with its activation
   id. An accepted request whose answer is lost is never sent again: its devices wait without an id
   and settle when their SIM shows up among the account's active lines.
2. **Polling** without a blocked worker: ``device_status_reconcile`` checks every waiting device
   change once per run (``check_waiting`` through reconcile's checker registry) and fails it after
   ``max_checks`` (default 6) polls; run it every 5 minutes (``BULKCHANGE_RECONCILE_EVERY_MINUTES=5``)
   for the legacy cadence of 6 polls 5 minutes apart.
3. **DB from the carrier's answer**: once active, the line is read (``GET`` by its new number):
   the device change and ``Device`` get the MSISDN, ``Status`` ``A``, ``CarrierRatePlan`` (the line's
   ``singleUserCode``) and the IMEI, plus ``CustomerRatePlan`` / ``CustomerRatePool`` of the request
   (``CustomerRatePlanId`` / ``CustomerPoolId``; 0 = none); its features (``offeringCodeN``) go to
   ``TelegenceDeviceMobilityFeature``.
4. **Linked customer assignment**: ``AdditionBulkChangeId`` names a CustomerAssignment bulk change the
   portal created for the same devices, held with ``ProcessChanges = 0``. Each activated device's new
   number is written to its row there. When the last device of the activation has settled (in a batch
   or in reconciliation), every SIM the activation failed for, validation included, gets its row
   ERROR ("Assign Customer failed ... because the new service activation failed") and the held bulk
   change is released (``ProcessChanges = 1``): ``bulk_change_sensor`` processes it with the
   CustomerAssignment handler.

3b. **Static IP** (``StaticIPProvision``: ``PDPName`` required, ``LteIndicator``, ``DefaultAPN``,
   ``StaticIPAPN``): once the line is active, one free address of the PDP is asked for and a
   provisioning request sent for the new number; the device change keeps waiting (request id
   ``ip:<batch>``) until the status shows ``ProfileCheck`` Success, ``IPReservation`` Reserved and
   ``ProfileUpdate`` Complete, then settles with the IP on the device change and ``Device.IPAddress``.
   The polls count against the same ``max_checks`` as the activation. A provisioning the carrier
   refuses (or no free address) does not undo the line: the device change is PROCESSED with
   "static IP NOT provisioned" and the reason in its details and log. Legacy sent 10 subscribers per
   provisioning request; we send one per device so each is logged on its own device change.
**Assumed**: see ``carriers/telegence.py`` (activation path and body) and the simulator (IP paths).
"""
from __future__ import annotations

import copy
import json
import threading
from typing import Any

from sqlalchemy.engine import Connection

from bulkchange.carriers.base import CallLog, CarrierError, OutcomeUnknown
from bulkchange.carriers.telegence import MAX_ACTIVATIONS, characteristic, offering_codes
from bulkchange.changes.base import ChangeHandler, device_not_found, failed_result
from bulkchange.changes.status_update.telegence import activation_outcome
from bulkchange.db import new_service
from bulkchange.db import bulk_changes
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import (
    SETTLED_DEVICE_STATUSES,
    ActivateNewServiceRequest,
    BulkChange,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    utcnow,
)
from bulkchange.rules import RuleError, luhn_valid
from bulkchange.tenancy import billing_account_problem

ACTIVE = "A"
DROPPED_CHARACTERISTICS = frozenset({"removeOfferingCode"})


def activation_chars(request: ActivateNewServiceRequest) -> dict[str, Any]:
    """name -> value of the request's ``service.serviceCharacteristic`` (RuleError on another shape)."""
    service = request.TelegenceActivationRequest.get("service")
    items = service.get("serviceCharacteristic") if isinstance(service, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        raise RuleError("TelegenceActivationRequest.service.serviceCharacteristic must be a list of {name, value}")
    return {i["name"]: i.get("value") for i in items}


def activation_line(request: ActivateNewServiceRequest, iccid: str, billing_account: str | None) -> dict:
    """The activation item sent for one device: the portal's, with the SIM set and dropped items removed."""
    item = copy.deepcopy(request.TelegenceActivationRequest)
    service = item.setdefault("service", {})
    chars = [c for c in service.get("serviceCharacteristic") or []
             if c.get("name") not in DROPPED_CHARACTERISTICS and c.get("name") != "sim"]
    service["serviceCharacteristic"] = [{"name": "sim", "value": iccid}] + chars
    if not item.get("billingAccount") and billing_account:
        item["billingAccount"] = {"id": billing_account}
    return item


def removed_offerings(request: ActivateNewServiceRequest) -> list[str]:
    """The SOCs the request's ``removeOfferingCode`` items ask to take off the new line, in order."""
    service = request.TelegenceActivationRequest.get("service")
    items = service.get("serviceCharacteristic") if isinstance(service, dict) else None
    codes = [str(i.get("value")).strip() for i in items or [] if isinstance(i, dict)
             and i.get("name") in DROPPED_CHARACTERISTICS and str(i.get("value") or "").strip()]
    return list(dict.fromkeys(codes))


def settled(client: Any, base: dict, request: ActivateNewServiceRequest, number: str, how: str,
            log: CallLog) -> DeviceResult:
    """PROCESSED with what the carrier reports for the new line (raises CarrierError if it cannot be
    read). The request's ``removeOfferingCode`` SOCs the line carries are taken off it (legacy PNSA:
    one PATCH, logged "Telegence Update Mobility Configuration"), so a settle repeated after a lost
    answer sends nothing twice; a SOC the line does not carry is said, not sent. A refusal leaves the
    line as it is and is said in the details: the activation itself stands (as the legacy did)."""
    line = client.get_service(number, log=log)
    remove = removed_offerings(request)
    carried = set(offering_codes(line))
    present, absent = [c for c in remove if c in carried], [c for c in remove if c not in carried]
    note = f"; offering code(s) {', '.join(absent)} not on the line, nothing to remove" if absent else ""
    if present:
        try:
            client.remove_offerings(number, present, log=log)
            note += f"; offering code(s) {', '.join(present)} removed"
        except CarrierError as exc:
            note += f"; offering code(s) {', '.join(present)} NOT removed: {exc}"
        line = client.get_service(number, log=log)
    updates: dict[str, Any] = {}
    plan = characteristic(line, "singleUserCode")
    if plan:
        updates["CarrierRatePlan"] = str(plan)
    imei = characteristic(line, "IMEI")
    if imei:
        updates["IMEI"] = str(imei)
    if request.CustomerRatePlan:
        updates["CustomerRatePlanId"] = request.CustomerRatePlan
    if request.CustomerRatePool:
        updates["CustomerPoolId"] = request.CustomerRatePool
    features = sorted(offering_codes(line))
    return DeviceResult(status=DeviceChangeStatus.PROCESSED, new_device_status=ACTIVE, msisdn=number,
                        device_updates=updates,
                        extra={"features": features, "number": number,
                               "carrier_rate_pool": request.CarrierRatePool, "carrier_data_group": request.CarrierDataGroup},
                        details=f"{how}: subscriber {number}, plan {plan or '?'}, "
                                f"{len(features)} feature(s){note}", **base)


def _ip_field(request: ActivateNewServiceRequest, name: str) -> Any:
    lowered = {str(k).lower(): v for k, v in (request.StaticIPProvision or {}).items()}
    value = lowered.get(name.lower())
    return value if value not in (None, "") else None


IP_PREFIX = "ip:"
IP_DONE = {"ProfileCheck": "success", "IPReservation": "reserved", "ProfileUpdate": "complete"}


def after_active(client: Any, base: dict, request: ActivateNewServiceRequest, number: str, how: str,
                 log: CallLog) -> DeviceResult:
    """The line is active: settle it, or first request its static IP (step 3b of the module docstring)."""
    if request.StaticIPProvision is None:
        return settled(client, base, request, number, how, log)
    pdp = str(_ip_field(request, "PDPName"))
    ban = (request.TelegenceActivationRequest.get("billingAccount") or {}).get("id") or \
        getattr(client, "billing_account", None)
    try:
        addresses = client.ip_addresses(pdp, 1, log=log)
        if not addresses:
            raise CarrierError(f"no static IP address available for PDP {pdp}")
        batch = client.provision_ips(pdp, ban, [{
            "subscriberNumber": number, "ipAddressRecord": addresses[0],
            "lteIndicator": _ip_field(request, "LteIndicator"), "defaultAPNIndicator": _ip_field(request, "DefaultAPN"),
            "accessPointName": _ip_field(request, "StaticIPAPN"), "effectiveDate": utcnow().strftime("%Y-%m-%d")}],
            log=log)
    except CarrierError as exc:
        result = settled(client, base, request, number, how, log)
        result.details += f"; static IP NOT provisioned: {exc}"
        return result
    return DeviceResult(status=DeviceChangeStatus.PENDING_ACTIVATION, carrier_request_id=f"{IP_PREFIX}{batch}",
                        msisdn=number, **base,
                        details=f"{how}: subscriber {number}; static IP {addresses[0]} requested (batch {batch}), "
                                "waiting for the carrier")


def check_static_ip(client: Any, w) -> DeviceResult | str:
    batch, number = w.dc.carrier_request_id[len(IP_PREFIX):], w.dc.msisdn
    answer = client.ip_provision_status(batch, log=w.log)
    entry = next((x for x in answer.get("subscriber") or [] if isinstance(x, dict)
                  and str(x.get("subscriberNumber")) == str(number)), None)
    if entry is None:
        return f"static IP batch {batch} does not list {number} yet"
    states = {k: str(entry.get(k) or "").lower() for k in IP_DONE}
    if states == IP_DONE:
        result = settled(client, w.base, w.request, number, "Telegence line active", w.log)
        result.ip_address = str(entry.get("ipAddressRecord"))
        result.details += f"; static IP {result.ip_address} provisioned"
        return result
    if any(v in ("failed", "error", "rejected") for v in states.values()):
        result = settled(client, w.base, w.request, number, "Telegence line active", w.log)
        result.details += f"; static IP NOT provisioned (batch {batch}: {entry})"
        return result
    return f"static IP provisioning of {number} pending (batch {batch})"


class TelegenceActivateNewService(ChangeHandler):
    request_model = ActivateNewServiceRequest
    group_size = MAX_ACTIVATIONS

    def __init__(self, bulk, client, context):
        super().__init__(bulk, client, context)
        self._lines: dict[str, str] | None = None
        self._lines_lock = threading.Lock()

    def validate(self, dc: DeviceChange, request: ActivateNewServiceRequest, device: DeviceRow | None) -> None:
        if device is None:
            raise RuleError(device_not_found(dc, self.bulk))
        chars = activation_chars(request)
        missing = [n for n in ("singleUserCode", "serviceZipCode") if not chars.get(n)]
        if missing:
            raise RuleError(f"TelegenceActivationRequest needs the characteristic(s) {', '.join(missing)}")
        if chars.get("sim") and str(chars["sim"]) != device.iccid:
            raise RuleError(f"TelegenceActivationRequest names SIM {chars['sim']} but the device change is for "
                            f"{device.iccid}")
        imei = str(chars.get("IMEI") or "")
        if imei and not (len(imei) == 15 and imei.isdigit() and luhn_valid(imei)):
            raise RuleError(f"IMEI {imei!r} must be 15 digits with a valid Luhn check digit")
        if device.msisdn and (device.status or "").upper() == ACTIVE:
            raise RuleError(f"SIM {device.iccid} already has the active line {device.msisdn}")
        if request.StaticIPProvision is not None and not _ip_field(request, "PDPName"):
            raise RuleError("StaticIPProvision needs PDPName (the packet data profile the static IP comes from)")
        ban = (request.TelegenceActivationRequest.get("billingAccount") or {}).get("id")
        problem = billing_account_problem(ban, self.client)
        if problem:
            raise RuleError(problem)

    def _base(self, dc: DeviceChange, device: DeviceRow) -> dict[str, Any]:
        return dict(device_change_id=dc.id, device_id=device.id, iccid=device.iccid,
                    previous_device_status=device.status)

    def _active_lines(self) -> dict[str, str]:
        with self._lines_lock:
            if self._lines is None:
                self._lines = self.client.active_lines()
            return self._lines

    def apply(self, dc: DeviceChange, request: ActivateNewServiceRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        """A device left PROCESSING by an interrupted attempt: looked up among the active lines first."""
        assert device is not None
        if verify_first:
            try:
                number = self._active_lines().get(device.iccid)
                if number:
                    return after_active(self.client, self._base(dc, device), request, number,
                                        "active at the carrier after an interrupted attempt", log)
            except CarrierError as exc:
                return failed_result(dc, device, exc, "Look up Telegence lines before retry")
        return self.apply_group([(dc, request, device)], log=log)[0]

    def apply_group(self, entries, *, log: CallLog) -> list[DeviceResult]:
        lines = [activation_line(request, device.iccid, getattr(self.client, "billing_account", None))
                 for _, request, device in entries]
        try:
            answers = self.client.activate(lines, log=log)
        except OutcomeUnknown as exc:  # answer lost: looked up, never resent
            return [DeviceResult(status=DeviceChangeStatus.PENDING_ACTIVATION, **self._base(dc, device),
                                 details=f"{exc}; waiting to find the line active at the carrier")
                    for dc, _, device in entries]
        except CarrierError as exc:
            return [failed_result(dc, device, exc, f"Telegence activation of {len(lines)} line(s)")
                    for dc, _, device in entries]
        first = entries[0][0].id
        out = []
        for (dc, request, device), answer in zip(entries, answers):
            answer = answer if isinstance(answer, dict) else {}
            status, number, reason = activation_outcome(answer)
            activation_id = str(answer.get("id") or "") or None
            base = self._base(dc, device)
            if status == "rejected":
                out.append(DeviceResult(status=DeviceChangeStatus.API_FAILED, carrier_request_id=activation_id, **base,
                                        details=f"Telegence rejected the activation: {reason or 'no reason given'}"))
                continue
            if status == "active" and number:
                try:
                    out.append(after_active(self.client, base, request, number, "Telegence activated the line", log))
                    continue
                except CarrierError:
                    pass  # the line could not be read yet: reconciliation reads it
            out.append(DeviceResult(
                status=DeviceChangeStatus.PENDING_ACTIVATION, carrier_request_id=activation_id, **base,
                details=f"Telegence accepted the activation (id {activation_id}, {status or 'pending'}; request of "
                        f"{len(lines)} line(s) logged on device change {first}); waiting for the carrier"))
        return out

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        record_settled(conn, self.bulk, results)


def check_waiting(client: Any, w) -> DeviceResult | str:
    """Settle one waiting activation (``reconcile.WaitingCheck``): by its activation id, else (or when
    rejected) by finding the SIM among the account's active lines (read once per pass)."""
    activation_id = w.dc.carrier_request_id
    if activation_id and activation_id.startswith(IP_PREFIX):
        return check_static_ip(client, w)

    def line_number() -> str | None:
        return w.shared.get("telegence:active_lines", client.active_lines).get(w.dc.iccid)

    if not activation_id:
        number = line_number()
        return after_active(client, w.base, w.request, number, "Telegence line found", w.log) if number else \
            "Telegence line not found active"
    status, number, reason = activation_outcome(client.activation_status(activation_id, log=w.log))
    if status == "active" and number:
        return after_active(client, w.base, w.request, number, f"Telegence activation {activation_id} done after "
                                                               f"{w.checks} check(s)", w.log)
    if status == "rejected":
        number = line_number()
        if number:
            return after_active(client, w.base, w.request, number, f"activation {activation_id} rejected ({reason}) "
                                                                   "but the line is active", w.log)
        return w.result(DeviceChangeStatus.API_FAILED,
                        f"Telegence rejected activation {activation_id}: {reason or 'no reason given'}")
    return f"Telegence activation {status or 'status unknown'}"


def record_settled(conn: Connection, bulk: BulkChange, results: list[DeviceResult]) -> None:
    """Features of the new lines, then the linked customer assignment (module docstring, step 4)."""
    done = [r for r in results if r.status in SETTLED_DEVICE_STATUSES]
    if not done:
        return
    activated = [r for r in done if r.status == DeviceChangeStatus.PROCESSED and r.device_id is not None]
    if activated:
        now = utcnow()
        new_service.replace_line_features(conn, bulk, sorted({r.device_id for r in activated}),
                                          [(r.device_id, r.iccid, r.msisdn, code)
                                           for r in activated for code in r.extra.get("features") or []], now=now)
        new_service.store_carrier_pool_and_group(conn, bulk.service_provider_id, [
            (r.msisdn, r.extra.get("carrier_rate_pool"), r.extra.get("carrier_data_group"))
            for r in activated if r.msisdn], modified_by="ActivateNewService", now=now)
    _linked_assignment(conn, bulk, done)


def _linked_assignment(conn: Connection, bulk: BulkChange, done: list[DeviceResult]) -> None:
    additions: dict[int, list[DeviceResult]] = {}
    by_id = {r.device_change_id: r for r in done}
    for dc_id, raw in new_service.change_requests(conn, bulk, sorted(by_id)):
        try:
            addition = (json.loads(raw) if raw else {}).get("AdditionBulkChangeId")
        except (ValueError, AttributeError):
            addition = None
        if addition:
            additions.setdefault(int(addition), []).append(by_id[int(dc_id)])
    if not additions:
        return
    open_left = new_service.count_unsettled(conn, bulk)
    now = utcnow()
    for addition_id, members in additions.items():
        try:
            other = bulk_changes.load_bulk_change(conn, addition_id)
        except bulk_changes.BulkChangeNotFound:
            continue
        if other.service_provider_id != bulk.service_provider_id or other.tenant_id != bulk.tenant_id:
            continue  # never touch another provider's or tenant's bulk change
        numbers = [(r.iccid, r.msisdn) for r in members if r.status == DeviceChangeStatus.PROCESSED and r.msisdn]
        if numbers:
            new_service.set_linked_numbers(conn, other, numbers, now=now)
        if open_left:
            continue
        # the activation is over: every SIM it failed for (in a batch, in reconciliation or already at
        # validation) is refused in the held bulk change, which is then released
        failed = [(iccid, f"Assign Customer failed for device {iccid} because the new "
                          f"service activation failed: {details}"[:4000])
                  for iccid, details in new_service.failed_activations(conn, bulk)]
        if failed:
            new_service.refuse_linked_changes(conn, other, failed, now=now)
        # whatever status the portal gave it (NEW, or PROCESSING: the legacy portal creates the linked
        # assignment PROCESSING), as long as no one started it: released as NEW for the sensor to claim
        new_service.release_held_bulk_change(conn, addition_id)
