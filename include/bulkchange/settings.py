"""Every deployment-wide setting the pipeline reads from the environment: one class, one place.

``Settings`` (pydantic-settings) names each setting with its type, default and description;
``docs/configuration.md`` shows the table generated from it (``python -m bulkchange.settings
--markdown``; a test keeps the two equal). Most names carry the prefix ``BULKCHANGE_``; a few keep the
legacy lambda's names (``MAX_PARALLEL_REQUESTS``, ``JASPER_DEVICE_*``, ``DEVICE_BULK_CHANGE_QUEUE_URL``).

Read them through ``get_settings()``: the DAG files at parse time, the plugins and the CLI when they
run, and the few core functions that need one. It is the only reader of ``os.environ`` (a test fails
on any other read under ``include/``, ``plugins/`` and ``dags/``). The result is cached per value of
the environment the settings read: an unchanged environment gives the same object, a changed one
(a test's ``monkeypatch.setenv``, the benchmark setting a variable before it parses the DAGs) a new
one, so nothing needs resetting. A bad value fails with pydantic's message naming the variable.

Per carrier account settings live in the connection extras (``CarrierSettings``), per run ones in
DAG params, per service provider ones in ``ServiceProvider.Settings``: not here.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta
from functools import lru_cache
from typing import Any, get_args

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "BULKCHANGE_"


def _legacy(name: str) -> Any:
    """A setting that keeps the legacy lambda's variable name (no prefix)."""
    return AliasChoices(name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore",
                                      frozen=True, populate_by_name=True)

    # --- task timeouts (plugins/bulkchange_plugins/timeouts.py) ---------------------------------
    task_timeout_minutes: int = Field(30, gt=0, description=(
        "`execution_timeout` of every DB-only task: prepare, claim, finalize, submit, sensor pokes, "
        "summaries"))
    batch_timeout_minutes: int = Field(120, gt=0, description=(
        "`execution_timeout` of `process_batch` and of a reconciliation pass over a service provider"))

    # --- processing ------------------------------------------------------------------------------
    batch_concurrency: int = Field(2, ge=1, description=(
        "batch tasks of one run at once (`max_active_tis_per_dagrun`; without a shared limit each task "
        "gets 1/N of the account rate; with one, 3 keeps the account busy while tasks start, see "
        "Benchmarks). Compose: 3"))
    max_parallel_requests: int | None = Field(None, validation_alias=_legacy("MAX_PARALLEL_REQUESTS"), description=(
        "the legacy lambda's requests in flight (`engine.max_parallel_from_env`): unset or blank: the "
        "caller's default; not a positive integer: 1 (sequential), as the legacy code did"))
    wait_for_carrier_seconds: int = Field(1800, ge=0, description=(
        "how long a run polls asynchronous carrier requests before leaving them to reconciliation"))
    lease_minutes: float = Field(15, gt=0, description=(
        "a processing run's hold on its bulk change lasts this long unless renewed (renewed by prepare, "
        "every batch task while it works and every poll of `wait_for_carrier`; a dead run blocks a new "
        "run of the same bulk change this long, see operations.md \"One run per bulk change\")"))
    record_every: int = Field(200, ge=1, description=(
        "a batch task records its finished devices (results and progress counts) every this many devices"))
    record_interval_seconds: float = Field(5, gt=0, description=(
        "... or at the latest this many seconds after its last recording, while its other devices are in flight"))
    rate_limit_redis_url: SecretStr | None = Field(None, description=(
        "account rate limit shared by every worker and run, for all accounts (or per connection: extra "
        "`rate_limit_redis_url`); see [Rate limits across workers](deployment.md#rate-limits-across-workers). "
        "Unset: each task keeps its in-process share; compose: `redis://redis:6379/1`"))

    # --- approval --------------------------------------------------------------------------------
    approval_irreversible: bool = Field(True, description=(
        "approval for irreversible status changes (Telegence cancel, Jasper `RETIRED`/`PURGED`, "
        "ThingSpace deactivate, POND terminate); `0`, `false`, `no` or `off` turn it off"))
    approval_max_devices: int = Field(1000, ge=0, description=(
        "approval above this many devices per run (`0`: no size rule)"))
    approval_timeout_hours: float = Field(72, gt=0, description=(
        "an unanswered approval is rejected after this long (read by the DAG and by `prepare`)"))

    # --- schedules -------------------------------------------------------------------------------
    sensor_every_minutes: int = Field(2, ge=1, description="`bulk_change_sensor` schedule")
    claim_limit: int = Field(50, ge=1, description="bulk changes claimed per sensor poke")
    stale_claim_minutes: int = Field(30, ge=1, description=(
        "re-launch a claim whose processing never started after this long"))
    reconcile_every_minutes: int = Field(15, ge=1, description="`device_status_reconcile` schedule")
    customer_rate_plan_every_minutes: int = Field(60, ge=1, description=(
        "`customer_rate_plan_scheduler` schedule (future-dated customer rate plan changes)"))
    sqs_every_minutes: int = Field(1, ge=1, description="`bulk_change_sqs` schedule (legacy SQS read)")

    # --- notifications (plugins/bulkchange_plugins/notifiers.py) ---------------------------------
    alert_emails: str = Field("ops@example.com", description=(
        "failure email recipients, comma-separated; the SMTP server comes from connection "
        "`BULKCHANGE_SMTP_CONN_ID`"))
    summary_emails: str = Field("", description=(
        "completion summary recipients, comma-separated (`none`: no summaries); empty: the alert recipients"))
    email_backend: str = Field("smtp", description=(
        "`smtp` or `ses` (amazon provider, AWS connection `BULKCHANGE_AWS_CONN_ID`)"))
    email_from: str | None = Field(None, description=(
        "sender address (SES: a verified identity, default `bulkchange@example.com`; SMTP: else the "
        "connection's `from_email`)"))
    smtp_conn_id: str = Field("smtp_default", description="SMTP connection of the `smtp` email backend")
    aws_conn_id: str = Field("aws_default", description="AWS connection of the `ses` backend and of the SQS DAG")
    summary_max_failures: int = Field(20, ge=0, description="failures listed in a completion summary")
    webhook_conn_id: str = Field("bulkchange_webhook", description=(
        "HTTP connection of the status webhook: host = URL, password = bearer token, extra `headers`, "
        "`timeout_s`, `attempts`; missing: no webhook sent"))
    notify_max_rounds: int = Field(5, ge=1, description="send rounds before a notification is given up")

    # --- legacy SQS entry (plugins/bulkchange_plugins/sqs.py) ------------------------------------
    device_bulk_change_queue_url: str = Field("", validation_alias=_legacy("DEVICE_BULK_CHANGE_QUEUE_URL"),
                                              description="legacy SQS queue; empty: `bulk_change_sqs` skips")
    sqs_dlq_url: str = Field("", description=(
        "dead-letter queue of malformed legacy messages; empty: they stay on the queue"))

    # --- EditUsernameCostCenter on Jasper (changes/edit_username/jasper.py) ----------------------
    jasper_device_username_field: str = Field(
        "accountCustom1", validation_alias=_legacy("JASPER_DEVICE_USERNAME_FIELD"),
        description="`EditUsernameCostCenter` on Jasper: the device field that holds the username")
    jasper_device_username_update_path: str = Field(
        "/devices/{iccid}", validation_alias=_legacy("JASPER_DEVICE_USERNAME_UPDATE_PATH"),
        description="`EditUsernameCostCenter` on Jasper: the path of the username update")
    jasper_device_audit_trail_path: str = Field(
        "/devices/{iccid}/auditTrails", validation_alias=_legacy("JASPER_DEVICE_AUDIT_TRAIL_PATH"),
        description="`EditUsernameCostCenter` on Jasper: the path of a device's audit trail")

    # --- CLI (./run db) ----------------------------------------------------------------------------
    amop_url: SecretStr | None = Field(None, description=(
        "`./run db`: SQLAlchemy URL of the AMOP database (else `--url`, else the Airflow connection "
        "`amop_db`); never printed"))

    @field_validator("max_parallel_requests", mode="before")
    @classmethod
    def _legacy_parallel(cls, raw: Any) -> Any:
        # the legacy lambda fell back to sequential processing rather than failing on a bad value
        if raw is None or isinstance(raw, int):
            return raw if raw is None or raw > 0 else 1
        text = str(raw).strip()
        if not text:
            return None
        try:
            value = int(text)
        except ValueError:
            return 1
        return value if value > 0 else 1

    @field_validator("approval_irreversible", mode="before")
    @classmethod
    def _on_unless_off(cls, raw: Any) -> Any:
        # as before: only an explicit "off" word turns the rule off
        if isinstance(raw, str):
            return raw.strip().lower() not in ("0", "false", "no", "off")
        return raw

    @field_validator("device_bulk_change_queue_url", "sqs_dlq_url", "email_backend", mode="before")
    @classmethod
    def _strip(cls, raw: Any) -> Any:
        return raw.strip() if isinstance(raw, str) else raw

    # --- derived values ----------------------------------------------------------------------------
    @property
    def task_timeout(self) -> timedelta:
        return timedelta(minutes=self.task_timeout_minutes)

    @property
    def batch_timeout(self) -> timedelta:
        return timedelta(minutes=self.batch_timeout_minutes)

    @property
    def lease_ttl(self) -> timedelta:
        return timedelta(minutes=self.lease_minutes)

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable a field is read from."""
        alias = cls.model_fields[field].validation_alias
        if isinstance(alias, AliasChoices):
            return str(alias.choices[0])
        return f"{PREFIX}{field.upper()}"

    @classmethod
    def env_names(cls) -> list[str]:
        return [cls.env_name(f) for f in cls.model_fields]

    @classmethod
    def from_env(cls, env: dict[str, str]) -> "Settings":
        """Settings from a mapping of variable names (as the environment holds them) instead of the
        process environment; variables not in the mapping take their default."""
        by_name = {cls.env_name(f): f for f in cls.model_fields}
        return _Given(**{by_name[k]: v for k, v in env.items() if k in by_name and v != ""})

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # init values (from_env) or the process environment; no .env or secrets files
        return (init_settings, env_settings)


class _Given(Settings):
    """Settings from given values only (``Settings.from_env``): the process environment is not read."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return (init_settings,)


def _watched(environ) -> tuple[tuple[str, str], ...]:
    """The part of the environment the settings read (names matched as pydantic-settings does,
    case-insensitively)."""
    names = {n.upper() for n in Settings.env_names()}
    return tuple(sorted((k, v) for k, v in environ.items() if k.upper() in names))


@lru_cache(maxsize=16)
def _settings_for(watched: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The settings of the current environment (cached while it does not change)."""
    return _settings_for(_watched(os.environ))


def _default_text(field) -> str:
    if field.default is None:
        return "unset"
    if field.default == "":
        return "empty"
    return f"`{field.default}`"


def markdown_table() -> str:
    """The environment settings table of docs/configuration.md."""
    lines = ["| environment variable | type | default | what it sets |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        kinds = [k for k in get_args(field.annotation) or (field.annotation,) if k is not type(None)]
        kind = " or ".join("secret" if k is SecretStr else k.__name__ for k in kinds)
        lines.append(f"| `{Settings.env_name(name)}` | {kind} | {_default_text(field)} | {field.description} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["--markdown"]:
        print("usage: python -m bulkchange.settings --markdown   (the settings table of docs/configuration.md)",
              file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
