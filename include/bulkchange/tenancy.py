"""Tenant isolation by construction: the one place that says which identifiers and references a
device change may use.

* **Identifiers.** The device is found by ICCID among the bulk change's tenant and service provider
  (``inventory.load_devices_by_iccid``); every carrier identifier a handler sends (MSISDN, EID,
  IMEI) is then read from that ``Device`` row, never from the device change. A device change that
  names an MSISDN / EID / IMEI that is not its device's (another tenant's line, a typo, a number
  the device does not have on record) is rejected before any carrier call with the reason
  (``identifier_problem``). Identifiers are checked by format too (and quoted in URL paths by the
  clients), so a crafted value cannot reach another resource of the carrier's API.
* **References.** Ids a change request points at (``SiteId``, ``CustomerRatePlanId``,
  ``CustomerPoolId``, ``RevCustomerId``) must belong to the bulk change's tenant
  (``reference_problem``), read from the legacy lookups ``Site``, ``CustomerRatePlan``,
  ``CustomerRatePool`` and ``RevCustomer`` (``load_tenant_references``).

``processing._validate`` (prepare, dry runs, submit) and ``process_batch`` run these for every
device change, before the change type's own rules.
"""
from __future__ import annotations

from functools import lru_cache

import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bulkchange.db import schema as t
from bulkchange.models import BulkChange, DeviceChange

_MSISDN = re.compile(r"^\+?[0-9]{7,15}$")
_EID = re.compile(r"^[0-9]{32}$")
_IMEI = re.compile(r"^[0-9]{14,16}$")
_DIGITS_ONLY = re.compile(r"[^0-9]")


def _msisdn_key(value: str) -> str:
    return _DIGITS_ONLY.sub("", value)


FORMATS = {
    "MSISDN": (_MSISDN, "7 to 15 digits (an optional leading +)"),
    "EID": (_EID, "32 digits"),
    "IMEI": (_IMEI, "14 to 16 digits"),
}


def format_problem(name: str, value: str | None) -> str | None:
    if value in (None, ""):
        return None
    pattern, shape = FORMATS[name]
    if not pattern.match(str(value).strip()):
        shown = str(value) if len(str(value)) <= 40 else str(value)[:40] + "..."
        return f"{name} {shown!r} is not a valid {name}: it must be {shape}"
    return None


def identifier_problem(dc: DeviceChange, device: Any) -> str | None:
    """Why the identifiers written on the device change disagree with its tenant's device row, or
    None. ``device`` is the ``DeviceRow`` found by ICCID within the tenant (None: not found, which
    the change type's own rules report)."""
    for name in ("MSISDN", "EID", "IMEI"):
        problem = format_problem(name, getattr(dc, name.lower()))
        if problem:
            return problem
    if device is None:
        return None
    for name, key in (("MSISDN", _msisdn_key), ("EID", str.strip), ("IMEI", str.strip)):
        given = getattr(dc, name.lower())
        if given in (None, ""):
            continue
        on_record = getattr(device, name.lower(), None)
        if on_record in (None, ""):
            return (f"{name} {given} on the device change cannot be used: device {device.iccid} has no {name} on "
                    f"record for this tenant; refused before any carrier call")
        if key(str(given)) != key(str(on_record)):
            return (f"{name} {given} on the device change is not device {device.iccid}'s ({name} on record: "
                    f"{on_record}); refused before any carrier call")
    return None


# --- references ---------------------------------------------------------------------------------
REFERENCE_FIELDS = {
    "SiteId": "sites",
    "CustomerRatePlanId": "rate_plans",
    "CustomerPoolId": "rate_pools",
    "RevCustomerId": "rev_customers",
}


@dataclass
class TenantReferences:
    """The ids each lookup holds, with their tenant (None: the id does not exist)."""

    sites: dict[str, int] = field(default_factory=dict)
    rate_plans: dict[str, int] = field(default_factory=dict)
    rate_pools: dict[str, int] = field(default_factory=dict)
    rev_customers: dict[str, int] = field(default_factory=dict)


# the same references under the names other change requests give them
ALIASES = {"CustomerRatePlan": "CustomerRatePlanId", "CustomerRatePool": "CustomerPoolId",
           "CustomerRatePoolId": "CustomerPoolId", "AMOPCustomerId": "SiteId"}


_REFERENCE_NAMES = tuple(REFERENCE_FIELDS) + tuple(ALIASES)


_BLOCK_NAMES = ("RevService", "RevServiceProductCreateModel")


