"""``write_batch``: one thread's transactions share one commit at the end of the block, on both backends."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from gateway.store import Store, StoreUnavailable


def _patient(rid: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Achieng"}]}


def _seen_elsewhere(store: Store, rid: str) -> bool:
    """Whether another thread (another request) reads the patient: only once it is committed."""
    with ThreadPoolExecutor(1) as other:
        return other.submit(store.read, "Patient", rid).result() is not None


def test_transactions_in_a_batch_are_committed_together_at_its_end(store: Store) -> None:
    before = store._writer.commits  # type: ignore[attr-defined]
    with store.write_batch() as batch:
        with store.transaction() as tx:
            tx.update(_patient("a"))
        with store.transaction() as tx:
            assert tx.read("Patient", "a") is not None  # the batch's own transactions see each other
            tx.update(_patient("b"))
        assert not _seen_elsewhere(store, "a") and not _seen_elsewhere(store, "b")
        assert not batch.lost and batch.seconds_open > 0
    assert _seen_elsewhere(store, "a") and _seen_elsewhere(store, "b")
    assert store._writer.commits - before == 1  # type: ignore[attr-defined]


def test_a_failed_transaction_in_a_batch_is_undone_alone(store: Store) -> None:
    with store.write_batch() as batch:
        with store.transaction() as tx:
            tx.update(_patient("a"))
        with pytest.raises(ValueError), store.transaction() as tx:
            tx.update(_patient("b"))
            raise ValueError("refused")
        assert not batch.lost
        with store.transaction() as tx:
            tx.update(_patient("c"))
    assert [_seen_elsewhere(store, rid) for rid in "abc"] == [True, False, True]


def test_a_batch_whose_block_fails_stores_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.write_batch():
        with store.transaction() as tx:
            tx.update(_patient("a"))
        raise RuntimeError("the holder gave up")
    assert not _seen_elsewhere(store, "a")
    with store.transaction() as tx:  # the writer goes on
        tx.update(_patient("b"))
    assert _seen_elsewhere(store, "b")


def test_other_threads_transactions_wait_for_the_batch_and_then_commit(store: Store) -> None:
    started, finished = threading.Event(), threading.Event()

    def other() -> None:
        started.set()
        with store.transaction() as tx:
            tx.update(_patient("other"))
        finished.set()

    with store.write_batch():
        with store.transaction() as tx:
            tx.update(_patient("held"))
        thread = threading.Thread(target=other)
        thread.start()
        assert started.wait(10)
        time.sleep(0.1)
        assert not finished.is_set()  # it waits for the writer connection the batch holds
    thread.join(10)
    assert finished.is_set() and _seen_elsewhere(store, "other") and _seen_elsewhere(store, "held")


def test_a_writer_waiting_for_a_batch_goes_before_the_holders_next_batch(store: Store) -> None:
    # The API's write lane takes the writer again the moment a burst commits: another thread
    # waiting meanwhile (the audit trail's writer) must get its turn first, or it starves.
    order: list[str] = []
    started = threading.Event()

    def other() -> None:
        started.set()
        with store.transaction() as tx:
            order.append("other")
            tx.update(_patient("other"))

    for _ in range(5):
        order.clear()
        with store.write_batch():
            thread = threading.Thread(target=other)
            thread.start()
            assert started.wait(10)
            time.sleep(0.05)  # the other thread waits for the writer connection
        with store.write_batch():
            order.append("holder")
        thread.join(10)
        assert order == ["other", "holder"]


def test_a_commit_that_fails_fails_the_batch_and_stores_none_of_it(pg_schema_url: str) -> None:
    from gateway.store import open_store

    store = open_store(pg_schema_url)
    try:
        with store.transaction() as tx:  # a check PostgreSQL makes at the commit, not before
            cur: Any = tx.cur  # type: ignore[attr-defined]
            cur.execute("CREATE TABLE deferred_check (n int PRIMARY KEY, m int NOT NULL"
                        " REFERENCES deferred_check (n) DEFERRABLE INITIALLY DEFERRED)")
        with pytest.raises(psycopg.errors.ForeignKeyViolation), store.write_batch():
            with store.transaction() as tx:
                tx.update(_patient("a"))
            with store.transaction() as tx:
                tx.cur.execute("INSERT INTO deferred_check VALUES (1, 2)")  # type: ignore[attr-defined]
        assert not _seen_elsewhere(store, "a")
        with store.transaction() as tx:
            tx.update(_patient("b"))
        assert _seen_elsewhere(store, "b")
    finally:
        store.close()


def test_a_transaction_that_loses_the_connection_loses_the_batch(pg_schema_url: str) -> None:
    from gateway.store import open_store

    store = open_store(pg_schema_url)
    try:
        # The lost connection is the store's StoreUnavailable (a 503 for the API), the driver's error its cause.
        with pytest.raises(StoreUnavailable), store.write_batch() as batch:
            with store.transaction() as tx:
                tx.update(_patient("a"))
            with pytest.raises(StoreUnavailable), store.transaction() as tx:
                tx.cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # type: ignore[attr-defined]
            assert batch.lost
            with pytest.raises(StoreUnavailable), store.transaction() as tx:  # nothing more joins
                pass
        assert not _seen_elsewhere(store, "a")
        with store.transaction() as tx:  # a new connection for the next batch
            tx.update(_patient("b"))
        assert _seen_elsewhere(store, "b")
    finally:
        store.close()


def test_row_ids_reserved_once_serve_the_batch_and_keep_growing_across_batches(store: Store) -> None:
    def row_id(rid: str) -> int:
        with store.transaction() as tx:
            tx.cur.execute(store.q("SELECT rid FROM resources WHERE rtype = 'Patient' AND id = ?"), (rid,))  # type: ignore[attr-defined]
            return int(tx.cur.fetchone()[0])  # type: ignore[attr-defined]

    with store.write_batch():
        for n in range(5):
            with store.transaction() as tx:
                tx.update(_patient(f"a{n}"))
        assert len(store._writer.spare_ids()) == 32 - 5  # type: ignore[attr-defined]  # one reservation served all five
        with pytest.raises(ValueError), store.transaction() as tx:  # a unit undone: its id is a gap
            tx.update(_patient("undone"))
            raise ValueError("refused")
    with store.transaction() as tx:
        tx.update(_patient("b"))
    first = [row_id(f"a{n}") for n in range(5)]
    assert first == sorted(first) and len(set(first)) == 5
    assert row_id("b") > first[-1]


def test_closing_the_writer_commits_the_units_that_handed_it_on_first(store: Store) -> None:
    writer = store._writer  # type: ignore[attr-defined]
    done: list[str] = []

    def unit() -> None:
        with store.transaction() as tx:
            tx.update(_patient("queued"))
        done.append("unit")

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while writer.waiting < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert writer.waiting == count

    with store.write_batch():
        first = threading.Thread(target=unit)
        first.start()
        wait_for(1)
        closer = threading.Thread(target=writer.close)
        closer.start()
        wait_for(2)  # the unit, then the close: the unit hands its open transaction on to the close
    first.join(10)
    closer.join(10)
    assert done == ["unit"] and not closer.is_alive()
    assert _seen_elsewhere(store, "queued")
