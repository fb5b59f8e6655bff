"""``SQLiteStore``: the embedded default store, one file, no server.

WAL mode lets readers run while one writer commits; writers take the lock up front
(``BEGIN IMMEDIATE``) so two transactions never deadlock upgrading a read lock.
``synchronous=FULL`` (the default) makes a commit survive power loss, which matters more
here than write speed: a 2xx answer tells a CHW app it may forget the record.
``?synchronous=normal`` in the store URL trades that for faster commits (still safe
against the process crashing, not against the machine losing power).

The WAL stays bounded. SQLite's automatic checkpoint is passive: while readers keep old
snapshots open (an API under load always has some) it never completes, the WAL never
restarts, and it grew to 11 GB beside a 2.9 GB database in a backfill. So after a commit
that leaves the WAL above ``wal_limit`` bytes, the committing thread runs a TRUNCATE
checkpoint (it waits for the readers of the moment, which take milliseconds, and empties
the file), and ``journal_size_limit`` caps what a restarted WAL keeps on disk. ``close``
checkpoints too, so a stopped gateway leaves no WAL behind.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.search import SearchRegistry
from gateway.store.rows import Cursor
from gateway.store.sql import SqlStore

log = logging.getLogger("gateway.store")

#: WAL bytes above which a commit is followed by a TRUNCATE checkpoint.
WAL_LIMIT = 64 * 1024 * 1024


class SQLiteStore(SqlStore):
    """The resource store in a local SQLite file."""

    dialect = "sqlite"
    # A read of the local file (in the page cache) takes microseconds, less than the hop to a
    # worker thread would cost, so the API runs reads inline.
    inline_reads = True

    def __init__(
        self,
        path: str | Path,
        registry: SearchRegistry | None = None,
        synchronous: str = "FULL",
        wal_limit: int = WAL_LIMIT,
    ) -> None:
        super().__init__(registry)
        self.wal_limit = wal_limit
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.synchronous = synchronous
        self.path = str(path)
        self._wal = None if self.path == ":memory:" else self.path + "-wal"
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
            conn.execute(f"PRAGMA journal_size_limit={self.wal_limit}")
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
        self._bound_wal(conn)

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        if self._wal is None:
            return
        try:
            size = os.path.getsize(self._wal)
        except OSError:
            return
        if size > self.wal_limit:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:  # readers outlasted the busy timeout: the next commit tries again
                log.warning("WAL checkpoint could not complete (%d MiB)", size >> 20)

    def reserve_row_ids(self, cur: Cursor, count: int, after: int) -> list[int]:
        """The next ids after the largest ever used (``AUTOINCREMENT`` never reuses one)."""
        cur.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'resources'), 0),"
            " COALESCE((SELECT MAX(rid) FROM resources), 0))"
        )
        start = max(int(cur.fetchone()[0]), after) + 1
        return list(range(start, start + count))

    def close(self) -> None:
        """Checkpoint the WAL into the database and close every thread's connection."""
        with self._lock:
            if self._all and self._wal is not None:
                try:
                    self._all[0].execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass  # another thread is mid-write: SQLite checkpoints when the last connection closes
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
