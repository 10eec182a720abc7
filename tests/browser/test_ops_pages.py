"""What the ops team does in the Airflow UI, in a real browser against a real Airflow:

* fill the bulk_change_submit trigger form with ICCIDs only (no CSV), trigger, and see the run and
  the bulk change it created;
* open the Bulk changes page (in the UI's navigation), watch a running bulk change's progress move,
  and press "Retry failed devices": the retry is a bulk_change_process run.

The screenshots land in docs/images/ (the README and docs/operations.md show them).
"""
from __future__ import annotations

import re

import pytest
import requests
from sqlalchemy import select

from bulkchange.db import bulk_changes, claims, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration
from bulkchange_demo.demo import wait_for
from tests.browser.conftest import SP_ID, TENANT_ID, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.scheduler, pytest.mark.postgres]
KNOWN, UNKNOWN = 240, 60  # devices the carrier knows (processed) and does not (API_FAILED)


@pytest.fixture(scope="module")
def fleet(airflow, jasper):
    """A Jasper account with devices in the AMOP DB; the carrier knows only the first KNOWN of the
    devices a bulk change uses, so the rest fail there (API_FAILED) and can be retried."""
    control = jasper.control("jasper")
    iccids = [seed.make_iccid(930_000 + i) for i in range(KNOWN + UNKNOWN + 5)]
    control.seed_devices([{"iccid": i, "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in iccids[:KNOWN]]
                         + [{"iccid": i, "status": "ACTIVATED", "ratePlan": "IOT-1GB"} for i in iccids[-5:]])
    with airflow.amop.begin() as conn:
        seed.add_service_provider(conn, sp_id=SP_ID, name="Browser fleet", integration=Integration.JASPER,
                                  tenant_id=TENANT_ID)
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED", "CarrierRatePlan": "IOT-1GB"} for i in iccids],
                         sp_id=SP_ID, tenant_id=TENANT_ID)
    return {"batch": iccids[:KNOWN + UNKNOWN], "form": iccids[-5:]}


def _new_bulk_ids(airflow, before: set[int]) -> list[int]:
    with airflow.amop.connect() as conn:
        ids = set(conn.execute(select(t.device_bulk_change.c.Id)).scalars())
    return sorted(ids - before)


def _all_bulk_ids(airflow) -> set[int]:
    return set(_new_bulk_ids(airflow, set()))


def test_submit_form_with_iccids_only(airflow, fleet, page):
    before = _all_bulk_ids(airflow)
    page.goto(f"{airflow.base}/dags/bulk_change_submit")
    page.get_by_role("button", name=re.compile(r"Trigger")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="What to change").click()
    dialog.get_by_label(re.compile("Service provider id")).fill(str(SP_ID))
    editor = dialog.locator("#element_change_request .monaco-editor")  # the JSON editor
    editor.locator(".view-lines").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text('{"UpdateStatus": "Suspend"}')
    page.keyboard.press("Shift+Control+End")  # what the editor closed by itself
    page.keyboard.press("Delete")
    screenshot(page, "submit-form.png")
    dialog.get_by_role("button", name="Devices").click()
    dialog.locator("#element_devices").fill("\n".join(fleet["form"]))  # no CSV
    trigger = dialog.get_by_role("button", name=re.compile(r"Trigger")).last
    assert trigger.is_enabled()
    trigger.click()

    def submitted():
        try:
            runs = airflow.runs("bulk_change_submit")
        except requests.RequestException:  # a busy api-server: ask again
            return None
        return runs and runs[0]["state"] in ("success", "failed") and runs[0]
    run = wait_for(submitted, 600, 3, "the submit run to finish")
    assert run["state"] == "success", run
    (bulk_id,) = _new_bulk_ids(airflow, before)
    with airflow.amop.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        changes = device_changes.load_device_changes(conn, bulk)
    assert sorted(dc.iccid for dc in changes) == sorted(fleet["form"])
    assert bulk.created_by == run["triggering_user_name"] and bulk.created_by  # the user who pressed Trigger
    page.goto(f"{airflow.base}/dags/bulk_change_submit/runs/{run['dag_run_id']}")
    page.get_by_text(run["dag_run_id"]).first.wait_for()


def test_bulk_changes_page_progress_and_retry(airflow, fleet, page):
    with airflow.amop.begin() as conn:
        bulk_id = seed.add_bulk_change(conn, sp_id=SP_ID, tenant_id=TENANT_ID, change_type=ChangeType.STATUS_UPDATE,
                                       created_by="ops@example.com", requests=[
                                           {"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                           for i in fleet["batch"]])
        claims.claim_bulk_change(conn, bulk_id)
    airflow.trigger("bulk_change_process", {"bulk_change_id": bulk_id, "batch_size": 20, "max_parallel": 2},
                    run_id=f"bulk_change_{bulk_id}")

    # the page inside the Airflow UI: navigation entry -> list -> the bulk change
    page.goto(f"{airflow.base}/plugin/bulk-changes")
    frame = page.frame_locator("iframe").first
    frame.locator(f"#bulk-changes tr[data-id='{bulk_id}']").wait_for()
    frame.locator(f"#bulk-changes tr[data-id='{bulk_id}'] a").first.click()
    bar = frame.locator("#bar [role=progressbar]")
    bar.wait_for()

    def done_percent() -> float:
        return float(bar.get_attribute("aria-valuenow") or 0)

    first = wait_for(lambda: (p := done_percent()) > 0 and p < 100 and p, 600, 1,
                     "the page to show the bulk change part-way done")
    wait_for(lambda: done_percent() > first, 600, 1, "the progress bar to move")
    screenshot(page, "bulk-change-running.png")
    frame.locator("#facts .badge", has_text=re.compile("PROCESSED_WITH_ERRORS")).wait_for(timeout=900_000)
    frame.locator("#counts [data-status='API_FAILED']").wait_for()
    assert frame.locator("#retry").is_enabled()
    screenshot(page, "bulk-change-page.png")

    frame.locator("#retry").click()
    link = frame.locator("#action-result a")
    link.wait_for()
    retry_run = link.inner_text()
    assert retry_run.startswith(f"bulk_change_{bulk_id}_retry_")
    run = airflow.get(f"/api/v2/dags/bulk_change_process/dagRuns/{retry_run}")
    assert run["conf"] == {"bulk_change_id": bulk_id, "retry_failed": True}
    assert run["triggered_by"] in ("rest_api", "ui") or run.get("triggering_user_name")
    frame.locator("#runs a", has_text=retry_run).wait_for()

    # the first run's note says what it was and how it ended (written by finalize through the REST API)
    note = airflow.get(f"/api/v2/dags/bulk_change_process/dagRuns/bulk_change_{bulk_id}")["note"] or ""
    assert note.startswith(f"Bulk change {bulk_id}: StatusUpdate on Jasper (Browser fleet), {KNOWN + UNKNOWN} devices")
    assert "PROCESSED_WITH_ERRORS in" in note and f"PROCESSED {KNOWN}" in note and f"API_FAILED {UNKNOWN}" in note

    # the list page, for the README
    page.goto(f"{airflow.base}/plugin/bulk-changes")
    page.frame_locator("iframe").first.locator(f"#bulk-changes tr[data-id='{bulk_id}']").wait_for()
    screenshot(page, "bulk-changes-list.png")
