"""Teal (teal.global) Integration API client.

Auth: headers ``ApiKey`` and ``ApiSecret``. eSIMs are addressed by EID. Every state-changing call
is asynchronous (carrier_apis.md section 4): ``POST /esims/enable`` / ``/esims/disable`` with
``{"entries": [eid, ...]}`` and the query ``requestId`` (ours, at most 32 characters) answer
``{"success": true}``; ``GET /operation-result?requestId=`` answers HTTP 102 while the operation
runs, then ``{"success", "entries": [{"eid", "success", "errorMessage"}]}``. Reads:
``GET /esims?limit=&offset=`` (at most 100 per page) and ``GET /esims/info?eid=``.

The legacy code always called the disable endpoint and took errors for success; here enable
and disable call their own endpoints and a failed entry is an error.

**Assumed** (Teal's docs are not public): a 1xx final response does not survive every proxy, so
besides HTTP 102 a ``202`` (or ``200``) whose body has ``status: PROCESSING`` also means "still
processing"; re-sending the same ``requestId`` is an idempotent replay (our retries after a
timeout cannot apply an operation twice); even so an operation whose answer was lost is looked up
by its requestId (``/operation-result``: 404 = never arrived) before it is sent again, once
(``_call(once=True, verify=...)``); at most 100 EIDs per call; error bodies
``{"success": false, "errorMessage"}``. Paths are configurable on the connection extra
(``enable_path``, ``disable_path``, ``operation_result_path``).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

import requests

from bulkchange.carriers.base import CallLog, HttpCarrierClient, PermanentError, TransientError, classify_response

MAX_ENTRIES = 100
LIST_PAGE = 100
PROCESSING = object()  # what operation_result returns while the carrier is still working


def new_request_id(operation: str) -> str:
    """``Enable_20261124090000_1a2b3c4d``: legacy's ``{type}_{yyyyMMddHHmmss}`` plus a unique tail."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    return f"{operation.capitalize()}_{stamp}_{uuid.uuid4().hex[:8]}"[:32]


