"""Carrier callbacks: the HTTP endpoint ThingSpace posts request results to (Airflow's api-server
mounts this FastAPI app at ``/carrier-callbacks``; plugins/bulkchange_ui.py).

    POST /carrier-callbacks/thingspace/{service_provider_id}

The service provider's ThingSpace connection (``carrier_sp_<id>``) holds the shared secret in its
extra ``callback_secret``; ThingSpace echoes it as the ``password`` of every callback (it was sent
as such when registering, ``register`` below). A callback without it, or with another one, is
refused (401; 403 when callbacks are not enabled: no connection, or one without a secret) and
logged, naming which case and never the secret, and has no effect. An accepted callback is stored in
``ThingSpaceCallBackResponseLog`` before the answer (200), then the device changes waiting on its
request are settled at once, off the request, by ``settle_reported`` (the poll's own
``reconcile.settle_bulk``). The poll stays the fallback: a callback that never comes changes nothing
but the speed.

The endpoint runs in the api-server's process, never in a task's. It reads the connections through
the same hooks as the tasks (the task SDK's ``BaseHook.get_connection``): in the api-server, which
``airflow.api_fastapi.main`` marks a server context, that looks in the environment
(``AIRFLOW_CONN_*``) and in the metadata DB (connections made in the UI), without a task supervisor.

Register an account (once, and again whenever the URL or the secret changes):

    python -m bulkchange_plugins.carrier_callbacks register <service_provider_id> [--url URL]

(URL default: the connection's extra ``callback_url``.)
"""
from __future__ import annotations

import argparse
import json
import logging
import queue
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

URL_PREFIX = "/carrier-callbacks"
DEFAULT_USERNAME = "bulkchange"

log = logging.getLogger("bulkchange.callbacks")

app = FastAPI(title="Carrier callbacks (bulkchange)", docs_url=None, redoc_url=None, openapi_url=None)


def _settings(service_provider_id: int):
    from bulkchange_plugins.hooks import ThingSpaceHook, carrier_conn_id

    return ThingSpaceHook(carrier_conn_id(service_provider_id)).get_settings()


def callback_secret(service_provider_id: int) -> str | None:
    """The account's shared callback secret (connection extra ``callback_secret``), or None."""
    return secret_or_reason(service_provider_id)[0]


def secret_or_reason(service_provider_id: int) -> tuple[str | None, str | None]:
    """(the account's callback secret, None), or (None, why there is none): no connection
    ``carrier_sp_<id>``, a connection that cannot be read, or one without the extra
    ``callback_secret``. The reason names the connection, never a value it holds."""
    from airflow.exceptions import AirflowNotFoundException

    from bulkchange.sanitize import register_secret, sanitize_text
    from bulkchange_plugins.hooks import carrier_conn_id

    conn_id = carrier_conn_id(service_provider_id)
    try:
        extra = _settings(service_provider_id).extra
    except AirflowNotFoundException:
        return None, f"no connection {conn_id!r}"
    except Exception as exc:  # noqa: BLE001 - an unusable connection: every callback is refused
        return None, (f"connection {conn_id!r} cannot be read: "
                      + sanitize_text(f"{type(exc).__name__}: {exc}", limit=300))
    secret = extra.get("callback_secret")
    if not secret:
        return None, f"connection {conn_id!r} has no callback_secret"
    register_secret(str(secret))  # never in any text this process writes
    return str(secret), None


def _refuse(status: int, message: str, service_provider_id: int, request: Request, why: str,
            body: Any = None) -> JSONResponse:
    from bulkchange.sanitize import sanitize_text

    request_id = body.get("requestId") if isinstance(body, dict) else None
    log.warning("ThingSpace callback for service provider %s from %s refused (%s): %s; request %s",
                service_provider_id, request.client.host if request.client else "?", status, why,
                sanitize_text(str(request_id), limit=64) if request_id else "-")
    return JSONResponse({"error": message}, status_code=status)