@lru_cache(maxsize=512)
def _names_on(cls: type, names: tuple[str, ...] = _REFERENCE_NAMES) -> tuple[str, ...]:
    """The reference names a request class can hold. A pydantic model (extra keys ignored) has only
    its fields and class attributes: asking it for the others costs an AttributeError each, for
    every device, twice (prepare and the batch). Any other class: every name."""
    fields = getattr(cls, "model_fields", None)
    if not isinstance(fields, dict) or getattr(cls, "model_config", {}).get("extra") == "allow":
        return names
    return tuple(n for n in names if n in fields or hasattr(cls, n))


def references(request: Any) -> list[tuple[str, str]]:
    """(field, id) of every tenant-owned id a parsed change request refers to, including the
    ``RevCustomerId`` inside its ``RevService`` / ``RevServiceProductCreateModel`` blocks."""
    out: list[tuple[str, str]] = []
    for name in _names_on(type(request)):
        value = getattr(request, name, None)
        if value not in (None, "") and not isinstance(value, (dict, list, bool)):
            out.append((ALIASES.get(name, name), str(value).strip()))
    for block in _names_on(type(request), _BLOCK_NAMES):
        data = getattr(request, block, None)
        if isinstance(data, dict):
            for key, value in data.items():
                canon = ALIASES.get(str(key), str(key))
                if canon in REFERENCE_FIELDS and value not in (None, "") and not isinstance(value, (dict, list, bool)):
                    out.append((canon, str(value).strip()))
    return list(dict.fromkeys(out))


def _wanted(requests: list[Any]) -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {f: set() for f in REFERENCE_FIELDS}
    for request in requests:
        for name, value in references(request):
            wanted[name].add(value)
    return wanted


def load_tenant_references(conn: Connection, requests: list[Any]) -> TenantReferences:
    """Owner tenant of every id the parsed change requests refer to (one query per lookup and
    1,000 ids)."""
    wanted = _wanted(requests)
    refs = TenantReferences()
    lookups = {
        "SiteId": (t.site, t.site.c.Id, True),
        "CustomerRatePlanId": (t.customer_rate_plan, t.customer_rate_plan.c.Id, True),
        "CustomerPoolId": (t.customer_rate_pool, t.customer_rate_pool.c.Id, True),
        "RevCustomerId": (t.rev_customer, t.rev_customer.c.RevCustomerId, False),
    }
    for name, (table, column, numeric) in lookups.items():
        values = sorted(wanted[name])
        if numeric:
            values = [v for v in values if v.lstrip("-").isdigit()]
        target: dict[str, int] = getattr(refs, REFERENCE_FIELDS[name])
        for i in range(0, len(values), 1000):
            chunk = values[i:i + 1000]
            keys = [int(v) for v in chunk] if numeric else chunk
            q = select(column, table.c.TenantId).where(column.in_(keys), table.c.IsActive == True)  # noqa: E712
            for key, tenant in conn.execute(q):
                target[str(key)] = int(tenant)
    return refs


def attach_references(conn: Connection, handler: Any, bulk: BulkChange, changes: list[DeviceChange]) -> None:
    """Load the tenant of every id these device changes refer to onto ``handler.tenant_refs`` (read
    by ``processing._validate``). Requests that do not parse are skipped (their own error says why)."""
    from bulkchange.models import RequestParseError, parse_change_request

    requests = []
    for dc in changes:
        try:
            requests.append(parse_change_request(bulk.change_type, dc.change_request))
        except (RequestParseError, RecursionError):
            continue
    handler.tenant_refs = load_tenant_references(conn, requests)


def reference_problem(bulk: BulkChange, request: Any, refs: TenantReferences | None) -> str | None:
    """Why a referenced id cannot be used by this bulk change's tenant, or None."""
    if refs is None:
        return None
    for name, key in references(request):
        owner = getattr(refs, REFERENCE_FIELDS[name]).get(key)
        if owner is None:
            return f"{name} {key} does not exist (or is inactive) for tenant {bulk.tenant_id}; refused"
        if owner != bulk.tenant_id:
            return f"{name} {key} belongs to another tenant, not tenant {bulk.tenant_id}; refused"
    return None


def billing_account_problem(requested: Any, client: Any) -> str | None:
    """A Telegence billing account (BAN) named in a change request must be the service provider's
    own: the one on its carrier connection (extra ``billing_account_number``). The BAN is not in the
    AMOP inventory, so without a configured one there is nothing to check it against and the request
    is refused (the stricter choice: a tenant must not bill lines to another tenant's account).
    Checked where the carrier client is known (the batch); ``client`` None skips the check."""
    requested = str(requested or "").strip()
    if not requested or client is None:
        return None
    own = str(getattr(client, "billing_account", None) or "").strip()
    if not own:
        return (f"billing account {requested} in the request cannot be checked against this service provider: "
                f"set billing_account_number on its carrier connection, or leave the BAN out of the request")
    if requested != own:
        return f"billing account {requested} is not this service provider's (its account is {own})"
    return None
