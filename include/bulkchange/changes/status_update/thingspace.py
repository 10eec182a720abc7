"""StatusUpdate on ThingSpace: every action answers a requestId and completes later
(legacy_behaviour.md 3.1)."""
from __future__ import annotations

from bulkchange.carriers.base import CallLog, CarrierError
from bulkchange.changes.base import failed_result, request_field
from bulkchange.changes.status_update.common import StatusUpdateHandler, processed, waiting
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import DeviceChange, DeviceChangeStatus, DeviceResult, StatusUpdateRequest
from bulkchange.rules import (
    TS_PENDING_ACTIVATION,
    RuleError,
    thingspace_onboarding,
    thingspace_pair_problem,
)
from bulkchange.sanitize import sanitize_text


def thingspace_action(current: str | None, target: str) -> str:
    """The ThingSpace action that moves a line to ``target`` (restore when it is suspended)."""
    if target == "active":
        return "restore" if (current or "").strip().lower() == "suspend" else "activate"
    return {"suspend": "suspend", "deactive": "deactivate"}[target]


# CarrierRequestId of a ThingSpace action whose answer was lost: "unknown:<action>:<epoch seconds>".
# The device change waits (PENDING_*) and bulkchange.reconcile.check_thingspace looks for the
# accepted request (the line's state, its provisioning history) before anything is sent again.
UNKNOWN_PREFIX = "unknown:"


def unknown_outcome_result(dc: DeviceChange, device: DeviceRow, action: str, exc: Exception,
                           group: int = 1) -> DeviceResult:
    import time

    what = f"ThingSpace {action}" + (f" of {group} devices" if group > 1 else "")
    return DeviceResult(status=waiting_status(action), **_result_fields(dc, device),
                        details=sanitize_text(f"{what}: outcome unknown ({exc}); the carrier is checked for the "
                                              f"request before anything is sent again"),
                        carrier_request_id=f"{UNKNOWN_PREFIX}{action}:{int(time.time())}")


def waiting_status(action: str) -> DeviceChangeStatus:
    """An activation waits for its line (MDN, IP); every other action for its request."""
    return DeviceChangeStatus.PENDING_ACTIVATION if action == "activate" else DeviceChangeStatus.PENDING_CARRIER


# The subscriber's primary place of use a ThingSpace change request may carry (legacy portal:
# ``Request.thingSpacePPU`` {FirstName, LastName, AddressLine, City, State, ZipCode, Country}).
PPU_KEY = "thingSpacePPU"
PPU_FIELDS = ("FirstName", "LastName", "AddressLine", "City", "State", "ZipCode", "Country")
# what the carrier requires of the address besides the name (SDK ``Address``; contract rule 21)
PPU_ADDRESS_REQUIRED = ("AddressLine", "City", "State", "ZipCode", "Country")


def place_of_use(request: StatusUpdateRequest) -> dict | None:
    """The request's ``thingSpacePPU`` (keys matched case-insensitively, values as trimmed strings)
    when it names the subscriber's first and last name, else None: as in the legacy, only then is the
    activation the PPU variant."""
    data = {str(k).lower(): v for k, v in (request.Request or {}).items()}.get(PPU_KEY.lower())
    if not isinstance(data, dict):
        return None
    lowered = {str(k).lower(): v for k, v in data.items()}
    ppu = {f: (str(lowered[f.lower()]).strip() or None) if lowered.get(f.lower()) is not None else None
           for f in PPU_FIELDS}
    return ppu if ppu["FirstName"] and ppu["LastName"] else None


def carrier_place_of_use(ppu: dict) -> dict:
    """The activation's ``primaryPlaceOfUse`` as the legacy built it (ThingSpaceCommon
    GetThingspaceActivateDeviceBody): the name, and the address line, city, state, ZIP and country."""
    address = {"addressLine1": ppu["AddressLine"], "city": ppu["City"], "state": ppu["State"],
               "zip": ppu["ZipCode"], "country": ppu["Country"]}
    return {"customerName": {"firstName": ppu["FirstName"], "lastName": ppu["LastName"]},
            "address": {k: v for k, v in address.items() if v}}


