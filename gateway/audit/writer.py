"""``AuditWriter``: a bounded in-process buffer of access records, flushed to the store in batches.

Requests only append to the buffer (``record``); a background task turns records into
AuditEvents and writes them (``AuditTrail.audit_append``) every ``flush_seconds`` or
``batch_size`` records, on a worker thread, and flushes what is left on ``stop``.

A full buffer applies backpressure rather than losing audit: the request that finds it
full waits (up to ``full_wait_seconds``) for a flush to make room. Only if the store stays
unwritable that long is the oldest record dropped, counted in ``dropped`` and logged as an
error. A failed flush keeps its records, logs the error type (never the message: it may
quote data) and retries with backoff.

The same task purges AuditEvents older than ``retention_days`` when it starts and then
every ``purge_every_seconds`` (of its clock, so tests move a manual one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from datetime import UTC, datetime

import anyio.to_thread

from gateway.clock import Clock, wait_event
from gateway.store import AuditTrail

from .events import audit_event, audit_index
from .record import AccessRecord
from .settings import AuditSettings

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0
_STOP_ATTEMPTS = 3


class AuditWriter:
    """Buffers access records and writes them as AuditEvents off the request path."""

    def __init__(self, store: AuditTrail, settings: AuditSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._buffer: deque[AccessRecord] = deque()
        self._wake: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failures = 0
        self.written = 0  # AuditEvents stored
        self.waited = 0  # requests that found the buffer full and waited
        self.dropped = 0  # records lost because the buffer stayed full
        self.purged = 0  # AuditEvents deleted by retention

    @property
    def pending(self) -> int:
        """Records not yet written."""
        return len(self._buffer)

    async def record(self, record: AccessRecord) -> None:
        """Buffer one record; when the buffer is full wait for room, then drop the oldest."""
        if len(self._buffer) >= self.settings.buffer_size:
            await self._wait_for_room()
        self._buffer.append(record)
        if len(self._buffer) >= self.settings.batch_size and self._wake is not None:
            self._wake.set()

    async def _wait_for_room(self) -> None:
        self.waited += 1
        if self._wake is not None and self._room is not None:
            self._room.clear()
            if not self._failures:  # while the store fails, the backoff decides when to try again
                self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), self.settings.full_wait_seconds)
        if len(self._buffer) >= self.settings.buffer_size:
            self._buffer.popleft()
            self.dropped += 1
            log.error("audit buffer full for %.1f s: dropped the oldest record (%d dropped so far)",
                      self.settings.full_wait_seconds, self.dropped)

    async def start(self) -> None:
        """Start the flush (and purge) task."""
        if self._task is not None:
            return
        self._wake, self._room = asyncio.Event(), asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Stop the task and write every buffered record (a few attempts if the store fails)."""
        self._stopping = True
        if self._task is not None:
            # Woken, the task finishes the flush or purge it is in and leaves its loop; cancelling
            # it instead could lose a batch taken from the buffer but not yet written.
            if self._wake is not None:
                self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _ in range(_STOP_ATTEMPTS):
            while self._buffer and await self.flush():
                pass
            if not self._buffer:
                return
        log.error("audit: %d records could not be written at shutdown", len(self._buffer))

    async def flush(self) -> bool:
        """Write up to one batch of buffered records; False if the store refused it (they stay buffered)."""
        if not self._buffer:
            return True
        batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), self.settings.batch_size))]
        if self._room is not None:
            self._room.set()
        try:
            written = await anyio.to_thread.run_sync(self._write, batch)
        except Exception as exc:  # any store failure: keep the records and retry; the type is enough to log
            self._buffer.extendleft(reversed(batch))
            self._failures += 1
            log.error("audit flush failed (%s); %d records kept for retry", type(exc).__name__, len(self._buffer))
            return False
        self._failures = 0
        self.written += written
        return True

    def _write(self, batch: list[AccessRecord]) -> int:
        limit = self.settings.max_entities
        events = [audit_event(record, limit) for record in batch]
        return self.store.audit_append(events, [audit_index(event) for event in events])

    async def purge(self) -> int:
        """Delete AuditEvents older than the retention period (none when it is 0)."""
        days = self.settings.retention_days
        if days <= 0:
            return 0
        before = datetime.fromtimestamp(self.clock.now() - days * 86_400, UTC)
        try:
            count = await anyio.to_thread.run_sync(self.store.audit_purge, before)
        except Exception as exc:  # retried at the next purge time
            log.error("audit purge failed (%s)", type(exc).__name__)
            return 0
        self.purged += count
        if count:
            log.info("audit: purged %d AuditEvents older than %d days", count, days)
        return count

    async def _run(self) -> None:
        assert self._wake is not None
        next_purge = self.clock.now()
        while not self._stopping:
            if self.clock.now() >= next_purge:
                await self.purge()
                next_purge = self.clock.now() + self.settings.purge_every_seconds
            wait = min(self.settings.flush_seconds, max(next_purge - self.clock.now(), 0.0))
            if self._failures:
                wait = min(_MAX_BACKOFF, self.settings.flush_seconds * 2**self._failures)
            await wait_event(self._wake, wait, self.clock)
            self._wake.clear()
            while self._buffer and await self.flush():
                pass
