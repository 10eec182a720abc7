"""Domain vocabulary and request models (pydantic v2). No Airflow, no DB.

Names follow the legacy AMOP system: codes in ``DeviceChangeRequestType.Code``, integration names
in ``Integration.Name``, status strings in ``DeviceBulkChange.Status`` and the device-change tables.
"""
from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class PortalType(IntEnum):
    M2M = 0
    LNP = 1
    MOBILITY = 2


class ChangeType(str, Enum):
    """Dispatch happens on the lower-cased Code, as the legacy lambda did."""

    STATUS_UPDATE = "StatusUpdate"
    CARRIER_RATE_PLAN_CHANGE = "CarrierRatePlanChange"
    CUSTOMER_RATE_PLAN_CHANGE = "CustomerRatePlanChange"
    CUSTOMER_ASSIGNMENT = "CustomerAssignment"
    ARCHIVAL = "Archival"
    ACTIVATE_NEW_SERVICE = "ActivateNewService"
    CREATE_REV_SERVICE = "CreateRevService"
    CHANGE_ICCID_AND_IMEI = "ChangeICCIDAndIMEI"
    EDIT_USERNAME_COST_CENTER = "EditUsernameCostCenter"

    @classmethod
    def from_code(cls, code: str) -> "ChangeType":
        wanted = (code or "").strip().lower()
        for member in cls:
            if member.value.lower() == wanted:
                return member
        raise ValueError(f"unknown change request type code {code!r}")


# Seed ids of DeviceChangeRequestType as AMOP's portal numbers them (dispatch uses the Code).
CHANGE_TYPE_IDS: dict[ChangeType, int] = {
    ChangeType.STATUS_UPDATE: 1,
    ChangeType.CARRIER_RATE_PLAN_CHANGE: 2,
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: 3,
    ChangeType.CUSTOMER_ASSIGNMENT: 4,
    ChangeType.ARCHIVAL: 5,
    ChangeType.ACTIVATE_NEW_SERVICE: 6,
    ChangeType.CREATE_REV_SERVICE: 7,
    ChangeType.CHANGE_ICCID_AND_IMEI: 8,
    ChangeType.EDIT_USERNAME_COST_CENTER: 9,
}


class Integration(str, Enum):
    JASPER = "Jasper"
    THINGSPACE = "ThingSpace"
    TELEGENCE = "Telegence"
    POD19 = "POD19"
    TMOBILE_JASPER = "TMobileJasper"
    ROGERS = "Rogers"
    TEAL = "Teal"
    POND = "Pond"
    EBONDING = "eBonding"  # known so its bulk changes get a clear refusal (docs/change-types.md, eBonding)

    @classmethod
    def from_name(cls, name: str) -> "Integration":
        wanted = (name or "").strip().lower()
        for member in cls:
            if member.value.lower() == wanted:
                return member
        raise ValueError(f"unknown integration {name!r}")

    @property
    def family(self) -> "Integration":
        """POD19, TMobileJasper and Rogers speak the Jasper (Control Center) API."""
        if self in (Integration.POD19, Integration.TMOBILE_JASPER, Integration.ROGERS):
            return Integration.JASPER
        return self


INTEGRATION_IDS: dict[Integration, int] = {
    Integration.JASPER: 1,
    Integration.THINGSPACE: 4,
    Integration.TELEGENCE: 6,
    Integration.POD19: 9,
    Integration.TMOBILE_JASPER: 11,
    Integration.TEAL: 12,
    Integration.POND: 13,
    Integration.ROGERS: 14,
    Integration.EBONDING: 15,  # a development seed number: the legacy one is unknown (dispatch is by Name)
}


class BulkStatus(str, Enum):
    NEW = "NEW"
    PENDING = "PENDING"          # claimed by the sensor, processing launched
    PROCESSING = "PROCESSING"
    WAITING_FOR_CARRIER = "WAITING_FOR_CARRIER"  # its run ended; devices wait on asynchronous carrier work
    PROCESSED = "PROCESSED"
    PROCESSED_WITH_ERRORS = "PROCESSED_WITH_ERRORS"
    ERROR = "ERROR"

    @property
    def is_final(self) -> bool:
        return self in (BulkStatus.PROCESSED, BulkStatus.PROCESSED_WITH_ERRORS, BulkStatus.ERROR)


