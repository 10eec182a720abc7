"""The call journal: every carrier attempt has its log row in the DB before its request leaves.

The batch used to keep its ``CallRecord``s in memory and write their ``DeviceBulkChangeLog`` rows
when it recorded its results, so a task killed with ``kill -9`` lost the rows of calls that had
reached the carrier. With the journal:

* **before** an attempt is sent, its row is inserted as ``IN_FLIGHT`` (``Outcome = unknown``,
  ``ResponseStatus = IN_FLIGHT``, an error text saying no answer was recorded) and committed; the
  request leaves only once that commit returned (``begin``). If the row cannot be written, nothing
  is sent.
* **after** the attempt, its answer (status, response or error, duration, outcome) is queued
  (``end``) and written with the next group, at the latest when the batch records its results
  (``flush``). A task killed in between leaves the row ``IN_FLIGHT``: exactly what is known.

A device change whose last carrier row is ``unknown`` (in flight, or an answer lost) is checked at
the carrier before anything is sent again (``device_changes.unsettled_call_ids``; ``process_batch``).

**Group commit.** One short transaction writes every intent waiting at that moment plus every
answer queued since the last write: while one thread's write is in progress the others' intents
queue up and go together in the next one, so the batch's threads pay one round trip per small
group of attempts, and an answer never costs a round trip of its own. No transaction is held
across an HTTP call: the writes happen between attempts, in their own transactions.
"""
from __future__ import annotations

import threading
from typing import Callable, Sequence

from sqlalchemy.engine import Engine

from bulkchange.carriers.base import CallRecord, Journal
from bulkchange.models import BulkChange

WriteFn = Callable[[Sequence[tuple[int, CallRecord]], Sequence[CallRecord], Sequence[tuple[int, CallRecord]]],
                   list[int]]


class JournalError(RuntimeError):
    """The attempt's log row could not be written: the request was not sent."""


class _Slot:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None


class CallJournal(Journal):
    """Group-committed, write-ahead log rows for one batch's carrier attempts (thread-safe)."""

    def __init__(self, write: WriteFn, close: Callable[[], None] = lambda: None):
        self._write = write
        self._close = close  # what the writes hold, given back by ``close()``
        self._lock = threading.RLock()
        # threads waiting for a write to end, each on its own condition (of the same lock) with what
        # it waits for: a write wakes exactly those it finished plus one to lead the next write,
        # instead of every waiting thread (each wake-up is a context switch; docs/profile-r3.md)
        self._waiting: list[tuple[Callable[[], bool], threading.Condition]] = []
        self._intents: list[tuple[int, CallRecord, _Slot]] = []
        self._ends: list[CallRecord] = []
        self._finished: list[tuple[int, CallRecord]] = []
        self._writing = False
        self.round_trips = 0   # transactions written
        self.intents = 0       # attempts journaled before being sent

    @classmethod
    def for_batch(cls, engine: Engine, bulk: BulkChange, *, processed_by: str) -> "CallJournal":
        """The batch's journal, writing through one held connection (``db.connect.HeldConnection``:
        no checkout, so no ping round trip, per write); ``close()`` gives it back."""
        from bulkchange.db import device_changes
        from bulkchange.db.connect import HeldConnection

        held = HeldConnection(engine)  # used by one write at a time: the writes never overlap

        def write(intents, ends, finished):
            return device_changes.journal_write(held, bulk, processed_by=processed_by, intents=intents,
                                                completions=ends, finished=finished)
        return cls(write, held.close)

    def close(self) -> None:
        """The batch is over (after ``flush``): give back what the writes held."""
        self._close()

    # -- Journal ---------------------------------------------------------------------------------
    def begin(self, device_change_id: int, record: CallRecord) -> None:
        slot = _Slot()
        with self._lock:
            self._intents.append((device_change_id, record, slot))
            self._lead_until(lambda: slot.done)
        if slot.error is not None:
            raise JournalError(f"the call log row could not be written, so the request was not sent: "
                               f"{type(slot.error).__name__}: {slot.error}") from slot.error
        record.journaled = True

    def end(self, record: CallRecord) -> None:
        with self._lock:
            self._ends.append(record)

    def write(self, device_change_id: int, record: CallRecord) -> None:
        record.journaled = True
        with self._lock:
            self._finished.append((device_change_id, record))

    def flush(self) -> None:
        """Write every answer still queued (the batch calls this before recording its results)."""
        with self._lock:
            self._lead_until(lambda: not (self._ends or self._finished or self._intents), raise_errors=True)

    # -- group commit ----------------------------------------------------------------------------
    def _lead_until(self, finished: Callable[[], bool], raise_errors: bool = False) -> None:
        """Caller holds the lock. Wait while another thread writes; otherwise write everything
        queued (becoming this round's leader) until ``finished()``."""
        while not finished():
            if self._writing:
                mine = (finished, threading.Condition(self._lock))
                self._waiting.append(mine)
                try:
                    mine[1].wait()
                finally:
                    if mine in self._waiting:
                        self._waiting.remove(mine)
                continue
            self._writing = True
            intents, ends, done = self._intents, self._ends, self._finished
            self._intents, self._ends, self._finished = [], [], []
            error: BaseException | None = None
            ids: list[int] = []
            self._lock.release()
            try:
                ids = self._write([(i, r) for i, r, _ in intents], ends, done)
            except BaseException as exc:  # noqa: BLE001 - handed to every waiting sender
                error = exc
            finally:
                self._lock.acquire()
                self._writing = False
                self.round_trips += 1
                if error is None:
                    for (_, record, slot), log_id in zip(intents, ids):
                        record.log_id = log_id
                        slot.done = True
                    self.intents += len(intents)
                else:
                    for _, _, slot in intents:
                        slot.error, slot.done = error, True
                    # answers are kept for the next write (an update by row id: safe to repeat)
                    self._ends[:0], self._finished[:0] = ends, done
                self._wake()
            if error is not None and raise_errors:
                raise JournalError(f"call log rows could not be written: {type(error).__name__}: {error}") \
                    from error

    def _wake(self) -> None:
        """Caller holds the lock, a write just ended: wake each waiting thread whose wait is over,
        and one more to write what is queued (it leads the next write)."""
        leader_woken = False
        for entry in list(self._waiting):
            finished, cond = entry
            if finished():
                self._waiting.remove(entry)
                cond.notify()
            elif not leader_woken:
                self._waiting.remove(entry)
                cond.notify()
                leader_woken = True
