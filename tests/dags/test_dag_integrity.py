"""Every DAG imports cleanly, fast, without touching a DB or the network at parse time."""
import socket
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    # include_examples= raises TypeError on 3.3.0-3.3.2; examples are off through the environment
    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"bulk_change_sensor", "bulk_change_process"} <= set(dagbag.dag_ids)


def test_process_dag_shape(dagbag):
    dag = dagbag.dags["bulk_change_process"]
    assert set(dag.task_ids) == {"prepare", "approve", "process_batch", "wait_for_carrier", "finalize"}
    assert dag.task_dict["approve"].defaults == ["Reject"]  # a timeout rejects
    assert dag.task_dict["wait_for_carrier"].mode == "reschedule"
    assert dag.task_dict["finalize"].trigger_rule == "all_done"
    # no batch size by default: prepare sizes batches from the account's rate (bulkchange.batch_sizing)
    assert dag.params["batch_size"] is None and dag.params["max_parallel"] == 10
    batch = dag.task_dict["process_batch"]
    assert batch.partial_kwargs.get("map_index_template") == "{{ task.batch_label }}"
    for task in dag.tasks:
        assert task.retries >= 1 and task.on_failure_callback, task.task_id


def test_sensor_dag_shape(dagbag):
    dag = dagbag.dags["bulk_change_sensor"]
    assert set(dag.task_ids) == {"wait_for_new_bulk_changes", "claim", "launch_processing"}
    sensor = dag.task_dict["wait_for_new_bulk_changes"]
    assert sensor.mode == "reschedule"
    assert dag.schedule is not None


def test_parsing_makes_no_network_or_db_calls(monkeypatch):
    """Parse the DAG files with sockets and the AMOP hook disabled: any call at import fails."""
    from airflow.dag_processing.dagbag import DagBag
    import bulkchange_plugins.hooks as hooks

    def refuse(*a, **k):
        raise AssertionError("network or DB access at DAG parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(hooks.AmopHook, "get_engine", refuse)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}


def test_every_task_has_an_execution_timeout(dagbag):
    """No task may hold a worker slot forever (a carrier that never answers, a lock, a lost worker)."""
    from bulkchange_plugins.timeouts import BATCH_TIMEOUT, TASK_TIMEOUT

    seen = 0
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            timeout = task.partial_kwargs.get("execution_timeout") if hasattr(task, "partial_kwargs") \
                else task.execution_timeout
            assert timeout is not None and timeout.total_seconds() > 0, f"{dag.dag_id}.{task.task_id}"
            assert timeout <= BATCH_TIMEOUT, f"{dag.dag_id}.{task.task_id}"
            seen += 1
    assert seen >= 15
    batch = dagbag.dags["bulk_change_process"].task_dict["process_batch"]
    assert batch.partial_kwargs["execution_timeout"] == BATCH_TIMEOUT and TASK_TIMEOUT < BATCH_TIMEOUT


def test_every_dag_says_what_it_does_in_one_line(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.description and "\n" not in dag.description and len(dag.description) <= 120, dag_id


def test_every_dag_has_the_shared_arguments_and_reads_its_settings(dagbag, monkeypatch):
    """The arguments every DAG shares (bulkchange_plugins.dag_common) hold on each, and a DAG's
    settings are read when its file is parsed (a changed environment shows in the next parse)."""
    from airflow.dag_processing.dagbag import DagBag

    assert len(dagbag.dags) == 6
    for dag_id, dag in dagbag.dags.items():
        assert set(dag.tags) == {"bulkchange"} and dag.catchup is False, dag_id
        assert dag.start_date.date().isoformat() == "2026-01-01", dag_id
        assert all(task.owner == "bulkchange" for task in dag.tasks), dag_id
        if dag.schedule is not None:  # the scheduled ones: one run at a time
            assert dag.max_active_runs == 1, dag_id
    assert dagbag.dags["bulk_change_sensor"].schedule.total_seconds() == 2 * 60
    monkeypatch.setenv("BULKCHANGE_SENSOR_EVERY_MINUTES", "7")
    monkeypatch.setenv("BULKCHANGE_BATCH_CONCURRENCY", "5")
    again = DagBag(dag_folder=str(DAGS))
    assert again.dags["bulk_change_sensor"].schedule.total_seconds() == 7 * 60
    batch = again.dags["bulk_change_process"].task_dict["process_batch"]
    assert batch.max_active_tis_per_dagrun == 5
