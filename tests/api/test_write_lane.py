"""``WriteLane``: the requests' write transactions, a burst at a time on one thread, under one commit."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.api.write_lane import WriteLane
from gateway.store import Store, StoreUnavailable, open_store


def _patient(rid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Achieng"}]}


def _seen_elsewhere(store: Store, rid: str) -> bool:
    with ThreadPoolExecutor(1) as other:
        return other.submit(store.read, "Patient", rid).result() is not None


def _writes(store: Store, rid: str, calls: list[str] | None = None) -> Any:
    def unit() -> str:
        if calls is not None:
            calls.append(rid)
        with store.transaction() as tx:
            tx.update(_patient(rid))
        return rid

    return unit


async def test_concurrent_units_share_commits_and_each_returns_once_committed(store: Store) -> None:
    lane = WriteLane(store)
    seen: list[bool] = []

    async def request(n: int) -> str:
        rid: str = await lane.run(_writes(store, f"p{n}"))
        seen.append(_seen_elsewhere(store, rid))
        return rid

    before = store._writer.commits  # type: ignore[attr-defined]
    try:
        assert await asyncio.gather(*(request(n) for n in range(40))) == [f"p{n}" for n in range(40)]
    finally:
        lane.close()
    assert seen == [True] * 40
    commits = store._writer.commits - before  # type: ignore[attr-defined]
    assert commits == lane.bursts and 1 < commits < 40  # the first alone, then the queue in bursts


async def test_a_unit_that_fails_fails_alone(store: Store) -> None:
    lane = WriteLane(store)

    def refused() -> None:
        with store.transaction() as tx:
            tx.update(_patient("bad"))
            raise ValueError("refused")

    try:
        results = await asyncio.gather(lane.run(_writes(store, "a")), lane.run(refused), lane.run(_writes(store, "c")),
                                       return_exceptions=True)  # fmt: skip
    finally:
        lane.close()
    assert results[0] == "a" and isinstance(results[1], ValueError) and results[2] == "c"
    assert [_seen_elsewhere(store, rid) for rid in ("a", "bad", "c")] == [True, False, True]


async def test_a_burst_takes_no_more_units_than_its_bounds(store: Store) -> None:
    lane = WriteLane(store, max_units=3)
    try:
        await asyncio.gather(*(lane.run(_writes(store, f"p{n}")) for n in range(10)))
    finally:
        lane.close()
    assert lane.bursts >= 4  # 1 alone, then 9 queued behind it in threes


async def test_the_next_burst_starts_without_waiting_for_the_event_loop(store: Store) -> None:
    lane = WriteLane(store, max_units=1)
    gate, ran = threading.Event(), threading.Event()
    try:
        first = asyncio.ensure_future(lane.run(lambda: gate.wait(10)))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(lane.run(ran.set))
        await asyncio.sleep(0.05)  # both queued, in bursts of one
        gate.set()
        # The loop is busy here (blocked): the second burst runs all the same, its answer waits.
        assert ran.wait(5)
        assert not second.done()
        await asyncio.gather(first, second)
    finally:
        lane.close()


async def test_a_failed_commit_fails_every_unit_of_its_burst(pg_schema_url: str) -> None:
    store = open_store(pg_schema_url)
    lane = WriteLane(store)
    with store.transaction() as tx:
        tx.cur.execute("CREATE TABLE deferred_check (n int PRIMARY KEY, m int NOT NULL"  # type: ignore[attr-defined]
                       " REFERENCES deferred_check (n) DEFERRABLE INITIALLY DEFERRED)")  # fmt: skip

    def breaks_at_commit() -> None:
        with store.transaction() as tx:
            tx.cur.execute("INSERT INTO deferred_check VALUES (1, 2)")  # type: ignore[attr-defined]

    gate = threading.Event()

    def first() -> None:  # holds the lane while the next three queue into one burst
        gate.wait(10)

    try:
        blocker = asyncio.ensure_future(lane.run(first))
        await asyncio.sleep(0.05)
        burst = [asyncio.ensure_future(lane.run(fn)) for fn in (_writes(store, "a"), breaks_at_commit,
                                                                 _writes(store, "c"))]  # fmt: skip
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        results = await asyncio.gather(*burst, return_exceptions=True)
        assert all(isinstance(r, psycopg.errors.ForeignKeyViolation) for r in results), results
        assert not _seen_elsewhere(store, "a") and not _seen_elsewhere(store, "c")
        assert await lane.run(_writes(store, "d")) == "d"  # the lane goes on
    finally:
        lane.close()
        store.close()


async def test_units_undone_with_a_lost_transaction_run_again(pg_schema_url: str) -> None:
    store = open_store(pg_schema_url)
    lane = WriteLane(store)
    calls: list[str] = []
    gate = threading.Event()

    def first() -> None:
        gate.wait(10)

    def loses_it() -> None:
        calls.append("lost")
        with store.transaction() as tx:
            tx.cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # type: ignore[attr-defined]

    try:
        blocker = asyncio.ensure_future(lane.run(first))
        await asyncio.sleep(0.05)
        burst = [asyncio.ensure_future(lane.run(fn)) for fn in (_writes(store, "a", calls), loses_it,
                                                                 _writes(store, "c", calls))]  # fmt: skip
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        results = await asyncio.gather(*burst, return_exceptions=True)
        assert results[0] == "a" and isinstance(results[1], StoreUnavailable) and results[2] == "c"
        assert calls == ["a", "lost", "a", "c"]  # "a" was undone with the connection and ran again
        assert _seen_elsewhere(store, "a") and _seen_elsewhere(store, "c")
    finally:
        lane.close()
        store.close()


async def test_a_cancelled_caller_does_not_cancel_its_unit(store: Store) -> None:
    lane = WriteLane(store)
    gate = threading.Event()
    try:
        blocker = asyncio.ensure_future(lane.run(lambda: gate.wait(10)))
        await asyncio.sleep(0.05)
        caller = asyncio.ensure_future(lane.run(_writes(store, "a")))
        await asyncio.sleep(0.05)
        caller.cancel()
        gate.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert await lane.run(_writes(store, "b")) == "b"
    finally:
        lane.close()
    assert _seen_elsewhere(store, "a") and _seen_elsewhere(store, "b")


async def test_the_after_step_runs_once_a_burst_after_its_commit(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/after.db")
    seen: list[bool] = []
    lane = WriteLane(store, after=lambda: seen.append(store.read("Patient", "a") is not None))
    try:
        await lane.run(_writes(store, "a"))

        def failing() -> None:
            raise RuntimeError("boom")

        lane.after = failing  # a failing after-step is logged; the committed write still succeeds
        assert await lane.run(_writes(store, "b")) == "b"
    finally:
        lane.close()
        store.close()
    assert seen == [True]


async def test_a_closed_lane_fails_new_units_and_stores_nothing(store: Store) -> None:
    lane = WriteLane(store)
    assert await lane.run(_writes(store, "a")) == "a"
    lane.close()
    with pytest.raises(RuntimeError, match="closed"):
        await lane.run(_writes(store, "b"))
    assert _seen_elsewhere(store, "a") and not _seen_elsewhere(store, "b")
