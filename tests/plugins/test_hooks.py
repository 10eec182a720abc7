"""The carrier connection types: what the connection form shows (through Airflow's ProvidersManager,
as the UI reads it) and its "Test" (Connection.test_connection -> the hook's test_connection) against
the simulators, with the right and a wrong key."""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from bulkchange.carriers import CarrierSettings, pond, teal, telegence, thingspace
from bulkchange.carriers.revio import RevioClient
from bulkchange.models import Integration

ROOT = Path(__file__).resolve().parents[2]
CONN_TYPES = ("jasper", "thingspace", "telegence", "teal", "pond", "revio")
SECRET, WRONG = "hook-test-secret-1234", "not-the-key-5678"


def _hook_meta() -> dict:
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    return {m.connection_type: m for m in HookMetaService.hook_meta_data()}


def test_connection_form_lists_every_carrier_with_described_fields():
    metas = _hook_meta()
    assert "http" in metas  # the conn type of existing carrier connections is still there
    for conn_type in CONN_TYPES:
        meta = metas[conn_type]
        assert meta.hook_class_name.startswith("bulkchange_plugins.hooks.") and "bulkchange" in meta.hook_name
        assert meta.standard_fields.host.title == "API base URL" and meta.standard_fields.host.placeholder
        fields = meta.extra_fields
        for name in ("rate_limit_per_s", "rate_limit_headroom", "timeout_s", "max_attempts", "max_response_mb",
                     "rate_limit_key", "rate_limit_redis_url", "base_url"):
            assert name in fields, (conn_type, name)
        for name, field in fields.items():
            assert field["description"] and field["schema"]["title"], (conn_type, name)
    # secrets are password fields (masked in the form)
    assert metas["thingspace"].extra_fields["uws_password"]["schema"]["format"] == "password"
    assert metas["revio"].extra_fields["subscription_key"]["schema"]["format"] == "password"


def test_form_defaults_are_the_ones_the_core_applies():
    metas = _hook_meta()
    settings = CarrierSettings(base_url="https://x")  # no extra: the core's defaults
    defaults = {"timeout_s": settings.timeout_s, "max_attempts": settings.max_attempts,
                "rate_limit_headroom": settings.rate_limit_headroom,
                "max_response_mb": settings.max_response_bytes / 1024 / 1024}

    def default(conn_type, name):
        return metas[conn_type].extra_fields[name]["value"]

    for conn_type in CONN_TYPES:
        for name, want in defaults.items():
            assert default(conn_type, name) == want, (conn_type, name)
    assert default("thingspace", "unknown_outcome_wait_s") == thingspace.ThingSpaceClient.unknown_outcome_wait_s
    assert default("telegence", "service_path") == telegence.SERVICE_PATH
    assert default("telegence", "activation_path") == telegence.ACTIVATION_PATH
    assert default("telegence", "ip_status_path") == telegence.IP_PROVISION_STATUS_PATH
    for name, want in pond.DEFAULT_PATHS.items():
        assert default("pond", name) == want
    for client, conn_type in ((teal.TealClient, "teal"), (RevioClient, "revio")):
        for name, param in inspect.signature(client.__init__).parameters.items():
            if name.endswith("_path"):
                assert default(conn_type, name) == param.default, (conn_type, name)
    from bulkchange_plugins.hooks import REVIO_DEFAULT_RATE_PER_S

    assert default("revio", "rate_limit_per_s") == REVIO_DEFAULT_RATE_PER_S


def test_every_extra_the_code_reads_is_a_form_field():
    fields = set()
    for meta in _hook_meta().values():
        if meta.connection_type in CONN_TYPES:
            fields |= set(meta.extra_fields)
    sources = [ROOT / "include/bulkchange/carriers/__init__.py", ROOT / "plugins/bulkchange_plugins/hooks.py"]
    read = set()
    for path in sources:
        read |= set(re.findall(r"extra(?:\.get\(|\[)\"(\w+)\"", path.read_text()))
    read |= {f"ip_{k}_path" for k in ("addresses", "provisioning", "status")}  # extra[f"ip_{k}_path"]
    assert read and read <= fields, read - fields


def test_hooks_give_the_same_form_as_the_provider_metadata():
    from bulkchange_plugins.hooks import JasperHook, ThingSpaceHook

    behaviour = ThingSpaceHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["login"] == "OAuth client key" and "schema" in behaviour["hidden_fields"]
    widgets = JasperHook.get_connection_form_widgets()
    assert widgets["max_attempts"].kwargs["default"] == 3 and widgets["timeout_s"].kwargs["description"]


# --- "Test" against the simulators ------------------------------------------------------------------
def _accounts(simulator, key: str) -> dict[str, dict]:
    """Per conn type: the connection (host, login, password, extra) of a simulator account whose
    secret is ``key``; the simulators know SECRET."""
    ts = simulator.carrier("thingspace")
    ts.clients["hook-client"] = SECRET
    ts.users["hook-user"] = SECRET
    for carrier in ("jasper", "telegence", "teal", "pond"):
        simulator.set_account(carrier, f"hook-{carrier}", SECRET)
    revio = simulator.control("revio")
    revio.set_accounts({"hook@acme": SECRET})
    revio.request("PUT", "/subscription_keys", json={"acme": "hook-subscription-key"})
    return {
        "jasper": {"login": "hook-jasper", "password": key},
        "thingspace": {"login": "hook-client", "password": key,
                       "extra": {"uws_username": "hook-user", "uws_password": SECRET, "account_name": "0000000000-00001"}},
        "telegence": {"login": "hook-telegence", "password": key},
        "teal": {"login": "hook-teal", "password": key},
        "pond": {"login": "hook-pond", "password": key, "extra": {"distributor_id": "1001"}},
        "revio": {"login": "hook@acme", "password": key, "extra": {"subscription_key": "hook-subscription-key"}},
    }


