"""The "Bulk changes" page: a FastAPI app that Airflow's api-server mounts at ``/bulkchange``.

Pages (HTML shells that draw themselves from the JSON API with a little JS):
    /bulkchange/                     the list of bulk changes
    /bulkchange/bulk-changes/{id}    one bulk change
JSON API (``/bulkchange/api/...``): the list, one bulk change (counts per status, its Airflow runs,
dry-run reports, a pending approval, what the caller may do), its device changes (keyset pages,
filter by status), one device change's log rows, the failed devices as CSV, and the actions
"Retry failed devices", "Dry run" and approve / reject, which are sent to Airflow's REST API as
the caller (``airflow_rest``).

Every route requires a logged-in Airflow user; reading needs read access to ``bulk_change_process``
runs, acting needs the permission Airflow's REST API itself checks for that action (``auth``).
The AMOP database is read through ``AmopHook`` with the read-only queries of
``bulkchange.db.views``.
"""
from __future__ import annotations

import csv
import io
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from bulkchange_plugins.ui import airflow_rest
from bulkchange_plugins.ui.auth import PROCESS_DAG, Caller, authenticate, login_url, may, require

HERE = Path(__file__).resolve().parent
URL_PREFIX = "/bulkchange"
RUNS_SHOWN = 50
_RUN_ID_SAFE = re.compile(r"[^A-Za-z0-9_.~:+-]")


def _engine():
    from bulkchange_plugins.hooks import AmopHook

    return AmopHook().get_engine()


def _bulk_or_404(conn, bulk_id: int) -> dict[str, Any]:
    from bulkchange.db import views
    from bulkchange.db.bulk_changes import BulkChangeNotFound

    try:
        return views.bulk_change(conn, bulk_id)
    except BulkChangeNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


def _ui_root() -> str:
    from airflow.api_fastapi.app import API_ROOT_PATH

    return API_ROOT_PATH.rstrip("/")


def _run_link(run_id: str) -> str:
    return f"{_ui_root()}/dags/{PROCESS_DAG}/runs/{run_id}"


# --- Airflow metadata: the runs of a bulk change and their pending approvals -----------------------
def runs_of(bulk_id: int, limit: int = RUNS_SHOWN) -> list[dict[str, Any]]:
    """``bulk_change_process`` runs of this bulk change: ``bulk_change_<id>`` (the sensor's, the SQS
    entry's and the submit form's launch) and ``bulk_change_<id>_<action>_<time>`` (the page's)."""
    from sqlalchemy import or_, select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    base = f"bulk_change_{int(bulk_id)}"
    cols = (DagRun.id, DagRun.run_id, DagRun.state, DagRun.run_type, DagRun.start_date, DagRun.end_date,
            DagRun.triggering_user_name, DagRun.conf)
    with create_session() as session:
        rows = session.execute(
            select(*cols)
            .where(DagRun.dag_id == PROCESS_DAG,
                   or_(DagRun.run_id == base, DagRun.run_id.like(base.replace("_", "\\_") + "\\_%", escape="\\")))
            .order_by(DagRun.id.desc()).limit(limit)).all()
        # runs triggered by hand (run id manual__...) for this bulk change: the open ones, by their conf
        named = {r.run_id for r in rows}
        active = session.execute(select(*cols).where(DagRun.dag_id == PROCESS_DAG,
                                                     DagRun.state.in_(["queued", "running"]))
                                 .order_by(DagRun.id.desc()).limit(500)).all()
        rows = sorted(list(rows) + [r for r in active if r.run_id not in named
                                    and str((r.conf or {}).get("bulk_change_id")) == str(bulk_id)],
                      key=lambda r: -r.id)
    return [{"run_id": r.run_id, "state": str(r.state.value if hasattr(r.state, "value") else r.state),
             "run_type": str(r.run_type), "start": r.start_date.isoformat() if r.start_date else None,
             "end": r.end_date.isoformat() if r.end_date else None, "triggered_by": r.triggering_user_name,
             "kind": _run_kind(r.conf or {}), "url": _run_link(r.run_id)} for r in rows]


