"""Scheduled tasks shared by several processes: a ``cluster_once`` task's run happens once.

Each "process" is a scheduler with its own store connection over the same database (both
backends), as two ``gateway serve``/``gateway worker`` processes would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import anyio.to_thread
import pytest

from gateway.clock import ManualClock
from gateway.scheduler import RETRY_FIRST, Claim, PeriodicTask, Scheduler
from gateway.store import Store, open_store
from tests.test_scheduler import HOUR, T0, settle


@pytest.fixture
def second(store_url: str) -> Iterator[Store]:
    """Another connection to the same store, as another process has."""
    other = open_store(store_url)
    yield other
    other.close()


def _claim(store: Store, holder: str) -> Claim:
    async def claim(task: str, slot: int) -> bool:
        return await anyio.to_thread.run_sync(store.claim_run, task, slot, holder)

    return claim


def _task(name: str, calls: list[str], who: str, **fields: bool) -> PeriodicTask:
    async def run() -> str:
        calls.append(who)
        return "done"

    return PeriodicTask(name, HOUR, run, **fields)


def test_a_slot_is_claimed_once(store: Store, second: Store) -> None:
    assert store.claim_run("dhis2/report", 42, "a:1") is True
    assert second.claim_run("dhis2/report", 42, "b:2") is False
    assert store.claim_run("dhis2/report", 42, "a:1") is False  # not twice, even by its holder
    assert second.claim_run("dhis2/report", 43, "b:2") is True
    assert second.claim_run("dhis2/org-units", 42, "b:2") is True  # slots are per task


async def test_two_processes_run_a_cluster_once_task_once_per_slot(store: Store, second: Store) -> None:
    clock = ManualClock(T0)
    once: list[str] = []
    everywhere: list[str] = []
    schedulers = [
        Scheduler(
            [_task("report", once, who, run_at_start=True, cluster_once=True), _task("metadata", everywhere, who)],
            clock,
            claim=_claim(db, f"{who}:1"),
        )
        for who, db in (("a", store), ("b", second))
    ]
    for scheduler in schedulers:
        await scheduler.start()
    try:
        for _ in range(50):  # claims go through threads: let them land
            await settle()
            await asyncio.sleep(0.01)
        assert len(once) == 1  # the start-up run of the current slot, by one of them
        for hour in range(1, 4):
            await clock.advance(2800 if hour == 1 else HOUR)
            for _ in range(50):
                await settle()
                await asyncio.sleep(0.01)
            assert len(once) == 1 + hour, once
            assert sorted(everywhere[-2:]) == ["a", "b"]  # a per-process task runs in both
        assert sum(s.skipped["report"] for s in schedulers) == 4
    finally:
        for scheduler in schedulers:
            await scheduler.stop()


async def test_a_claim_that_fails_runs_the_task_anyway() -> None:
    clock = ManualClock(T0)
    calls: list[str] = []

    async def broken(task: str, slot: int) -> bool:
        raise ConnectionError("database unreachable")

    scheduler = Scheduler([_task("report", calls, "a", run_at_start=True, cluster_once=True)], clock, claim=broken)
    await scheduler.start()
    try:
        await settle()
        assert calls == ["a"]
    finally:
        await scheduler.stop()


async def test_only_the_process_that_claimed_a_failed_slot_retries_it(store: Store, second: Store) -> None:
    clock = ManualClock(T0)
    tries: list[str] = []

    def flaky(who: str) -> PeriodicTask:
        async def run() -> str:
            tries.append(who)
            if len(tries) == 1:
                raise ConnectionError("DHIS2 unreachable")
            return "sent"

        return PeriodicTask("report", HOUR, run, cluster_once=True)

    schedulers = [
        Scheduler([flaky(who)], clock, claim=_claim(db, f"{who}:1")) for who, db in (("a", store), ("b", second))
    ]
    for scheduler in schedulers:
        await scheduler.start()

    async def land() -> None:
        for _ in range(50):  # claims go through threads
            await settle()
            await asyncio.sleep(0.01)

    try:
        await land()
        await clock.advance(2800)
        await land()
        assert len(tries) == 1
        await clock.advance(RETRY_FIRST)
        await land()
        assert len(tries) == 2 and tries[0] == tries[1]  # the claimant's retry, not the other's run
        assert sum(s.skipped["report"] for s in schedulers) == 1
    finally:
        for scheduler in schedulers:
            await scheduler.stop()
