"""The three steps of processing one bulk change: prepare, process a batch, finalize.

Plain Python over an SQLAlchemy engine and a carrier client: the Airflow tasks call these, and
so do the tests and benchmarks without a scheduler. The DB is the source of truth for progress,
so every step is idempotent:

* ``prepare`` validates only device changes not validated yet (NEW), queues the valid ones as
  PENDING and plans batches over every unsettled device change (PENDING and PROCESSING).
* ``process_batch`` only touches device changes of its batch that are still PENDING or
  PROCESSING. A device found in PROCESSING was handed to the carrier by an attempt that died
  before recording the outcome: the handler asks the carrier before sending again, so a retried
  task never sends the same change twice.
* ``finalize`` sweeps whatever no batch settled to ERROR with the reason and rolls the bulk
  change up, so it never stays PROCESSING after its run.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from sqlalchemy.engine import Engine

from bulkchange.batch_sizing import calls_per_device, choose_batch_size
from bulkchange.carriers.base import CallLog
from bulkchange.changes import UnsupportedChange, get_handler
from bulkchange.changes.revio_service import RevioServiceStep, check_rev_request
from bulkchange.db import bulk_changes, claims, device_changes, inventory, progress as progress_db
from bulkchange.db.retry import run_in_transaction
from bulkchange.engine import run_batch
from bulkchange.journal import CallJournal
from bulkchange.models import (
    BatchPlan,
    BulkChange,
    BulkStatus,
    DeviceChange,
    DeviceChangeStatus,
    DeviceResult,
    PortalType,
    RequestParseError,
    parse_change_request,
    utcnow,
)
from bulkchange.rules import RuleError, iccid_problem
from bulkchange.sanitize import sanitize_text
from bulkchange.settings import get_settings
from bulkchange.tenancy import attach_references, identifier_problem, reference_problem

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 100
# A batch records its results (and the bulk change's progress counts) every RECORD_EVERY devices or
# RECORD_INTERVAL_S seconds while it runs (process_batch): with batches sized by time
# (batch_sizing), a task may hold thousands of devices.
RECORD_EVERY = get_settings().record_every
RECORD_INTERVAL_S = get_settings().record_interval_seconds
DEFAULT_PROCESSED_BY = "bulk_change_process"


class BulkChangeHeld(RuntimeError):
    """The portal holds this bulk change (``ProcessChanges = 0``): no entry may launch it."""


def held_message(bulk_id: int) -> str:
    return (f"bulk change {bulk_id} is held by the portal (ProcessChanges = 0): not processed, nothing changed; "
            f"it is processed once the portal releases it (ProcessChanges = 1)")


# --- ownership: one run per bulk change (docs/operations.md, "One run per bulk change") ----------
# How long a run's hold on a bulk change lasts without renewal. A live run renews it (prepare, every
# batch task while it works, every poll of wait_for_carrier); a run that died holds the bulk change
# until then, after which another run may take it over.
LEASE_TTL = get_settings().lease_ttl


class NotOwner(RuntimeError):
    """Another live run processes this bulk change; the message names it. Nothing was changed."""


def run_owner(run_id: str) -> str:
    """The lease owner of an Airflow run: the same for every attempt of its tasks (retry, clear)."""
    return f"{DEFAULT_PROCESSED_BY}:{run_id}"


def owned_message(bulk_id: int, lease: claims.Lease, me: str) -> str:
    until = f"{lease.expires:%Y-%m-%d %H:%M:%S} UTC" if lease.expires else "no expiry"
    return (f"bulk change {bulk_id} is being processed by another run ({lease.owner}, hold renewed while it "
            f"works, expires {until}): {me} stops here and changes nothing. If that run is dead, trigger "
            f"again after the hold expires")


def take_ownership(engine: Engine, bulk_id: int, owner: str, *, until: datetime | None = None) -> claims.Lease:
    """Take (or renew, for the same run) the bulk change for ``owner``; NotOwner if another live
    run holds it. ``until``: how long to hold it (default: now + LEASE_TTL)."""
    with engine.begin() as conn:
        return _own(conn, bulk_id, owner, until=until)


def _own(conn, bulk_id: int, owner: str, *, until: datetime | None = None) -> claims.Lease:
    lease = claims.acquire_lease(conn, bulk_id, owner, until or utcnow() + LEASE_TTL)
    if lease.owner != owner:
        raise NotOwner(owned_message(bulk_id, lease, owner))
    return lease


class LeaseKeeper:
    """Renews ``owner``'s hold on a bulk change every ``LEASE_TTL / 3`` from a background thread
    while a batch works. ``lost`` says why, once another run has taken the bulk change over (the
    batch then sends nothing more). A failed renewal (DB unreachable) is logged and tried again."""

    def __init__(self, engine: Engine, bulk_id: int, owner: str, *, every: float | None = None):
        self.engine, self.bulk_id, self.owner = engine, bulk_id, owner
        self.every = every if every is not None else LEASE_TTL.total_seconds() / 3
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{bulk_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                take_ownership(self.engine, self.bulk_id, self.owner)
            except NotOwner as exc:
                self.lost = str(exc)
                log.error("%s", exc)
                return
            except Exception as exc:  # noqa: BLE001  the next renewal may work; the lease lasts LEASE_TTL
                log.warning("could not renew the hold on bulk change %s: %s", self.bulk_id, exc)

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class PrepareResult:
    bulk_change_id: int
    batches: list[BatchPlan]
    rejected: int = 0
    queued: int = 0
    preflight_error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    batch_size: int = DEFAULT_BATCH_SIZE  # as planned (batch_sizing: chosen, or the override within max_batches)
    notes: list[str] = field(default_factory=list)  # what prepare decided that the run log should say


def preflight_problem(bulk: BulkChange, credentials_problem: str | None) -> str | None:
    """A reason that stops the whole bulk change before any carrier call, or None."""
    try:
        handler_cls = get_handler(bulk.change_type, bulk.integration)
    except UnsupportedChange as exc:
        return str(exc)
    if not handler_cls.needs_carrier:
        # no carrier call: neither the carrier connection nor the carrier write switch matters
        # (the legacy DB-only flows did not check WriteIsEnabled either)
        return None
    if not bulk.write_is_enabled:
        return (f"writes are disabled for service provider {bulk.service_provider_id} "
                f"({bulk.service_provider_name}): WriteIsEnabled is off")
    return credentials_problem


def prepare(engine: Engine, bulk_id: int, *, batch_size: int | None = DEFAULT_BATCH_SIZE,
            credentials_problem: str | None = None, processed_by: str = DEFAULT_PROCESSED_BY,
            owner: str | None = None, max_batches: int | None = None,
            rate_limit_per_s: float | None = None, batch_concurrency: int = 1) -> PrepareResult:
    """``owner``: the run preparing (NotOwner, nothing changed, if another run holds the bulk change).
    ``batch_size`` None: chosen from the account's ``rate_limit_per_s`` and the run's
    ``batch_concurrency`` (``batch_sizing.choose_batch_size``); a number overrides that.
    ``max_batches``: at most this many batches (Airflow's ``[core] max_map_length``): the batch size
    is raised to fit. ``notes`` says what was chosen and why."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    with engine.begin() as conn:
        if owner is not None:
            _own(conn, bulk_id, owner)
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        if not bulk.process_changes:
            raise BulkChangeHeld(held_message(bulk_id))
        if bulk.status == BulkStatus.NEW:
            # Launched by hand without the sensor: claim it so the sensor cannot launch it again.
            claims.claim_bulk_change(conn, bulk_id)
        bulk_changes.set_bulk_status(conn, bulk_id, BulkStatus.PROCESSING)

        problem = preflight_problem(bulk, credentials_problem)
        if problem:
            open_ids = [dc.id for dc in device_changes.load_device_changes(conn, bulk,
                                                                           statuses=device_changes.UNSETTLED)]
            device_changes.reject_device_changes(conn, bulk, [(i, problem) for i in open_ids],
                                                 processed_by=processed_by, description="Pre-flight: not processed")
            status, counts = progress_db.rollup(conn, bulk)
            if status != BulkStatus.PROCESSING:
                bulk_changes.set_bulk_status(conn, bulk_id, status, error_message=problem)
            log.error("bulk change %s stopped before any carrier call: %s", bulk_id, problem)
            return PrepareResult(bulk_id, [], rejected=len(open_ids), preflight_error=problem, counts=counts)

        handler_cls = get_handler(bulk.change_type, bulk.integration)
        handler = handler_cls(bulk, None, handler_cls.load_context(conn, bulk))
        # one change at a time per device: queuing is serialized per service provider, so of two
        # bulk changes on the same device the one queued second sees the first (busy_devices)
        device_changes.lock_service_provider(conn, bulk.service_provider_id)
        new = device_changes.load_device_changes(conn, bulk, statuses=[DeviceChangeStatus.NEW.value])
        devices = inventory.load_devices(conn, bulk, new)
        attach_references(conn, handler, bulk, new)
        seen = _already_queued_identifiers(conn, bulk)
        rejected: list[tuple[int, str]] = []
        accepted: list[int] = []
        for dc in new:
            reason = _validate(handler, bulk, dc, devices, seen)
            if reason:
                rejected.append((dc.id, reason))
            else:
                accepted.append(dc.id)
        ok = set(accepted)
        busy = _busy_elsewhere(conn, bulk, [dc for dc in new if dc.id in ok])
        if busy:
            rejected.extend(busy)
            taken = {i for i, _ in busy}
            accepted = [i for i in accepted if i not in taken]
        device_changes.reject_device_changes(conn, bulk, rejected, processed_by=processed_by)
        device_changes.mark_device_changes(conn, bulk, accepted, DeviceChangeStatus.PENDING,
                                           details="validated, queued", processed_by=processed_by,
                                           only_statuses=[DeviceChangeStatus.NEW.value])
        todo = [dc.id for dc in device_changes.load_device_changes(
            conn, bulk, statuses=[DeviceChangeStatus.PENDING.value, DeviceChangeStatus.PROCESSING.value])]
        counts = progress_db.status_counts(conn, bulk)
        progress_db.write_progress(conn, bulk_id, counts)
        if not todo:
            status, counts = progress_db.rollup(conn, bulk)
    choice = choose_batch_size(len(todo), rate_limit_per_s=rate_limit_per_s,
                               calls_per_device=calls_per_device(handler_cls), batch_concurrency=batch_concurrency,
                               override=batch_size, max_batches=max_batches)
    batch_size = choice.size
    notes = [choice.reason]
    log.info("bulk change %s: %s", bulk_id, choice.reason)
    batches = plan_batches(bulk, todo, batch_size)
    log.info("bulk change %s: %d rejected, %d queued, %d device changes in %d batches of up to %d",
             bulk_id, len(rejected), len(accepted), len(todo), len(batches), batch_size)
    return PrepareResult(bulk_id, batches, rejected=len(rejected), queued=len(accepted), counts=counts,
                         batch_size=batch_size, notes=notes)


def busy_reason(iccid: str, busy: device_changes.BusyDevice) -> str:
    return (f"device {iccid} has an unsettled change in bulk change {busy.bulk_change_id} (device change "
            f"{busy.device_change_id}, {busy.status}): one change at a time per device; not processed, "
            f"retry this device once bulk change {busy.bulk_change_id} has finished")


def _busy_elsewhere(conn, bulk: BulkChange, changes: list[DeviceChange]) -> list[tuple[int, str]]:
    """(id, reason) of the device changes whose device another bulk change has in flight."""
    busy = device_changes.busy_devices(conn, bulk, [dc.iccid for dc in changes if dc.iccid],
                                       msisdns=[dc.msisdn for dc in changes if not dc.iccid and dc.msisdn])
    return [(dc.id, busy_reason(_identity(dc), busy[_identity(dc)])) for dc in changes if _identity(dc) in busy]


def _already_queued_identifiers(conn, bulk: BulkChange) -> dict[str, int]:
    """Identifiers of device changes that passed validation earlier (for duplicate detection on re-runs)."""
    done = device_changes.load_device_changes(conn, bulk, statuses=[s.value for s in DeviceChangeStatus
                                                                    if s not in (DeviceChangeStatus.NEW,
                                                                                 DeviceChangeStatus.ERROR)])
    return {_identity(dc): dc.id for dc in done if _identity(dc)}


def _identity(dc: DeviceChange) -> str | None:
    return dc.iccid or dc.msisdn or dc.device_identifier


def identity_problem(handler, bulk: BulkChange, dc: DeviceChange) -> str | None:
    """Why the device change does not say which device it is, or None. A row needs a valid ICCID,
    except a Mobility row of a change type that finds its line by number (``ChangeHandler.by_msisdn``):
    an MSISDN alone is enough there (its format is checked with the other identifiers)."""
    if dc.iccid or not dc.msisdn:
        return iccid_problem(dc.iccid)
    if bulk.portal_type == PortalType.MOBILITY and handler.by_msisdn:
        return None
    kind = "a Mobility" if bulk.portal_type == PortalType.MOBILITY else "an M2M"
    return (f"ICCID is missing: {kind} {bulk.change_type.value} device change on {bulk.integration.value} "
            f"needs the SIM's ICCID (MSISDN {dc.msisdn} alone does not identify the device for it)")


def _validate(handler, bulk: BulkChange, dc: DeviceChange, devices: inventory.DeviceIndex,
              seen: dict[str, int]) -> str | None:
    problem = identity_problem(handler, bulk, dc) or identifier_problem(dc, devices.find(dc))
    if problem:
        return problem
    key = _identity(dc)
    if key in seen:
        return f"duplicate: device {key} is already in this bulk change as device change {seen[key]}"
    try:
        request = parse_change_request(bulk.change_type, dc.change_request)
        handler.validate(dc, request, devices.find(dc))
        check_rev_request(request)
        problem = reference_problem(bulk, request, getattr(handler, "tenant_refs", None))
        if problem:
            return problem
    except (RequestParseError, RuleError) as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001  one device's bad input never stops the others
        return sanitize_text(f"could not be validated: {type(exc).__name__}: {exc}", limit=1000)
    seen[key] = dc.id
    return None


def plan_batches(bulk: BulkChange, ids: list[int], batch_size: int) -> list[BatchPlan]:
    ids = sorted(ids)
    batches = []
    total = len(ids)
    for start in range(0, total, batch_size):
        chunk = ids[start:start + batch_size]
        end = start + len(chunk)
        label = (f"{bulk.integration.value} devices {start + 1}-{end} of {total}" if len(chunk) > 1
                 else f"{bulk.integration.value} device {start + 1} of {total}")
        batches.append(BatchPlan(bulk_change_id=bulk.id, device_change_ids=chunk, label=label))
    return batches


@dataclass
class BatchSummary:
    bulk_change_id: int
    counts: dict[str, int]
    skipped: int
    calls: int
    progress: dict[str, int] = field(default_factory=dict)  # the whole bulk change after this batch

    def as_dict(self) -> dict[str, Any]:
        return {"bulk_change_id": self.bulk_change_id, "counts": self.counts, "skipped": self.skipped,
                "calls": self.calls, "progress": self.progress}


def process_batch(engine: Engine, bulk_id: int, device_change_ids: list[int], *, client: Any,
                  max_parallel: int = 10, processed_by: str = DEFAULT_PROCESSED_BY,
                  on_progress: Callable[[int, int], None] | None = None,
                  revio_client: Any = None, revio_problem: str | None = None,
                  owner: str | None = None, record_every: int = RECORD_EVERY,
                  record_interval_s: float = RECORD_INTERVAL_S) -> BatchSummary:
    """``revio_client``: the service provider's Rev.io client, for requests that ask for a Rev.io
    service after the carrier change (``revio_problem`` says why there is none, if there is none).

    ``owner``: the run this batch belongs to (``run_owner``). The batch starts only while that run
    holds the bulk change (NotOwner otherwise, before anything is sent), keeps the hold renewed while
    it works and sends nothing more once another run has taken the bulk change over. Outcomes are
    recorded only for device changes still PROCESSING (compare-and-set), whoever else records.

    Results are recorded (with the bulk change's progress counts) while the batch runs, every
    ``record_every`` devices or ``record_interval_s`` seconds, whichever comes first, and the rest
    when it ends: a batch of thousands of devices moves the portal's progress bar as it goes, and a
    task that dies leaves only its last group to check at the carrier."""
    with engine.begin() as conn:
        if owner is not None:  # first statement: the lease row stays locked until the batch is handed over
            _own(conn, bulk_id, owner)
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        handler_cls = get_handler(bulk.change_type, bulk.integration)
        context = handler_cls.load_context(conn, bulk)
        open_changes = device_changes.load_device_changes(
            conn, bulk, ids=device_change_ids,
            statuses=[DeviceChangeStatus.PENDING.value, DeviceChangeStatus.PROCESSING.value])
        devices = inventory.load_devices(conn, bulk, open_changes)
        refs_holder = type("Refs", (), {})()
        attach_references(conn, refs_holder, bulk, open_changes)
        interrupted = {dc.id for dc in open_changes if dc.status == DeviceChangeStatus.PROCESSING}
        # ... and those whose last carrier attempt on record is unknown (its answer lost, or left in
        # flight by a task that died): the carrier is asked before anything is sent again
        check_first = interrupted | device_changes.unsettled_call_ids(conn, bulk, [dc.id for dc in open_changes])
        # rows an earlier attempt left IN_FLIGHT (it died mid-call): closed with what the check finds
        stale_rows = device_changes.in_flight_log_ids(conn, bulk, sorted(check_first))
        # Hand them to the carrier: from here on an outcome may exist at the carrier before we know it.
        device_changes.mark_device_changes(conn, bulk, [dc.id for dc in open_changes if dc.id not in interrupted],
                                           DeviceChangeStatus.PROCESSING, processed_by=processed_by,
                                           details="sent to carrier", only_statuses=[DeviceChangeStatus.PENDING.value])
    skipped = len(device_change_ids) - len(open_changes)
    handler = handler_cls(bulk, client, context)
    handler.revio_client, handler.revio_problem = revio_client, revio_problem  # for Rev.io-editing handlers
    rev_step = RevioServiceStep(bulk, revio_client, revio_problem)
    handler.rev_step = rev_step  # change types whose own work is a Rev.io service (customer assignment)
    # every attempt's log row is written before its request leaves (bulkchange.journal)
    journal = CallJournal.for_batch(engine, bulk, processed_by=processed_by)
    logs: dict[int, CallLog] = {dc.id: CallLog(journal=journal, device_change_id=dc.id) for dc in open_changes}
    done = [0]
    keeper = LeaseKeeper(engine, bulk_id, owner) if owner is not None else None

    def taken_over() -> bool:
        return keeper is not None and keeper.lost is not None

    def prepared(dc: DeviceChange):
        """(request, device) for a device change, or the DeviceResult that rejects it."""
        device = devices.find(dc)
        try:
            problem = identifier_problem(dc, device)  # the device row may have changed since prepare
            request = parse_change_request(bulk.change_type, dc.change_request)
            problem = problem or reference_problem(bulk, request, refs_holder.tenant_refs)
            if problem:
                raise RuleError(problem)
            handler.validate(dc, request, device)
        except (RequestParseError, RuleError) as exc:  # the device changed since prepare
            return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.ERROR, details=str(exc),
                                device_id=device.id if device else None, iccid=dc.iccid)
        return request, device

    def work(dc: DeviceChange) -> DeviceResult | None:
        if taken_over():  # left PROCESSING: the new owner checks it at the carrier
            return None
        ready = prepared(dc)
        if isinstance(ready, DeviceResult):
            return ready
        request, device = ready
        result = handler.apply(dc, request, device, verify_first=dc.id in check_first, log=logs[dc.id])
        return rev_step.after(dc, request, device, result, logs[dc.id])

    def work_group(group: list[DeviceChange]) -> list[DeviceResult]:
        results: list[DeviceResult] = []
        entries = []
        if taken_over():
            return results
        for dc in group:
            ready = prepared(dc)
            if isinstance(ready, DeviceResult):
                results.append(ready)
            elif dc.id in check_first:  # checked one by one at the carrier before resending
                result = handler.apply(dc, ready[0], ready[1], verify_first=True, log=logs[dc.id])
                results.append(rev_step.after(dc, ready[0], ready[1], result, logs[dc.id]))
            else:
                entries.append((dc, ready[0], ready[1]))
        if entries:
            # the group's calls are logged once, on its first device change
            grouped = handler.apply_group(entries, log=logs[entries[0][0].id])
            results.extend(rev_step.after(dc, request, device, result, logs[dc.id])
                           for (dc, request, device), result in zip(entries, grouped))
        return results

    def close(conn, part: list[DeviceResult]):  # one recording transaction, run again if it loses a deadlock
        # compare-and-set: a device change another recorder settled meanwhile is not recorded again
        recorded = device_changes.record_results(
            conn, bulk, part, {r.device_change_id: logs[r.device_change_id].records
                               for r in part if r.device_change_id in logs},
            processed_by=processed_by, only_from=[DeviceChangeStatus.PROCESSING.value])
        handler.record(conn, recorded, processed_by=processed_by)
        rev_step.record(conn, recorded)
        device_changes.resolve_in_flight(conn, stale_rows, recorded)
        # progress for the portal's bar, in the transaction that records the results
        return recorded, progress_db.refresh_progress(conn, bulk)

    recorder = _GroupRecorder(lambda part: run_in_transaction(
        engine, lambda conn: close(conn, part), what=f"bulk change {bulk_id}: recording a batch"),
        journal, every=record_every, interval_s=record_interval_s)

    def progress(item, outcome) -> None:
        done[0] += len(item) if isinstance(item, list) else 1
        if outcome.error is None and outcome.value is not None:
            recorder.add(outcome.value if isinstance(outcome.value, list) else [outcome.value])
        if on_progress is not None:
            on_progress(min(done[0], len(open_changes)), len(open_changes))

    results = []
    if keeper is not None:
        keeper.__enter__()
    try:
        try:
            _run_all(handler_cls, open_changes, work, work_group, max_parallel, progress, results)
        finally:
            if keeper is not None:
                keeper.__exit__()
        journal.flush()  # the answers still queued, before the results that rely on them
    finally:
        journal.close()
    results = [r for r in results if r is not None]
    recorded_ids = recorder.recorded_ids()
    log.info("bulk change %s: %d carrier attempts journaled in %d log transactions; %d results recorded "
             "while the batch ran, in %d groups", bulk_id, journal.intents, journal.round_trips,
             len(recorded_ids), recorder.groups)
    last, progress = run_in_transaction(engine, lambda conn: close(conn, [r for r in results
                                                                          if r.device_change_id not in recorded_ids]),
                                        what=f"bulk change {bulk_id}: recording a batch")
    results = recorder.recorded + last
    progress = progress or recorder.progress
    if taken_over():
        raise NotOwner(keeper.lost)
    if any(r.carrier_request_id and not r.status.is_settled for r in results):
        # a carrier that reported by callback before this batch recorded the request (ThingSpace):
        # settled now from the stored callback, as the callback itself would have
        from bulkchange import reconcile

        reconcile.settle_bulk(engine, bulk_id, client, count_checks=False, only_reported=True,
                              processed_by=processed_by, revio_client=revio_client, revio_problem=revio_problem)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    calls = sum(len(c.records) for c in logs.values())
    return BatchSummary(bulk_id, counts, skipped, calls, progress)


