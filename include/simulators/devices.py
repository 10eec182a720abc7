"""Carrier-neutral demo identifiers: valid ICCIDs (Luhn), IMSIs, MSISDNs, IMEIs.

``make_iccid(n)`` produces the same ICCIDs as ``bulkchange.db.seed.make_iccid(n)`` (19 digits, prefix
``8901260``, Luhn check digit last), so a simulator seeded with ``demo_devices(N)`` holds the devices an
AMOP database seeded with ``make_iccid(1..N)`` refers to. The check digit is the core's
(``bulkchange.rules``, imports nothing beyond the models): one Luhn function for both sides.
"""
from __future__ import annotations

from bulkchange.rules import luhn_check_digit, luhn_valid

__all__ = ["demo_devices", "luhn_check_digit", "luhn_valid", "make_iccid", "make_imei"]


def make_iccid(n: int, prefix: str = "8901260") -> str:
    """A valid 19-digit ICCID numbered ``n`` (``89`` telecom, ``01`` US, Luhn check digit last)."""
    body = f"{prefix}{n:011d}"[:18]
    return body + luhn_check_digit(body)


def make_imei(n: int) -> str:
    body = f"35{n:012d}"[:14]
    return body + luhn_check_digit(body)


def demo_devices(n: int, start: int = 1, **fields) -> list[dict]:
    """``n`` carrier-neutral device dicts (iccid, imsi, msisdn, imei) numbered from ``start``;
    ``fields`` (e.g. ``status="ACTIVATED"``) are added to every one."""
    return [{"iccid": make_iccid(i), "imsi": f"310170{i:09d}", "msisdn": f"1555{i:07d}"[:11],
             "imei": make_imei(i), **fields} for i in range(start, start + n)]