class DeviceChangeStatus(str, Enum):
    NEW = "NEW"
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"        # handed to the carrier; outcome not yet recorded
    PENDING_ACTIVATION = "PENDING_ACTIVATION"  # carrier accepted an activation; reconciliation settles it
    PENDING_CARRIER = "PENDING_CARRIER"        # carrier accepted an asynchronous action (requestId stored)
    PROCESSED = "PROCESSED"
    API_FAILED = "API_FAILED"
    ERROR = "ERROR"                  # rejected by validation or a DB/pre-flight failure
    REV_IO_FAILED = "REV_IO_FAILED"  # carrier change applied, the Rev.io service step after it failed
    SCHEDULED = "SCHEDULED"  # DB change stored for a future effective date; a scheduled run applies it

    @property
    def is_settled(self) -> bool:
        return self in SETTLED_DEVICE_STATUSES


SETTLED_DEVICE_STATUSES = frozenset(
    {DeviceChangeStatus.PROCESSED, DeviceChangeStatus.API_FAILED, DeviceChangeStatus.ERROR,
     DeviceChangeStatus.REV_IO_FAILED}
)
FAILED_DEVICE_STATUSES = frozenset({DeviceChangeStatus.API_FAILED, DeviceChangeStatus.ERROR,
                                    DeviceChangeStatus.REV_IO_FAILED})
# The carrier change was applied (Device, DeviceStatusHistory are written) in these statuses.
CARRIER_APPLIED_STATUSES = frozenset({DeviceChangeStatus.PROCESSED, DeviceChangeStatus.REV_IO_FAILED})
WAITING_DEVICE_STATUSES = frozenset({DeviceChangeStatus.PENDING_ACTIVATION, DeviceChangeStatus.PENDING_CARRIER})


