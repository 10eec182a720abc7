"""Submit core (bulkchange.submit): parsing the form, per-device problems, one-transaction insert,
dry run of a submission. Real AMOP DB (SQLite, and PostgreSQL where available)."""
import json

import pytest
from sqlalchemy import func, select

from bulkchange import processing
from bulkchange.db import bulk_changes, claims, device_changes, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration, PortalType
from bulkchange.submit import SubmitError, parse_csv, parse_submission, submit

ICCIDS = [seed.make_iccid(81_000 + i) for i in range(6)]


def _provider(engine, *, write_enabled=True, integration=Integration.JASPER, statuses=None):
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=3, name="ops", integration=integration, tenant_id=7,
                                  write_enabled=write_enabled)
        seed.add_devices(conn, [{"ICCID": i, "Status": (statuses or {}).get(i, "ACTIVATED")} for i in ICCIDS],
                         sp_id=3, tenant_id=7)


def _params(**over):
    base = {"service_provider_id": 3, "change_type": "StatusUpdate", "change_request": {"UpdateStatus": "Suspend"},
            "devices": ICCIDS[:3], "portal_type": "M2M", "created_by": "ops-anna"}
    base.update(over)
    return base


def _counts(engine):
    with engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(tbl)).scalar_one()
                for name, tbl in (("bulk", t.device_bulk_change), ("m2m", t.m2m_device_change),
                                  ("mobility", t.mobility_device_change), ("log", t.device_bulk_change_log),
                                  ("dry", t.device_bulk_change_dry_run))}


# --- parsing -----------------------------------------------------------------------------------------
def test_csv_with_header_identifiers_and_per_row_fields():
    rows = parse_csv("\ufefficcid,Msisdn,UpdateStatus,Request.servicePlan\n"
                     f"{ICCIDS[0]},15551230000,Suspend,\n"
                     f"{ICCIDS[1]},,Active,PLAN-A\n\n")
    assert [r["ICCID"] for r in rows] == ICCIDS[:2]
    assert rows[0]["MSISDN"] == "15551230000" and rows[1]["MSISDN"] is None
    assert rows[0]["fields"] == {"UpdateStatus": "Suspend"}
    assert rows[1]["fields"] == {"UpdateStatus": "Active", "Request.servicePlan": "PLAN-A"}
    assert [r["where"] for r in rows] == ["devices_csv line 2", "devices_csv line 3"]


def test_csv_without_header_is_one_iccid_per_line_and_semicolons_work():
    assert [r["ICCID"] for r in parse_csv(f"{ICCIDS[0]}\n{ICCIDS[1]}\n")] == ICCIDS[:2]
    rows = parse_csv(f"ICCID;UpdateStatus\n{ICCIDS[0]};Suspend\n")
    assert rows[0]["ICCID"] == ICCIDS[0] and rows[0]["fields"] == {"UpdateStatus": "Suspend"}


def test_csv_header_without_identifier_names_the_field_and_value():
    with pytest.raises(SubmitError) as err:
        parse_csv("phone,status\n123,Suspend\n")
    assert err.value.field == "devices_csv"
    assert "phone,status" in str(err.value) and "ICCID" in str(err.value)


def test_csv_row_with_extra_cells_is_kept_with_its_problem():
    rows = parse_csv(f"ICCID\n{ICCIDS[0]},oops\n")
    assert rows[0]["ICCID"] == ICCIDS[0] and "2 cells" in rows[0]["problem"]


@pytest.mark.parametrize("over, field, value_text", [
    ({"service_provider_id": "abc"}, "service_provider_id", "'abc'"),
    ({"service_provider_id": 0}, "service_provider_id", "0"),
    ({"change_type": "Teleport"}, "change_type", "'Teleport'"),
    ({"portal_type": "LNP"}, "portal_type", "'LNP'"),
    ({"change_request": "{not json"}, "change_request", "'{not json'"),
    ({"change_request": [1, 2]}, "change_request", "[1, 2]"),
    ({"devices": [], "devices_csv": ""}, "devices", "[]"),
    ({"devices": [3.5]}, "devices[0]", "3.5"),
])
def test_bad_form_input_names_field_and_value(over, field, value_text):
    with pytest.raises(SubmitError) as err:
        parse_submission(_params(**over))
    assert err.value.field == field
    assert str(err.value).startswith(f"{field}:") and f"(got {value_text})" in str(err.value)


