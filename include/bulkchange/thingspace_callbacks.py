"""ThingSpace CarrierService callbacks: what the carrier posts, how it is kept and what settles from it.

A service provider that registered for callbacks (``POST /m2m/v1/callbacks/{accountName}`` with
``{name: "CarrierService", url, username, password}``, docs/carriers/thingspace.md) gets one POST
per device of a request when it completes (carrier_apis.md section 2):
``{requestId, deviceIds: [{id, kind}], status: "Success" | "Failed", deviceResponse: {<action>Response:
{deviceIds, ipAddress}} | faultResponse: {faultcode, faultstring}, username, password, callbackCount,
maxCallbackThreshold}``. ThingSpace echoes the registration's ``username`` / ``password`` in every
callback: the password is the account's shared secret (``authentic``).

* ``store`` keeps an accepted callback in ``ThingSpaceCallBackResponseLog`` (legacy columns), its body
  scrubbed like every ``DeviceBulkChangeLog`` text (the echoed secret removed, personal fields masked).
* ``reports_for`` reads the stored callbacks of the device changes a settlement checks: the
  ThingSpace checkers (``reconcile.check_thingspace``, ``change_identifier.check_thingspace``) settle
  from a callback without asking the carrier, and ask the carrier (poll) only when none arrived. The
  callback endpoint, the batch that recorded the request and every poll all go through
  ``reconcile.settle_bulk``: one place decides what a result means.
* ``waiting_bulks`` names the bulk changes waiting on requests a callback reported: the endpoint
  (``bulkchange_plugins.carrier_callbacks``) settles them at once with ``settle_bulk(only_reported=True)``.
"""
from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.models import BulkChange, DeviceChange, DeviceChangeStatus, Integration, utcnow
from bulkchange.sanitize import sanitize_text

PROCESSED_BY = "thingspace_callback"
MAX_BODY_BYTES = 64 * 1024  # one device's result; anything larger is not a ThingSpace callback
WAITING = (DeviceChangeStatus.PENDING_CARRIER.value, DeviceChangeStatus.PENDING_ACTIVATION.value)
_CHUNK = 500


class CallbackInvalid(ValueError):
    """A body that is not a ThingSpace callback (refused with 400, nothing stored)."""


def authentic(body: Any, secret: str | None) -> bool:
    """Whether the callback carries the account's shared secret (the ``password`` ThingSpace echoes
    from the registration); compared in constant time. No secret configured: nothing is authentic."""
    if not secret:
        return False
    given = body.get("password") if isinstance(body, dict) else None
    if not isinstance(given, str):
        given = ""
    return hmac.compare_digest(given.encode("utf-8"), secret.encode("utf-8"))


def _iccid_of(ids: Any) -> str | None:
    for ident in ids if isinstance(ids, list) else []:
        if isinstance(ident, dict) and str(ident.get("kind", "")).lower() == "iccid" and ident.get("id"):
            return str(ident["id"])
    return None


def _responses(body: dict) -> list[dict]:
    response = body.get("deviceResponse")
    if not isinstance(response, dict):
        return []
    return [r for r in response.values() if isinstance(r, dict)]


@dataclass(frozen=True)
class Report:
    """What one callback says about one device of a request."""

    request_id: str
    iccid: str | None
    status: str  # as ThingSpace sent it: Success, Failed (a Pending callback is not final)
    fault: dict | None = None
    msisdn: str | None = None
    ip_address: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.status.lower() in ("success", "succeeded", "completed")

    @property
    def failed(self) -> bool:
        return self.fault is not None or self.status.lower() in ("failed", "failure")

    @property
    def final(self) -> bool:
        return self.succeeded or self.failed

    def answer(self) -> dict:
        """The device's outcome shaped like the request-status answer the poll reads."""
        device: dict[str, Any] = {"deviceIds": [{"id": self.iccid, "kind": "iccid"}], "status": self.status}
        if self.fault is not None:
            device["faultResponse"] = self.fault
        status = "Failure" if self.failed else "Success" if self.succeeded else "Pending"
        return {"requestId": self.request_id, "status": status, "devices": [device]}

    @property
    def source(self) -> str:
        return f"ThingSpace callback for request {self.request_id}"


