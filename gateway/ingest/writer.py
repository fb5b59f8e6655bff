"""The ingest writer: one thread that commits mapped records, in arrival order, in groups.

Request threads map and validate records and prepare their writes (CPU work, see
``IngestService``); the writer thread commits them. While it waits for the database (the
write itself, the fsync of the commit: outside the GIL) request threads go on preparing,
so on two cores the two overlap, within one large request and across concurrent ones.

Whatever is queued when the writer takes work is committed in one transaction when the
records agree (a resource two of them write must be identical in both; see
``RecordGroup.takes``), up to ``GROUP_RECORDS``: group commit. Concurrent senders that post
one record per request (CHT outbound push, CommCare repeaters) then share a commit, and its
fsync, instead of queueing for one each. When the queue is empty but other requests are still
preparing their records, the writer waits up to ``COMMIT_DELAY`` for them (PostgreSQL's
``commit_delay`` idea): records committed together share the index pages a commit rewrites,
and a lone record dirties ~190 of them. On the ingest benchmark (8 senders of one record
each, SQLite) that took ~30% off the writer's busy time and added ~10% records/s; a lone
sender never waits. A transaction the database refuses is retried per
request, and per record within it, by ``IngestService`` (only the refused record is
quarantined). Each request still gets its answer only after its records are committed.

After a request's write fails for a reason that is not its records' (the database), its
writes still queued are skipped and the request re-raises that failure, as it would have
stopped there had it written inline.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError
from gateway.fhir import PreparedTransaction

if TYPE_CHECKING:
    from gateway.ingest.body import ReceivedRecord
    from gateway.ingest.results import RecordResult
    from gateway.ingest.retractions import OutputChange

__all__ = [
    "BATCH_RECORDS", "COMMIT_DELAY", "GROUP_RECORDS", "IngestWriter", "PendingRecord", "RecordGroup", "RequestWrites",
]

#: Records of one request per transaction at most (its batches queue one after another).
BATCH_RECORDS = 100
#: Records of queued batches the writer commits in one transaction at most.
GROUP_RECORDS = 400
#: Seconds the writer waits for requests still preparing records before it commits without them.
COMMIT_DELAY = 0.003


@dataclass(slots=True)
class PendingRecord:
    """A mapped, validated record waiting for its commit, and where its result goes."""

    position: int
    received: ReceivedRecord
    key: str | None
    bundle: dict[str, Any]
    prepared: PreparedTransaction
    source: str
    results: list[RecordResult | None]
    change: OutputChange  # what the record produces now, for retractions


@dataclass(slots=True)
class RecordGroup:
    """Records that can share a transaction: a resource several of them make must be identical
    in all (two versions of one Patient go to separate transactions, in order, so the later
    record wins as it would one by one)."""

    records: list[PendingRecord] = field(default_factory=list)
    contents: dict[str, Any] = field(default_factory=dict)
    keys: set[tuple[str, str]] = field(default_factory=set)

    def takes(self, record: PendingRecord) -> bool:
        """Whether ``record`` agrees with every record already in the group (and is not another
        version of one of them: retractions compare a record with its previous version)."""
        if (record.source, record.change.record_key) in self.keys:
            return False
        contents = self.contents
        return all(
            contents.get(entry["request"]["url"], entry["resource"]) == entry["resource"]
            for entry in record.bundle["entry"]
        )

    def add(self, record: PendingRecord) -> None:
        """Add a record (after ``takes`` said yes)."""
        self.records.append(record)
        self.keys.add((record.source, record.change.record_key))
        for entry in record.bundle["entry"]:
            self.contents.setdefault(entry["request"]["url"], entry["resource"])


@dataclass(slots=True, eq=False)
class _Request:
    failed: BaseException | None = None


@dataclass(slots=True)
class _Task:
    request: _Request
    done: Future[None]
    records: list[PendingRecord] | None = None  # a batch to commit
    call: Callable[[], None] | None = None  # anything else to run in order (a quarantine)


StoreGroup = Callable[[list[PendingRecord]], None]


class IngestWriter:
    """The writer thread (see the module docstring); ``store(records)`` commits records."""

    def __init__(
        self, store: StoreGroup, group_records: int = GROUP_RECORDS, commit_delay: float = COMMIT_DELAY
    ) -> None:
        self._store = store
        self._group_records = group_records
        self._commit_delay = commit_delay
        self._active: set[_Request] = set()  # requests started and not yet finished
        self._active_lock = threading.Lock()
        self.transactions = 0  # commits attempted for batches (grouped or not), for tests and metrics
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Finish the queued writes and stop the thread."""
        self._queue.put(None)
        self._thread.join()

    def request(self) -> RequestWrites:
        """The queue of one request's writes (the request counts as active until its ``wait()``)."""
        return RequestWrites(self)

    def _started(self, request: _Request) -> None:
        with self._active_lock:
            self._active.add(request)

    def _finished(self, request: _Request) -> None:
        with self._active_lock:
            self._active.discard(request)

    def _others_preparing(self, group: list[_Task]) -> bool:
        """Whether a request that may still queue records has nothing in ``group`` yet."""
        in_group = {task.request for task in group}
        with self._active_lock:
            return not self._active <= in_group

    def _submit(self, task: _Task) -> None:
        self._queue.put(task)

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        held: deque[_Task | None] = deque()  # taken from the queue but not groupable with the last group
        while True:
            task = held.popleft() if held else self._queue.get()
            if task is None:
                return
            group = [task]
            if task.records is not None and not held:
                self._gather(group, held)
            self._execute(group)

    def _gather(self, group: list[_Task], held: deque[_Task | None]) -> None:
        first = group[0]
        assert first.records is not None
        records = RecordGroup()
        for record in first.records:
            records.add(record)
        deadline: float | None = None
        while len(records.records) < self._group_records:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                if not self._commit_delay or not self._others_preparing(group):
                    return
                now = time.monotonic()
                deadline = now + self._commit_delay if deadline is None else deadline
                if now >= deadline:
                    return
                try:
                    task = self._queue.get(timeout=deadline - now)
                except queue.Empty:
                    return
            if (
                task is None
                or task.records is None
                or len(records.records) + len(task.records) > self._group_records
                or not all(records.takes(record) for record in task.records)
            ):
                held.append(task)  # keeps its place: it runs next
                return
            for record in task.records:
                records.add(record)
            group.append(task)

    def _execute(self, group: list[_Task]) -> None:
        live = [task for task in group if task.request.failed is None]
        for task in group:
            if task.request.failed is not None:
                task.done.set_result(None)  # its request stopped: skip
        if not live:
            return
        if len(live) > 1:
            try:
                self.transactions += 1
                self._store([record for task in live for record in task.records or ()])
            except BaseException:  # noqa: BLE001 - each request retries alone and gets its own failure
                pass
            else:
                for task in live:
                    task.done.set_result(None)
                return
        for task in live:
            if task.request.failed is not None:  # an earlier task of its request just failed
                task.done.set_result(None)
                continue
            try:
                if task.records is not None:
                    self.transactions += 1
                    self._store(task.records)
                elif task.call is not None:
                    task.call()
            except BaseException as exc:  # noqa: BLE001 - handed to the request thread
                task.request.failed = exc
                task.done.set_exception(exc)
            else:
                task.done.set_result(None)