def test_parse_merges_list_and_csv_and_change_request_per_row():
    sub = parse_submission(_params(devices=[ICCIDS[0], {"iccid": ICCIDS[1], "IsIgnoreCurrentStatus": True}],
                                   devices_csv=f"ICCID,UpdateStatus\n{ICCIDS[2]},Restore\n",
                                   portal_type="mobility", change_type="statusupdate"))
    assert sub.change_type == ChangeType.STATUS_UPDATE and sub.portal_type == PortalType.MOBILITY
    assert [r["ICCID"] for r in sub.devices] == ICCIDS[:3]
    assert sub.row_request(sub.devices[1]) == {"UpdateStatus": "Suspend", "IsIgnoreCurrentStatus": True}
    assert sub.row_request(sub.devices[2]) == {"UpdateStatus": "Restore"}


# --- against the DB ----------------------------------------------------------------------------------
def test_submit_inserts_in_one_go_and_reports_duplicates_and_unknown_devices(amop_engine):
    _provider(amop_engine)
    unknown = seed.make_iccid(99_999)
    sub = parse_submission(_params(devices=[ICCIDS[0], ICCIDS[1], ICCIDS[0], unknown, "12345"]))
    result = submit(amop_engine, sub, process_now=False)
    problems = {p["device"]: p["reason"] for p in result.problems}
    assert result.devices == 5 and len(problems) == 3
    assert "duplicate" in problems[f"{ICCIDS[0]} (devices item 3)"]
    assert "not found for service provider 3" in problems[f"{unknown} (devices item 4)"]
    assert "ICCID" in problems["12345 (devices item 5)"]
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, result.bulk_change_id)
        assert bulk.status.value == "NEW" and bulk.created_by == "ops-anna" and bulk.tenant_id == 7
        changes = device_changes.load_device_changes(conn, bulk)
        assert [c.iccid for c in changes] == [ICCIDS[0], ICCIDS[1], ICCIDS[0], unknown, "12345"]  # none dropped
        assert {json.loads(c.change_request)["UpdateStatus"] for c in changes} == {"Suspend"}
        assert progress.load_progress(conn, bulk.id) == {"TotalCount": 5, "ProcessedCount": 0, "ErrorCount": 0,
                                                         "PendingCount": 5}
        assert claims.find_new_bulk_change_ids(conn) == [bulk.id]  # the sensor will pick it up
    # prepare records each problem on its device change; the rest proceeds
    plan = processing.prepare(amop_engine, result.bulk_change_id, batch_size=10)
    assert plan.rejected == 3 and plan.queued == 2
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, result.bulk_change_id)
        by_status = {}
        for c in device_changes.load_device_changes(conn, bulk):
            by_status.setdefault(c.status.value, []).append(c)
        assert len(by_status["ERROR"]) == 3 and all(c.status_details for c in by_status["ERROR"])
        assert progress.load_progress(conn, bulk.id)["ErrorCount"] == 3


def test_process_now_claims_so_the_sensor_cannot(amop_engine):
    _provider(amop_engine)
    result = submit(amop_engine, parse_submission(_params()), process_now=True)
    assert result.claimed
    with amop_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, result.bulk_change_id).status.value == "PENDING"
        assert claims.find_new_bulk_change_ids(conn) == []


def test_mobility_rows_go_to_the_mobility_table(amop_engine):
    _provider(amop_engine)
    submit(amop_engine, parse_submission(_params(portal_type="Mobility")), process_now=False)
    assert _counts(amop_engine)["mobility"] == 3 and _counts(amop_engine)["m2m"] == 0


@pytest.mark.parametrize("over, field, text", [
    ({"service_provider_id": 42}, "service_provider_id", "no such service provider"),
    ({"change_request": {"UpdateStatus": "Teleported"}}, "change_request.UpdateStatus", "'Teleported'"),
    ({"change_request": {}}, "change_request", "UpdateStatus"),
])
def test_submission_refused_as_a_whole_names_the_field(sqlite_engine, over, field, text):
    _provider(sqlite_engine)
    before = _counts(sqlite_engine)
    with pytest.raises(SubmitError) as err:
        submit(sqlite_engine, parse_submission(_params(**over)))
    assert err.value.field == field and text in str(err.value)
    assert _counts(sqlite_engine) == before


def test_change_type_the_carrier_does_not_support_is_refused(sqlite_engine):
    from bulkchange.changes import UnsupportedChange, get_handler

    unsupported = []
    for ct in ChangeType:
        try:
            get_handler(ct, Integration.JASPER)
        except UnsupportedChange:
            unsupported.append(ct)
    if not unsupported:
        pytest.skip("every change type is supported on Jasper")
    _provider(sqlite_engine)
    with pytest.raises(SubmitError) as err:
        submit(sqlite_engine, parse_submission(_params(change_type=unsupported[0].value)))
    assert err.value.field == "change_type" and "not supported on carrier Jasper" in str(err.value)


