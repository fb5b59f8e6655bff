"""The message log writer: lines from any thread, written in batches, purged by age, bounded."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime
from typing import Any

import pytest

from gateway.audit import MessageLogSettings, MessageLogWriter
from gateway.clock import ManualClock
from gateway.store import MessageEntry, MessageFilter, Store


def line(at: float, n: int) -> MessageEntry:
    return MessageEntry(at, "received", "cht", "stored", f"p{n}", f"r{n}")


async def test_lines_noted_from_threads_are_all_written(sqlite_store: Store) -> None:
    writer = MessageLogWriter(sqlite_store, MessageLogSettings(), ManualClock())
    def send(k: int) -> None:
        for i in range(100):
            writer.note([line(1.0, k * 100 + i)])

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.pending == 400 and writer.flush_now()
    assert writer.pending == 0 and writer.written == 400
    subjects = {entry.entry.subject for entry in sqlite_store.message_search(MessageFilter(), limit=1000)}
    assert subjects == {f"r{n}" for n in range(400)}


async def test_the_task_flushes_and_stop_writes_the_rest(sqlite_store: Store) -> None:
    clock = ManualClock()
    writer = MessageLogWriter(sqlite_store, MessageLogSettings(flush_seconds=1.0), clock)
    await writer.start()
    writer.note([line(clock.now(), 1)])
    for _ in range(200):
        if writer.written:
            break
        await clock.advance(1.0)
        await asyncio.sleep(0.01)  # purge and flush run on a worker thread
    assert writer.written == 1
    writer.note([line(clock.now(), 2)])
    await writer.stop()
    assert len(sqlite_store.message_search(MessageFilter())) == 2


async def test_old_lines_are_purged_by_retention(sqlite_store: Store) -> None:
    clock = ManualClock()
    sqlite_store.message_append([line(clock.now() - 31 * 86_400, 1), line(clock.now() - 29 * 86_400, 2)])
    writer = MessageLogWriter(sqlite_store, MessageLogSettings(retention_days=30), clock)
    assert writer.purge_now() == 1
    assert [e.entry.subject for e in sqlite_store.message_search(MessageFilter())] == ["r2"]
    assert MessageLogWriter(sqlite_store, MessageLogSettings(retention_days=0), clock).purge_now() == 0


async def test_a_full_buffer_drops_the_oldest_lines(sqlite_store: Store) -> None:
    writer = MessageLogWriter(sqlite_store, MessageLogSettings(buffer_size=100), ManualClock())
    writer.note([line(1.0, n) for n in range(150)])
    assert writer.pending == 100 and writer.dropped == 50
    writer.flush_now()
    kept = sorted(int(str(e.entry.subject)[1:]) for e in sqlite_store.message_search(MessageFilter(), limit=500))
    assert kept == list(range(50, 150))


class RefusingStore:
    """A message log whose database refuses writes until told otherwise."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.refuse = True

    def message_append(self, entries: Any) -> int:
        if self.refuse:
            raise OSError("disk full")
        return self.store.message_append(entries)

    def message_search(self, where: MessageFilter, *, limit: int = 100) -> Any:
        return self.store.message_search(where, limit=limit)

    def message_counts(self, since: float) -> Any:
        return self.store.message_counts(since)

    def message_purge(self, before: datetime) -> int:
        return self.store.message_purge(before)


async def test_a_failed_flush_keeps_the_lines_in_order(sqlite_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    refusing = RefusingStore(sqlite_store)
    writer = MessageLogWriter(refusing, MessageLogSettings(), ManualClock())
    writer.note([line(1.0, 1), line(2.0, 2)])
    assert not writer.flush_now() and writer.pending == 2
    assert "OSError" in caplog.text and "r1" not in caplog.text
    writer.note([line(3.0, 3)])
    refusing.refuse = False
    assert writer.flush_now()
    assert [e.entry.subject for e in sqlite_store.message_search(MessageFilter())] == ["r3", "r2", "r1"]
