"""The contract every (change type, carrier) handler implements.

A handler is built once per batch with the bulk change, a carrier client and whatever DB context
it loaded (``load_context``). ``validate`` runs before any carrier call and raises RuleError with
the reason; ``apply`` does the carrier work for one device and returns its DeviceResult. ``apply``
runs in worker threads: it must not touch the DB (the batch records all results at once).
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel
from sqlalchemy.engine import Connection

from bulkchange.carriers.base import (
    AuthError,
    CallLog,
    CarrierError,
    OutcomeUnknown,
    PermanentError,
    TransientError,
)
from bulkchange.db.inventory import DeviceRow
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, DeviceResult
from bulkchange.sanitize import sanitize_text


class ChangeHandler:
    request_model: ClassVar[type[BaseModel]]
    # Carriers whose API takes a device list per request set this above 1 and implement
    # apply_group; process_batch then sends groups of up to this many devices per call.
    group_size: ClassVar[int] = 1
    # False for change types that never call the carrier (DB only, Rev.io only): no carrier
    # connection is checked or built for them and ``client`` is None.
    needs_carrier: ClassVar[bool] = True
    # True for change types that find a Mobility line by its number: a Mobility device change may then
    # carry an MSISDN and no ICCID (processing.identity_problem). False: every row needs its ICCID.
    by_msisdn: ClassVar[bool] = False
    # The batch's Rev.io step (changes/revio_service.RevioServiceStep), set by process_batch, for
    # change types whose own work is a Rev.io service (customer assignment, create Rev service).
    rev_step: Any = None
    # The service provider's Rev.io client (None, with the reason in revio_problem, when it has no
    # Rev.io connection); set by process_batch for handlers that edit Rev.io themselves.
    revio_client: Any = None
    revio_problem: str | None = None

    def __init__(self, bulk: BulkChange, client: Any, context: dict[str, Any]):
        self.bulk = bulk
        self.client = client
        self.context = context

    @classmethod
    def load_context(cls, conn: Connection, bulk: BulkChange) -> dict[str, Any]:
        return {}

    def validate(self, dc: DeviceChange, request: BaseModel, device: DeviceRow | None) -> None:
        raise NotImplementedError

    def apply(self, dc: DeviceChange, request: BaseModel, device: DeviceRow | None, *,
              verify_first: bool, log: CallLog) -> DeviceResult:
        raise NotImplementedError


    def apply_group(self, entries: list[tuple[DeviceChange, BaseModel, DeviceRow]], *,
                    log: CallLog) -> list[DeviceResult]:
        """One carrier call for several devices; one DeviceResult per entry, in order."""
        raise NotImplementedError

    def record(self, conn: Connection, results: list[DeviceResult], *, processed_by: str) -> None:
        """Write carrier-specific rows for a batch's results (e.g. POND packages), in the
        transaction that records the results. Bulk writes only; the default writes nothing."""


def device_not_found(dc: DeviceChange, bulk: BulkChange) -> str:
    """The reason a device change whose device is not in the tenant's inventory is refused."""
    named = dc.iccid or (f"MSISDN {dc.msisdn}" if dc.msisdn else None) or dc.device_identifier
    return (f"device {named} not found for service provider "
            f"{bulk.service_provider_id} ({bulk.service_provider_name}) and tenant {bulk.tenant_id}")


def request_field(request: BaseModel, *names: str) -> str | None:
    """The first non-empty value of ``request.Request`` (the carrier-specific block of a change
    request) under any of ``names``, matched case-insensitively, as a string."""
    data = getattr(request, "Request", None) or {}
    lowered = {str(k).lower(): v for k, v in data.items()}
    for name in names:
        value = lowered.get(name.lower())
        if value not in (None, ""):
            return str(value)
    return None


OUTCOME_UNKNOWN_PREFIX = "OUTCOME UNKNOWN:"


def failed_result(dc: DeviceChange, device: DeviceRow | None, exc: Exception, step: str) -> DeviceResult:
    """The DeviceResult for a carrier failure: API_FAILED with a reason that says what and why.

    An outcome left unknown (``OutcomeUnknown``: the carrier may have the change and could not be
    checked) says so: the details start with ``OUTCOME_UNKNOWN_PREFIX``; a failure checked at the
    carrier afterwards carries that evidence."""
    if isinstance(exc, OutcomeUnknown):
        attempts = getattr(exc, "attempts", 1)
        reason = (f"{OUTCOME_UNKNOWN_PREFIX} {step}: sent {attempts} time(s), the carrier may have applied it "
                  f"and it could not be confirmed either way: {exc}")
    elif isinstance(exc, TransientError):
        attempts = getattr(exc, "attempts", 1)
        reason = f"{step} failed after {attempts} attempt(s): {exc}"
    elif isinstance(exc, AuthError):
        reason = f"{step} failed: carrier refused the credentials ({exc})"
    elif isinstance(exc, (PermanentError, CarrierError)):
        reason = f"{step} refused by carrier: {exc}"
    else:
        reason = f"{step} failed: {type(exc).__name__}: {exc}"
    checked = getattr(exc, "checked", None)
    if checked:
        reason += f"; {checked}"
    return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.API_FAILED, details=sanitize_text(reason),
                        device_id=device.id if device else None, iccid=dc.iccid,
                        previous_device_status=device.status if device else None)
