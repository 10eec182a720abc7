"""Provider metadata of the bulkchange pipeline: one connection type per carrier API.

Airflow's ProvidersManager reads ``get_provider_info()`` (entry point ``apache_airflow_provider``)
to list the connection types, their hooks and their form: ``conn-fields`` (every extra the code
reads, with a description and its default) and ``ui-field-behaviour`` (labels of the standard
fields). The hooks (``plugins/bulkchange_plugins/hooks.py``) read the same ``CONNECTION_TYPES``
for their ``get_ui_field_behaviour()`` / ``get_connection_form_widgets()``, so the two stay one.

Pure data, importable without Airflow or the project's code: ProvidersManager loads it in every
Airflow process, and a failing import there would break every connection.
"""
from __future__ import annotations

from typing import Any

HOOKS = "bulkchange_plugins.hooks"


def _field(label: str, description: str, kind: str = "string", default: Any = None, *,
           secret: bool = False) -> dict:
    schema: dict[str, Any] = {"type": [kind, "null"]}
    if default is not None:
        schema["default"] = default
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": description, "schema": schema}


# Engine knobs every account's connection may carry (bulkchange.carriers.CarrierSettings).
ENGINE_FIELDS: dict[str, dict] = {
    "rate_limit_per_s": _field(
        "Rate limit (requests/s)",
        "Requests per second this account may receive from us. With a shared limit (Redis) it holds for "
        "every worker and run together; without one each batch task gets its share. Empty: no limit.",
        "number"),
    "rate_limit_headroom": _field(
        "Rate-limit headroom", "Share of the rate limit left unused, so that requests bunched a few "
        "milliseconds on the way are not refused (0.02: we pace at 98 % of the limit).", "number", 0.02),
    "timeout_s": _field(
        "Timeout (s)", "Overall deadline of one HTTP attempt: connect, headers and body together.", "number", 30),
    "max_attempts": _field(
        "Attempts per call", "Attempts of one carrier call before it fails (transient errors only; a "
        "refused request is never retried).", "integer", 3),
    "max_response_mb": _field(
        "Largest reply (MiB)", "A carrier reply larger than this fails that call; nothing more is read.",
        "number", 16),
    "rate_limit_key": _field(
        "Rate-limit bucket", "Connections to one carrier account share a bucket when they name the same key. "
        "Empty: the connection id."),
    "rate_limit_redis_url": _field(
        "Shared rate limit (Redis URL)", "Redis holding the account's bucket for every worker and run. Empty: "
        "env BULKCHANGE_RATE_LIMIT_REDIS_URL, else an in-process bucket per task.", secret=True),
    "base_url": _field(
        "API base URL (instead of Host)", "Used when set; else the Host field (scheme and port from Schema "
        "and Port when Host has none)."),
}


def _paths(defaults: dict[str, str], what: str) -> dict[str, dict]:
    return {key: _field(key.replace("_", " ").capitalize(), f"{what} path, relative to the base URL.",
                        default=default) for key, default in defaults.items()}


TELEGENCE_PATHS = {
    "service_path": "/sp/mobility/lineconfig/api/v1/service",
    "activation_path": "/sp/mobility/activation/api/v1/service",
    "ip_addresses_path": "/sp/mobility/ipprovisioning/api/v1/ipaddresses",
    "ip_provisioning_path": "/sp/mobility/ipprovisioning/api/v1/provisioning",
    "ip_status_path": "/sp/mobility/ipprovisioning/api/v1/provisioning/status",
}
TEAL_PATHS = {"enable_path": "/esims/enable", "disable_path": "/esims/disable",
              "operation_result_path": "/operation-result", "assign_plan_path": "/esims/assign-plan",
              "plans_path": "/plans"}
POND_PATHS = {
    "sim_path": "/{distributor_id}/sims/{iccid}",
    "packages_path": "/{distributor_id}/sims/{iccid}/packages",
    "package_status_path": "/{distributor_id}/sims/{iccid}/packages/{package_id}/status",
    "service_status_path": "/{distributor_id}/sims/{iccid}/services/status",
    "package_types_path": "/{distributor_id}/package-types",
}
REVIO_PATHS = {"services_path": "/Services", "service_products_path": "/ServiceProduct"}


