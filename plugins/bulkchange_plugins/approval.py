"""The approval gate of bulk_change_process: the standard provider's ApprovalOperator, held only when
``prepare`` found the run needs approval (``bulkchange.approval``).

``prepare`` pushes XCom ``approval`` = ``{"required", "subject", "body", ...}``. Not required: the
task is skipped and processing goes on. Required: the task waits (state "awaiting input") with the
dry-run plan as its Markdown body until someone answers in the Airflow UI's Required Actions (or the
Bulk changes page); Approve lets the batches run, Reject (or no answer within the timeout, whose
default is Reject) skips them, and ``finalize`` records the rejection on every device change.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowSkipException

from bulkchange.approval import ANSWER_KEY  # XCom key of the approval answer, read by finalize


class BulkChangeApprovalOperator(ApprovalOperator):
    ui_color = "#fff4d6"

    def __init__(self, *, prepare_task_id: str = "prepare", response_timeout: timedelta | None = None,
                 **kwargs: Any):
        kwargs.setdefault("subject", "Approve bulk change")
        kwargs.setdefault("defaults", "Reject")  # what a timeout answers
        kwargs.setdefault("params", {"reason": Param("", type=["null", "string"], title="Reason",
                                                     description="Why (a rejection records it on every device "
                                                                 "change with your name)")})
        super().__init__(response_timeout=response_timeout, **kwargs)
        self.prepare_task_id = prepare_task_id

    def execute(self, context):
        request = context["ti"].xcom_pull(task_ids=self.prepare_task_id, key="approval") or {}
        if not request.get("required"):
            raise AirflowSkipException(request.get("why_not") or "no approval needed")
        self.subject = request["subject"]
        self.body = request["body"]
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]) -> Any:
        # A Reject makes ApprovalOperator skip the downstream tasks by raising DownstreamTasksSkipped,
        # so its return value never reaches XCom; the answer is pushed first under its own key, for
        # finalize to record who rejected and why on every device change.
        if "chosen_options" in event:
            context["ti"].xcom_push(key=ANSWER_KEY, value={
                "chosen_options": event.get("chosen_options"), "params_input": event.get("params_input") or {},
                "responded_by_user": event.get("responded_by_user")})
        return super().execute_complete(context, event)
