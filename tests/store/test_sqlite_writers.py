"""SQLite writers of one process share a transaction and its commit, never busy-wait on each
other, and checkpoints run on their own thread."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from gateway.store.sqlite import SQLiteStore


def _patient(rid: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Achieng"}]}


def _committed(path: str, rid: str) -> bool:
    """Whether a connection of its own sees the patient: what another request would read."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT 1 FROM resources WHERE rtype = 'Patient' AND id = ?", (rid,)).fetchone() is not None
    finally:
        conn.close()


def test_many_concurrent_writers_all_commit_without_busy_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    store.migrate()
    errors: list[BaseException] = []
    unseen: list[str] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                rid = f"p{n}-{i}"
                with store.transaction() as tx:
                    tx.update(_patient(rid))
                if not _committed(store.path, rid):  # durable and visible once the write returns
                    unseen.append(rid)
        except BaseException as exc:  # noqa: BLE001 - the test reports any error, busy or not
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(24)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and unseen == []
        assert all(store.read("Patient", f"p{n}-{i}") is not None for n in range(24) for i in range(15))
        assert store._writer.commits <= 24 * 15
    finally:
        store.close()


def test_waiting_writers_share_one_commit_and_a_failed_unit_is_undone_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    store.migrate()
    holding, release = threading.Event(), threading.Event()
    returned: dict[str, bool] = {}

    def first() -> None:
        with store.transaction() as tx:
            tx.update(_patient("a"))
            holding.set()
            release.wait(10)
        returned["a"] = _committed(store.path, "a")

    def failing() -> None:
        with pytest.raises(ValueError), store.transaction() as tx:
            tx.update(_patient("b"))
            raise ValueError("refused")

    def last() -> None:
        with store.transaction() as tx:
            tx.update(_patient("c"))
        returned["c"] = _committed(store.path, "c")

    store._writer.max_open = 60.0  # the first unit holds the transaction while the others queue
    try:
        before = store._writer.commits
        a = threading.Thread(target=first)
        a.start()
        assert holding.wait(10)
        others = [threading.Thread(target=failing), threading.Thread(target=last)]
        for thread in others:
            thread.start()
        deadline = time.monotonic() + 10
        while store._writer.waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        for thread in [a, *others]:
            thread.join(10)
        assert returned == {"a": True, "c": True}  # each returned only once its write was committed
        assert store._writer.commits - before == 1  # three units, one commit
        assert store.read("Patient", "b") is None
    finally:
        store.close()


def test_checkpoints_run_on_their_own_thread_not_in_the_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    store.migrate()
    try:
        with store._read_cursor() as cur:
            cur.execute("PRAGMA wal_autocheckpoint")
            assert cur.fetchone()[0] == 0
        checkpointer = store._checkpointer
        assert checkpointer is not None
        size = os.path.getsize(store.path)
        with store.transaction() as tx:
            for i in range(200):
                tx.update({**_patient(f"p{i}"), "text": {"status": "generated", "div": "x" * 2000}})
        deadline = time.monotonic() + 10
        while (checkpointer.runs < 1 or os.path.getsize(store.path) <= size) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.runs >= 1
        assert os.path.getsize(store.path) > size  # the pages reached the database file, the store still open
    finally:
        store.close()


def test_a_failing_step_after_the_commit_does_not_fail_the_committed_write(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    store.migrate()

    def broken_clean_up(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database is locked")

    try:
        with store._writer.unit(broken_clean_up) as cur:
            cur.execute("CREATE TABLE t (x INTEGER)")
            cur.execute("INSERT INTO t VALUES (1)")
        conn = sqlite3.connect(store.path)
        try:
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]
        finally:
            conn.close()
    finally:
        store.close()
