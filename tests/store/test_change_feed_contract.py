"""The change feed contract (``ChangeFeed``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

import threading

from gateway.store import ChangeOp, Store
from tests.store.helpers import patient


def test_change_feed_records_every_write_in_order(store: Store) -> None:
    start = store.last_change_seq()
    with store.transaction() as tx:
        rid = tx.create(patient()).resource.id
        tx.update(patient("B", id=rid))
        tx.delete("Patient", rid)
    changes = store.changes(start)
    assert [(c.op, c.version) for c in changes] == [
        (ChangeOp.CREATE, 1), (ChangeOp.UPDATE, 2), (ChangeOp.DELETE, 3),
    ]  # fmt: skip
    assert [c.seq for c in changes] == sorted(c.seq for c in changes)
    assert store.last_change_seq() == changes[-1].seq
    assert [c.seq for c in store.iter_changes(start, batch=2)] == [c.seq for c in changes]


def test_concurrent_writers_keep_the_change_feed_complete(store: Store) -> None:
    start = store.last_change_seq()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                with store.transaction() as tx:
                    tx.create(patient(f"W{n}-{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = [c.seq for c in store.changes(start, 1000)]
    assert len(seqs) == 40 and seqs == sorted(seqs)


def test_changes_written_by_a_backfill_are_marked_and_others_are_not(store: Store, store_url: str) -> None:
    from gateway.store import open_store

    start = store.last_change_seq()
    backfill = open_store(store_url)  # what `gateway backfill` opens: its own store object
    backfill.feed_lane = "backfill"
    try:
        with backfill.transaction() as tx:
            old = tx.create(patient("Old")).resource.id
        with store.transaction() as tx:
            tx.create(patient("New"))
            tx.update(patient("Old again", id=old))
    finally:
        backfill.close()
    assert [(c.op, c.backfill) for c in store.changes(start)] == [
        (ChangeOp.CREATE, True), (ChangeOp.CREATE, False), (ChangeOp.UPDATE, False),
    ]  # fmt: skip
