"""``SQLiteStore``: the embedded default store, one file, no server.

WAL mode lets readers run while one writer commits; writers take the lock up front
(``BEGIN IMMEDIATE``) so two transactions never deadlock upgrading a read lock.
``synchronous=FULL`` (the default) makes a commit survive power loss, which matters more
here than write speed: a 2xx answer tells a CHW app it may forget the record.
``?synchronous=normal`` in the store URL trades that for faster commits (still safe
against the process crashing, not against the machine losing power).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.search import SearchRegistry
from gateway.store.rows import Cursor
from gateway.store.sql import SqlStore


class SQLiteStore(SqlStore):
    """The resource store in a local SQLite file."""

    dialect = "sqlite"
    # A read of the local file (in the page cache) takes microseconds, less than the hop to a
    # worker thread would cost, so the API runs reads inline.
    inline_reads = True

    def __init__(self, path: str | Path, registry: SearchRegistry | None = None, synchronous: str = "FULL") -> None:
        super().__init__(registry)
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.synchronous = synchronous
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA cache_size=-65536")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _read_cursor(self) -> Iterator[Cursor]:
        cur = self._connection().cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _write_cursor(self) -> Iterator[Cursor]:
        conn = self._connection()
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            cur.close()

    def reserve_row_ids(self, cur: Cursor, count: int, after: int) -> list[int]:
        """The next ids after the largest ever used (``AUTOINCREMENT`` never reuses one)."""
        cur.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'resources'), 0),"
            " COALESCE((SELECT MAX(rid) FROM resources), 0))"
        )
        start = max(int(cur.fetchone()[0]), after) + 1
        return list(range(start, start + count))

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
