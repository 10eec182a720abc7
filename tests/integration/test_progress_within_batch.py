"""A batch records its results and the bulk change's progress counts while it runs, not only at its
end (batches sized by time hold thousands of devices). Jasper simulator over HTTP; SQLite and
PostgreSQL."""
from sqlalchemy import func, select

from bulkchange import processing
from bulkchange.db import bulk_changes, progress
from bulkchange.db import schema as t


def _prepared(engine, fleet_factory, n, status="Suspend", **kw):
    fleet = fleet_factory(n, **kw)
    bulk_id = fleet.bulk(status)
    plan = processing.prepare(engine, bulk_id, batch_size=n)
    assert len(plan.batches) == 1
    return bulk_id, plan.batches[0].device_change_ids


def test_progress_moves_every_n_devices_inside_one_batch(amop_engine, fleet_factory, make_client):
    bulk_id, ids = _prepared(amop_engine, fleet_factory, 20)
    seen: list[tuple[int, int]] = []

    def on_progress(done, total):  # the portal's view while the batch still runs
        with amop_engine.connect() as conn:
            seen.append((done, progress.load_progress(conn, bulk_id)["ProcessedCount"]))

    summary = processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), max_parallel=1,
                                       on_progress=on_progress, record_every=5, record_interval_s=3600)
    # one thread: the group of 5 is recorded by the thread that finished its fifth device
    assert seen == [(d, d - d % 5) for d in range(1, 21)]
    assert summary.counts == {"PROCESSED": 20} and summary.progress["ProcessedCount"] == 20


def test_progress_moves_after_the_interval_inside_one_batch(amop_engine, fleet_factory, make_client):
    bulk_id, ids = _prepared(amop_engine, fleet_factory, 6)
    seen = []

    def on_progress(done, total):
        with amop_engine.connect() as conn:
            seen.append(progress.load_progress(conn, bulk_id)["ProcessedCount"])

    processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), max_parallel=1,
                             on_progress=on_progress, record_every=1000, record_interval_s=0)
    assert seen == [1, 2, 3, 4, 5, 6]


def test_groups_recorded_while_threads_run_record_each_device_once(amop_engine, fleet_factory, make_client, jasper):
    n = 60
    # "Deactivated": the rate plan first, then the status (two calls per device, from several threads)
    bulk_id, ids = _prepared(amop_engine, fleet_factory, n, "Deactivated", comm_plan="COMM-1")
    summary = processing.process_batch(amop_engine, bulk_id, ids, client=make_client(), max_parallel=8,
                                       record_every=7, record_interval_s=3600)
    assert summary.counts == {"PROCESSED": n} and summary.calls == 2 * n
    hist, log = t.device_status_history, t.device_bulk_change_log
    with amop_engine.connect() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        assert progress.status_counts(conn, bulk) == {"PROCESSED": n}
        assert progress.load_progress(conn, bulk_id) == {"TotalCount": n, "ProcessedCount": n, "ErrorCount": 0,
                                                         "PendingCount": 0}
        per_device = conn.execute(select(hist.c.ICCID, func.count()).where(hist.c.BulkChangeId == bulk_id)
                                  .group_by(hist.c.ICCID)).all()
        assert len(per_device) == n and {c for _, c in per_device} == {1}
        rows = conn.execute(select(log.c.M2MDeviceChangeId, log.c.ResponseStatus)
                            .where(log.c.BulkChangeId == bulk_id)).all()
    assert len(rows) == 2 * n and {s for _, s in rows} == {"200"}
    assert len(jasper.calls(method="PUT")) == 2 * n
