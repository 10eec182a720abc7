"""device_status_reconcile: settle asynchronous carrier work and reconcile device statuses.

Scheduled (default every 15 minutes) and triggerable by hand with conf, e.g.
``{"service_provider_ids": [3], "dry_run": true}``. One mapped task per service provider:

1. settles its device changes waiting on the carrier (ThingSpace activations: active with an
   MSISDN -> PROCESSED with MSISDN and IP written; Telegence activations: active -> PROCESSED with
   the new subscriber number; Teal operation results; ``max_checks`` polls without success or a
   carrier failure -> API_FAILED with the reason) and rolls their bulk changes up;
2. compares the carrier's device states and carrier rate plans with the inventory (POND: each SIM on
   record is read); every status difference becomes a DeviceStatusHistory row (source
   Reconciliation), every rate plan difference a DeviceRatePlanHistory row, and updates the device,
   so a drift is recorded once.

Its carrier calls share the account's rate limit with running batches: with the shared (Redis)
bucket they draw from the same bucket as the batch tasks (same connection, same key); without it a
service provider whose bulk change is being processed is skipped until the next run ("waiting for
its turn"), since each task's in-process limiter knows nothing of the others.

``summarize`` returns the drift summary (carrier status -> our status counts, and carrier plan -> our
plan counts) as XCom and logs it.
Idempotent: a second run right after the first changes nothing. ``dry_run`` writes nothing.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

import bulkchange_plugins  # noqa: F401
from bulkchange_plugins.dag_common import dag_args
from bulkchange_plugins.timeouts import BATCH_TIMEOUT
from bulkchange.settings import get_settings

EVERY_MINUTES = get_settings().reconcile_every_minutes
RECONCILABLE = {"Jasper", "POD19", "TMobileJasper", "Rogers", "ThingSpace", "Telegence", "Teal", "Pond"}


@dag(
    dag_id="device_status_reconcile",
    description="Settle asynchronous carrier work and record device status drift per service provider",
    **dag_args(every_minutes=EVERY_MINUTES, retries=2, retry_delay=timedelta(seconds=60)),
    doc_md=__doc__,
    params={
        "service_provider_ids": Param([], type="array", items={"type": "integer"},
                                      title="Service providers", description="Empty = every active one"),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Report only; write nothing"),
        "max_checks": Param(6, type="integer", minimum=1, maximum=100,
                            title="Activation checks", description="Polls before a waiting device fails"),
    },
)
def device_status_reconcile():
    @task
    def scope(params=None) -> list[dict]:
        from bulkchange.db import bulk_changes
        from bulkchange_plugins.hooks import AmopHook

        wanted = params.get("service_provider_ids") or None
        with AmopHook().get_engine().connect() as conn:
            providers = bulk_changes.service_providers(conn, wanted)
        chosen = [{"service_provider_id": sp_id} for sp_id, integ in providers if integ in RECONCILABLE]
        print(f"reconciling service providers {[c['service_provider_id'] for c in chosen]}")
        return chosen

    @task(map_index_template="service provider {{ task.op_kwargs['service_provider_id'] }}",
          execution_timeout=BATCH_TIMEOUT)
    def reconcile_provider(service_provider_id: int, params=None) -> dict:
        from bulkchange import reconcile
        from bulkchange.db import bulk_changes, claims, device_changes
        from bulkchange.models import Integration
        from bulkchange_plugins.hooks import AmopHook, carrier_clients, carrier_hook

        engine = AmopHook().get_engine()
        with engine.connect() as conn:
            (_, integ_name), = bulk_changes.service_providers(conn, [service_provider_id])
            waiting = device_changes.bulk_changes_waiting(conn, [service_provider_id])
        integration = Integration.from_name(integ_name)
        hook = carrier_hook(service_provider_id, integration)
        problem = hook.credentials_problem(integration)
        if problem:
            print(f"skipped: {problem}")
            return {"service_provider_id": service_provider_id, "skipped": problem}
        if not hook.rate_limit_shared():
            # Without the shared (Redis) bucket each task holds its own share of the account's rate and
            # the batches of a running bulk change hold all of it: reconciliation waits for its turn
            # (the next scheduled run) instead of adding its calls to theirs.
            with engine.connect() as conn:
                running = claims.bulk_changes_in_progress(conn, service_provider_id)
            if running:
                why = (f"waiting for its turn: bulk change(s) {running} of this carrier account are being "
                       f"processed and the account's rate limit is not shared (BULKCHANGE_RATE_LIMIT_REDIS_URL "
                       f"unset), so reconciling now would add its calls to theirs")
                print(f"skipped: {why}")
                return {"service_provider_id": service_provider_id, "skipped": why}
        settled = []
        with carrier_clients(service_provider_id, integration, revio=bool(waiting) and not params["dry_run"]) as clients:
            if not params["dry_run"]:
                for bulk_id in waiting:
                    s = reconcile.settle_bulk(engine, bulk_id, clients.carrier, max_checks=int(params["max_checks"]),
                                              revio_client=clients.revio, revio_problem=clients.revio_problem)
                    print(f"bulk change {bulk_id}: settled {s.settled}, still waiting {s.still_waiting}, "
                          f"now {s.bulk_status}")
                    settled.append(s.as_dict())
            result = reconcile.reconcile_provider_statuses(engine, service_provider_id, integration, clients.carrier,
                                                           dry_run=bool(params["dry_run"]))
        print(f"status drift {result['drift']} ({result['updated']} devices updated); rate plan drift "
              f"{result['rate_plan_drift']} ({result['rate_plans_updated']} devices updated)")
        result["settled"] = settled
        if settled:  # webhooks and completion summaries of the bulk changes that moved
            from bulkchange_plugins.notifiers import send_pending_notifications

            result["notifications"] = send_pending_notifications(engine, [s["bulk_change_id"] for s in settled])
        return result

    @task
    def summarize(results, params=None) -> dict:
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
        summary = {"drift": drift, "devices_updated": updated,
                   "rate_plan_drift": {k: v for k, v in plan_drift.items() if v}, "rate_plans_updated": plans_updated,
                   "device_changes_settled": settled,
                   "providers": len(results), "skipped": [r["service_provider_id"] for r in results if r.get("skipped")]}
        print(f"drift summary: {summary}")
        if not params["dry_run"]:
            # sweep: notifications whose send failed earlier or whose sender died are retried here
            from bulkchange_plugins.hooks import AmopHook
            from bulkchange_plugins.notifiers import send_pending_notifications

            summary["notifications"] = send_pending_notifications(AmopHook().get_engine())
        return summary

    summarize(reconcile_provider.expand_kwargs(scope()))


device_status_reconcile()
