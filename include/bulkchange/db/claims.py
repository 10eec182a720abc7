"""Who processes a bulk change: claiming NEW ones (one conditional UPDATE, so of two claimers one
wins), re-claiming stale claims, and the lease one processing run holds on it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

from sqlalchemy import and_, func, select, update
from sqlalchemy.engine import Connection, Engine

from bulkchange.db import schema as t
from bulkchange.db.bulk_changes import BulkChangeNotFound
from bulkchange.db.outbox import record_status_change
from bulkchange.db.retry import run_in_transaction
from bulkchange.models import BulkStatus, utcnow


# --- claiming ----------------------------------------------------------------------------
def new_bulk_changes_query(limit: int = 50):
    """NEW bulk changes to claim, at most ``limit``, taking turns between accounts: every service
    provider's oldest first, then every one's second oldest, and so on (oldest first within a turn).
    One account with hundreds of waiting changes cannot keep another account's first one out of a
    poke, nor put it behind all of its own runs in Airflow's queue."""
    bc = t.device_bulk_change
    turn = func.row_number().over(partition_by=bc.c.ServiceProviderId, order_by=bc.c.Id).label("turn")
    waiting = (select(bc.c.Id, turn)
               .where(bc.c.Status == BulkStatus.NEW.value, bc.c.ProcessChanges == True)  # noqa: E712
               .subquery("waiting"))
    return select(waiting.c.Id).order_by(waiting.c.turn, waiting.c.Id).limit(limit)


def find_new_bulk_change_ids(conn: Connection, limit: int = 50) -> list[int]:
    return [int(i) for i in conn.execute(new_bulk_changes_query(limit)).scalars()]


def find_stale_claims(conn: Connection, older_than: datetime, limit: int = 50) -> list[int]:
    """Bulk changes claimed (PENDING) before ``older_than`` whose processing never started."""
    bc = t.device_bulk_change
    q = (select(bc.c.Id).where(bc.c.Status == BulkStatus.PENDING.value, bc.c.ModifiedDate < older_than,
                               bc.c.ProcessChanges == True)  # noqa: E712
         .order_by(bc.c.Id).limit(limit))
    return [int(i) for i in conn.execute(q).scalars()]


def claim_bulk_change(conn: Connection, bulk_id: int, *, from_status: str = BulkStatus.NEW.value,
                      claimed_before: datetime | None = None) -> bool:
    """NEW -> PENDING as one conditional UPDATE: of two concurrent claimers exactly one wins.

    With ``from_status=PENDING`` and ``claimed_before`` it re-claims a stale claim the same way."""
    bc = t.device_bulk_change
    # a bulk change the portal holds (ProcessChanges = 0) is never claimed, whoever asks
    stmt = update(bc).where(bc.c.Id == bulk_id, bc.c.Status == from_status, bc.c.ProcessChanges == True)  # noqa: E712
    if claimed_before is not None:
        stmt = stmt.where(bc.c.ModifiedDate < claimed_before)
    res = conn.execute(stmt.values(Status=BulkStatus.PENDING.value, ModifiedDate=utcnow()))
    won = res.rowcount == 1
    if won and from_status != BulkStatus.PENDING.value:
        record_status_change(conn, bulk_id, from_status, BulkStatus.PENDING)
    return won


def claim_portal_enqueued(conn: Connection, bulk_id: int) -> bool:
    """PROCESSING as the legacy portal leaves a bulk change when it puts it on the SQS queue (it sets
    PROCESSING on enqueue) -> PENDING, as one conditional UPDATE, like ``claim_bulk_change``.

    Never started here is told by ``ModifiedDate``: our column (the portal does not write it),
    set by every status change the pipeline makes, so a bulk change this pipeline set PROCESSING
    is never taken again. Only the SQS entry calls this: a message announces the bulk change."""
    bc = t.device_bulk_change
    res = conn.execute(update(bc).where(bc.c.Id == bulk_id, bc.c.Status == BulkStatus.PROCESSING.value,
                                        bc.c.ModifiedDate.is_(None), bc.c.ProcessChanges == True)  # noqa: E712
                       .values(Status=BulkStatus.PENDING.value, ModifiedDate=utcnow()))
    won = res.rowcount == 1
    if won:
        record_status_change(conn, bulk_id, BulkStatus.PROCESSING.value, BulkStatus.PENDING)
    return won