class _GroupRecorder:
    """Records a batch's results in groups while the batch runs (``process_batch``).

    ``add`` is called from the batch's worker threads as each device finishes; once ``every``
    results wait, or ``interval_s`` has passed since the last group, the thread that added the last
    one records the group (the journal's queued answers first: a result's log rows go before it),
    while the other threads go on calling the carrier. One group at a time; a group whose recording
    fails is left for the batch's closing transaction (logged, never lost)."""

    def __init__(self, record: Callable[[list[DeviceResult]], tuple[list[DeviceResult], dict]], journal,
                 *, every: int, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self._record, self._journal, self._clock = record, journal, clock
        self.every, self.interval_s = max(1, int(every)), float(interval_s)
        self._lock = threading.Lock()
        self._busy = threading.Lock()
        self._waiting: list[DeviceResult] = []
        self._last = clock()
        self.recorded: list[DeviceResult] = []  # what the groups recorded (compare-and-set winners)
        self._taken: set[int] = set()           # device change ids the groups handled
        self.progress: dict[str, int] = {}
        self.groups = 0

    def add(self, results: list[DeviceResult]) -> None:
        with self._lock:
            self._waiting.extend(r for r in results if r is not None)
            due = len(self._waiting) >= self.every or (self._waiting and self._clock() - self._last >= self.interval_s)
        if due and self._busy.acquire(blocking=False):
            try:
                self._flush()
            finally:
                self._busy.release()

    def _flush(self) -> None:
        with self._lock:
            part, self._waiting = self._waiting, []
            self._last = self._clock()
        if not part:
            return
        try:
            self._journal.flush()
            recorded, progress = self._record(part)
        except Exception as exc:  # noqa: BLE001  the batch's closing transaction records them
            log.warning("could not record %d results while the batch ran (recorded at its end): %s",
                        len(part), sanitize_text(f"{type(exc).__name__}: {exc}", limit=500))
            return
        with self._lock:
            self.recorded.extend(recorded)
            self._taken.update(r.device_change_id for r in part)
            self.progress = progress
            self.groups += 1

    def recorded_ids(self) -> set[int]:
        """Device change ids a group recorded or found settled by another recorder (compare-and-set
        losers): the closing transaction records only the others. Call after the batch's threads ended."""
        with self._lock:
            return set(self._taken)


def _run_all(handler_cls, open_changes, work, work_group, max_parallel, progress, results) -> None:
    if handler_cls.group_size > 1:
        groups = [open_changes[i:i + handler_cls.group_size]
                  for i in range(0, len(open_changes), handler_cls.group_size)]
        for outcome in run_batch(groups, work_group, max_parallel=max_parallel, on_result=progress):
            if outcome.error is not None:
                results.extend(_internal_error(dc, outcome.error) for dc in outcome.item)
            else:
                results.extend(outcome.value)
    else:
        for outcome in run_batch(open_changes, work, max_parallel=max_parallel, on_result=progress):
            # a bug or DB-free failure inside the handler: never lose the device
            results.append(_internal_error(outcome.item, outcome.error) if outcome.error is not None
                           else outcome.value)


def _internal_error(dc: DeviceChange, error: BaseException) -> DeviceResult:
    return DeviceResult(device_change_id=dc.id, status=DeviceChangeStatus.ERROR, iccid=dc.iccid,
                        details=sanitize_text(f"internal error: {type(error).__name__}: {error}"))


# Why finalize sweeps a device change no batch settled, by what the run had done with it. Only
# SWEPT_REASON (a batch task took the device and died) may hide a carrier call: a retry checks
# those at the carrier first (reset_failed matches its first 60 characters).
SWEPT_REASON = ("not processed: the batch task handling this device failed before recording an outcome "
                "(a carrier call may have been sent); see the task log and retry the failed devices")
NOT_STARTED_REASON = ("not processed: no batch task took this device (the run ended before its batch "
                      "started); no carrier call was sent; retry the failed devices")
NOT_VALIDATED_REASON = ("not processed: not validated (prepare did not finish); no carrier call was sent; "
                        "retry the failed devices")


class RetryRefused(ValueError):
    """A retry asked for a bulk change whose run is not over; the message says why."""


RETRYABLE_BULK_STATUSES = (BulkStatus.PROCESSED_WITH_ERRORS, BulkStatus.ERROR, BulkStatus.WAITING_FOR_CARRIER,
                           BulkStatus.PROCESSED)


def reset_failed(engine: Engine, bulk_id: int, *, processed_by: str = DEFAULT_PROCESSED_BY) -> list[int]:
    """Queue the API_FAILED / ERROR device changes of a finished bulk change again (as NEW, so
    ``prepare`` validates them again; those swept by ``finalize`` after their batch task died as
    PROCESSING, so they are checked at the carrier before anything is sent again); the others and
    every earlier log row are kept. Returns the ids queued. The bulk change goes back to
    PROCESSING with ``prepare``."""
    with engine.begin() as conn:
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        if bulk.status not in RETRYABLE_BULK_STATUSES:
            raise RetryRefused(f"bulk change {bulk_id} is {bulk.status.value}: retry its failed devices once "
                               f"its run is over (status one of "
                               f"{', '.join(s.value for s in RETRYABLE_BULK_STATUSES)})")
        ids = progress_db.reset_failed_device_changes(conn, bulk, processed_by=processed_by,
                                                      interrupted_prefix=SWEPT_REASON[:60])
        progress_db.refresh_progress(conn, bulk)
    log.info("bulk change %s: %d failed device changes queued again", bulk_id, len(ids))
    return ids


def finalize(engine: Engine, bulk_id: int, *, processed_by: str = DEFAULT_PROCESSED_BY,
             unsettled_reason: str | None = None, owner: str | None = None,
             outcome_message: str | None = None) -> dict[str, Any]:
    """Settle the bulk change at the end of its run. Never leaves it PROCESSING.

    Device changes no batch settled are swept to ERROR saying what really happened to them
    (``unsettled_reason`` overrides): PROCESSING ones were taken by a batch task that died (a call
    may have reached the carrier), PENDING ones by no task (nothing was sent), NEW ones were never
    validated. ``owner``: the run finalizing; NotOwner (nothing changed) if another run has taken
    the bulk change over, else the hold is released with the roll-up. ``swept_by_reason`` counts
    the sweep per reason. ``outcome_message`` (e.g. an approval's rejection) replaces the counted
    "N of M device changes failed" as the bulk change's ErrorMessage when it ends with errors."""
    def close(conn):  # run again if it loses a deadlock (db.retry)
        if owner is not None:
            _own(conn, bulk_id, owner)
        bulk = bulk_changes.load_bulk_change(conn, bulk_id)
        by_reason: dict[str, int] = {}
        for status, reason in ((DeviceChangeStatus.PROCESSING, SWEPT_REASON),
                               (DeviceChangeStatus.PENDING, NOT_STARTED_REASON),
                               (DeviceChangeStatus.NEW, NOT_VALIDATED_REASON)):
            ids = [dc.id for dc in device_changes.load_device_changes(conn, bulk, statuses=[status.value])]
            if ids:
                reason = unsettled_reason or reason
                device_changes.reject_device_changes(conn, bulk, [(i, reason) for i in ids], processed_by=processed_by,
                                                     description="Finalize: not processed")
                by_reason[reason] = by_reason.get(reason, 0) + len(ids)
        status, counts = progress_db.rollup(conn, bulk)
        if outcome_message and status in (BulkStatus.ERROR, BulkStatus.PROCESSED_WITH_ERRORS):
            bulk_changes.set_bulk_status(conn, bulk_id, status, error_message=outcome_message[:1000])
        if owner is not None:
            claims.release_lease(conn, bulk_id, owner)
        return by_reason, status, counts
    by_reason, status, counts = run_in_transaction(engine, close, what=f"bulk change {bulk_id}: roll-up")
    return {"bulk_change_id": bulk_id, "status": status.value, "counts": counts,
            "swept": sum(by_reason.values()), "swept_by_reason": by_reason}


def summary_line(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no device changes"

