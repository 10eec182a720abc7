"""The short notes a ``bulk_change_process`` run carries in the Airflow UI (grid, run header).

While it runs: what it is (bulk change, change type, carrier, service provider, devices). At the
end (``finalize``): the outcome (status, counts per status, duration), or the dry run's plan.
"""
from __future__ import annotations

from typing import Any


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def what(bulk_id: int, change_type: str, carrier: str, provider: str, devices: int | None = None, *,
         action: str | None = None) -> str:
    head = f"Bulk change {bulk_id}: {change_type} on {carrier} ({provider})"
    if action:
        head += f", {action}"
    return head + (f", {devices:,} devices" if devices is not None else "")


def head_for(bulk, devices: int | None, params: dict[str, Any]) -> str:
    """``what`` for a loaded ``BulkChange`` and the run's params (dry run / retry named)."""
    action = ("dry run" + (" of a retry" if params.get("retry_failed") else "")) if params.get("dry_run") else \
        "retry of the failed devices" if params.get("retry_failed") else None
    return what(bulk.id, bulk.change_type.value, bulk.integration.value, bulk.service_provider_name, devices,
                action=action)


def outcome(head: str, status: str, counts: dict[str, int], duration_s: float | None) -> str:
    per_status = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "none"
    return f"{head}\n{status} in {_duration(duration_s)}: {per_status}"


def dry_run(head: str, report: dict[str, Any], duration_s: float | None) -> str:
    calls = ", ".join(f"{k} {v:,}" for k, v in (report.get("carrier_calls") or {}).items()) or "none"
    text = (f"{head}\nDRY RUN ({_duration(duration_s)}): would process {report.get('would_process', 0):,}, "
            f"rejected {report.get('rejected_count', 0):,}; carrier calls {calls}; "
            f"estimate {report.get('estimated_seconds', 0)} s")
    irreversible = report.get("irreversible") or []
    if irreversible:
        text += "; IRREVERSIBLE: " + ", ".join(f"{i['action']} ({i['devices']:,})" for i in irreversible)
    if report.get("preflight_error"):
        text += f"; stopped: {report['preflight_error']}"
    return text
