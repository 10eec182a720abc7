"""Size and shape limits on what comes in (run conf, change requests, device identifiers).

Whatever a portal, the trigger form, the REST API or an SQS message hands us is checked against
these limits before it is parsed deeply or stored: too large or too deeply nested input is
refused with a message naming the field, never an out-of-memory, a ``RecursionError`` or a
10 MB value copied into every device change row. Change requests are checked per device, so one
device's bad request is that device's error only (``models.parse_change_request``).
"""
from __future__ import annotations

import json
from typing import Any, Mapping

# One device change's ChangeRequest (JSON). Portal requests are a few hundred bytes; a Telegence
# activation item a few KiB.
MAX_CHANGE_REQUEST_BYTES = 64 * 1024
# Nesting of any JSON we parse (a change request, a conf field).
MAX_JSON_DEPTH = 32
# Device identifier columns (M2M_DeviceChange / Mobility_DeviceChange / Device sizes).
MAX_IDENTIFIER_CHARS = {"ICCID": 32, "MSISDN": 32, "IMEI": 32, "EID": 64}
# One value of a per-device CSV column (a change request field).
MAX_CSV_CELL_CHARS = 4096
# Run conf: bulk_change_submit fields, by name (serialized JSON size); any other field.
MAX_CONF_FIELD_BYTES = {
    "change_request": MAX_CHANGE_REQUEST_BYTES,
    "devices": 8 * 1024 * 1024,
    "devices_csv": 16 * 1024 * 1024,
    "created_by": 1024,
}
MAX_OTHER_CONF_FIELD_BYTES = 4096
MAX_CONF_BYTES = 24 * 1024 * 1024


class LimitError(ValueError):
    """Input over a limit; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def json_depth_problem(text: str, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why ``text`` nests deeper than ``max_depth`` (checked without parsing: no recursion), or None."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep"
        elif ch in "]}":
            depth -= 1
    return None


def _size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8", "replace"))
    try:
        return len(json.dumps(value, default=str).encode())
    except (ValueError, RecursionError):
        return MAX_CONF_BYTES + 1


def _value_depth_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > max_depth:
                return f"nested more than {max_depth} levels deep"
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)
    return None


def check_change_request_text(raw: Any, field: str = "ChangeRequest") -> None:
    """Refuse a change request (text or already-parsed) that is too large or too deep."""
    if raw is None:
        return
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    size = _size(raw)
    if size > MAX_CHANGE_REQUEST_BYTES:
        raise LimitError(field, f"{size:,} bytes, larger than the {MAX_CHANGE_REQUEST_BYTES:,}-byte limit")
    problem = json_depth_problem(raw) if isinstance(raw, str) else _value_depth_problem(raw)
    if problem:
        raise LimitError(field, problem)


def check_conf(conf: Mapping[str, Any] | None, known: Mapping[str, int] | None = None) -> None:
    """Refuse a run conf with a field over its size (``known``: per-field limits, default
    ``MAX_CONF_FIELD_BYTES``; any other field ``MAX_OTHER_CONF_FIELD_BYTES``) or too deep."""
    if not conf:
        return
    limits = MAX_CONF_FIELD_BYTES if known is None else known
    total = 0
    for name, value in conf.items():
        # depth first: a value too deep to serialize must be named for its depth, not a made-up size
        problem = _value_depth_problem(value)
        if problem:
            raise LimitError(f"conf field {name}", problem)
        size = _size(value)
        total += size
        limit = limits.get(name, MAX_OTHER_CONF_FIELD_BYTES)
        if size > limit:
            raise LimitError(f"conf field {name}", f"{size:,} bytes, larger than the {limit:,}-byte limit")
    if total > MAX_CONF_BYTES:
        raise LimitError("conf", f"{total:,} bytes in all, larger than the {MAX_CONF_BYTES:,}-byte limit")


def check_identifier_lengths(row: Mapping[str, Any], where: str = "") -> None:
    """Refuse a device row whose identifier is longer than its column."""
    for name, limit in MAX_IDENTIFIER_CHARS.items():
        value = row.get(name)
        if value is not None and len(str(value)) > limit:
            prefix = f"{where}: " if where else ""
            raise LimitError(f"{prefix}{name}", f"{len(str(value)):,} characters, at most {limit}")