class RequestWrites:
    """One request's writes, queued on the writer in order; ``wait()`` raises the first failure."""

    def __init__(self, writer: IngestWriter) -> None:
        self._writer = writer
        self._request = _Request()
        self._futures: list[Future[None]] = []
        writer._started(self._request)

    def store(self, records: list[PendingRecord]) -> None:
        """Queue a batch of records for commit."""
        self._queue(_Task(self._request, Future(), records=records))

    def run(self, call: Callable[[], None]) -> None:
        """Queue any other write (runs after everything queued before it)."""
        self._queue(_Task(self._request, Future(), call=call))

    def _queue(self, task: _Task) -> None:
        if self._request.failed is not None:
            raise self._request.failed
        self._futures.append(task.done)
        self._writer._submit(task)

    def abandon(self) -> None:
        """The request failed on its own thread: skip whatever it still has queued."""
        if self._request.failed is None:
            self._request.failed = GatewayError("the request was abandoned")
        self.wait(raise_failure=False)

    def wait(self, *, raise_failure: bool = True) -> None:
        """Wait until every queued write ran (or was skipped)."""
        for future in self._futures:
            future.exception()  # waits; the failure is kept on the request
        self._writer._finished(self._request)
        if raise_failure and self._request.failed is not None:
            raise self._request.failed