def never_started(bc=None):
    """A bulk change no one has started: NEW, or PROCESSING as the legacy portal enqueued it."""
    from sqlalchemy import or_

    bc = bc if bc is not None else t.device_bulk_change
    return or_(bc.c.Status == BulkStatus.NEW.value,
               and_(bc.c.Status == BulkStatus.PROCESSING.value, bc.c.ModifiedDate.is_(None)))


def claim_each(engine: Engine, bulk_ids: Sequence[int]) -> list[int]:
    """Claim each of ``bulk_ids`` (NEW -> PENDING) in its own short transaction; return the won ids."""
    return [bulk_id for bulk_id in bulk_ids if run_in_transaction(
        engine, lambda conn, i=bulk_id: claim_bulk_change(conn, i), what=f"claiming {bulk_id}")]


def claim_new_bulk_changes(engine: Engine, limit: int = 50) -> list[int]:
    """Find NEW bulk changes and claim each in its own short transaction; return the won ids."""
    with engine.connect() as conn:
        candidates = find_new_bulk_change_ids(conn, limit)
    return claim_each(engine, candidates)


def reclaim_stale(engine: Engine, older_than: datetime, limit: int = 50) -> list[int]:
    """Claims whose launch was lost (the trigger failed after the claim): claim them again."""
    with engine.connect() as conn:
        candidates = find_stale_claims(conn, older_than, limit)
    won = []
    for bulk_id in candidates:
        if run_in_transaction(engine, lambda conn, i=bulk_id: claim_bulk_change(
                conn, i, from_status=BulkStatus.PENDING.value, claimed_before=older_than), what=f"re-claiming {bulk_id}"):
            won.append(bulk_id)
    return won


# --- ownership: one processing run per bulk change ------------------------------------------
@dataclass(frozen=True)
class Lease:
    """Who processes a bulk change (``owner``: "bulk_change_process:<run id>") and until when, or
    nobody (``owner`` None)."""
    owner: str | None
    expires: datetime | None


def load_lease(conn: Connection, bulk_id: int) -> Lease:
    bc = t.device_bulk_change
    row = conn.execute(select(bc.c.LeaseOwner, bc.c.LeaseExpiresDate).where(bc.c.Id == bulk_id)).first()
    if row is None:
        raise BulkChangeNotFound(f"bulk change {bulk_id} does not exist")
    return Lease(row[0], row[1])


def acquire_lease(conn: Connection, bulk_id: int, owner: str, until: datetime, *,
                  now: datetime | None = None) -> Lease:
    """Take, renew or take over the bulk change for ``owner`` until ``until``, as one conditional
    UPDATE: it succeeds when nobody holds it, ``owner`` already holds it (a retry of the same run)
    or the holder's lease has expired (a dead run). Returns the lease as it is now: the caller owns
    the bulk change if ``lease.owner == owner``. The UPDATE's row lock is held until the caller's
    transaction ends, so writes made in that transaction are made as the owner."""
    bc = t.device_bulk_change
    now = now or utcnow()
    free = (bc.c.LeaseOwner.is_(None) | (bc.c.LeaseOwner == owner) | bc.c.LeaseExpiresDate.is_(None)
            | (bc.c.LeaseExpiresDate < now))
    won = conn.execute(update(bc).where(bc.c.Id == bulk_id, free)
                       .values(LeaseOwner=owner, LeaseExpiresDate=until)).rowcount == 1
    return Lease(owner, until) if won else load_lease(conn, bulk_id)


def release_lease(conn: Connection, bulk_id: int, owner: str) -> bool:
    """Give the bulk change up (only ``owner`` can). Returns whether it was held by ``owner``."""
    bc = t.device_bulk_change
    return conn.execute(update(bc).where(bc.c.Id == bulk_id, bc.c.LeaseOwner == owner)
                        .values(LeaseOwner=None, LeaseExpiresDate=None)).rowcount == 1


def bulk_changes_in_progress(conn: Connection, service_provider_id: int) -> list[int]:
    """Bulk changes of the service provider a live run is processing now (PROCESSING under a hold
    that has not expired): their batch tasks are calling the carrier account."""
    b = t.device_bulk_change
    q = select(b.c.Id).where(b.c.ServiceProviderId == service_provider_id, b.c.Status == BulkStatus.PROCESSING.value,
                             b.c.LeaseExpiresDate > utcnow()).order_by(b.c.Id)
    return [int(i) for i in conn.execute(q).scalars()]
