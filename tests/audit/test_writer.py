"""``AuditWriter``: batches off the request path, backpressure before loss, retries, shutdown, retention."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest

from gateway.audit import AccessRecord, AuditSettings, AuditWriter
from gateway.clock import ManualClock, SystemClock
from gateway.search import IndexRows, QueryParser, default_registry
from gateway.store import Store

PARSER = QueryParser(default_registry(), 20, 1000)
DAY = 86_400.0


def access(patient: str = "p1", client: str = "app") -> AccessRecord:
    record = AccessRecord(time.time(), "read", "R", client=client, status=200)
    record.touched("Patient", patient, 1)
    return record


def audit_count(store: Store, *items: tuple[str, str]) -> int:
    return len(store.search(PARSER.parse("AuditEvent", [*items, ("_count", "1000")])).resources)


class FlakyTrail:
    """An audit trail whose first ``failures`` writes raise, with a message that must not be logged."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[dict[str, Any]]] = []

    def audit_append(self, resources: Sequence[dict[str, Any]], rows: Sequence[IndexRows] | None = None) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("password=hunter2 rejected")
        self.batches.append(list(resources))
        return len(resources)

    def audit_purge(self, before: datetime) -> int:
        return 0


async def test_records_are_written_in_batches_on_time(store: Store) -> None:
    writer = AuditWriter(store, AuditSettings(flush_seconds=0.05, batch_size=3), SystemClock())
    await writer.start()
    for n in range(7):
        await writer.record(access(f"p{n}"))
    for _ in range(100):
        if writer.written == 7:
            break
        await asyncio.sleep(0.02)
    await writer.stop()
    assert writer.written == 7 and audit_count(store) == 7
    assert audit_count(store, ("patient", "Patient/p6")) == 1


async def test_stop_flushes_what_is_buffered(store: Store) -> None:
    writer = AuditWriter(store, AuditSettings(flush_seconds=60, batch_size=2), ManualClock(time.time()))
    await writer.start()
    for n in range(5):
        await writer.record(access(f"p{n}"))
    await writer.stop()
    assert writer.pending == 0 and audit_count(store) == 5


async def test_a_failed_flush_keeps_the_records_and_logs_the_error_type_only(caplog: pytest.LogCaptureFixture) -> None:
    trail = FlakyTrail(failures=2)
    writer = AuditWriter(trail, AuditSettings(), SystemClock())
    await writer.record(access())
    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        assert await writer.flush() is False
        assert await writer.flush() is False
        assert await writer.flush() is True
    assert [len(batch) for batch in trail.batches] == [1] and writer.pending == 0
    assert "ConnectionError" in caplog.text and "hunter2" not in caplog.text


async def test_a_full_buffer_makes_requests_wait_for_a_flush() -> None:
    trail = FlakyTrail()
    writer = AuditWriter(trail, AuditSettings(buffer_size=2, batch_size=10, flush_seconds=60,
                                              full_wait_seconds=5), ManualClock(time.time()))  # fmt: skip
    await writer.start()
    for n in range(5):
        await writer.record(access(f"p{n}"))
    await writer.stop()
    # Each full buffer woke the writer, which flushed; nothing was lost.
    assert writer.waited >= 1 and writer.dropped == 0
    assert sum(len(batch) for batch in trail.batches) == 5


async def test_when_the_store_stays_down_the_oldest_record_is_dropped_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trail = FlakyTrail(failures=1000)
    writer = AuditWriter(trail, AuditSettings(buffer_size=2, full_wait_seconds=0.01), SystemClock())
    with caplog.at_level(logging.ERROR, logger="gateway.audit"):
        for n in range(3):
            await writer.record(access(f"p{n}"))
    assert writer.dropped == 1 and writer.pending == 2
    assert "dropped the oldest" in caplog.text
    trail.failures = 0
    await writer.stop()
    assert [e["entity"][0]["what"]["reference"] for e in trail.batches[0]] == ["Patient/p1", "Patient/p2"]


async def test_retention_purges_at_start_and_then_daily_by_the_injected_clock(store: Store) -> None:
    store.audit_append([{"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"}])
    clock = ManualClock(time.time() + 20 * DAY)
    writer = AuditWriter(store, AuditSettings(retention_days=30, flush_seconds=60), clock)
    await writer.start()
    await asyncio.sleep(0.05)
    assert writer.purged == 0 and audit_count(store) == 1  # 20 days old: kept
    await clock.advance(DAY)
    await asyncio.sleep(0.05)
    assert writer.purged == 0
    await clock.advance(10 * DAY)  # 31 days old at the next daily purge
    for _ in range(50):
        if writer.purged:
            break
        await asyncio.sleep(0.02)
    await writer.stop()
    assert writer.purged == 1 and audit_count(store) == 0


async def test_retention_zero_keeps_everything(store: Store) -> None:
    store.audit_append([{"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"}])
    writer = AuditWriter(store, AuditSettings(retention_days=0), ManualClock(time.time() + 5000 * DAY))
    assert await writer.purge() == 0 and audit_count(store) == 1