def _connection(monkeypatch, simulator, conn_type: str, fields: dict, *, as_type: str | None = None):
    from airflow.models.connection import Connection

    conn_id = f"hook_test_{conn_type}"
    conn = Connection(conn_id=conn_id, conn_type=as_type or conn_type, host=simulator.url_for(conn_type),
                      login=fields["login"], password=fields["password"],
                      extra=json.dumps({"max_attempts": 1, **fields.get("extra", {})}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn.as_json())
    return conn


@pytest.mark.parametrize("conn_type", CONN_TYPES)
def test_test_connection_succeeds_with_the_right_key(simulator, monkeypatch, conn_type):
    conn = _connection(monkeypatch, simulator, conn_type, _accounts(simulator, SECRET)[conn_type])
    ok, message = conn.test_connection()  # what the form's Test button runs (through ProvidersManager)
    assert ok, message
    assert "accepted the credentials" in message


WRONG_KEY_ANSWERS = {  # what each simulator answers a wrong key, as its carrier documents it
    "jasper": "Invalid credentials",
    "thingspace": "ThingSpace refused the OAuth client",
    "telegence": "401",
    "teal": "401",
    "pond": "Invalid credentials",
    "revio": "Authorization has been denied for this request.",
}


@pytest.mark.parametrize("conn_type", CONN_TYPES)
def test_test_connection_fails_with_the_carriers_message_on_a_wrong_key(simulator, monkeypatch, conn_type):
    conn = _connection(monkeypatch, simulator, conn_type, _accounts(simulator, WRONG)[conn_type])
    ok, message = conn.test_connection()
    assert not ok
    assert WRONG_KEY_ANSWERS[conn_type] in message, message
    assert WRONG not in message and SECRET not in message


def test_legacy_http_connection_still_builds_the_carriers_client(simulator, monkeypatch):
    """A carrier connection of conn type http (made before the carrier types): the service provider's
    integration picks the hook; a connection of another carrier's type is refused by name."""
    from bulkchange_plugins.hooks import carrier_hook

    fields = _accounts(simulator, SECRET)["jasper"]
    conn = _connection(monkeypatch, simulator, "jasper", fields, as_type="http")
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_77", conn.as_json())
    hook = carrier_hook(77, Integration.ROGERS)  # Rogers speaks the Jasper API
    assert type(hook).__name__ == "JasperHook" and hook.credentials_problem(Integration.ROGERS) is None
    assert hook.test_connection()[0]

    conn = _connection(monkeypatch, simulator, "jasper", fields, as_type="teal")
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_77", conn.as_json())
    problem = carrier_hook(77, Integration.JASPER).credentials_problem(Integration.JASPER)
    assert "conn type 'teal'" in problem and "'jasper'" in problem


def test_carrier_hook_without_id_uses_its_default_connection(simulator, monkeypatch):
    from bulkchange_plugins.hooks import JasperHook

    conn = _connection(monkeypatch, simulator, "jasper", _accounts(simulator, SECRET)["jasper"])
    monkeypatch.setenv("AIRFLOW_CONN_JASPER_DEFAULT", conn.as_json())
    assert JasperHook().carrier_conn_id == "jasper_default" and JasperHook().test_connection()[0]


def test_carrier_clients_closes_both_clients(simulator, monkeypatch):
    from bulkchange_plugins.hooks import carrier_clients

    accounts = _accounts(simulator, SECRET)
    monkeypatch.setenv("AIRFLOW_CONN_CARRIER_SP_78", _connection(monkeypatch, simulator, "pond", accounts["pond"]).as_json())
    monkeypatch.setenv("AIRFLOW_CONN_REVIO_SP_78", _connection(monkeypatch, simulator, "revio", accounts["revio"]).as_json())
    closed = []
    with carrier_clients(78, Integration.POND) as clients:
        assert clients.revio_problem is None
        for client in (clients.carrier, clients.revio):
            client.session.close = lambda c=client: closed.append(type(c).__name__)  # observe the close
    assert sorted(closed) == ["PondClient", "RevioClient"]

    monkeypatch.delenv("AIRFLOW_CONN_REVIO_SP_78")
    with carrier_clients(78, Integration.POND) as clients:  # no Rev.io account: a reason, not an error
        assert clients.revio is None and "revio_sp_78" in clients.revio_problem


def test_the_account_is_paced_below_its_limit_by_the_connection_headroom(monkeypatch):
    from bulkchange_plugins.hooks import JasperHook

    monkeypatch.delenv("BULKCHANGE_RATE_LIMIT_REDIS_URL", raising=False)
    hook = JasperHook("carrier_sp_1")
    assert hook.call_policy(CarrierSettings("https://x", extra={"rate_limit_per_s": 50})).rate_limiter.rate == 49
    paced = hook.call_policy(CarrierSettings("https://x", extra={"rate_limit_per_s": 50, "rate_limit_headroom": 0}))
    assert paced.rate_limiter.rate == 50
