"""The two roles of a bulkchange deployment, for Airflow's FAB auth manager (docs/deployment.md).

* ``BulkChangeOps``: everything the read-only role sees, plus triggering (and clearing, marking)
  ``bulk_change_submit`` and ``bulk_change_process``: "edit" on those two DAGs only and "create"
  on their runs only. Every other DAG stays read-only for them.
* ``BulkChangeReadOnly``: Airflow's Viewer permissions (DAGs, runs, task logs, XCom), nothing more.

``python -m bulkchange_plugins.roles`` creates or completes both (idempotent); compose's
airflow-init runs it. Assign users with ``airflow users add-role -u NAME -r BulkChangeOps`` or in
the UI (Security -> List Users). Admins keep Airflow's own Admin role.
"""
from __future__ import annotations

OPS_ROLE = "BulkChangeOps"
READ_ONLY_ROLE = "BulkChangeReadOnly"
OPS_DAGS = ("bulk_change_submit", "bulk_change_process")


def role_configs() -> list[dict]:
    from airflow.providers.fab.auth_manager.security_manager.override import FabAirflowSecurityManagerOverride
    from airflow.security.permissions import (
        ACTION_CAN_CREATE,
        ACTION_CAN_EDIT,
        ACTION_CAN_READ,
        RESOURCE_TASK_INSTANCE,
    )

    viewer = list(FabAirflowSecurityManagerOverride.VIEWER_PERMISSIONS)
    ops = list(viewer)
    for dag_id in OPS_DAGS:
        ops += [(ACTION_CAN_READ, f"DAG:{dag_id}"), (ACTION_CAN_EDIT, f"DAG:{dag_id}"),
                (ACTION_CAN_READ, f"DAG Run:{dag_id}"), (ACTION_CAN_CREATE, f"DAG Run:{dag_id}")]
    # clear / mark task instances: only takes effect on DAGs the role may edit (the two above)
    ops += [(ACTION_CAN_EDIT, RESOURCE_TASK_INSTANCE), (ACTION_CAN_CREATE, RESOURCE_TASK_INSTANCE)]
    return [{"role": READ_ONLY_ROLE, "perms": viewer}, {"role": OPS_ROLE, "perms": ops}]


def sync_roles() -> None:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        appbuilder.sm.bulk_sync_roles(role_configs())


if __name__ == "__main__":
    sync_roles()
    print(f"roles {READ_ONLY_ROLE} and {OPS_ROLE} are in place")
