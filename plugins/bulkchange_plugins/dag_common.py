"""What every DAG file shares: the ``@dag`` arguments (start date, no catchup, tags, the run failure
email) and the ``default_args`` of their tasks (owner, ``execution_timeout``, retries, the task
failure email); a DAG file passes only what is its own (schedule, retries, ``max_active_runs``).
And the launch of ``bulk_change_process`` runs (sensor, SQS, submit): one run id per bulk change.

It lives with the plugins, not in ``dags/``: Airflow loads DAG files by path, so a module beside
them is not reliably importable (the plugins folder is always on ``sys.path``). The settings a DAG
reads at parse time come from ``bulkchange.settings.get_settings()``, called by the DAG file itself
so every parse sees the current environment.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from bulkchange_plugins.notifiers import dag_failure_notifier, failure_notifier
from bulkchange_plugins.timeouts import TASK_TIMEOUT

START_DATE = datetime(2026, 1, 1)
TAG = "bulkchange"


def default_args(*, retries: int, retry_delay: timedelta, **more: Any) -> dict[str, Any]:
    """Task defaults: owner, ``execution_timeout`` (``TASK_TIMEOUT``), retries and the failure email."""
    return {"owner": "bulkchange", "execution_timeout": TASK_TIMEOUT, "retries": retries,
            "retry_delay": retry_delay, **more, "on_failure_callback": failure_notifier()}


def dag_args(*, retries: int, retry_delay: timedelta, every_minutes: int | None = None,
             run_failure_email: bool = True, **more_default_args: Any) -> dict[str, Any]:
    """The ``@dag`` arguments every DAG shares, with its tasks' ``default_args``.

    ``every_minutes``: a DAG on this fixed interval, one run at a time (else it is triggered and
    says its own ``schedule=None``). ``run_failure_email``: one email per failed run besides the one
    per failed task (``bulk_change_submit`` sends only the per-task one)."""
    args: dict[str, Any] = {
        "start_date": START_DATE,
        "catchup": False,
        "tags": [TAG],
        "default_args": default_args(retries=retries, retry_delay=retry_delay, **more_default_args),
    }
    if every_minutes is not None:
        args.update(schedule=timedelta(minutes=every_minutes), max_active_runs=1)
    if run_failure_email:
        args["on_failure_callback"] = dag_failure_notifier()
    return args


def processing_launch(bulk_id: int, **conf: Any) -> dict[str, Any]:
    """One ``launch_processing`` mapping: the run ``bulk_change_<id>`` (the same id for every launch
    of a bulk change, so a run that exists is skipped and a lost one is created) with its conf."""
    return {"conf": {"bulk_change_id": bulk_id, **conf}, "trigger_run_id": f"bulk_change_{bulk_id}"}


def launch_processing(launches) -> Any:
    """The mapped task that starts one ``bulk_change_process`` run per ``processing_launch`` in ``launches``."""
    # imported here: it pulls in Airflow's ORM models (a second of CPU without bytecode caches),
    # which only the launching DAGs need, not every task process of bulk_change_process
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    return TriggerDagRunOperator.partial(
        task_id="launch_processing",
        trigger_dag_id="bulk_change_process",
        skip_when_already_exists=True,
        map_index_template="bulk change {{ task.conf['bulk_change_id'] }}",
    ).expand_kwargs(launches)