def _ppu_key(ppu: dict | None) -> str | None:
    import json

    return json.dumps(ppu, sort_keys=True) if ppu else None


def _mdn_zip_code(request: StatusUpdateRequest, ppu: dict | None) -> str | None:
    """``mdnZipCode``, else (legacy) the primary place of use's ZIP code."""
    return request_field(request, "mdnZipCode", "ZipCode", "MdnZipCode") or (ppu or {}).get("ZipCode")


def _place_of_use_extra(action: str, ppu: dict | None) -> dict:
    """What ``record`` writes in Device for an accepted PPU activation: "First Last" as the username
    and the primary place of use (legacy JSON of ``thingSpacePPU``) as the description."""
    import json

    if action != "activate" or not ppu:
        return {}
    return {"place_of_use": {"username": f"{ppu['FirstName']} {ppu['LastName']}",
                             "description": json.dumps(ppu)}}


def _forced_same_state(request: StatusUpdateRequest, device: DeviceRow, target: str) -> bool:
    """IsIgnoreCurrentStatus on a device our copy shows at the target already: ThingSpace refuses the
    action when the line is there (suspend a suspended line, activate an active one), so the line is read
    first and nothing is sent when the carrier shows it at the target (issue #12: trust the carrier, not
    our copy); when the carrier shows another state the action is sent as asked."""
    return bool(request.IsIgnoreCurrentStatus) and (device.status or "").strip().lower() == target.lower()