class _Lenient(BaseModel):
    """Change requests come from a C# portal: PascalCase keys, extra keys tolerated."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_strip_whitespace=True)


class StatusUpdateRequest(_Lenient):
    UpdateStatus: str = Field(min_length=1)
    IsIgnoreCurrentStatus: bool = False
    PostUpdateStatusId: int | None = None
    AccountNumber: str | None = None
    Request: dict[str, Any] | None = None
    RevService: dict[str, Any] | None = None
    RevServiceProductCreateModel: dict[str, Any] | None = None
    IntegrationAuthenticationId: int | None = None


class EditUsernameRequest(_Lenient):
    """EditUsernameCostCenter (legacy ``BulkChangeEditUsername``): each device change carries its own
    values. A field left out (or null) is not changed; an empty string clears it."""

    ContactName: str | None = Field(default=None, max_length=256)
    CostCenter1: str | None = Field(default=None, max_length=128)
    CostCenter2: str | None = Field(default=None, max_length=128)
    CostCenter3: str | None = Field(default=None, max_length=128)

    @field_validator("CostCenter1", "CostCenter2", "CostCenter3", "ContactName", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def cost_centers(self) -> dict[str, str]:
        """``{"CostCenter1": value, ...}`` for the cost centers this request sets."""
        return {name: value for name, value in (("CostCenter1", self.CostCenter1), ("CostCenter2", self.CostCenter2),
                                                ("CostCenter3", self.CostCenter3)) if value is not None}


class ActivateNewServiceRequest(_Lenient):
    """ActivateNewService on Telegence (legacy MOB ``TelegenceActivationRequest`` and its companions).

    ``TelegenceActivationRequest`` is the carrier's activation item as the portal builds it
    (``billingAccount.id``, ``relatedParty``, ``service.serviceCharacteristic`` with ``sim``,
    ``singleUserCode``, ``serviceZipCode``, ``IMEI``, ``offeringCodeN``, ``removeOfferingCode``);
    the device change's ICCID is used when ``sim`` is missing. ``StaticIPProvision`` (``PDPName``,
    ``LteIndicator``, ``DefaultAPN``, ``StaticIPAPN``) asks for a static IP after activation;
    ``RevService`` / ``AdditionBulkChangeId`` name the linked customer assignment."""

    TelegenceActivationRequest: dict[str, Any]
    CarrierDataGroup: str | None = None
    CarrierRatePool: str | None = None
    CustomerRatePlan: int | None = None
    CustomerRatePool: int | None = None
    AddCustomerRatePlan: bool = False
    StaticIPProvision: dict[str, Any] | None = None
    RevService: dict[str, Any] | None = None
    AdditionBulkChangeId: int | None = None
    PostUpdateStatusId: int | None = None


class RequestParseError(ValueError):
    """A change request that cannot be parsed; the message names the field."""


def parse_change_request(change_type: ChangeType, raw: str | dict | None) -> BaseModel:
    """Parse a device change's ChangeRequest JSON into its model, with a readable error."""
    model = REQUEST_MODELS.get(change_type)
    if model is None:
        raise RequestParseError(f"change type {change_type.value} is not supported yet")
    if raw is None or raw == "":
        raise RequestParseError("ChangeRequest is empty")
    from bulkchange.limits import LimitError, check_change_request_text

    try:  # size and depth first: never a RecursionError or a huge parse out of one device's request
        check_change_request_text(raw)
    except LimitError as exc:
        raise RequestParseError(str(exc)) from None
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        raise RequestParseError(f"ChangeRequest is not valid JSON: {getattr(exc, 'msg', exc)}") from exc
    except RecursionError:
        raise RequestParseError("ChangeRequest is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestParseError("ChangeRequest must be a JSON object")
    try:
        return model.model_validate(data)
    except RecursionError:
        raise RequestParseError("ChangeRequest is nested too deeply") from None
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "ChangeRequest"
            parts.append(f"{loc}: {err['msg']} (got {repr(err.get('input'))[:200]})")
        raise RequestParseError("; ".join(parts)) from exc


def _by_field_name(model: type[BaseModel], data: Any, aliases: dict[str, str] | None = None,
                   nested: tuple[str, ...] = ()) -> Any:
    """Portal payloads vary in key case (``customerRatePlanId`` / ``CustomerRatePlanId``) and may nest
    the fields in a block (``CustomerRatePlanUpdate``): map keys case-insensitively onto the model's
    field names (and ``aliases``), flattening the first ``nested`` block found."""
    if not isinstance(data, dict):
        return data
    for block in nested:
        inner = next((v for k, v in data.items() if str(k).lower() == block.lower()), None)
        if isinstance(inner, dict):
            data = {**{k: v for k, v in data.items() if str(k).lower() != block.lower()}, **inner}
            break
    names = {n.lower(): n for n in model.model_fields}
    names.update({a.lower(): n for a, n in (aliases or {}).items()})
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = names.get(str(k).lower(), k)
        if name in out and out[name] not in (None, ""):
            continue  # the canonical key wins over an alias given as well
        out[name] = None if v == "" else v
    return out


def _naive_utc(value: datetime | None) -> datetime | None:
    """Effective dates are compared in UTC; a date without a zone is taken as UTC."""
    from datetime import timezone

    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


class CustomerRatePlanChangeRequest(_Lenient):
    """CustomerRatePlanChange (legacy ``CustomerRatePlanUpdate``). Fields flat or nested in
    ``CustomerRatePlanUpdate``, any key case; ``CustomerRatePoolId`` is accepted for the pool."""

    CustomerRatePlanId: int | None = None
    CustomerPoolId: int | None = None
    CustomerDataAllocationMB: Decimal | None = Field(default=None, ge=0)
    EffectiveDate: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        return _by_field_name(cls, data, {"CustomerRatePoolId": "CustomerPoolId"},
                              nested=("CustomerRatePlanUpdate",))

    @field_validator("EffectiveDate")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _naive_utc(v)


class ArchivalRequest(_Lenient):
    """Archival: nothing but the device and whether the portal's checks are overridden."""

    OverrideValidation: bool = False

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        return _by_field_name(cls, data, {"IsOverrideValidation": "OverrideValidation"})


class CustomerAssignmentRequest(_Lenient):
    """CustomerAssignment ("associate customer"). With ``RevCustomerId``: the Rev.io service
    (``CreateRevService``) and the customer rate plan/pool; without: DB only (``SiteId``, plan/pool).
    The Rev.io fields (ProviderId, ServiceTypeId, RevProductIdList, RateList, ...) come flat as the
    portal sends them, or in ``RevService`` / ``RevServiceProductCreateModel`` blocks; flat fields
    become the ``RevService`` block (read by changes/revio_service.rev_plan)."""

    RevCustomerId: str | None = None
    CreateRevService: bool = False
    SiteId: int | None = None
    CustomerRatePlanId: int | None = None
    CustomerPoolId: int | None = None
    CustomerDataAllocationMB: Decimal | None = Field(default=None, ge=0)
    EffectiveDate: datetime | None = None
    IntegrationAuthenticationId: int | None = None
    RevService: dict[str, Any] | None = None
    RevServiceProductCreateModel: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        data = _by_field_name(cls, data, {"CustomerRatePoolId": "CustomerPoolId",
                                          "CustomerRatePool": "CustomerPoolId",
                                          "CustomerRatePlan": "CustomerRatePlanId",
                                          "AMOPCustomerId": "SiteId"})
        if isinstance(data, dict):
            if data.get("RevCustomerId") in (None, ""):  # named only inside a block
                for block in (data.get("RevService"), data.get("RevServiceProductCreateModel")):
                    found = next((v for k, v in (block or {}).items() if str(k).lower() == "revcustomerid"
                                  and v not in (None, "")), None) if isinstance(block, dict) else None
                    if found is not None:
                        data["RevCustomerId"] = found
                        break
            if data.get("RevCustomerId") is not None:
                data["RevCustomerId"] = str(data["RevCustomerId"]).strip() or None
            if not data.get("RevService") and not data.get("RevServiceProductCreateModel"):
                flat = {k: v for k, v in data.items() if k not in ("RevService", "RevServiceProductCreateModel")}
                data["RevService"] = flat or None
        return data

    @field_validator("EffectiveDate")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _naive_utc(v)


class CreateRevServiceRequest(CustomerAssignmentRequest):
    """CreateRevService (legacy ``RevServiceProductCreateModel``): always creates the Rev.io service."""

    CreateRevService: bool = True


class CarrierRatePlanChangeRequest(_Lenient):
    """CarrierRatePlanChange (legacy ``CarrierRatePlanUpdate``): fields flat or nested in
    ``CarrierRatePlanUpdate``, any key case. ``CarrierRatePlan`` is the carrier's plan code (Jasper
    ``ratePlan``, ThingSpace ``servicePlan``, Telegence ``singleUserCode``); ``CommPlan`` the Jasper
    communication plan; ``EffectiveDate`` schedules the change at the carrier (Jasper: future, at
    most 180 days). ``PlanUuid`` (Teal) and ``RatePlanId`` (POND package type) for those carriers.
    Which fields a carrier needs is checked by its handler."""

    CarrierRatePlan: str | None = Field(default=None, max_length=128)
    CommPlan: str | None = Field(default=None, max_length=128)
    EffectiveDate: datetime | None = None
    PlanUuid: str | None = None
    RatePlanId: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        return _by_field_name(cls, data, {"RatePlan": "CarrierRatePlan", "RatePlanCode": "CarrierRatePlan",
                                          "RatePlanName": "CarrierRatePlan", "ServicePlan": "CarrierRatePlan",
                                          "CommunicationPlan": "CommPlan", "CommPlanName": "CommPlan"},
                              nested=("CarrierRatePlanUpdate",))

    @field_validator("EffectiveDate")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _naive_utc(v)


class ChangeIdentifierRequest(_Lenient):
    """ChangeICCIDAndIMEI (portal ``ChangeICCIDorIMEI``): the device keeps its line of service and
    history, its SIM (``NewICCID``) or equipment (``NewIMEI``) changes; one of the two per device
    change. ``OldICCID`` / ``OldIMEI`` are optional cross-checks against the device. ThingSpace
    extras: ``ServicePlan`` and ``ZipCode`` (sent with the change when given)."""

    NewICCID: str | None = None
    NewIMEI: str | None = None
    OldICCID: str | None = None
    OldIMEI: str | None = None
    ServicePlan: str | None = None
    ZipCode: str | None = None
    # The legacy follow-up after a successful swap (PCI ``UpdateCustomerRatePlan``): with
    # ``AddCustomerRatePlan`` the device also gets this customer rate plan and/or pool. Ids as the
    # portal sends them (strings of integers); 0 or empty = not given; without AddCustomerRatePlan both
    # are ignored, as the legacy did.
    AddCustomerRatePlan: bool = False
    CustomerRatePlan: int | None = None
    CustomerRatePool: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, data: Any) -> Any:
        data = _by_field_name(cls, data, {"ICCIDTo": "NewICCID", "IMEITo": "NewIMEI",
                                          "CustomerRatePlanId": "CustomerRatePlan", "CustomerPoolId": "CustomerRatePool",
                                          "CustomerRatePoolId": "CustomerRatePool"})
        if isinstance(data, dict):
            for k in ("NewICCID", "NewIMEI", "OldICCID", "OldIMEI"):
                if isinstance(data.get(k), int) and not isinstance(data.get(k), bool):
                    data[k] = str(data[k])
            add = data.get("AddCustomerRatePlan")
            add = add if isinstance(add, bool) else str(add or "").strip().lower() in ("true", "1", "yes")
            for k, name in (("CustomerRatePlan", "Customer Rate Plan"), ("CustomerRatePool", "Customer Rate Pool")):
                value = data.get(k)
                if not add or value is None:
                    data[k] = None
                    continue
                text = str(value).strip()
                if isinstance(value, bool) or not text.lstrip("-").isdigit():
                    raise ValueError(f"{name} Id not valid: {value}")  # the legacy's words
                data[k] = int(text) or None  # 0 = not given
        return data

    @model_validator(mode="after")
    def _one_change(self) -> "ChangeIdentifierRequest":
        if bool(self.NewICCID) == bool(self.NewIMEI):
            raise ValueError("give exactly one of NewICCID or NewIMEI (one identifier change per device change)")
        return self

    @property
    def kind(self) -> str:
        """``"ICCID"`` or ``"IMEI"``: what changes."""
        return "ICCID" if self.NewICCID else "IMEI"

    @property
    def new_value(self) -> str:
        return (self.NewICCID or self.NewIMEI or "").strip()


