"""Who asked, and may they touch this service provider? (docs/deployment.md "Users and roles")

Airflow's auth manager decides who may trigger which DAG (the ``BulkChangeOps`` role). Two things
it cannot know are decided here, from the run's triggering user (``DagRun.triggering_user_name``):

* ``created_by``: the ``CreatedBy`` of a submitted bulk change is the user who triggered the run,
  not a free-text field (the form's "Requested by" is kept beside it: ``alice (for bob)``).
* ``service_provider_problem``: optionally, an operator is limited to some service providers. The
  Airflow Variable ``bulkchange_user_service_providers`` (JSON) maps a user name to the service
  provider ids they may submit and process, e.g. ``{"alice": [1, 6], "bob": [12]}``; ``"*"`` holds
  the ids of users not listed. Without the Variable nobody is limited; a user not listed and no
  ``"*"`` is refused. Runs Airflow starts itself (sensor, SQS) have no triggering user and are not
  limited: they process what the portal wrote.
"""
from __future__ import annotations

from typing import Any, Mapping

VARIABLE = "bulkchange_user_service_providers"


def created_by(user: str | None, requested: str | None, fallback: str = "bulk_change_submit") -> str:
    requested = (requested or "").strip()
    if not user:
        return (requested or fallback)[:128]
    if not requested or requested in (user, "airflow"):
        return user[:128]
    return f"{user} (for {requested})"[:128]


def service_provider_problem(user: str | None, service_provider_id: int,
                             allowed: Mapping[str, Any] | None) -> str | None:
    """Why ``user`` may not act on this service provider, or None."""
    if not allowed or not user:
        return None
    ids = allowed.get(user, allowed.get("*"))
    if ids is None:
        return (f"user {user} may not act on any service provider (not listed in the Airflow Variable "
                f"{VARIABLE})")
    if int(service_provider_id) not in {int(i) for i in ids}:
        return (f"user {user} may not act on service provider {service_provider_id} (allowed: "
                f"{', '.join(str(i) for i in sorted(int(i) for i in ids)) or 'none'}; Airflow Variable {VARIABLE})")
    return None


def load_allowed() -> Mapping[str, Any] | None:
    """The Variable, or None when it is not set (inside a task only)."""
    from airflow.sdk import Variable

    try:
        value = Variable.get(VARIABLE, default=None, deserialize_json=True)
    except Exception:  # noqa: BLE001  a Variable that cannot be read limits nothing it cannot name
        return None
    return value if isinstance(value, dict) else None
