"""``[core] hostname_callable`` for the scheduler tests: two Celery workers on one machine share the
FQDN, so each worker process gets its own name in ``SCHEDULER_TEST_WORKER_NAME`` and Airflow
records it in ``task_instance.hostname``."""
import os
import socket


def from_env() -> str:
    return os.environ.get("SCHEDULER_TEST_WORKER_NAME") or socket.getfqdn()
