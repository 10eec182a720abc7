"""The page's actions go through Airflow's own REST API, as the caller.

"Retry failed devices", "Dry run" and approve/reject are sent to ``/api/v2/...`` of the api-server
the page runs in, with the caller's own JWT, so Airflow checks their permission again, records the
action in its audit log (``Log``: ``trigger_dag_run``, ``update_hitl_detail`` with the user's name)
and names them as the run's triggering user. The request never leaves the process: it is handed to
the api-server's root application in memory (captured by ``RootAppMiddleware``, a root middleware
of the plugin), so no base URL, proxy or TLS setting is involved.
"""
from __future__ import annotations

from typing import Any

import httpx
from fastapi import HTTPException, Request, status

ROOT_APP_KEY = "bulkchange.root_app"


class RootAppMiddleware:
    """Remembers the api-server's root ASGI app in the request scope (mounted apps only see themselves)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") in ("http", "websocket") and "app" in scope:
            scope.setdefault(ROOT_APP_KEY, scope["app"])
        await self.app(scope, receive, send)


async def call(request: Request, token: str, method: str, path: str, *, json: Any = None,
               params: dict | None = None) -> httpx.Response:
    """Send ``method path`` to Airflow's REST API of this api-server as the caller (their token)."""
    root = request.scope.get(ROOT_APP_KEY)
    if root is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the Bulk changes plugin's root middleware is not installed in this api-server")
    from airflow.api_fastapi.app import API_ROOT_PATH

    transport = httpx.ASGITransport(app=root)
    async with httpx.AsyncClient(transport=transport, base_url="http://airflow-api-server") as client:
        return await client.request(method, f"{API_ROOT_PATH.rstrip('/')}{path}", json=json, params=params,
                                    headers={"Authorization": f"Bearer {token}"}, timeout=60)


def error_detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = response.text
    if isinstance(detail, dict):
        detail = detail.get("message") or detail.get("reason") or str(detail)
    if isinstance(detail, list):  # pydantic validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or response.reason_phrase)
