"""Airflow-facing adapters for the bulkchange core: hooks, operators, notifiers.

Airflow puts ``plugins/`` on sys.path in every component; the core lives in ``include/``, which
deployments put on PYTHONPATH. When they did not (a bare ``airflow standalone``), add the
project's ``include/`` here so DAGs that import this package always find the core.
"""
from __future__ import annotations

import os
import sys

_INCLUDE = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "include"))
if os.path.isdir(_INCLUDE) and _INCLUDE not in sys.path:
    sys.path.append(_INCLUDE)


def _mask_in_task_logs(secret: str) -> None:
    """Every secret a carrier client learns (keys, fetched tokens) is masked in Airflow's task logs
    too, tracebacks included; added to this process's masker only (thread-safe: no supervisor call)."""
    from airflow.sdk.log import _secrets_masker

    _secrets_masker().add_mask(secret)


try:
    from bulkchange.sanitize import add_secret_listener

    add_secret_listener(_mask_in_task_logs)
except Exception:  # noqa: BLE001  outside Airflow (plain core use) there is no task log to mask
    pass
