"""``MessageLogWriter``: the message log's buffer, written to the store off the request and delivery paths.

Ingest (on its request threads) and the delivery worker (on the event loop) hand it lines with
``note``; a background task writes them every ``flush_seconds`` in one transaction and purges
lines older than ``retention_days``. The log is for operators, not a record of care: when the
store cannot take lines for long, the oldest are dropped (counted, logged) rather than holding
up ingest or delivery. Processes that never start it (one-shot CLI commands) write what they
noted when they close (``flush_now``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio.to_thread

from gateway.clock import Clock, wait_event
from gateway.store import MessageEntry, MessageLog

from .settings import MessageLogSettings

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0


class MessageLogWriter:
    """Buffers message log lines and writes them in batches (see the module docstring)."""

    def __init__(self, store: MessageLog, settings: MessageLogSettings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._buffer: deque[MessageEntry] = deque()
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._failures = 0
        self.written = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        """Lines not yet written."""
        return len(self._buffer)

    def note(self, entries: Sequence[MessageEntry]) -> None:
        """Buffer lines (from any thread); past ``buffer_size`` the oldest are dropped."""
        with self._lock:
            self._buffer.extend(entries)
            over = len(self._buffer) - self.settings.buffer_size
            for _ in range(max(over, 0)):
                self._buffer.popleft()
            if over > 0:
                self.dropped += over
        if over > 0:
            log.warning("message log buffer full: dropped %d lines (%d so far)", over, self.dropped)

    def _take(self) -> list[MessageEntry]:
        with self._lock:
            batch = list(self._buffer)
            self._buffer.clear()
        return batch

    def _put_back(self, batch: list[MessageEntry]) -> None:
        with self._lock:
            self._buffer.extendleft(reversed(batch))

    def flush_now(self) -> bool:
        """Write every buffered line (blocking); False if the store refused them (they stay buffered)."""
        batch = self._take()
        if not batch:
            return True
        try:
            self.written += self.store.message_append(batch)
        except Exception as exc:  # any store failure: keep the lines for the next try; the type is enough
            self._put_back(batch)
            log.error("message log flush failed (%s); %d lines kept", type(exc).__name__, len(batch))
            return False
        return True

    def purge_now(self) -> int:
        """Delete lines older than the retention period (blocking; none when it is 0)."""
        days = self.settings.retention_days
        if days <= 0:
            return 0
        before = datetime.fromtimestamp(self.clock.now() - days * 86_400, UTC)
        try:
            return self.store.message_purge(before)
        except Exception as exc:  # retried at the next purge time
            log.error("message log purge failed (%s)", type(exc).__name__)
            return 0

    async def start(self) -> None:
        """Start the flush and purge task."""
        if self._task is None:
            self._wake = asyncio.Event()
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="message-log-writer")

    async def stop(self) -> None:
        """Stop the task and write what is buffered."""
        self._stopping = True
        if self._task is not None:
            assert self._wake is not None
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await anyio.to_thread.run_sync(self.flush_now)

    async def _run(self) -> None:
        assert self._wake is not None
        next_purge = self.clock.now()
        while not self._stopping:
            if self.clock.now() >= next_purge:
                await anyio.to_thread.run_sync(self.purge_now)
                next_purge = self.clock.now() + self.settings.purge_every_seconds
            wait = self.settings.flush_seconds
            if self._failures:
                wait = min(_MAX_BACKOFF, wait * 2**self._failures)
            await wait_event(self._wake, wait, self.clock)
            self._wake.clear()
            ok = await anyio.to_thread.run_sync(self.flush_now)
            self._failures = 0 if ok else self._failures + 1
