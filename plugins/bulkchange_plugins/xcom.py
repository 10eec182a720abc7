"""XCom through the one scrubber: every value a task pushes is stored without secrets or personal
data (``bulkchange.sanitize``). Configured with ``[core] xcom_backend =
bulkchange_plugins.xcom.ScrubbedXCom`` (docker-compose.yaml does); values stay JSON as before."""
from __future__ import annotations

from typing import Any

from airflow.sdk.bases.xcom import BaseXCom

from bulkchange.sanitize import sanitize_value


class ScrubbedXCom(BaseXCom):
    @staticmethod
    def serialize_value(value: Any, *, key: str | None = None, task_id: str | None = None,
                        dag_id: str | None = None, run_id: str | None = None, map_index: int | None = None) -> Any:
        return BaseXCom.serialize_value(sanitize_value(value), key=key, task_id=task_id, dag_id=dag_id,
                                        run_id=run_id, map_index=map_index)
