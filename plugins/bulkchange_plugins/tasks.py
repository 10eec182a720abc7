"""The task bodies of the DAGs on Airflow: each task builds what its step needs from the task's
context and the Airflow connections (the AMOP engine, carrier hooks and clients, XCom, the run
note, the triggering user) and calls one step of the core, where the decisions are:
``bulkchange.process_run`` for ``bulk_change_process``, ``bulkchange.reconcile_run`` for
``device_status_reconcile``, ``bulkchange.submit.submit_from_trigger`` for ``bulk_change_submit``. A ``process_run.TaskFailed`` fails the task without retries
(``AirflowFailException``, same message); any other exception is retried as the task says."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, Sequence

from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException

from bulkchange import authz, process_run, reconcile_run


class AirflowAccounts:
    """The AMOP database, the carrier accounts, the notification sender and the Variable of allowed
    service providers, through Airflow (``reconcile_run.Accounts``); the task log is stdout."""

    def say(self, text: str) -> None:
        print(text)

    def engine(self):
        from bulkchange_plugins.hooks import AmopHook

        return AmopHook().get_engine()

    def carrier(self, service_provider_id: int, integration: Any) -> Any:
        from bulkchange_plugins.hooks import carrier_hook

        return carrier_hook(service_provider_id, integration)

    def clients(self, service_provider_id: int, integration: Any, **kwargs: Any):
        from bulkchange_plugins.hooks import carrier_clients

        return carrier_clients(service_provider_id, integration, **kwargs)

    def allowed_service_providers(self):
        return authz.load_allowed()

    def notify(self, engine: Any, bulk_ids: Sequence[int] | None = None) -> Any:
        from bulkchange_plugins.notifiers import send_pending_notifications

        if bulk_ids is None:  # the sweep: every pending notification
            return send_pending_notifications(engine)
        return send_pending_notifications(engine, bulk_ids)


class AirflowRun(AirflowAccounts):
    """``process_run.RunContext`` of one task instance of a ``bulk_change_process`` run."""

    def __init__(self, ti: Any, dag_run: Any = None):
        self.ti = ti
        self.run_id: str = ti.run_id
        self.try_number: int = ti.try_number
        self.user: str | None = getattr(dag_run, "triggering_user_name", None)
        self.conf: Mapping[str, Any] = getattr(dag_run, "conf", None) or {}
        self.started: datetime | None = dag_run.start_date if dag_run is not None else None

    @property
    def max_batches(self) -> int:
        from airflow.configuration import conf

        return conf.getint("core", "max_map_length", fallback=1024)

    def push(self, key: str, value: Any) -> None:
        self.ti.xcom_push(key=key, value=value)

    def pull(self, task_id: str, key: str | None = None) -> Any:
        if key is None:
            return self.ti.xcom_pull(task_ids=task_id)
        return self.ti.xcom_pull(task_ids=task_id, key=key)

    def note(self, text: str) -> None:
        from bulkchange_plugins.airflow_api import write_run_note

        write_run_note(self.ti.dag_id, self.ti.run_id, text)


def _run(step: Callable[..., Any], ti: Any, dag_run: Any, params: Mapping[str, Any], **kwargs: Any) -> Any:
    try:
        return step(AirflowRun(ti, dag_run), params, **kwargs)
    except process_run.TaskFailed as exc:
        raise AirflowFailException(str(exc)) from exc


# --- bulk_change_process ---------------------------------------------------------------------------

def prepare(params: Mapping[str, Any], ti: Any, dag_run: Any, *, batch_concurrency: int,
            approval_timeout_hours: float) -> list[dict]:
    return _run(process_run.prepare, ti, dag_run, params, batch_concurrency=batch_concurrency,
                approval_timeout_hours=approval_timeout_hours)


def wait_for_carrier(params: Mapping[str, Any], ti: Any) -> PokeReturnValue:
    return PokeReturnValue(is_done=_run(process_run.carrier_done, ti, None, params))


def finalize(params: Mapping[str, Any], ti: Any, dag_run: Any, *, approval_timeout_hours: float) -> dict:
    return _run(process_run.finalize, ti, dag_run, params, approval_timeout_hours=approval_timeout_hours)


# --- device_status_reconcile -----------------------------------------------------------------------

def reconcile_scope(params: Mapping[str, Any]) -> list[dict]:
    return reconcile_run.scope(AirflowAccounts(), params)


def reconcile_provider(service_provider_id: int, params: Mapping[str, Any]) -> dict:
    return reconcile_run.reconcile_provider(AirflowAccounts(), service_provider_id, params)


def reconcile_summary(results: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> dict:
    return reconcile_run.summarize(AirflowAccounts(), results, params)


# --- bulk_change_submit ----------------------------------------------------------------------------

def submit(params: Mapping[str, Any], dag_run: Any, *, batch_concurrency: int) -> dict:
    from airflow.configuration import conf

    from bulkchange import submit as core

    try:
        return core.submit_from_trigger(AirflowAccounts(), dict(params), batch_concurrency=batch_concurrency,
                                        user=getattr(dag_run, "triggering_user_name", None),
                                        max_batches=conf.getint("core", "max_map_length", fallback=1024))
    except core.SubmitError as exc:
        raise AirflowFailException(f"refused: {exc}") from exc