@app.post("/thingspace/{service_provider_id}")
async def thingspace(service_provider_id: int, request: Request) -> JSONResponse:
    from bulkchange.thingspace_callbacks import MAX_BODY_BYTES

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:  # not read at all
        return _refuse(413, "body too large", service_provider_id, request, f"{declared} bytes declared")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return _refuse(413, "body too large", service_provider_id, request, f"over {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        body = None
    return await run_in_threadpool(_accept, service_provider_id, body, request)


def _accept(service_provider_id: int, body: Any, request: Request) -> JSONResponse:
    from bulkchange import thingspace_callbacks as cb
    from bulkchange.models import Integration
    from bulkchange_plugins.hooks import AmopHook

    secret, why_not = secret_or_reason(service_provider_id)
    if secret is None:  # the caller is not told how the account is set up; the log says which case
        return _refuse(403, "callbacks are not enabled for this account", service_provider_id, request,
                       why_not, body)
    if not cb.authentic(body, secret):
        return _refuse(401, "wrong or missing callback secret", service_provider_id, request,
                       "wrong or missing secret", body)
    try:
        report = cb.parse(body)
    except cb.CallbackInvalid as exc:
        return _refuse(400, str(exc), service_provider_id, request, str(exc), body)
    engine = AmopHook().get_engine()
    with engine.begin() as conn:
        known = cb.provider(conn, service_provider_id)
        if known is None or known[1].family != Integration.THINGSPACE:
            return _refuse(404, "no such ThingSpace service provider", service_provider_id, request,
                           "not a ThingSpace service provider", body)
        row_id = cb.store(conn, service_provider_id, known[0], body, report, secrets=[secret])
    if report.final:
        SETTLER.submit(engine, service_provider_id, known[1], report.request_id)
    return JSONResponse({"stored": row_id})


class Settler:
    """Settles what callbacks reported, off the callback's request, on one thread: callbacks that
    arrive together (one per device of a request) are settled together."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, engine: Any, service_provider_id: int, integration: Any, request_id: str) -> None:
        self._queue.put((engine, service_provider_id, integration, request_id))
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="thingspace-callback-settler", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while True:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            groups: dict[tuple, tuple[Any, Any, set[str]]] = {}
            for engine, sp_id, integration, request_id in batch:
                groups.setdefault((id(engine), sp_id), (engine, integration, set()))[2].add(request_id)
            for (_, sp_id), (engine, integration, request_ids) in groups.items():
                self._settle(engine, sp_id, integration, request_ids)

    @staticmethod
    def _settle(engine: Any, sp_id: int, integration: Any, request_ids: set[str]) -> None:
        from bulkchange.sanitize import sanitize_text

        try:
            summaries = settle_reported(engine, sp_id, integration, sorted(request_ids))
        except Exception as exc:  # noqa: BLE001 - the stored callback is settled by the next poll instead
            log.warning("settling ThingSpace callbacks of service provider %s failed (the next poll settles "
                        "them): %s", sp_id, sanitize_text(f"{type(exc).__name__}: {exc}", limit=500))
            return
        for s in summaries:
            log.info("ThingSpace callback: bulk change %s settled %s, now %s", s["bulk_change_id"], s["settled"],
                     s["bulk_status"])
        if summaries:
            from bulkchange_plugins.notifiers import send_pending_notifications

            try:
                send_pending_notifications(engine, [s["bulk_change_id"] for s in summaries])
            except Exception as exc:  # noqa: BLE001 - the outbox keeps them for the next sender
                log.warning("notifications after a ThingSpace callback failed: %s",
                            sanitize_text(f"{type(exc).__name__}: {exc}", limit=300))


def settle_reported(engine: Any, service_provider_id: int, integration: Any, request_ids: list[str]) -> list[dict]:
    """Settle, through the poll's own ``reconcile.settle_bulk``, the device changes waiting on these
    requests that a stored callback reported. A carrier call is made only where the callback alone
    cannot settle (a refusal because the line already is at the target is checked, as the poll does)."""
    from bulkchange import reconcile
    from bulkchange.thingspace_callbacks import PROCESSED_BY, waiting_bulks
    from bulkchange_plugins.hooks import carrier_clients

    with engine.connect() as conn:
        bulk_ids = waiting_bulks(conn, service_provider_id, request_ids)
    summaries = []
    if bulk_ids:
        with carrier_clients(service_provider_id, integration) as clients:
            for bulk_id in bulk_ids:
                summaries.append(reconcile.settle_bulk(
                    engine, bulk_id, clients.carrier, count_checks=False, only_reported=True,
                    processed_by=PROCESSED_BY, revio_client=clients.revio,
                    revio_problem=clients.revio_problem).as_dict())
    return summaries


SETTLER = Settler()


def register(service_provider_id: int, url: str | None = None) -> dict:
    """Register the account's CarrierService callback at ThingSpace with the connection's secret."""
    from bulkchange.models import Integration
    from bulkchange_plugins.hooks import ThingSpaceHook, carrier_conn_id

    hook = ThingSpaceHook(carrier_conn_id(service_provider_id))
    extra = hook.get_settings().extra
    url = url or extra.get("callback_url")
    secret = extra.get("callback_secret")
    if not url or not secret:
        raise ValueError(f"connection {carrier_conn_id(service_provider_id)!r} needs the extras callback_url "
                         "(or --url) and callback_secret to register ThingSpace callbacks")
    client = hook.get_client(Integration.THINGSPACE)
    try:
        return client.register_callback(str(url), str(extra.get("callback_username") or DEFAULT_USERNAME),
                                        str(secret))
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bulkchange_plugins.carrier_callbacks",
                                description="Register a ThingSpace account's CarrierService callback")
    sub = p.add_subparsers(dest="cmd", required=True)
    reg = sub.add_parser("register", help="register the callback URL with the connection's callback_secret")
    reg.add_argument("service_provider_id", type=int)
    reg.add_argument("--url", help="the endpoint ThingSpace posts to (default: extra callback_url)")
    args = p.parse_args(argv)
    answer = register(args.service_provider_id, args.url)
    print(f"registered: {answer}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
