"""The ThingSpace callback endpoint's refusals name the true reason in its log (no connection, a
connection that cannot be read, a connection without ``callback_secret``, a wrong secret) and never
the secret; the caller only learns that callbacks are not enabled. Served in the test's process
(fastapi TestClient, connections from the environment): no task runs here, so nothing shares the
task SDK's process-wide state (tests/dags/test_thingspace_callbacks.py serves it as production does)."""
from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient

from bulkchange_plugins import carrier_callbacks

SECRET = "cb-secret-refusals-77-XYZ"
PASSWORD = "ts-password-refusals-77"
BODY = {"requestId": "req-77", "deviceIds": [{"id": "89012600000000000018", "kind": "iccid"}],
        "status": "Success", "username": "bulkchange"}


def _conn(monkeypatch, sp_id, **fields):
    conn = {"conn_type": "thingspace", "host": "http://127.0.0.1:9", "login": "key-77", "password": PASSWORD,
            **fields}
    monkeypatch.setenv(f"AIRFLOW_CONN_CARRIER_SP_{sp_id}", json.dumps(conn))


@pytest.fixture
def post(caplog):
    caplog.set_level(logging.WARNING, logger="bulkchange.callbacks")
    client = TestClient(carrier_callbacks.app)

    def post(sp_id, body):
        caplog.clear()
        r = client.post(f"/thingspace/{sp_id}", json=body)
        refusals = [rec.getMessage() for rec in caplog.records if rec.name == "bulkchange.callbacks"]
        assert SECRET not in caplog.text and PASSWORD not in caplog.text and SECRET not in r.text
        return r, refusals

    return post


def test_each_reason_for_not_enabled_is_told_apart(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CARRIER_SP_71", raising=False)
    _conn(monkeypatch, 72, extra={"account_name": "acct"})
    _conn(monkeypatch, 73, host="", extra={"callback_secret": SECRET})
    _conn(monkeypatch, 74, extra={"account_name": "acct", "callback_secret": SECRET})
    assert carrier_callbacks.secret_or_reason(71) == (None, "no connection 'carrier_sp_71'")
    assert carrier_callbacks.secret_or_reason(72) == (None, "connection 'carrier_sp_72' has no callback_secret")
    secret, why = carrier_callbacks.secret_or_reason(73)
    assert secret is None and why.startswith("connection 'carrier_sp_73' cannot be read: ValueError: ")
    assert SECRET not in why
    assert carrier_callbacks.secret_or_reason(74) == (SECRET, None)
    assert carrier_callbacks.callback_secret(74) == SECRET and carrier_callbacks.callback_secret(71) is None


def test_the_endpoint_logs_the_true_reason_and_tells_the_caller_only_not_enabled(monkeypatch, post):
    monkeypatch.delenv("AIRFLOW_CONN_CARRIER_SP_71", raising=False)
    _conn(monkeypatch, 72, extra={"account_name": "acct"})
    _conn(monkeypatch, 74, extra={"account_name": "acct", "callback_secret": SECRET})

    r, logged = post(71, {**BODY, "password": SECRET})
    assert r.status_code == 403 and r.json() == {"error": "callbacks are not enabled for this account"}
    assert len(logged) == 1 and "(403): no connection 'carrier_sp_71'" in logged[0]

    r, logged = post(72, {**BODY, "password": SECRET})
    assert r.status_code == 403 and r.json() == {"error": "callbacks are not enabled for this account"}
    assert len(logged) == 1 and "(403): connection 'carrier_sp_72' has no callback_secret" in logged[0]

    r, logged = post(74, {**BODY, "password": "not-the-secret-77"})  # the secret exists: 401, not 403
    assert r.status_code == 401 and len(logged) == 1 and "(401): wrong or missing secret" in logged[0]