REQUEST_MODELS: dict[ChangeType, type[BaseModel]] = {
    ChangeType.STATUS_UPDATE: StatusUpdateRequest,
    ChangeType.CUSTOMER_RATE_PLAN_CHANGE: CustomerRatePlanChangeRequest,
    ChangeType.ARCHIVAL: ArchivalRequest,
    ChangeType.CUSTOMER_ASSIGNMENT: CustomerAssignmentRequest,
    ChangeType.CREATE_REV_SERVICE: CreateRevServiceRequest,
    ChangeType.EDIT_USERNAME_COST_CENTER: EditUsernameRequest,
    ChangeType.ACTIVATE_NEW_SERVICE: ActivateNewServiceRequest,
    ChangeType.CARRIER_RATE_PLAN_CHANGE: CarrierRatePlanChangeRequest,
    ChangeType.CHANGE_ICCID_AND_IMEI: ChangeIdentifierRequest,
}


class BulkChange(BaseModel):
    """A DeviceBulkChange row joined with its type, provider and integration."""

    id: int
    tenant_id: int
    service_provider_id: int
    service_provider_name: str
    integration: Integration
    change_type: ChangeType
    portal_type: PortalType
    status: BulkStatus
    write_is_enabled: bool = True
    created_by: str | None = None
    process_changes: bool = True  # False: the portal holds it (ProcessChanges = 0); nothing may launch it