def test_writes_disabled_is_refused(sqlite_engine):
    _provider(sqlite_engine, write_enabled=False)
    with pytest.raises(SubmitError, match="service_provider_id: writes are disabled"):
        submit(sqlite_engine, parse_submission(_params()))


def test_per_row_change_requests_are_checked_per_device(sqlite_engine):
    _provider(sqlite_engine)
    csv_text = f"ICCID,UpdateStatus\n{ICCIDS[0]},Suspend\n{ICCIDS[1]},Teleported\n"
    result = submit(sqlite_engine, parse_submission(_params(devices=[], devices_csv=csv_text)), process_now=False)
    assert [p["device"] for p in result.problems] == [f"{ICCIDS[1]} (devices_csv line 3)"]
    assert "Teleported" in result.problems[0]["reason"]


def test_dry_run_submission_inserts_nothing_but_its_report(amop_engine):
    _provider(amop_engine, statuses={ICCIDS[2]: "DEACTIVATED"})
    before = _counts(amop_engine)
    sub = parse_submission(_params(devices=ICCIDS + [ICCIDS[0]]))
    result = submit(amop_engine, sub, dry_run=True, batch_size=4, max_parallel=2, batch_concurrency=1,
                    rate_limit_per_s=2)
    after = _counts(amop_engine)
    assert after == {**before, "dry": before["dry"] + 1}
    report = result.dry_run
    assert result.bulk_change_id is None and report["bulk_change_id"] is None
    assert report["devices"] == 7 and report["would_process"] == 6 and report["rejected_count"] == 1
    assert report["batch_count"] == 2 and [b["devices"] for b in report["batches"]] == [4, 2]
    assert report["carrier_calls"] == {"Jasper": 5} and report["no_call_needed"] == 1  # one already suspended
    assert report["estimated_seconds"] == 2.5 and "rate limit of 2/s" in report["estimate_basis"]
    assert "DRY RUN submission" in report["text"]
    with amop_engine.connect() as conn:
        stored = progress.load_dry_run_reports(conn, report_id=report["report_id"])
    assert stored[0]["report"]["carrier_calls"] == {"Jasper": 5} and stored[0]["bulk_change_id"] is None


def test_submit_dry_run_and_retry_statements_compile_for_sql_server(sqlite_engine):
    """The SQL Server check in tests/db sees what ran before it; run this path here and check it too."""
    from sqlalchemy.dialects import mssql

    from bulkchange import dryrun
    from tests.conftest import CAPTURED_STATEMENTS

    _provider(sqlite_engine)
    submit(sqlite_engine, parse_submission(_params()), dry_run=True)
    bulk_id = submit(sqlite_engine, parse_submission(_params(devices=ICCIDS[:2] + ["1"])), process_now=True).bulk_change_id
    dryrun.dry_run_bulk_change(sqlite_engine, bulk_id, retry_failed=True)
    processing.prepare(sqlite_engine, bulk_id)
    processing.finalize(sqlite_engine, bulk_id)  # nothing was sent: the two open ones are swept to ERROR
    assert processing.reset_failed(sqlite_engine, bulk_id)
    with sqlite_engine.connect() as conn:
        progress.load_dry_run_reports(conn, bulk_change_id=bulk_id)
        progress.load_progress(conn, bulk_id)
    mine = [s for k, s in CAPTURED_STATEMENTS.items()
            if any(n in k for n in ("DeviceBulkChangeDryRun", "TotalCount", "WriteIsEnabled"))]
    assert len(mine) >= 5
    for stmt in CAPTURED_STATEMENTS.values():
        assert str(stmt.compile(dialect=mssql.dialect()))


def test_db_only_change_type_needs_no_carrier_write_switch_nor_calls(sqlite_engine):
    """Archival only writes AMOP tables: a provider with carrier writes off may submit it, and its
    dry run plans no carrier call."""
    from bulkchange.changes import UnsupportedChange, get_handler

    try:
        if get_handler(ChangeType.ARCHIVAL, Integration.JASPER).needs_carrier:
            pytest.skip("archival calls the carrier here")
    except UnsupportedChange:
        pytest.skip("archival not supported")
    _provider(sqlite_engine, write_enabled=False)
    report = submit(sqlite_engine, parse_submission(_params(change_type="Archival", change_request={})),
                    dry_run=True, rate_limit_per_s=1).dry_run
    assert report["would_process"] == 3 and report["carrier_calls"] == {} and report["no_call_needed"] == 3
    assert "no carrier call" in report["estimate_basis"] and report["estimated_seconds"] == 0
    result = submit(sqlite_engine, parse_submission(_params(change_type="Archival", change_request={})),
                    process_now=False)
    assert result.bulk_change_id and result.problems == []


