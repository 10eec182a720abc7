"""The notification outbox: every bulk change status change queues its notifications once, in the
transaction that changes the status, whichever place (claim, processing, reconciliation) changes it."""
from sqlalchemy import select

from bulkchange.db import bulk_changes, claims, device_changes, outbox, progress
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import BulkStatus, ChangeType, DeviceChangeStatus, Integration


def _bulk(engine, n=3, sp_id=1):
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=sp_id, name="outbox", integration=Integration.JASPER, tenant_id=1)
        iccids = [seed.make_iccid(90_000 + i) for i in range(n)]
        seed.add_devices(conn, [{"ICCID": i, "Status": "ACTIVATED"} for i in iccids], sp_id=sp_id, tenant_id=1)
        return seed.add_bulk_change(conn, sp_id=sp_id, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    requests=[{"ICCID": i, "ChangeRequest": {"UpdateStatus": "Suspend"}}
                                              for i in iccids])


def _outbox(engine, bulk_id):
    n = t.device_bulk_change_notification
    with engine.connect() as conn:
        return [(r.Channel, r.FromStatus, r.ToStatus, r.State) for r in conn.execute(
            select(n).where(n.c.BulkChangeId == bulk_id).order_by(n.c.Id))]


def test_each_status_change_is_queued_once(amop_engine):
    bulk_id = _bulk(amop_engine)
    with amop_engine.begin() as conn:
        assert claims.claim_bulk_change(conn, bulk_id)
    with amop_engine.begin() as conn:
        assert not claims.claim_bulk_change(conn, bulk_id)  # the loser queues nothing
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)  # same status: no change, nothing queued
    assert _outbox(amop_engine, bulk_id) == [
        ("webhook", "NEW", "PENDING", "PENDING"),
        ("webhook", "PENDING", "PROCESSING", "PENDING"),
    ]


def test_final_status_queues_webhook_and_summary_from_either_rollup(amop_engine):
    """finalize leaves the bulk change WAITING_FOR_CARRIER; the reconciliation's roll-up makes it final.
    Both places roll up again afterwards: the final status is queued exactly once."""
    bulk_id = _bulk(amop_engine, n=2)
    with amop_engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        ids = [dc.id for dc in device_changes.load_device_changes(conn, bulk)]
        device_changes.mark_device_changes(conn, bulk, ids[:1], DeviceChangeStatus.PROCESSED, processed_by="t")
        device_changes.mark_device_changes(conn, bulk, ids[1:], DeviceChangeStatus.PENDING_CARRIER, processed_by="t")
        assert progress.rollup(conn, bulk)[0] == BulkStatus.WAITING_FOR_CARRIER   # finalize
    with amop_engine.begin() as conn:
        assert progress.rollup(conn, bulk)[0] == BulkStatus.WAITING_FOR_CARRIER   # a reconcile pass, still waiting
    with amop_engine.begin() as conn:
        device_changes.mark_device_changes(conn, bulk, ids[1:], DeviceChangeStatus.API_FAILED, processed_by="t")
        assert progress.rollup(conn, bulk)[0] == BulkStatus.PROCESSED_WITH_ERRORS  # reconcile settles the last one
    with amop_engine.begin() as conn:
        assert progress.rollup(conn, bulk)[0] == BulkStatus.PROCESSED_WITH_ERRORS  # finalize re-run
    assert _outbox(amop_engine, bulk_id) == [
        ("webhook", "NEW", "WAITING_FOR_CARRIER", "PENDING"),
        ("webhook", "WAITING_FOR_CARRIER", "PROCESSED_WITH_ERRORS", "PENDING"),
        ("email", "WAITING_FOR_CARRIER", "PROCESSED_WITH_ERRORS", "PENDING"),
    ]


def test_a_notification_is_claimed_by_one_sender(amop_engine):
    bulk_id = _bulk(amop_engine, n=1)
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.ERROR, error_message="x")
    with amop_engine.connect() as conn:
        pending = outbox.pending_notifications(conn, bulk_ids=[bulk_id])
    assert [p.channel for p in pending] == ["webhook", "email"]
    with amop_engine.begin() as conn:
        assert outbox.claim_notification(conn, pending[0].id)
        assert not outbox.claim_notification(conn, pending[0].id)
        outbox.finish_notification(conn, pending[0].id, "SENT")
    with amop_engine.connect() as conn:
        assert [p.id for p in outbox.pending_notifications(conn, bulk_ids=[bulk_id])] == [pending[1].id]
        assert outbox.pending_notifications(conn, bulk_ids=[]) == []


def test_only_the_net_change_of_a_transaction_is_queued(amop_engine):
    """A re-run sets a finished bulk change PROCESSING and rolls it back up in one transaction:
    nobody could see PROCESSING, so nothing is queued; a real change in between still is."""
    bulk_id = _bulk(amop_engine, n=1)
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSED)
    assert _outbox(amop_engine, bulk_id) == [("webhook", "NEW", "PROCESSED", "PENDING"),
                                            ("email", "NEW", "PROCESSED", "PENDING")]
    with amop_engine.begin() as conn:  # re-run: flip and back
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSED)
    assert len(_outbox(amop_engine, bulk_id)) == 2
    with amop_engine.begin() as conn:  # retry: PROCESSING commits, a later transaction finishes
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)
    with amop_engine.begin() as conn:
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSED)
    assert [r[1:3] for r in _outbox(amop_engine, bulk_id)][2:] == [
        ("PROCESSED", "PROCESSING"), ("PROCESSING", "PROCESSED"), ("PROCESSING", "PROCESSED")]
