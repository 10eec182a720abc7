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