class ThingSpaceStatusUpdate(StatusUpdateHandler):
    """ThingSpace: every action answers a requestId at once and completes later.

    Suspend, restore and deactivate wait as PENDING_CARRIER until the request completes;
    activation waits as PENDING_ACTIVATION until the line is active with an MDN and IP. Nothing
    blocks a worker: bulk_change_process polls the short ones in reschedule mode and
    device_status_reconcile settles activations (bulkchange.settle).
    """

    group_size = 200  # devices per action request (the API takes up to 10,000; an add up to 200)

    @classmethod
    def load_context(cls, conn, bulk) -> dict:
        """The tenant's devices holding the IMEIs the bulk change's onboarding rows name (pair rules)."""
        from bulkchange.db import device_changes, onboarding
        from bulkchange.models import RequestParseError, parse_change_request

        imeis = []
        for dc in device_changes.load_device_changes(conn, bulk, statuses=device_changes.UNSETTLED):
            try:
                request = parse_change_request(bulk.change_type, dc.change_request)
            except RequestParseError:
                continue  # refused with its reason by validation
            if thingspace_onboarding(request.UpdateStatus) or _adds_first(request, dc):
                imeis.append(_imei(dc, request))
        return {"imei_holders": onboarding.load_devices_by_imei(conn, bulk, [i for i in imeis if i])}

    def validate(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None) -> None:
        """Onboarding ("pending activation", "inventory") is no move of a line: the portal's ICCID/IMEI
        pair rules decide; every other status goes through the common checks."""
        target = thingspace_onboarding(request.UpdateStatus)
        if not target and _adds_first(request, dc):
            # legacy "active" without IsIgnoreCurrentStatus: a new ICCID/IMEI pair, added then activated
            # (the portal's pair rules as for a pending activation; the device may not be ours yet)
            target = TS_PENDING_ACTIVATION
            self._check_activation(request)
        if not target:
            return super().validate(dc, request, device)
        imei = _imei(dc, request)
        problem = thingspace_pair_problem(target, dc.iccid, imei, device,
                                          self.context.get("imei_holders", {}).get(imei) if imei else None)
        if problem:
            raise RuleError(problem)

    def apply(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        if thingspace_onboarding(request.UpdateStatus):
            return self._onboard([(dc, request, device)], log)[0]
        if _adds_first(request, dc):
            return self.apply_group([(dc, request, device)], log=log)[0]
        return super().apply(dc, request, device, verify_first=verify_first, log=log)

    def validate_move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str) -> None:
        if thingspace_action(device.status, target) == "activate":
            self._check_activation(request)

    @staticmethod
    def _check_activation(request: StatusUpdateRequest) -> None:
        """What an activation needs: a plan, a ZIP for the MDN, a primary place of use with its address."""
        ppu = place_of_use(request)
        if not (request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode")
                and _mdn_zip_code(request, ppu)):
            raise RuleError("ThingSpace activation needs Request.servicePlan and Request.mdnZipCode")
        missing = [f for f in PPU_ADDRESS_REQUIRED if ppu and not ppu[f]]
        if missing:
            raise RuleError(f"ThingSpace activation with the subscriber's name (Request.{PPU_KEY}) needs the "
                            f"primary place of use's {', '.join(missing)} too: the carrier requires the full "
                            f"address with the name")

    def move(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str, *,
             verify_first: bool, log: CallLog) -> DeviceResult:
        if verify_first or _forced_same_state(request, device, target):
            first = self._read_first(dc, request, device, target, log, "after an interrupted attempt"
                                     if verify_first else "before sending (IsIgnoreCurrentStatus)")
            if first is not None:
                return first
        action = thingspace_action(device.status, target)
        from bulkchange.carriers.thingspace import UnknownOutcome

        ppu = place_of_use(request) if action == "activate" else None
        try:
            request_id = self.client.action(
                action, [device.iccid], log=log,
                service_plan=request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode"),
                mdn_zip_code=_mdn_zip_code(request, ppu),
                reason_code=request_field(request, "reasonCode"),
                primary_place_of_use=carrier_place_of_use(ppu) if ppu else None)
        except UnknownOutcome as exc:
            return unknown_outcome_result(dc, device, action, exc)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"ThingSpace {action}")
        return waiting(dc, device, waiting_status(action),
                       f"ThingSpace accepted {action} (request {request_id}); waiting for the carrier",
                       carrier_request_id=request_id,
                       extra={**_default_site_extra(action, request), **_place_of_use_extra(action, ppu)})

    def _read_first(self, dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow, target: str,
                    log: CallLog, why: str) -> DeviceResult | None:
        """The line read at the carrier: PROCESSED when it is at ``target`` already, None when the
        action is to be sent, a failed result when the read fails."""
        from bulkchange.carriers.thingspace import device_id, device_state

        try:
            current = self.client.get_device(device.iccid, log=log)
        except CarrierError as exc:
            return failed_result(dc, device, exc, f"Get ThingSpace device {why}")
        if device_state(current) != target:
            return None
        return processed(dc, device, target, f"state {target} confirmed at the carrier {why}; nothing sent",
                         msisdn=device_id(current, "msisdn") or device_id(current, "mdn"),
                         ip_address=current.get("ipAddress"))

    def apply_group(self, entries, *, log: CallLog) -> list[DeviceResult]:
        """Devices that need the same action with the same plan go in one request."""
        results: dict[int, DeviceResult] = {}
        groups: dict[tuple, list] = {}
        onboarding = [e for e in entries if thingspace_onboarding(e[1].UpdateStatus)]
        if onboarding:
            for (dc, _, _), result in zip(onboarding, self._onboard(onboarding, log)):
                results[dc.id] = result
        # "active" without IsIgnoreCurrentStatus with an IMEI: added first; only the added are activated
        adds_first = [e for e in entries if e[0].id not in results and _adds_first(e[1], e[0])]
        added: dict[int, dict] = {}
        if adds_first:
            for (dc, request, device), result in zip(adds_first, self._add(adds_first, log)):
                if isinstance(result, DeviceResult):
                    results[dc.id] = result
                else:
                    added[dc.id] = {"onboard": {"iccid": dc.iccid, "imei": _imei(dc, request, device),
                                                "status": TS_PENDING_ACTIVATION}, "default_site": True,
                                    "added": result}
        for dc, request, device in entries:
            if dc.id in results:
                continue
            if dc.id in added:
                ppu = place_of_use(request)
                key = ("activate", request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode"),
                       _mdn_zip_code(request, ppu), None, _ppu_key(ppu))
                groups.setdefault(key, []).append((dc, request, device))
                continue
            check = self.transition(device, request)
            if check.already_there:
                results[dc.id] = self.apply(dc, request, device, verify_first=False, log=log)
                continue
            if _forced_same_state(request, device, check.target):
                first = self._read_first(dc, request, device, check.target, log,
                                         "before sending (IsIgnoreCurrentStatus)")
                if first is not None:
                    results[dc.id] = first
                    continue
            action = thingspace_action(device.status, check.target)
            # the primary place of use applies to every device of a request: one request per subscriber
            ppu = place_of_use(request) if action == "activate" else None
            key = (action, request_field(request, "servicePlan", "RatePlanCode", "ServicePlanCode"),
                   _mdn_zip_code(request, ppu), request_field(request, "reasonCode"), _ppu_key(ppu))
            groups.setdefault(key, []).append((dc, request, device))
        first_id = entries[0][0].id
        for (action, plan, zip_code, reason, _), members in groups.items():
            iccids = [device.iccid if device is not None else dc.iccid for dc, _, device in members]
            ppu = place_of_use(members[0][1]) if action == "activate" else None
            from bulkchange.carriers.thingspace import UnknownOutcome

            try:
                request_id = self.client.action(action, iccids, service_plan=plan, mdn_zip_code=zip_code,
                                                reason_code=reason, log=log,
                                                primary_place_of_use=carrier_place_of_use(ppu) if ppu else None)
            except UnknownOutcome as exc:
                for dc, _, device in members:
                    results[dc.id] = unknown_outcome_result(dc, device, action, exc, len(iccids))
                continue
            except CarrierError as exc:
                for dc, _, device in members:
                    results[dc.id] = failed_result(dc, device, exc, f"ThingSpace {action} of {len(iccids)} devices")
                continue
            for dc, request, device in members:
                onboard = added.get(dc.id, {})
                first = f"ThingSpace add: {onboard['added']}; then " if onboard else ""
                results[dc.id] = DeviceResult(
                    status=waiting_status(action), carrier_request_id=request_id,
                    **_result_fields(dc, device),
                    extra={**_default_site_extra(action, request), **_place_of_use_extra(action, ppu),
                           **{k: v for k, v in onboard.items() if k != "added"}},
                    details=(f"{first}ThingSpace accepted {action} of {len(iccids)} devices (request {request_id}, "
                             f"logged on device change {first_id}); waiting for the carrier"))
        return [results[dc.id] for dc, _, _ in entries]

    # -- onboarding: "pending activation" (carrier add + inventory) and "inventory" (inventory only) --
    def _onboard(self, entries, log: CallLog) -> list[DeviceResult]:
        """One add request for the "pending activation" entries (legacy: POST devices/actions/add,
        state preactive, ICCID + IMEI, account name; "Success" and "Error. Device already exists."
        both count as added), none for the "inventory" ones; each device then goes into our
        inventory (``record``)."""
        results: dict[int, DeviceResult] = {}
        to_add = [(dc, request, device) for dc, request, device in entries
                  if thingspace_onboarding(request.UpdateStatus) == TS_PENDING_ACTIVATION]
        outcomes = dict(zip((dc.id for dc, _, _ in to_add), self._add(to_add, log))) if to_add else {}
        for dc, request, device in entries:
            target = thingspace_onboarding(request.UpdateStatus)
            imei = _imei(dc, request, device)
            if target == TS_PENDING_ACTIVATION:
                answer = outcomes[dc.id]
                if isinstance(answer, DeviceResult):
                    results[dc.id] = answer
                    continue
                done = f"ThingSpace add: {answer}; added to the inventory as {target}"
            else:
                done = f"inventory only (no carrier call): added to the inventory as {target}"
            results[dc.id] = DeviceResult(
                device_change_id=dc.id, status=DeviceChangeStatus.PROCESSED, iccid=dc.iccid,
                device_id=device.id if device else None, previous_device_status=device.status if device else None,
                new_device_status=target, details=done,
                device_updates={"IMEI": imei} if device is not None and imei else {},
                extra={"onboard": {"iccid": dc.iccid, "imei": imei, "status": target}, "default_site": True})
        return [results[dc.id] for dc, _, _ in entries]

    def _add(self, entries, log: CallLog) -> list:
        """One add request (``POST devices/actions/add``, state preactive, ICCID + IMEI) for these
        entries; per entry the carrier's answer when the account has the device ("Success" or "Error.
        Device already exists.", as the legacy counted them), else the API_FAILED result with the reason."""
        what = "ThingSpace add" + (f" of {len(entries)} devices" if len(entries) > 1 else "")
        try:
            answers = self.client.add_devices([(dc.iccid, _imei(dc, request, device))
                                               for dc, request, device in entries], log=log)
        except CarrierError as exc:
            return [failed_result(dc, device, exc, what) for dc, _, device in entries]
        out: list = []
        for dc, _, device in entries:
            answer = answers.get(dc.iccid)
            if self.client.added(answer):
                out.append(answer)
            else:
                out.append(DeviceResult(
                    status=DeviceChangeStatus.API_FAILED,
                    **_result_fields(dc, device),
                    details=sanitize_text(f"{what} refused by carrier: "
                                          f"{answer or 'the answer does not name the device'}")))
        return out

    def record(self, conn, results: list[DeviceResult], *, processed_by: str) -> None:
        """Onboarded devices the inventory does not have yet are inserted; then the processed devices
        of an onboarding or of an activation without IsIgnoreCurrentStatus get the service
        provider's default site (legacy usp_Device_Bulk_Change_Set_Default_Site); an accepted
        activation with the subscriber's name writes the username and description."""
        from bulkchange.db import onboarding

        ok = [r for r in results if r.status in (DeviceChangeStatus.PROCESSED, DeviceChangeStatus.PENDING_ACTIVATION)]
        onboarding.add_to_inventory(conn, self.bulk, [
            onboarding.OnboardedDevice(r.device_change_id, r.extra["onboard"]["iccid"], r.extra["onboard"]["imei"],
                                       r.extra["onboard"]["status"])
            for r in ok if r.device_id is None and r.extra.get("onboard")], processed_by=processed_by)
        onboarding.set_default_site(conn, self.bulk, [r.iccid for r in ok if r.extra.get("default_site") and r.iccid])
        # an accepted PPU activation: the legacy wrote these once the request was Pending or Success
        onboarding.record_place_of_use(conn, self.bulk, [
            (r.device_id, r.extra["place_of_use"]["username"], r.extra["place_of_use"]["description"])
            for r in ok if r.device_id is not None and r.extra.get("place_of_use")])