class DeviceChange(BaseModel):
    """One row of M2M_DeviceChange / Mobility_DeviceChange."""

    id: int
    bulk_change_id: int
    iccid: str | None = None
    msisdn: str | None = None
    imei: str | None = None
    eid: str | None = None
    device_identifier: str | None = None
    device_id: int | None = None
    change_request: str | None = None
    status: DeviceChangeStatus
    status_details: str | None = None
    service_provider_id: int | None = None
    tenant_id: int | None = None
    carrier_request_id: str | None = None
    carrier_check_count: int = 0


class DeviceResult(BaseModel):
    """The outcome of one device change, as recorded in the DB."""

    device_change_id: int
    status: DeviceChangeStatus
    details: str
    device_id: int | None = None
    iccid: str | None = None
    # Device-table effects on success
    # the new status; its DeviceStatusId comes from bulkchange.db.device_status when it is written
    new_device_status: str | None = None
    previous_device_status: str | None = None
    carrier_rate_plan: str | None = None
    msisdn: str | None = None
    ip_address: str | None = None
    carrier_request_id: str | None = None
    # Any other Device columns the change sets once applied (customer rate plan, username, cost
    # centers, a moved ICCID/IMEI ...): column name -> value, written by device_changes.record_results.
    device_updates: dict[str, Any] = Field(default_factory=dict)
    # Carrier data the change type's own record step stores (e.g. Telegence features); not a column.
    extra: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    duration_s: float = 0.0


class BatchPlan(BaseModel):
    """One mapped process_batch task's work."""

    bulk_change_id: int
    device_change_ids: list[int]
    label: str


def utcnow() -> datetime:
    from datetime import timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)