def parse(body: Any) -> Report:
    """The report of a callback body, or CallbackInvalid."""
    if not isinstance(body, dict):
        raise CallbackInvalid("a ThingSpace callback is a JSON object")
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 128:
        raise CallbackInvalid("requestId (a string of at most 128 characters) is required")
    status = body.get("status")
    if status is not None and not isinstance(status, str):
        raise CallbackInvalid("status must be a string")
    fault = body.get("faultResponse") if isinstance(body.get("faultResponse"), dict) else None
    iccid = _iccid_of(body.get("deviceIds"))
    msisdn = ip = None
    for response in _responses(body):
        iccid = iccid or _iccid_of(response.get("deviceIds"))
        for ident in response.get("deviceIds") or []:
            if isinstance(ident, dict) and str(ident.get("kind", "")).lower() in ("msisdn", "mdn") and ident.get("id"):
                msisdn = msisdn or str(ident["id"])
        if isinstance(response.get("ipAddress"), str) and response["ipAddress"]:
            ip = ip or response["ipAddress"]
    return Report(request_id=request_id.strip(), iccid=iccid, status=str(status or ("Failed" if fault else "")),
                  fault=fault, msisdn=msisdn, ip_address=ip)


def provider(conn: Connection, service_provider_id: int) -> tuple[int, Integration] | None:
    """(TenantId, integration) of an active service provider, or None."""
    sp, integ = t.service_provider, t.integration
    row = conn.execute(select(sp.c.TenantId, integ.c.Name).select_from(
        sp.join(integ, integ.c.Id == sp.c.IntegrationId)).where(
        sp.c.Id == service_provider_id, sp.c.IsActive == True)).first()  # noqa: E712
    if row is None:
        return None
    try:
        return int(row.TenantId), Integration.from_name(row.Name)
    except ValueError:
        return None


def store(conn: Connection, service_provider_id: int, tenant_id: int | None, body: dict, report: Report,
          secrets: Iterable[str] = ()) -> int:
    """One ThingSpaceCallBackResponseLog row for an accepted callback; returns its Id."""
    kept = {k: v for k, v in body.items() if k != "password"}  # the echoed secret is never kept
    text = sanitize_text(json.dumps(kept, sort_keys=True, default=str), tuple(s for s in secrets if s))
    result = conn.execute(t.thingspace_callback_response_log.insert().values(
        RequestId=report.request_id, TenantId=tenant_id, ServiceProviderId=service_provider_id,
        APIStatus=sanitize_text(report.status, limit=32) or None, APIResponse=text, CreatedDate=utcnow(),
        ICCID=report.iccid))
    return int(result.inserted_primary_key[0])


def reports_for(conn: Connection, bulk: BulkChange, waiting: Sequence[DeviceChange]) -> dict[tuple[str, str], Report]:
    """(request id, ICCID) -> the latest final callback for the waiting device changes of a ThingSpace
    bulk change (empty for any other carrier)."""
    if bulk.integration.family != Integration.THINGSPACE:
        return {}
    request_ids = sorted({dc.carrier_request_id for dc in waiting if dc.carrier_request_id})
    log_t = t.thingspace_callback_response_log
    out: dict[tuple[str, str], Report] = {}
    for i in range(0, len(request_ids), _CHUNK):
        rows = conn.execute(select(log_t.c.APIResponse).where(
            log_t.c.ServiceProviderId == bulk.service_provider_id,
            log_t.c.RequestId.in_(request_ids[i:i + _CHUNK])).order_by(log_t.c.Id))
        for (text,) in rows:
            try:
                report = parse(json.loads(text or "null"))
            except (ValueError, CallbackInvalid):
                continue
            if report.iccid and report.final:
                out[(report.request_id, report.iccid)] = report
    return out


def waiting_bulks(conn: Connection, service_provider_id: int, request_ids: Sequence[str]) -> list[int]:
    """The bulk changes with device changes waiting on these requests."""
    dc = t.m2m_device_change
    ids: set[int] = set()
    request_ids = sorted(set(request_ids))
    for i in range(0, len(request_ids), _CHUNK):
        ids.update(int(b) for (b,) in conn.execute(select(dc.c.BulkChangeId).distinct().where(
            dc.c.ServiceProviderId == service_provider_id, dc.c.CarrierRequestId.in_(request_ids[i:i + _CHUNK]),
            dc.c.Status.in_(list(WAITING)))))
    return sorted(ids)