def _run_kind(conf: dict) -> str:
    if conf.get("dry_run"):
        return "dry run" + (" of a retry" if conf.get("retry_failed") else "")
    return "retry failed devices" if conf.get("retry_failed") else "process"


def pending_approvals(run_ids: list[str]) -> list[dict[str, Any]]:
    """Approval requests (Human-in-the-loop) of these runs still waiting for an answer."""
    if not run_ids:
        return []
    from sqlalchemy import select

    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            select(TI.run_id, TI.task_id, TI.map_index, HITLDetail.subject, HITLDetail.body, HITLDetail.created_at)
            .join(HITLDetail, HITLDetail.ti_id == TI.id)
            .where(TI.dag_id == PROCESS_DAG, TI.run_id.in_(run_ids), HITLDetail.responded_at.is_(None))).all()
    return [{"run_id": r.run_id, "task_id": r.task_id, "map_index": r.map_index, "subject": r.subject,
             "body": r.body, "since": r.created_at.isoformat() if r.created_at else None,
             "url": f"{_run_link(r.run_id)}/tasks/{r.task_id}/required_actions"} for r in rows]


# --- the app -------------------------------------------------------------------------------------
def create_app() -> FastAPI:
    app = FastAPI(title="Bulk changes", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    read = require("GET")

    async def _page(request: Request, name: str) -> HTMLResponse | RedirectResponse:
        try:
            caller = await authenticate(request)
        except HTTPException as exc:
            if exc.status_code == status.HTTP_401_UNAUTHORIZED:
                return RedirectResponse(login_url(request), status.HTTP_303_SEE_OTHER)
            raise
        if not may(caller, "GET"):
            return HTMLResponse(f"<p>{caller.name} may not read {PROCESS_DAG} runs.</p>", status.HTTP_403_FORBIDDEN)
        html = (HERE / "templates" / name).read_text()
        return HTMLResponse(html.replace("{{prefix}}", f"{_ui_root()}{URL_PREFIX}")
                            .replace("{{ui_root}}", _ui_root()).replace("{{user}}", _html(caller.name)))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def list_page(request: Request):
        return await _page(request, "list.html")

    @app.get("/bulk-changes/{bulk_id}", response_class=HTMLResponse, include_in_schema=False)
    async def detail_page(request: Request, bulk_id: int):
        return await _page(request, "detail.html")

    @app.get("/api/bulk-changes")
    def list_bulk_changes(status_: list[str] | None = Query(None, alias="status"),
                          service_provider_id: int | None = None, created_from: date | None = None,
                          created_to: date | None = None, page: int = Query(1, ge=1),
                          page_size: int = Query(25, ge=1, le=200), caller: Caller = Depends(read)):
        from bulkchange.db import views

        statuses = [s for v in (status_ or []) for s in v.split(",") if s]
        with _engine().connect() as conn:
            result = views.list_bulk_changes(
                conn, statuses=statuses, service_provider_id=service_provider_id,
                created_from=datetime.combine(created_from, datetime.min.time()) if created_from else None,
                created_to=datetime.combine(created_to + timedelta(days=1), datetime.min.time()) if created_to else None,
                page=page, page_size=page_size).as_dict()
        return result

    @app.get("/api/service-providers")
    def service_providers(caller: Caller = Depends(read)):
        from bulkchange.db import views

        with _engine().connect() as conn:
            return {"items": views.service_providers(conn)}

    @app.get("/api/bulk-changes/{bulk_id}")
    def bulk_change(bulk_id: int, caller: Caller = Depends(read)):
        from bulkchange.db import views

        with _engine().connect() as conn:
            bulk = _bulk_or_404(conn, bulk_id)
            bulk["counts"] = views.status_counts(conn, bulk)
            bulk["dry_runs"] = [_dry_run_summary(r) for r in views.dry_run_reports(conn, bulk_id, limit=5)]
        bulk["runs"] = runs_of(bulk_id)
        bulk["approvals"] = pending_approvals([r["run_id"] for r in bulk["runs"] if r["state"] in
                                               ("running", "queued")])
        can_trigger = may(caller, "POST")
        bulk["can"] = {"retry": can_trigger and _retryable(bulk), "dry_run": can_trigger,
                       "approve": may(caller, "PUT", entity="HITL_DETAIL"), "trigger": can_trigger}
        return bulk

    @app.get("/api/bulk-changes/{bulk_id}/devices")
    def device_changes(bulk_id: int, status_: str | None = Query(None, alias="status"), after: int | None = None,
                       page_size: int = Query(50, ge=1, le=500), caller: Caller = Depends(read)):
        from bulkchange.db import views

        with _engine().connect() as conn:
            bulk = _bulk_or_404(conn, bulk_id)
            return views.device_changes(conn, bulk, status=status_ or None, after=after,
                                        page_size=page_size).as_dict()

    @app.get("/api/bulk-changes/{bulk_id}/devices/{device_change_id}/log")
    def device_log(bulk_id: int, device_change_id: int, caller: Caller = Depends(read)):
        from bulkchange.db import views

        with _engine().connect() as conn:
            bulk = _bulk_or_404(conn, bulk_id)
            return {"items": views.device_change_log(conn, bulk, device_change_id)}

    @app.get("/api/bulk-changes/{bulk_id}/failed.csv")
    def failed_csv(bulk_id: int, caller: Caller = Depends(read)):
        from bulkchange.db import views

        engine = _engine()
        with engine.connect() as conn:
            bulk = _bulk_or_404(conn, bulk_id)

        def rows():
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(views.FAILED_CSV_COLUMNS)
            with engine.connect() as conn:
                for n, row in enumerate(views.failed_device_rows(conn, bulk), start=1):
                    writer.writerow(row)
                    if n % 1000 == 0:
                        yield buf.getvalue()
                        buf.seek(0)
                        buf.truncate()
            yield buf.getvalue()

        return StreamingResponse(rows(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="bulk_change_{bulk_id}_failed_devices.csv"'})

    @app.get("/api/bulk-changes/{bulk_id}/dry-runs/{report_id}")
    def dry_run_report(bulk_id: int, report_id: int, caller: Caller = Depends(read)):
        from bulkchange.db import views

        with _engine().connect() as conn:
            report = views.dry_run_report(conn, bulk_id, report_id)
        if report is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"bulk change {bulk_id} has no dry-run report {report_id}")
        return report

    # --- actions: through Airflow's REST API, as the caller ------------------------------------------
    async def _trigger(request: Request, caller: Caller, bulk_id: int, action: str, conf: dict, note: str):
        stamp = datetime.utcnow().strftime("%Y%m%dT%H%M%S%f")[:-3]
        run_id = _RUN_ID_SAFE.sub("_", f"bulk_change_{bulk_id}_{action}_{stamp}")
        response = await airflow_rest.call(
            request, caller.token, "POST", f"/api/v2/dags/{PROCESS_DAG}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": {"bulk_change_id": bulk_id, **conf},
                  "note": note})
        if response.status_code >= 400:
            raise HTTPException(response.status_code, f"Airflow refused the run: {airflow_rest.error_detail(response)}")
        return {"dag_run_id": run_id, "url": _run_link(run_id), "state": response.json().get("state")}

    write = require("POST")

    @app.post("/api/bulk-changes/{bulk_id}/retry")
    async def retry_failed(request: Request, bulk_id: int, caller: Caller = Depends(write)):
        def check():
            from bulkchange.db import views

            with _engine().connect() as conn:
                bulk = _bulk_or_404(conn, bulk_id)
                return bulk, views.status_counts(conn, bulk)

        bulk, counts = await run_in_threadpool(check)
        bulk["counts"] = counts
        if not _retryable(bulk):
            raise HTTPException(status.HTTP_409_CONFLICT, _not_retryable_reason(bulk))
        return await _trigger(request, caller, bulk_id, "retry", {"retry_failed": True},
                              f"Retry failed devices of bulk change {bulk_id} (requested by {caller.name} "
                              f"on the Bulk changes page)")

    @app.post("/api/bulk-changes/{bulk_id}/dry-run")
    async def dry_run(request: Request, bulk_id: int, retry_failed: bool = Body(False, embed=True),
                      caller: Caller = Depends(write)):
        def check():
            with _engine().connect() as conn:
                return _bulk_or_404(conn, bulk_id)

        await run_in_threadpool(check)
        return await _trigger(request, caller, bulk_id, "dry_run", {"dry_run": True, "retry_failed": retry_failed},
                              f"Dry run of bulk change {bulk_id}" + (" (retry of its failed devices)" if retry_failed
                                                                      else "")
                              + f" (requested by {caller.name} on the Bulk changes page)")

    @app.post("/api/bulk-changes/{bulk_id}/approval")
    async def answer_approval(request: Request, bulk_id: int, decision: str = Body(..., embed=True),
                              reason: str = Body("", embed=True),
                              caller: Caller = Depends(require("PUT", entity="HITL_DETAIL"))):
        if decision not in ("Approve", "Reject"):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "decision must be Approve or Reject")
        runs = await run_in_threadpool(runs_of, bulk_id)
        waiting = await run_in_threadpool(pending_approvals, [r["run_id"] for r in runs])
        if not waiting:
            raise HTTPException(status.HTTP_409_CONFLICT, f"bulk change {bulk_id} has no run waiting for approval")
        req = waiting[0]
        response = await airflow_rest.call(
            request, caller.token, "PATCH",
            f"/api/v2/dags/{PROCESS_DAG}/dagRuns/{req['run_id']}/taskInstances/{req['task_id']}/"
            f"{req['map_index']}/hitlDetails",
            json={"chosen_options": [decision], "params_input": {"reason": reason or ""}})
        if response.status_code >= 400:
            raise HTTPException(response.status_code,
                                f"Airflow refused the answer: {airflow_rest.error_detail(response)}")
        return {"run_id": req["run_id"], "decision": decision, "url": _run_link(req["run_id"])}

    @app.exception_handler(HTTPException)
    async def _json_errors(request: Request, exc: HTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    return app


def _retryable(bulk: dict[str, Any]) -> bool:
    from bulkchange.processing import RETRYABLE_BULK_STATUSES

    return bulk["status"] in {s.value for s in RETRYABLE_BULK_STATUSES} and _failed(bulk) > 0


def _failed(bulk: dict[str, Any]) -> int:
    from bulkchange.models import FAILED_DEVICE_STATUSES

    counts = bulk.get("counts") or {}
    return sum(counts.get(s.value, 0) for s in FAILED_DEVICE_STATUSES)


def _not_retryable_reason(bulk: dict[str, Any]) -> str:
    from bulkchange.processing import RETRYABLE_BULK_STATUSES

    if bulk["status"] not in {s.value for s in RETRYABLE_BULK_STATUSES}:
        return f"bulk change {bulk['id']} is {bulk['status']}: retry its failed devices once its run is over"
    return f"bulk change {bulk['id']} has no failed devices to retry"


def _dry_run_summary(row: dict[str, Any]) -> dict[str, Any]:
    r = row["report"]
    return {"id": row["id"], "created": row["created"], "requested_by": row["requested_by"],
            "would_process": r.get("would_process"), "rejected": r.get("rejected_count"),
            "carrier_calls": r.get("carrier_calls"), "estimated_seconds": r.get("estimated_seconds"),
            "irreversible": r.get("irreversible") or [], "preflight_error": r.get("preflight_error")}


def _html(text: str) -> str:
    import html

    return html.escape(text)


app = create_app()
