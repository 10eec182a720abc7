"""bulk_change_submit: create a bulk change from the Airflow trigger form (or conf / REST API).

Fill in the form (Trigger DAG -> the params below) or pass the same keys as conf:

    airflow dags trigger bulk_change_submit -c '{"service_provider_id": 1, "change_type": "StatusUpdate",
        "change_request": {"UpdateStatus": "Suspend"}, "devices": ["8901260000000000018"],
        "portal_type": "M2M", "process_now": true}'

Devices come as a list of ICCIDs (``devices``) and/or pasted CSV (``devices_csv``: a header row
with ``ICCID`` and optionally ``MSISDN``, ``IMEI``, ``EID``; any other column is a change request
field for that row, e.g. ``UpdateStatus``). What the form's schema can check (types, the change
type and portal type lists, ICCID digits in ``devices``, minimums) is refused at trigger time;
the ``submit`` task refuses the rest with a message naming the field and the value. Duplicate and
unknown devices are listed per device in the ``submit`` log and XCom and recorded on their
device change as ERROR when it is prepared; the rest proceeds.

``process_now``: claim the bulk change at once and launch ``bulk_change_process`` (run id
``bulk_change_<id>``); otherwise it stays NEW and ``bulk_change_sensor`` picks it up.
``dry_run``: insert nothing; validate and plan (batches, carrier calls, estimated duration) and
keep only the report (``submit`` log and XCom, table ``DeviceBulkChangeDryRun``).
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, dag, task

import bulkchange_plugins  # noqa: F401  (puts include/ on sys.path when PYTHONPATH lacks it)
from bulkchange.batch_sizing import MAX_BATCH_SIZE
from bulkchange_plugins.dag_common import dag_args, launch_processing, processing_launch
from bulkchange.settings import get_settings

BATCH_CONCURRENCY = get_settings().batch_concurrency
CHANGE_TYPES = ["StatusUpdate", "CarrierRatePlanChange", "CustomerRatePlanChange", "CustomerAssignment",
                "Archival", "ActivateNewService", "CreateRevService", "ChangeICCIDAndIMEI",
                "EditUsernameCostCenter"]
CHANGE_REQUEST_EXAMPLES = """JSON fields applied to every device (a CSV column of the same name overrides it for its
row). Examples by change type (details: docs/change-types.md):

| change type | example change request |
|---|---|
| StatusUpdate | `{"UpdateStatus": "Suspend"}` (also `Restore`, `Activate`, `Deactivate`, a carrier status such as `RETIRED`; `"IsIgnoreCurrentStatus": true` skips the transition check) |
| CarrierRatePlanChange | `{"CarrierRatePlan": "IOT-1GB", "CommPlan": "IOT-COMM"}` (`"EffectiveDate": "2026-12-01"` to schedule it) |
| CustomerRatePlanChange | `{"CustomerRatePlanId": 12, "CustomerDataAllocationMB": 500}` (or `"CustomerPoolId"`; a future `"EffectiveDate"` waits for that day) |
| CustomerAssignment | `{"RevCustomerId": "1001", "SiteId": 7, "CreateRevService": false}` |
| Archival | `{}` (`{"OverrideValidation": true}` archives devices with recent usage too) |
| ActivateNewService | `{"TelegenceActivationRequest": {"billingAccount": {"id": "..."}, "service": {...}}}` (Telegence) |
| CreateRevService | `{"RevCustomerId": "1001", "RevService": {...}}` |
| ChangeICCIDAndIMEI | per device, in the CSV: columns `ICCID,NewICCID` or `ICCID,NewIMEI` |
| EditUsernameCostCenter | `{"ContactName": "Fleet 7", "CostCenter1": "CC-100"}` (per device: CSV columns of the same names) |

"Deactivate" means a restorable state on Jasper, POND and Teal but a final cancel on Telegence:
see the dry run, which names irreversible actions.
"""


@dag(
    dag_id="bulk_change_submit",
    description="Create a bulk change from the trigger form: devices, change type, change request",
    schedule=None,
    max_active_runs=4,
    **dag_args(retries=2, retry_delay=timedelta(seconds=20), run_failure_email=False),
    doc_md=__doc__,
    params={
        "service_provider_id": Param(None, type="integer", minimum=1, title="Service provider id",
                                     description="ServiceProvider.Id whose devices change (required)",
                                     section="What to change"),
        "change_type": Param("StatusUpdate", type="string", enum=CHANGE_TYPES, title="Change type",
                             description="What to do to every device; the change request below gives the details",
                             section="What to change"),
        # the form shows description_md only for a param without a plain description
        "change_request": Param({}, type=["object", "null"], title="Change request",
                                description_md=CHANGE_REQUEST_EXAMPLES, section="What to change"),
        "portal_type": Param("M2M", type="string", enum=["M2M", "Mobility"], title="Portal type",
                             description="Which device change table: M2M devices or Mobility lines",
                             section="What to change"),
        "devices": Param(None, type=["null", "array"], items={"type": "string", "pattern": "^[0-9]{19,20}$"},
                         title="ICCIDs", description="One ICCID (19-20 digits) per line. Give these, the CSV "
                                                     "below, or both", section="Devices"),
        "devices_csv": Param(None, type=["null", "string"], format="multiline", title="Devices as CSV",
                             description="Optional. Pasted CSV: header with ICCID (MSISDN, IMEI, EID optional); "
                                         "other columns are per-device change request fields",
                             section="Devices"),
        "process_now": Param(True, type="boolean", title="Process now",
                             description="Launch processing at once (off: leave it NEW for the sensor)",
                             section="How"),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="Validate and plan only: nothing is inserted, no carrier is called",
                         section="How"),
        "batch_size": Param(None, type=["null", "integer"], minimum=1, maximum=MAX_BATCH_SIZE, title="Batch size",
                            description="Optional: devices per processing task. Empty: chosen from the "
                                        "account's rate limit (about a minute of carrier work per task)",
                            section="How"),
        "max_parallel": Param(10, type="integer", minimum=1, maximum=100, title="Parallel requests",
                              description="Carrier requests in flight at once inside one processing task; the "
                                          "account's rate limit applies on top", section="How"),
        "created_by": Param(None, type=["null", "string"], maxLength=128, title="Requested for",
                            description="Optional: on whose behalf. CreatedBy records the Airflow user who "
                                        "triggers the run, with this name beside it", section="How"),
    },
)

def bulk_change_submit():
    # No automatic retry: a retried insert would create the bulk change twice.
    @task(retries=0)
    def submit(params=None, dag_run=None) -> dict:
        # check and insert (bulkchange.submit.submit_from_trigger); a dry run only reports
        from bulkchange_plugins import tasks

        return tasks.submit(params, dag_run, batch_concurrency=BATCH_CONCURRENCY)

    @task
    def launches(result: dict, params=None) -> list[dict]:
        """The processing run to launch (none for a dry run or when the sensor is to pick it up)."""
        if not result.get("claimed"):
            return []
        return [processing_launch(result["bulk_change_id"], batch_size=params["batch_size"],
                                  max_parallel=params["max_parallel"])]

    launch_processing(launches(submit()))


bulk_change_submit()
