"""Operators: thin wrappers that wire hooks to the core's processing steps."""
from __future__ import annotations

from typing import Any, Sequence

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from bulkchange import processing
from bulkchange.changes import needs_carrier
from bulkchange.db import bulk_changes
from bulkchange.id_runs import ids_of_runs
from bulkchange.memory import peak_rss_mb
from bulkchange.sanitize import sanitize_exception
from bulkchange_plugins.hooks import AmopHook, carrier_clients


class CarrierBatchOperator(BaseOperator):
    """Apply a bulk change to one batch of its device changes through the carrier's API.

    Mapped over the batches ``prepare`` planned (``expand_kwargs``); ``batch_label`` names the batch in
    the UI (``map_index_template="{{ task.batch_label }}"``). Safe to retry: only device changes still
    open are touched, and one that an earlier attempt left in flight is checked at the carrier
    before anything is sent again. A batch runs only while its run holds the bulk change
    (``processing.run_owner``): if another run has taken it over, the task fails at once without
    retries, naming that run.
    """

    template_fields: Sequence[str] = ("bulk_change_id", "max_parallel", "rate_share")
    ui_color = "#e8f4fd"

    def __init__(self, *, bulk_change_id: int | str, device_change_id_runs: list[list[int]] | None = None,
                 device_change_ids: list[int] | None = None, batch_label: str = "",
                 max_parallel: int | str = 10, rate_share: int | str = 1,
                 amop_conn_id: str = AmopHook.default_conn_name, **kwargs: Any):
        super().__init__(**kwargs)
        self.bulk_change_id = bulk_change_id
        # runs of consecutive ids as prepare plans them (bulkchange.id_runs); a plain id list is what
        # prepare returned before, still accepted so a run planned by it can be retried after an upgrade
        if (device_change_id_runs is None) == (device_change_ids is None):
            raise ValueError("give the batch's device changes as device_change_id_runs or device_change_ids")
        self.device_change_ids = (ids_of_runs(device_change_id_runs) if device_change_id_runs is not None
                                  else [int(i) for i in device_change_ids or []])
        self.batch_label = batch_label
        self.max_parallel = max_parallel
        self.rate_share = rate_share
        self.amop_conn_id = amop_conn_id

    def execute(self, context: Any) -> dict:
        engine = AmopHook(self.amop_conn_id).get_engine()
        bulk_id = int(self.bulk_change_id)
        with engine.connect() as conn:
            bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        step = max(1, len(self.device_change_ids) // 5)

        def progress(done: int, total: int) -> None:
            if done % step == 0 or done == total:
                self.log.info("%s: %d/%d device changes done", self.batch_label, done, total)

        # change types that never call the carrier (DB / Rev.io only) need no carrier connection
        try:
            with carrier_clients(bulk.service_provider_id, bulk.integration, rate_share=int(self.rate_share),
                                 carrier=needs_carrier(bulk.change_type, bulk.integration)) as clients:
                summary = processing.process_batch(
                    engine, bulk_id, list(self.device_change_ids), client=clients.carrier,
                    max_parallel=int(self.max_parallel), processed_by=f"bulk_change_process:{context['run_id']}",
                    on_progress=progress, revio_client=clients.revio, revio_problem=clients.revio_problem,
                    owner=processing.run_owner(context["run_id"]))
        except processing.NotOwner as exc:  # retrying cannot help: another run processes the bulk change
            raise AirflowFailException(str(exc)) from exc
        except Exception as exc:
            sanitize_exception(exc)  # what Airflow logs and mails about the failure is scrubbed too
            raise
        self.log.info("%s: %s (%d already settled, %d carrier calls)", self.batch_label,
                      processing.summary_line(summary.counts), summary.skipped, summary.calls)
        p = summary.progress  # the whole bulk change, as the portal's progress bar shows it
        if p:
            self.log.info("bulk change %s progress: %d of %d settled (%d processed, %d failed), %d open",
                          bulk_id, p["ProcessedCount"] + p["ErrorCount"], p["TotalCount"], p["ProcessedCount"],
                          p["ErrorCount"], p["PendingCount"])
        out = summary.as_dict()
        # what the task process needed at most (docs/deployment.md, scaling notes: size workers by it)
        out["peak_rss_mb"] = peak_rss_mb()
        self.log.info("%s: peak RSS of this task %.1f MB", self.batch_label, out["peak_rss_mb"])
        return out