def _adds_first(request: StatusUpdateRequest, dc: DeviceChange) -> bool:
    """Legacy "active" without IsIgnoreCurrentStatus (the portal's new ICCID/IMEI pair): the device is
    added at the carrier first, then activated. Only with an IMEI in the request (``Request.IMEI`` or
    the device change's IMEI): an ICCID-only line is activated directly (the portal set
    IsIgnoreCurrentStatus for it)."""
    from bulkchange.models import Integration
    from bulkchange.rules import carrier_status

    if request.IsIgnoreCurrentStatus or (request.UpdateStatus or "").strip().lower() in ("restore", "resume"):
        return False
    try:
        target = carrier_status(Integration.THINGSPACE, request.UpdateStatus)
    except RuleError:
        return False
    return target == "active" and bool(request_field(request, "IMEI") or (dc.imei or "").strip())


def _result_fields(dc: DeviceChange, device: DeviceRow | None) -> dict:
    """The result fields of a device change whose device may not be in the inventory yet."""
    return dict(device_change_id=dc.id, iccid=dc.iccid, device_id=device.id if device else None,
                previous_device_status=device.status if device else None)


def _imei(dc: DeviceChange, request: StatusUpdateRequest, device: DeviceRow | None = None) -> str | None:
    """The IMEI of an onboarding row: the request's (legacy ThingSpace Request.IMEI), else the device
    change's, else (ICCID only, pair rules) the one on record."""
    return (request_field(request, "IMEI") or (dc.imei or "").strip() or None
            or (device.imei if device is not None else None))


def _default_site_extra(action: str, request: StatusUpdateRequest) -> dict:
    """An activation without IsIgnoreCurrentStatus is the legacy "pending activate" path: its devices
    get the default site too."""
    return {"default_site": True} if action == "activate" and not request.IsIgnoreCurrentStatus else {}