def _conn_type(conn_type: str, hook: str, name: str, *, host: str, login: str, password: str,
               fields: dict[str, dict]) -> dict:
    return {
        "connection-type": conn_type,
        "hook-class-name": f"{HOOKS}.{hook}",
        "hook-name": name,
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "port"],
            "relabeling": {"host": "API base URL", "login": login, "password": password},
            "placeholders": {"host": host},
        },
        "conn-fields": {**fields, **ENGINE_FIELDS},
    }


CONNECTION_TYPES: dict[str, dict] = {c["connection-type"]: c for c in (
    _conn_type("jasper", "JasperHook", "Jasper Control Center (bulkchange)",
               host="https://rws.jasper.com/rws/api/v1", login="Username", password="API key", fields={}),
    _conn_type("thingspace", "ThingSpaceHook", "Verizon ThingSpace (bulkchange)",
               host="https://thingspace.verizon.com/api", login="OAuth client key",
               password="OAuth client secret", fields={
                   "uws_username": _field("UWS username", "The ThingSpace (UWS) user the session logs in as."),
                   "uws_password": _field("UWS password", "That user's password.", secret=True),
                   "account_name": _field("Account name", "The billing account the devices belong to, "
                                          "e.g. 0000123456-00001."),
                   "unknown_outcome_wait_s": _field(
                       "Wait before re-sending a lost action (s)",
                       "When an action's answer was lost and ThingSpace shows neither the line at the target nor "
                       "the action in its history, how long to wait before sending it again.", "number", 900),
                   "callback_url": _field(
                       "Callback URL", "Where ThingSpace posts request results: <api-server>/carrier-callbacks/"
                       "thingspace/<service provider id> (registered with python -m "
                       "bulkchange_plugins.carrier_callbacks register <id>). Optional: results are polled."),
                   "callback_secret": _field(
                       "Callback secret", "The shared secret ThingSpace echoes in every callback (sent as the "
                       "registration's password); a callback without it is refused.", secret=True),
                   "callback_username": _field("Callback username", "Sent with the registration.", "string",
                                               "bulkchange"),
               }),
    _conn_type("telegence", "TelegenceHook", "AT&T Telegence (bulkchange)",
               host="https://apsapi.att.com:8082", login="app-id", password="app-secret", fields={
                   "billing_account_number": _field(
                       "Billing account number", "The account's BAN, sent with IP provisioning requests."),
                   **_paths(TELEGENCE_PATHS, "Telegence API"),
               }),
    _conn_type("teal", "TealHook", "Teal eSIM (bulkchange)",
               host="https://integrationapi.teal.global/api/v1", login="ApiKey", password="ApiSecret", fields={
                   "callback_url": _field("Callback URL", "Sent with operations; optional (results are polled)."),
                   **_paths(TEAL_PATHS, "Teal API"),
               }),
    _conn_type("pond", "PondHook", "POND IoT (bulkchange)",
               host="https://api.pondiot.com", login="Username", password="Password", fields={
                   "distributor_id": _field("Distributor id", "The distributor the SIMs belong to (required)."),
                   **_paths(POND_PATHS, "POND API"),
               }),
    _conn_type("revio", "RevioHook", "Rev.io billing (bulkchange)",
               host="https://restapi.rev.io/v1", login="user@clientcode", password="Password", fields={
                   "client_code": _field("Client code", "Only when the login is a bare user (no @clientcode)."),
                   "subscription_key": _field("Subscription key", "The Ocp-Apim-Subscription-Key of the client "
                                              "code (required).", secret=True),
                   **_paths(REVIO_PATHS, "Rev.io API"),
               }),
)}
# Rev.io allows 500 calls/min per account: without rate_limit_per_s the Rev.io hook sends 8/s
CONNECTION_TYPES["revio"]["conn-fields"]["rate_limit_per_s"] = _field(
    "Rate limit (requests/s)", "Requests per second to this Rev.io account (Rev.io allows 500 a minute).",
    "number", 8)


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-provider-bulkchange",
        "name": "bulkchange",
        "description": "Carrier connection types of the bulkchange pipeline (Jasper, ThingSpace, Telegence, "
                       "Teal, POND, Rev.io): form fields with descriptions and a Test that logs in.",
        "versions": ["1.0.0"],
        "connection-types": list(CONNECTION_TYPES.values()),
    }
