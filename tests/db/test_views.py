"""bulkchange.db.views: the read-only queries of the Bulk changes page, on SQLite and PostgreSQL, and
a 100,000-device bulk change on PostgreSQL whose page queries use indexes (timings are printed)."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import insert, select, text, update

from bulkchange.db import bulk_changes, device_changes
from bulkchange.db import schema as t
from bulkchange.db import seed, views
from bulkchange.models import ChangeType, DeviceChangeStatus, Integration


def _bulk(conn, sp_id, n, status="NEW", created=None, start=0):
    bulk_id = seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                   requests=[{"ICCID": seed.make_iccid(start + i),
                                              "ChangeRequest": {"UpdateStatus": "Suspend"}} for i in range(n)])
    values = {"Status": status}
    if created:
        values["CreatedDate"] = created
    conn.execute(update(t.device_bulk_change).where(t.device_bulk_change.c.Id == bulk_id).values(**values))
    return bulk_id


def test_list_filters_and_pages_newest_first(amop_engine):
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="A", integration=Integration.JASPER, tenant_id=1)
        seed.add_service_provider(conn, sp_id=2, name="B", integration=Integration.TELEGENCE, tenant_id=1)
        old = datetime(2026, 3, 1, 12)
        ids = [_bulk(conn, 1, 2, "PROCESSED", old), _bulk(conn, 2, 2, "ERROR"), _bulk(conn, 1, 3, "PROCESSING"),
               _bulk(conn, 2, 1, "PROCESSED")]
    with amop_engine.connect() as conn:
        page = views.list_bulk_changes(conn, page_size=3)
        assert [b["id"] for b in page.items] == ids[::-1][:3] and page.has_next
        page2 = views.list_bulk_changes(conn, page=2, page_size=3)
        assert [b["id"] for b in page2.items] == [ids[0]] and not page2.has_next
        assert [b["id"] for b in views.list_bulk_changes(conn, statuses=["PROCESSED"]).items] == [ids[3], ids[0]]
        assert [b["id"] for b in views.list_bulk_changes(conn, service_provider_id=2).items] == [ids[3], ids[1]]
        assert [b["id"] for b in views.list_bulk_changes(conn, created_to=old + timedelta(days=1)).items] == [ids[0]]
        assert ids[0] not in [b["id"] for b in views.list_bulk_changes(conn, created_from=old + timedelta(days=1)).items]
        b = views.list_bulk_changes(conn, service_provider_id=2).items[0]
        assert (b["carrier"], b["service_provider"], b["change_type"]) == ("Telegence", "B", "StatusUpdate")
        assert b["progress"]["total"] == 1 and b["progress"]["pending"] == 1
        assert [s["name"] for s in views.service_providers(conn)] == ["A", "B"]


def test_device_pages_last_response_log_and_failed_rows(amop_engine):
    with amop_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="A", integration=Integration.JASPER, tenant_id=1)
        bulk_id = _bulk(conn, 1, 7, "PROCESSED_WITH_ERRORS")
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        dc_ids = [dc.id for dc in device_changes.load_device_changes(conn, bulk)]
        device_changes.mark_device_changes(conn, bulk, dc_ids[:5], DeviceChangeStatus.PROCESSED, processed_by="t")
        device_changes.reject_device_changes(conn, bulk, [(dc_ids[5], "ICCID unknown"), (dc_ids[6], "carrier said no")],
                                             processed_by="t")
        device_changes.add_log_entries(conn, bulk, [device_changes.LogEntry(
            dc_ids[6], "PUT /devices", '{"status": "DEACTIVATED"}', '{"errorMessage": "no", "password": "hunter2"}',
            "HTTP 400", "400")], processed_by="t")
    with amop_engine.connect() as conn:
        b = views.bulk_change(conn, bulk_id)
        assert views.status_counts(conn, b) == {"PROCESSED": 5, "ERROR": 2}
        p1 = views.device_changes(conn, b, page_size=3)
        p2 = views.device_changes(conn, b, page_size=3, after=p1.next_after)
        p3 = views.device_changes(conn, b, page_size=3, after=p2.next_after)
        assert [d["id"] for d in p1.items + p2.items + p3.items] == dc_ids and not p3.has_next
        failed = views.device_changes(conn, b, status="ERROR")
        assert [(d["id"], d["reason"]) for d in failed.items] == [(dc_ids[5], "ICCID unknown"),
                                                                  (dc_ids[6], "carrier said no")]
        last = failed.items[1]["last_response"]
        assert last["description"] == "PUT /devices" and last["status"] == "400"
        assert "hunter2" not in last["response"]  # scrubbed
        log = views.device_change_log(conn, b, dc_ids[6])
        assert [r["description"] for r in log] == ["Validation: rejected", "PUT /devices"]
        assert [r[0] for r in views.failed_device_rows(conn, b, chunk=1)] == dc_ids[5:]
        with pytest.raises(bulk_changes.BulkChangeNotFound):
            views.bulk_change(conn, bulk_id + 100)


def _explain(conn, stmt) -> str:
    compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
    return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))


@pytest.mark.postgres
def test_a_100000_device_bulk_change_opens_through_indexes(pg_engine):
    """Every query the page makes for one bulk change reads a page through an index, not the table:
    its cost does not grow with the 100,000 device changes (the timings below are for the record)."""
    n = 100_000
    with pg_engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="Big fleet", integration=Integration.JASPER, tenant_id=1)
        small = _bulk(conn, 1, 10, "PROCESSED")
        bulk_id = _bulk(conn, 1, n, "PROCESSED_WITH_ERRORS", start=1000)
        tbl = t.m2m_device_change
        conn.execute(update(tbl).where(tbl.c.BulkChangeId == bulk_id, tbl.c.Id % 10 != 0).values(Status="PROCESSED"))
        conn.execute(update(tbl).where(tbl.c.BulkChangeId == bulk_id, tbl.c.Id % 10 == 0)
                     .values(Status="API_FAILED", StatusDetails="carrier said 500"))
        conn.execute(insert(t.device_bulk_change_log).from_select(
            ["BulkChangeId", "M2MDeviceChangeId", "LogEntryDescription", "ResponseText", "ResponseStatus",
             "HasErrors", "CreatedDate"],
            select(tbl.c.BulkChangeId, tbl.c.Id, text("'PUT /devices'"), text("'{}'"), text("'200'"), text("false"),
                   text("now()")).where(tbl.c.BulkChangeId == bulk_id)))
    with pg_engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        started = time.perf_counter()
        b = views.bulk_change(conn, bulk_id)
        counts = views.status_counts(conn, b)
        first = views.device_changes(conn, b)
        failed = views.device_changes(conn, b, status="API_FAILED")
        later = views.device_changes(conn, b, status="API_FAILED", after=failed.items[-1]["id"] + 50_000)
        log = views.device_change_log(conn, b, first.items[0]["id"])
        listed = views.list_bulk_changes(conn)
        opened = time.perf_counter() - started
        rows = sum(1 for _ in views.failed_device_rows(conn, b))
        streamed = time.perf_counter() - started - opened
        print(f"\n100,000-device bulk change on PostgreSQL: page data in {opened:.3f} s; "
              f"{rows} failed devices streamed as CSV rows in {streamed:.3f} s")
        assert counts == {"PROCESSED": 90_000, "API_FAILED": 10_000}
        assert len(first.items) == 50 and len(failed.items) == 50 and len(later.items) == 50
        assert all(d["last_response"]["description"] == "PUT /devices" for d in first.items)
        assert [r["description"] for r in log] == ["PUT /devices"] and rows == 10_000
        assert [x["id"] for x in listed.items] == [bulk_id, small]

        tbl = t.m2m_device_change
        page_q = (select(tbl.c.Id).where(tbl.c.BulkChangeId == bulk_id, tbl.c.Id > 5000).order_by(tbl.c.Id).limit(51))
        status_q = (select(tbl.c.Id).where(tbl.c.BulkChangeId == bulk_id, tbl.c.Status == "API_FAILED",
                                           tbl.c.Id > 5000).order_by(tbl.c.Id).limit(51))
        log_t = t.device_bulk_change_log
        log_q = select(log_t.c.Id).where(log_t.c.M2MDeviceChangeId == 777, log_t.c.BulkChangeId == bulk_id)
        # pages come out of an index in Id order and stop at the limit: no table scan, no sort
        for q in (page_q, status_q):
            plan = _explain(conn, q)
            assert plan.startswith("Limit") and "Index" in plan and "Seq Scan" not in plan and "Sort" not in plan, plan
        plan = _explain(conn, log_q)
        assert "IX_DeviceBulkChangeLog_M2MDeviceChange" in plan and "Seq Scan" not in plan, plan
