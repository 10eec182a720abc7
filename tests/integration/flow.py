"""Running a seeded bulk change through the core in tests: ``process`` (prepare, every batch,
finalize) and ``settle_until_done`` (reconciliation rounds until nothing waits)."""
import time

from bulkchange import processing, reconcile


def process(engine, bulk_id, client, batch_size=100):
    plan = processing.prepare(engine, bulk_id, batch_size=batch_size)
    for b in plan.batches:
        processing.process_batch(engine, bulk_id, b.device_change_ids, client=client)
    return processing.finalize(engine, bulk_id)


def settle_until_done(engine, bulk_id, client, rounds=60, **kw):
    """Settle rounds until nothing waits; the summary's ``settled`` adds up every round."""
    total: dict[str, int] = {}
    for _ in range(rounds):
        s = reconcile.settle_bulk(engine, bulk_id, client, **kw)
        for k, v in s.settled.items():
            total[k] = total.get(k, 0) + v
        if s.still_waiting == 0:
            break
        time.sleep(0.1)
    s.settled = total
    return s
