"""The call journal's group commit (bulkchange.journal.CallJournal), with many sender threads: every
attempt gets its own row id before ``begin`` returns, attempts queued during a write go together in
the next one, a failed write fails exactly the attempts it carried, and a write wakes only the
threads it concerns (one wake-up per finished sender, plus one leader), not every waiting thread."""
import threading
import time
import types

import pytest

from bulkchange import journal as journal_module
from bulkchange.carriers.base import CallRecord
from bulkchange.journal import CallJournal, JournalError


def _record(n: int) -> CallRecord:
    return CallRecord(f"call {n}", "PUT", f"http://carrier/{n}", f"PUT /{n}")


class _Store:
    """A write function that takes its time, as a database round trip does, and numbers rows."""

    def __init__(self, delay_s: float = 0.01, fail_on: int | None = None):
        self.delay_s, self.fail_on = delay_s, fail_on
        self.lock = threading.Lock()
        self.next_id, self.writes, self.rows, self.answers = 1, 0, {}, []

    def __call__(self, intents, ends, finished):
        time.sleep(self.delay_s)
        with self.lock:
            self.writes += 1
            if self.fail_on is not None and self.writes == self.fail_on:
                raise RuntimeError("database gone")
            ids = []
            for dc_id, record in intents:
                self.rows[self.next_id] = (dc_id, record.description)
                ids.append(self.next_id)
                self.next_id += 1
            self.answers.extend(r.log_id for r in ends)
            return ids


def _senders(journal: CallJournal, n: int, errors: list) -> list[CallRecord]:
    records = [_record(i) for i in range(n)]
    start = threading.Barrier(n)

    def send(i: int) -> None:
        start.wait()
        try:
            journal.begin(i, records[i])
            journal.end(records[i])
        except JournalError as exc:
            errors.append((i, exc))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a sender never got its row: a lost wake-up"
    return records


def test_every_attempt_gets_its_own_row_and_writes_are_grouped():
    store = _Store()
    journal = CallJournal(store)
    errors: list = []
    records = _senders(journal, 40, errors)
    journal.flush()
    assert not errors
    assert sorted(r.log_id for r in records) == list(range(1, 41))
    assert all(store.rows[r.log_id] == (i, r.description) for i, r in enumerate(records))
    assert sorted(store.answers) == list(range(1, 41))  # every answer written, once
    assert journal.intents == 40
    assert store.writes < 40 / 2, f"{store.writes} writes for 40 attempts: no group commit"


def test_a_failed_write_fails_the_attempts_it_carried_and_keeps_the_answers():
    store = _Store(fail_on=2)
    journal = CallJournal(store)
    errors: list = []
    records = _senders(journal, 20, errors)
    journal.flush()
    failed = {i for i, _ in errors}
    assert failed, "the second write failed: its attempts must not be sent"
    assert all(records[i].log_id is None and not records[i].journaled for i in failed)
    sent = [r for i, r in enumerate(records) if i not in failed]
    assert sorted(r.log_id for r in sent) == sorted(store.rows)
    assert sorted(store.answers) == sorted(r.log_id for r in sent)


def test_a_write_wakes_only_the_threads_it_concerns(monkeypatch):
    """Waking every waiting sender after each write cost a context switch per waiting thread per
    write (visible in the CPU per device); a write now wakes each sender it finished and one leader."""
    wakeups = []
    real = threading.Condition

    class Counting(real):
        def wait(self, timeout=None):
            result = super().wait(timeout)
            wakeups.append(1)
            return result

    monkeypatch.setattr(journal_module, "threading",
                        types.SimpleNamespace(Condition=Counting, RLock=threading.RLock, Lock=threading.Lock))
    store = _Store(delay_s=0.02)
    journal = CallJournal(store)
    errors: list = []
    _senders(journal, 30, errors)
    assert not errors
    # each waiting sender wakes once when its row is written, plus at most once to lead a write
    assert len(wakeups) <= 30 + store.writes, (len(wakeups), store.writes)


@pytest.mark.parametrize("n", [1, 3])
def test_few_senders_still_finish(n):
    journal = CallJournal(_Store(delay_s=0))
    errors: list = []
    records = _senders(journal, n, errors)
    journal.flush()
    assert not errors and all(r.log_id for r in records)