def test_a_10_mb_change_request_is_refused_by_name_before_anything_is_inserted(sqlite_engine):
    """Issue: a 10 MB change_request was accepted and copied into every device change row."""
    _provider(sqlite_engine)
    before = _counts(sqlite_engine)
    huge = {"UpdateStatus": "Suspend", "Note": "x" * (10 * 1024 * 1024)}
    with pytest.raises(SubmitError) as err:
        submit(sqlite_engine, parse_submission(_params(change_request=huge)))
    assert err.value.field.endswith("change_request")
    assert "limit" in str(err.value)
    assert _counts(sqlite_engine) == before


def test_a_deeply_nested_change_request_is_refused_by_name(sqlite_engine):
    _provider(sqlite_engine)
    nested: dict = {"UpdateStatus": "Suspend"}
    for _ in range(5000):
        nested = {"Request": nested}
    with pytest.raises(SubmitError) as err:
        parse_submission(_params(change_request=nested))
    assert err.value.field.endswith("change_request") and "deep" in str(err.value)


def test_an_oversized_device_identifier_is_refused_naming_its_place():
    with pytest.raises(SubmitError) as err:
        parse_submission(_params(devices_csv="ICCID,MSISDN\n8901260000000000018," + "5" * 500, devices=[]))
    assert "MSISDN" in err.value.field and "line" in err.value.field


# --- the submit task (submit_from_trigger) -------------------------------------------------------------
class _Accounts:
    def __init__(self, engine, allowed=None, problem=None):
        from types import SimpleNamespace

        self._engine, self.allowed, self.lines, self.engine_asked = engine, allowed, [], 0
        self.hook = SimpleNamespace(credentials_problem=lambda integration: problem,
                                    get_settings=lambda: SimpleNamespace(rate_limit_per_s=5.0))

    def say(self, text):
        self.lines.append(text)

    def engine(self):
        self.engine_asked += 1
        return self._engine

    def carrier(self, service_provider_id, integration):
        return self.hook

    def allowed_service_providers(self):
        return self.allowed


def _trigger(accounts, user="alice", **over):
    from bulkchange.submit import submit_from_trigger

    return submit_from_trigger(accounts, _params(max_parallel=10, process_now=False, **over), user=user,
                               batch_concurrency=2, max_batches=1024)


def test_the_submit_task_records_who_triggered_it_and_logs_each_device_problem(sqlite_engine):
    _provider(sqlite_engine)
    accounts = _Accounts(sqlite_engine)
    out = _trigger(accounts, devices=ICCIDS[:2] + [seed.make_iccid(99_999)])
    with sqlite_engine.connect() as conn:
        assert bulk_changes.load_bulk_change(conn, out["bulk_change_id"]).created_by == "alice (for ops-anna)"
    assert out["claimed"] is False and out["problem_count"] == 1
    assert accounts.lines[0].startswith(f"bulk change {out['bulk_change_id']}: StatusUpdate on Jasper (ops), 3 devices")
    assert [line for line in accounts.lines if line.startswith("device ")] == \
        [f"device {out['problems'][0]['device']}: {out['problems'][0]['reason']}"]
    assert accounts.lines[-1] == "1 of 3 devices have a problem; the rest proceeds"


def test_the_submit_task_refuses_a_service_provider_the_user_may_not_touch(sqlite_engine):
    from bulkchange.submit import NotAllowed

    _provider(sqlite_engine)
    accounts = _Accounts(sqlite_engine, allowed={"alice": [4]})
    with pytest.raises(NotAllowed) as refused:
        _trigger(accounts)
    assert "alice" in str(refused.value) and accounts.engine_asked == 0 and _counts(sqlite_engine)["bulk"] == 0


def test_the_submit_task_warns_when_processing_will_fail_for_the_connection(sqlite_engine):
    _provider(sqlite_engine)
    accounts = _Accounts(sqlite_engine, problem="no usable carrier connection 'carrier_sp_3'")
    _trigger(accounts)
    assert ("warning: no usable carrier connection 'carrier_sp_3'; processing will mark every device ERROR "
            "with this reason") in accounts.lines
