"""AirflowApiHook: Airflow's own REST API, for what a task cannot do through the Execution API.

Airflow 3.3's Execution API (what a task talks to) can create a DAG run with a note but cannot
change the note of an existing run, so ``bulk_change_process`` writes its run note (what the run
is, and at the end its outcome) with ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}``.

Connection ``airflow_api`` (type http): host = the api-server's base URL (e.g.
``http://airflow-apiserver:8080``); login / password = an Airflow user allowed to edit the DAG's
runs (a token is fetched from ``POST /auth/token``, which SimpleAuthManager and FAB both serve);
no login = ``GET /auth/token`` (SimpleAuthManager with ``simple_auth_manager_all_admins``, the
demo's setup). Without the connection notes are skipped with one log line: a note is never worth
failing a run for.
"""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import requests
from airflow.sdk import BaseHook

log = logging.getLogger(__name__)


class AirflowApiHook(BaseHook):
    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "airflow_api"
    conn_type = "http"
    hook_name = "Airflow REST API"

    def __init__(self, airflow_api_conn_id: str = default_conn_name, timeout_s: float = 15.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.airflow_api_conn_id = airflow_api_conn_id
        self.timeout_s = timeout_s

    def _base_url(self, conn) -> str:
        host = (conn.extra_dejson or {}).get("base_url") or conn.host or ""
        if host and "://" not in host:
            host = f"{conn.schema or 'http'}://{host}{':' + str(conn.port) if conn.port else ''}"
        if not host:
            raise ValueError(f"connection {self.airflow_api_conn_id} has no host (the api-server's base URL)")
        return host.rstrip("/")

    def get_conn(self) -> tuple[requests.Session, str]:
        """A session holding a bearer token, and the base URL."""
        conn = self.get_connection(self.airflow_api_conn_id)
        base = self._base_url(conn)
        session = requests.Session()
        if conn.login:
            r = session.post(f"{base}/auth/token", json={"username": conn.login, "password": conn.password or ""},
                             timeout=self.timeout_s)
        else:
            r = session.get(f"{base}/auth/token", timeout=self.timeout_s)
        if r.status_code not in (200, 201):
            session.close()
            raise RuntimeError(f"Airflow refused a token for {conn.login or 'the all-admins login'}: "
                               f"HTTP {r.status_code}")
        session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        return session, base

    def test_connection(self) -> tuple[bool, str]:
        try:
            session, base = self.get_conn()
            with session:
                r = session.get(f"{base}/api/v2/version", timeout=self.timeout_s)
            return r.ok, f"Airflow {r.json().get('version')}" if r.ok else f"HTTP {r.status_code}"
        except Exception as exc:  # noqa: BLE001 - the UI's Test button shows the reason
            return False, f"{type(exc).__name__}: {exc}"

    def set_run_note(self, dag_id: str, run_id: str, note: str) -> None:
        session, base = self.get_conn()
        with session:
            r = session.patch(f"{base}/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
                              params={"update_mask": "note"}, json={"note": note[:1000]}, timeout=self.timeout_s)
        if not r.ok:
            raise RuntimeError(f"PATCH dagRuns/{run_id} note: HTTP {r.status_code} {r.text[:200]}")


def write_run_note(dag_id: str, run_id: str, note: str, conn_id: str = AirflowApiHook.default_conn_name) -> bool:
    """Set the run's note; log and carry on when it cannot be written (no connection, API down)."""
    try:
        AirflowApiHook(conn_id).set_run_note(dag_id, run_id, note)
    except Exception as exc:  # noqa: BLE001 - a note is never worth failing a run for
        print(f"run note not written ({type(exc).__name__}: {str(exc)[:200]}); the note was:\n{note}")
        return False
    print(f"run note: {note}")
    return True
