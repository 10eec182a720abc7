"""Carrier-neutral demo identifiers: valid ICCIDs (Luhn), IMSIs, MSISDNs, IMEIs.

``make_iccid(n)`` produces the same ICCIDs as ``bulkchange.db.seed.make_iccid(n)`` (19 digits, prefix
``8901260``, Luhn check digit last), so a simulator seeded with ``demo_devices(N)`` holds the devices an
AMOP database seeded with ``make_iccid(1..N)`` refers to. This module imports nothing from ``bulkchange``.
"""
from __future__ import annotations


def luhn_check_digit(body: str) -> str:
    """The Luhn digit that makes ``body + digit`` valid."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # the digit left of the (future) check digit is doubled
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    return len(number) > 1 and number.isdigit() and luhn_check_digit(number[:-1]) == number[-1]


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
