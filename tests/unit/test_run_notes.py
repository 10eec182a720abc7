from types import SimpleNamespace

from bulkchange import run_notes
from bulkchange.models import ChangeType, Integration


def _bulk():
    return SimpleNamespace(id=42, change_type=ChangeType.STATUS_UPDATE, integration=Integration.TELEGENCE,
                           service_provider_name="Fleet T")


def test_the_note_says_what_the_run_is_and_how_it_ended():
    head = run_notes.head_for(_bulk(), 1500, {})
    assert head == "Bulk change 42: StatusUpdate on Telegence (Fleet T), 1,500 devices"
    note = run_notes.outcome(head, "PROCESSED_WITH_ERRORS", {"PROCESSED": 1490, "API_FAILED": 10}, 754.2)
    assert note == head + "\nPROCESSED_WITH_ERRORS in 12 min 34 s: PROCESSED 1,490, API_FAILED 10"
    assert "retry of the failed devices" in run_notes.head_for(_bulk(), 10, {"retry_failed": True})


def test_a_dry_run_note_names_the_plan_and_irreversible_actions():
    head = run_notes.head_for(_bulk(), 1500, {"dry_run": True})
    note = run_notes.dry_run(head, {"would_process": 1500, "rejected_count": 0, "carrier_calls": {"Telegence": 1500},
                                    "estimated_seconds": 300.0,
                                    "irreversible": [{"action": "cancel the line (C)", "devices": 1500}]}, 4)
    assert "dry run" in head and "DRY RUN (4 s): would process 1,500" in note
    assert "IRREVERSIBLE: cancel the line (C) (1,500)" in note