class TealClient(HttpCarrierClient):
    carrier_name = "Teal"

    def __init__(self, base_url: str, api_key: str, api_secret: str, *, enable_path: str = "/esims/enable",
                 disable_path: str = "/esims/disable", operation_result_path: str = "/operation-result",
                 callback_url: str | None = None, assign_plan_path: str = "/esims/assign-plan", plans_path: str = "/plans",
                 **kw: Any):
        super().__init__(base_url, **kw)
        if not api_key or not api_secret:
            raise ValueError("Teal needs an ApiKey (login) and an ApiSecret (password)")
        self._headers = {"ApiKey": api_key, "ApiSecret": api_secret}
        self.add_secret(api_secret)
        self.paths = {"enable": enable_path, "disable": disable_path, "result": operation_result_path,
                      "assign_plan": assign_plan_path, "plans": plans_path}
        self.callback_url = callback_url

    def _auth_headers(self) -> dict[str, str]:
        return dict(self._headers)

    def _classify(self, resp: requests.Response) -> None:
        if resp.status_code == 102:  # Processing: not an error
            return
        classify_response(resp)

    # -- operations ----------------------------------------------------------------------------
    def operation(self, operation: str, eids: list[str], *, request_id: str | None = None,
                  log: CallLog | None = None) -> str:
        """``enable`` / ``disable`` these eSIMs; returns the requestId to poll."""
        if operation not in ("enable", "disable"):
            raise ValueError(f"unknown Teal operation {operation!r}")
        if not 0 < len(eids) <= MAX_ENTRIES:
            raise ValueError(f"1..{MAX_ENTRIES} eSIMs per Teal {operation}, got {len(eids)}")
        request_id = request_id or new_request_id(operation)
        params = {"requestId": request_id}
        if self.callback_url:
            params["callbackUrl"] = self.callback_url
        answer = self._call("POST", self.paths[operation], json_body={"entries": list(eids)}, params=params,
                            log=log, description=f"Teal {operation.capitalize()} eSIM: Teal API",
                            once=True, verify=self._accepted(request_id, log)) or {}
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise TransientError(f"Teal {operation} was not accepted: {str(answer)[:300]}")
        return request_id

    def assign_plan(self, entries: list[tuple[str, str]], *, request_id: str | None = None,
                    log: CallLog | None = None) -> str:
        """``POST /esims/assign-plan {"entries": [{"eid", "planUuid"}]}`` (CarrierRatePlanChange), as
        asynchronous as enable / disable; returns the requestId to poll."""
        if not 0 < len(entries) <= MAX_ENTRIES:
            raise ValueError(f"1..{MAX_ENTRIES} eSIMs per Teal plan assignment, got {len(entries)}")
        request_id = request_id or new_request_id("AssignPlan")
        params = {"requestId": request_id}
        if self.callback_url:
            params["callbackUrl"] = self.callback_url
        answer = self._call("POST", self.paths["assign_plan"], params=params, log=log,
                            json_body={"entries": [{"eid": eid, "planUuid": plan} for eid, plan in entries]},
                            description="Teal Assign Plan: Teal API",
                            once=True, verify=self._accepted(request_id, log)) or {}
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise TransientError(f"Teal plan assignment was not accepted: {str(answer)[:300]}")
        return request_id

    def _accepted(self, request_id: str, log: CallLog | None):
        """The look-up after an unknown outcome of an operation: ``GET /operation-result?requestId=``
        knows the operation (still processing or finished) when Teal accepted it, and answers 404
        when it never arrived; only then is it sent again (once, with the same requestId)."""
        def verify() -> dict | None:
            try:
                self.operation_result(request_id, log=log)
            except PermanentError as exc:
                if exc.status_code == 404:
                    return None
                raise
            return {"success": True, "requestId": request_id, "found": True}
        return verify

    def operation_result(self, request_id: str, *, log: CallLog | None = None) -> Any:
        """The finished operation's answer, or ``PROCESSING`` while it runs."""

        def parse(resp: requests.Response) -> Any:
            if resp.status_code == 102:
                return PROCESSING
            try:
                body = resp.json() if resp.content else None
            except ValueError as exc:
                raise TransientError("malformed JSON from Teal", status_code=resp.status_code) from exc
            if resp.status_code == 202 or (isinstance(body, dict) and str(body.get("status", "")).upper()
                                           == "PROCESSING"):
                return PROCESSING
            if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
                raise TransientError(f"Teal operation result without entries: {str(body)[:300]}",
                                     status_code=resp.status_code)
            return body

        return self._call("GET", self.paths["result"], params={"requestId": request_id}, parse=parse, log=log,
                          description="Teal Operation Result: Teal API")

    # -- reads -----------------------------------------------------------------------------------
    def plan_uuids(self, *, log: CallLog | None = None) -> list[str]:
        """The account's plans (``GET /plans``, carrier_apis.md section 4; answer shape assumed:
        ``{"entries": [{"uuid", "name"}]}``): their uuids, what assign-plan takes."""
        body = self._call("GET", self.paths["plans"], log=log, description="Get Teal Plans: Teal API") or {}
        return sorted({str(e.get("uuid") or e.get("planUuid")) for e in body.get("entries") or []
                       if isinstance(e, dict) and (e.get("uuid") or e.get("planUuid"))})

    def get_esim(self, eid: str, *, log: CallLog | None = None) -> dict:
        return self._call("GET", "/esims/info", params={"eid": eid}, log=log,
                          description="Teal eSIM Info: Teal API") or {}

    def iter_esims(self, page_size: int = LIST_PAGE) -> Iterator[dict]:
        offset = 0
        while True:
            page = self._call("GET", "/esims", params={"limit": page_size, "offset": offset},
                              description="List Teal eSIMs") or {}
            entries = page.get("entries") or []
            yield from entries
            offset += len(entries)
            total = page.get("total")
            if not entries or len(entries) < page_size or (total is not None and offset >= int(total)):
                return


def entry_result(answer: dict, eid: str) -> dict | None:
    for entry in answer.get("entries") or []:
        if isinstance(entry, dict) and str(entry.get("eid")) == eid:
            return entry
    return None
