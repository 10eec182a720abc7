"""What each task of a ``device_status_reconcile`` run decides: which service providers to reconcile
(``scope``), one service provider's pass (``reconcile_provider``: settle its waiting device changes,
then compare the carrier's statuses and rate plans with the inventory, or wait for its turn) and
the run's drift summary (``summarize``).

Plain Python: the AMOP engine, the carrier hooks and clients and the notification sender come
through an ``Accounts`` object, which ``bulkchange_plugins.tasks`` builds from Airflow connections;
the tests give a plain one.
"""
from __future__ import annotations

from typing import Any, ContextManager, Mapping, Protocol, Sequence

from sqlalchemy.engine import Engine

from bulkchange import reconcile
from bulkchange.db import bulk_changes, claims, device_changes
from bulkchange.models import Integration

# Integrations whose carrier can list its devices' statuses (reconcile.carrier_listing)
RECONCILABLE = frozenset({"Jasper", "POD19", "TMobileJasper", "Rogers", "ThingSpace", "Telegence", "Teal", "Pond"})


class Accounts(Protocol):
    """What a reconciliation task gets from Airflow."""

    def say(self, text: str) -> None: ...  # a line of the task log
    def engine(self) -> Engine: ...  # the AMOP database
    def carrier(self, service_provider_id: int, integration: Integration) -> Any: ...  # the carrier hook
    def clients(self, service_provider_id: int, integration: Integration, *,
                revio: bool = True) -> ContextManager[Any]: ...  # carrier (and Rev.io) clients
    def notify(self, engine: Engine, bulk_ids: Sequence[int] | None = None) -> Any: ...  # pending notifications


def scope(accounts: Accounts, params: Mapping[str, Any]) -> list[dict[str, int]]:
    """One mapping per active service provider to reconcile (``service_provider_ids``, or every one)
    whose carrier can be reconciled."""
    wanted = params.get("service_provider_ids") or None
    with accounts.engine().connect() as conn:
        providers = bulk_changes.service_providers(conn, wanted)
    chosen = [{"service_provider_id": sp_id} for sp_id, integ in providers if integ in RECONCILABLE]
    accounts.say(f"reconciling service providers {[c['service_provider_id'] for c in chosen]}")
    return chosen


def turn_problem(hook: Any, engine: Engine, service_provider_id: int) -> str | None:
    """Why reconciliation must wait for the next run, or None.

    Without the shared (Redis) bucket each task holds its own share of the account's rate and the
    batches of a running bulk change hold all of it: reconciliation waits for its turn (the next
    scheduled run) instead of adding its calls to theirs."""
    if hook.rate_limit_shared():
        return None
    with engine.connect() as conn:
        running = claims.bulk_changes_in_progress(conn, service_provider_id)
    if not running:
        return None
    return (f"waiting for its turn: bulk change(s) {running} of this carrier account are being "
            f"processed and the account's rate limit is not shared (BULKCHANGE_RATE_LIMIT_REDIS_URL "
            f"unset), so reconciling now would add its calls to theirs")


def reconcile_provider(accounts: Accounts, service_provider_id: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """One service provider: its waiting device changes settled (not in a dry run), then its status
    and rate plan drift; skipped, saying why, when its connection is unusable or it is not its turn."""
    engine = accounts.engine()
    with engine.connect() as conn:
        (_, integ_name), = bulk_changes.service_providers(conn, [service_provider_id])
        waiting = device_changes.bulk_changes_waiting(conn, [service_provider_id])
    integration = Integration.from_name(integ_name)
    hook = accounts.carrier(service_provider_id, integration)
    problem = hook.credentials_problem(integration) or turn_problem(hook, engine, service_provider_id)
    if problem:
        accounts.say(f"skipped: {problem}")
        return {"service_provider_id": service_provider_id, "skipped": problem}
    dry_run = bool(params["dry_run"])
    settled = []
    with accounts.clients(service_provider_id, integration, revio=bool(waiting) and not dry_run) as clients:
        if not dry_run:
            for bulk_id in waiting:
                s = reconcile.settle_bulk(engine, bulk_id, clients.carrier, max_checks=int(params["max_checks"]),
                                          revio_client=clients.revio, revio_problem=clients.revio_problem)
                accounts.say(f"bulk change {bulk_id}: settled {s.settled}, still waiting {s.still_waiting}, "
                             f"now {s.bulk_status}")
                settled.append(s.as_dict())
        result = reconcile.reconcile_provider_statuses(engine, service_provider_id, integration, clients.carrier,
                                                       dry_run=dry_run)
    accounts.say(f"status drift {result['drift']} ({result['updated']} devices updated); rate plan drift "
                 f"{result['rate_plan_drift']} ({result['rate_plans_updated']} devices updated)")
    result["settled"] = settled
    if settled:  # webhooks and completion summaries of the bulk changes that moved
        result["notifications"] = accounts.notify(engine, [s["bulk_change_id"] for s in settled])
    return result


def drift_summary(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's summary of the service providers' results: drift per integration (carrier -> our
    status counts, carrier -> our plan counts), devices updated, device changes settled, skipped ones."""
    drift: dict[str, dict[str, int]] = {}
    plan_drift: dict[str, dict[str, int]] = {}
    updated = plans_updated = settled = 0
    for r in results:
        if r.get("skipped"):
            continue
        per = drift.setdefault(r["integration"], {})
        for pair, n in r["drift"].items():
            per[pair] = per.get(pair, 0) + n
        updated += r["updated"]
        per_plan = plan_drift.setdefault(r["integration"], {})
        for pair, n in r.get("rate_plan_drift", {}).items():
            per_plan[pair] = per_plan.get(pair, 0) + n
        plans_updated += r.get("rate_plans_updated", 0)
        settled += sum(sum(s["settled"].values()) for s in r.get("settled", []))
    return {"drift": drift, "devices_updated": updated,
            "rate_plan_drift": {k: v for k, v in plan_drift.items() if v}, "rate_plans_updated": plans_updated,
            "device_changes_settled": settled,
            "providers": len(results), "skipped": [r["service_provider_id"] for r in results if r.get("skipped")]}


def summarize(accounts: Accounts, results: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``summarize`` task: the drift summary, then (not in a dry run) a sweep of the notifications
    whose send failed earlier or whose sender died."""
    summary = drift_summary(results)
    accounts.say(f"drift summary: {summary}")
    if not params["dry_run"]:
        summary["notifications"] = accounts.notify(accounts.engine())
    return summary
