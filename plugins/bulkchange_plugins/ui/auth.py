"""Who is asking and what they may do, decided by Airflow's own auth manager.

The page and its API are a FastAPI app that Airflow's api-server mounts; Airflow does not protect a
plugin's endpoints, so every route here depends on ``require(...)``. It resolves the user the way
Airflow's REST API does (``Authorization: Bearer <JWT>`` or the UI's session cookie), then asks the
configured auth manager (SimpleAuthManager, FAB, or any other) through the generic interface
``is_authorized_dag`` about the DAG the route reads or acts on. Anonymous: 401 (a page redirects to
the auth manager's login page instead); logged in without the permission: 403.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request, status

PROCESS_DAG = "bulk_change_process"
SUBMIT_DAG = "bulk_change_submit"


@dataclass
class Caller:
    user: Any
    token: str  # the caller's own JWT: actions are sent to Airflow's REST API under their name

    @property
    def name(self) -> str:
        for attr in ("get_name", "get_id"):
            fn = getattr(self.user, attr, None)
            if callable(fn):
                try:
                    value = fn()
                except Exception:  # noqa: BLE001 - a user object without that field
                    continue
                if value:
                    return str(value)
        return "unknown"


def _token(request: Request) -> str | None:
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    header = request.headers.get("authorization") or ""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE_NAME_JWT_TOKEN) or None


async def authenticate(request: Request) -> Caller:
    """The logged-in caller, or HTTP 401 (403 for a token Airflow refuses)."""
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    token = _token(request)
    user = await resolve_user_from_token(token)  # raises 401 without a token, 401/403 for a bad one
    return Caller(user=user, token=token or "")


def may(caller: Caller, method: str, dag_id: str = PROCESS_DAG, entity: str = "RUN") -> bool:
    """Whether the auth manager lets this user do ``method`` on ``dag_id``'s runs (or other entity)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return bool(get_auth_manager().is_authorized_dag(
        method=method, access_entity=DagAccessEntity[entity], details=DagDetails(id=dag_id), user=caller.user))


def require(method: str, dag_id: str = PROCESS_DAG, entity: str = "RUN"):
    """A FastAPI dependency: the caller, once the auth manager allows ``method`` on ``dag_id``."""

    async def dependency(request: Request) -> Caller:
        caller = await authenticate(request)
        if not may(caller, method, dag_id, entity):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"{caller.name} may not {_VERBS.get(method, method)} {dag_id} runs")
        return caller

    return dependency


_VERBS = {"GET": "read", "POST": "trigger", "PUT": "change", "DELETE": "delete"}


def login_url(request: Request) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=str(request.url))
