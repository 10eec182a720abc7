"""``execution_timeout`` of every task: a task stuck on a carrier, a DB lock or a lost worker is
failed (and retried or swept) instead of holding its slot forever. docs/configuration.md lists them.

* ``TASK_TIMEOUT``: DB-only steps (prepare, claim, finalize, launches, summaries, sensor pokes),
  ``BULKCHANGE_TASK_TIMEOUT_MINUTES`` (default 30): a 100,000-device prepare takes a few minutes.
* ``BATCH_TIMEOUT``: one ``process_batch`` (and a reconciliation pass over a service provider),
  ``BULKCHANGE_BATCH_TIMEOUT_MINUTES`` (default 120): a 1,000-device batch at 10 requests in flight
  with every call failing slowly (3 attempts x 30 s) needs 2.5 h, a normal one minutes; every
  carrier call is itself bounded by its connection's ``timeout_s`` (carriers/http.py).
"""
from __future__ import annotations

from bulkchange.settings import get_settings

TASK_TIMEOUT = get_settings().task_timeout
BATCH_TIMEOUT = get_settings().batch_timeout
