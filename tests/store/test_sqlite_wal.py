"""The SQLite WAL stays bounded under readers that never pause, and a closed store leaves none."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from gateway.store.sqlite import SQLiteStore

LIMIT = 512 * 1024


def _write_while_reading(store: SQLiteStore, rounds: int) -> int:
    """Write ``rounds`` transactions while a reader thread keeps snapshots open; the largest WAL seen."""
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            store.read("Patient", "p0")

    reader = threading.Thread(target=read)
    reader.start()
    largest = 0
    try:
        for n in range(rounds):
            with store.transaction() as tx:
                for i in range(20):
                    text = f"round {n} " + "x" * 400
                    tx.update({"resourceType": "Patient", "id": f"p{i}", "name": [{"text": text}]})
            largest = max(largest, os.path.getsize(store.path + "-wal"))
    finally:
        stop.set()
        reader.join()
    return largest


def test_the_wal_is_checkpointed_back_under_its_limit_while_readers_run(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "bounded.db", wal_limit=LIMIT)
    store.migrate()
    try:
        largest = _write_while_reading(store, 300)
        # one commit may overshoot the limit before the checkpoint after it empties the file
        assert largest < 4 * LIMIT, largest
        assert os.path.getsize(store.path + "-wal") < 4 * LIMIT
    finally:
        store.close()
    assert not os.path.exists(store.path + "-wal") or os.path.getsize(store.path + "-wal") == 0
    reopened = SQLiteStore(tmp_path / "bounded.db")
    try:
        last = reopened.read("Patient", "p19")
        assert last is not None and last.version == 300
    finally:
        reopened.close()


def test_without_the_bound_the_same_load_grows_the_wal(tmp_path: Path) -> None:
    # the scenario is real: SQLite's passive autocheckpoint alone lets the WAL grow
    store = SQLiteStore(tmp_path / "unbounded.db", wal_limit=1 << 40)
    store.migrate()
    try:
        assert _write_while_reading(store, 300) > 4 * LIMIT
    finally:
        store.close()
