"""ProcessChanges = 0 (the portal holds a bulk change) is honoured by every entry: the sensor's
claim, an SQS message and a manual bulk_change_process run all leave it untouched, with a clear
message; released (ProcessChanges = 1), it is processed as usual."""
import pytest
from sqlalchemy import select, update

from bulkchange import legacy_queue, processing
from bulkchange.db import claims
from bulkchange.db import schema as t
from bulkchange.db import seed
from bulkchange.models import ChangeType, Integration

BC = t.device_bulk_change


def _held(engine):
    iccid = seed.make_iccid(640_001)
    with engine.begin() as conn:
        seed.add_service_provider(conn, sp_id=1, name="jasper", integration=Integration.JASPER, tenant_id=1)
        seed.add_devices(conn, [{"ICCID": iccid, "Status": "ACTIVATED"}], sp_id=1, tenant_id=1)
        return seed.add_bulk_change(conn, sp_id=1, tenant_id=1, change_type=ChangeType.STATUS_UPDATE,
                                    process_changes=False,
                                    requests=[{"ICCID": iccid, "ChangeRequest": {"UpdateStatus": "Suspend"}}])


def _state(engine, bulk_id):
    with engine.connect() as conn:
        bulk = conn.execute(select(BC.c.Status).where(BC.c.Id == bulk_id)).scalar_one()
        devices = conn.execute(select(t.m2m_device_change.c.Status)).scalars().all()
    return bulk, devices


def test_a_held_bulk_change_is_launched_by_no_entry(amop_engine):
    bulk_id = _held(amop_engine)
    # the sensor
    assert claims.claim_new_bulk_changes(amop_engine) == []
    with amop_engine.begin() as conn:
        assert claims.claim_bulk_change(conn, bulk_id) is False  # whoever asks
    # an SQS message naming it
    message = {"MessageId": "m-1", "Body": "bulk change", "MessageAttributes": {
        "BulkChangeId": {"StringValue": str(bulk_id), "DataType": "String"}}}
    with amop_engine.begin() as conn:
        decision = legacy_queue.decide(conn, legacy_queue.parse_message(message))
    assert decision.action == legacy_queue.ACK and "held by the portal (ProcessChanges = 0)" in decision.reason
    # a manual bulk_change_process run
    with pytest.raises(processing.BulkChangeHeld, match="ProcessChanges = 0"):
        processing.prepare(amop_engine, bulk_id)
    assert _state(amop_engine, bulk_id) == ("NEW", ["NEW"])  # nothing changed


def test_released_it_is_processed(amop_engine):
    bulk_id = _held(amop_engine)
    with amop_engine.begin() as conn:
        conn.execute(update(BC).where(BC.c.Id == bulk_id).values(ProcessChanges=True))
    assert claims.claim_new_bulk_changes(amop_engine) == [bulk_id]
    assert processing.prepare(amop_engine, bulk_id).queued == 1
