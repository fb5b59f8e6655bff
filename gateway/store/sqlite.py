"""``SQLiteStore``: the embedded default store, one file, no server.

WAL mode lets readers run while one writer commits; writers take the lock up front
(``BEGIN IMMEDIATE``) so two transactions never deadlock upgrading a read lock.
``synchronous=FULL`` (the default) makes a commit survive power loss, which matters more
here than write speed: a 2xx answer tells a CHW app it may forget the record.
``?synchronous=normal`` in the store URL trades that for faster commits (still safe
against the process crashing, not against the machine losing power).

Writers of one store share one writer connection and queue for it (``group_commit``) instead
of each taking SQLite's write lock on a connection of its own. SQLite's busy handler, which
is what they met before, polls by sleeping 1, 2, 5 … 100 ms and does not queue: under 38
concurrent API writers a waiting write slept through other writers' commits again and again
and the CRUD-mix benchmark showed write p99 near 1-2 s beside a p50 of 9-30 ms. Writers that
queue up behind one another share a transaction (a savepoint each) and one commit, so one
fsync covers the burst; each still returns only after its commit. The busy timeout still
covers other processes (a CLI command beside the server).

Checkpoints stay off the commit path. SQLite's automatic checkpoint runs inside the commit
that crosses 1,000 WAL pages, so that write (and, under the lock, every writer queued behind
it) waited for the checkpoint's page copies and fsyncs. Connections here turn it off and a
checkpointer thread with its own connection runs PASSIVE checkpoints soon after commits
(``CHECKPOINT_DELAY``); a passive checkpoint never blocks writers or readers, and once it
has copied the whole WAL the next commit starts the WAL again from its beginning.

The WAL stays bounded. A passive checkpoint cannot complete while readers keep old
snapshots open (an API under load always has some), the WAL never restarts, and it grew to
11 GB beside a 2.9 GB database in a backfill. So after a commit that leaves the WAL above
``wal_limit`` bytes, the committing thread runs a TRUNCATE checkpoint holding the writer
lock (it waits for the readers of the moment, which take milliseconds, and empties the
file), and ``journal_size_limit`` caps what a restarted WAL keeps on disk. ``close``
checkpoints too, so a stopped gateway leaves no WAL behind.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

from gateway.search import SearchRegistry
from gateway.store.base import StoreUnavailable, WriteBatch
from gateway.store.group_commit import MAX_UNITS, GroupCommit
from gateway.store.rows import Cursor
from gateway.store.sql import SqlStore
from gateway.store.write_turns import WriteTurns

log = logging.getLogger("gateway.store")
T = TypeVar("T")

# SQLite's primary result codes for a file the process cannot write now: the disk (or quota) is
# full, an I/O error, the file or its directory turned read-only, the file cannot be opened. Not a
# bug in the request, and nothing of it was applied: the operator frees space or fixes the mount.
_UNWRITABLE = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN})


@contextmanager
def _writable(block: AbstractContextManager[T]) -> Iterator[T]:
    """``block``, with SQLite's failures to write the file raised as ``StoreUnavailable`` (a 503
    ``transient`` for the API, a retry for delivery; a 500 like a bug otherwise)."""
    try:
        with block as value:
            yield value
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _UNWRITABLE:
            raise
        raise StoreUnavailable(f"the SQLite store cannot be written ({exc.sqlite_errorname})") from exc


#: WAL bytes above which a commit is followed by a TRUNCATE checkpoint.
WAL_LIMIT = 64 * 1024 * 1024
#: Seconds the checkpointer waits after a commit wakes it, so one checkpoint covers many commits.
CHECKPOINT_DELAY = 0.05


class _Unshared:
    """The batch of a store whose transactions each commit on their own (``:memory:``)."""

    lost = False
    seconds_open = 0.0


_UNSHARED = _Unshared()


class Checkpointer:
    """PASSIVE checkpoints of one database on a thread and connection of their own, after commits."""

    def __init__(self, path: str, delay: float = CHECKPOINT_DELAY) -> None:
        self.path = path
        self.delay = delay
        self.runs = 0  # checkpoints run (the tests read it)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def nudge(self) -> None:
        """A commit happened: checkpoint soon (starts the thread on first use)."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stopping.is_set():
                    self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                    self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stopping.is_set():  # checked after each clear: a stop during a run is not lost
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._stopping.wait(self.delay)
                self._wake.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.runs += 1
                except sqlite3.Error as exc:  # e.g. a schema change mid-way: the next commit tries again
                    log.warning("WAL checkpoint failed (%s)", type(exc).__name__)
        finally:
            conn.close()

    def stop(self) -> None:
        """End the thread (after the checkpoint it may be running); a later commit starts another."""
        with self._start_lock:
            self._stopping.set()
            self._wake.set()
            if self._thread is not None:
                self._thread.join()
            self._thread = None
            self._wake.clear()
            self._stopping.clear()


class SQLiteWriter(GroupCommit[sqlite3.Connection]):
    """The store's writer connection: ``BEGIN IMMEDIATE`` takes SQLite's write lock up front.

    With ``turns``, a live writer (``background()`` false) lets other processes' background
    writers know it waits for the lock, and a background one gives way to them first."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        max_units: int = MAX_UNITS,
        turns: WriteTurns | None = None,
        background: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(max_units)
        self._new = connect
        self.turns = turns
        self._background = background

    def _connect(self) -> sqlite3.Connection:
        return self._new()

    def _begin(self, cur: Cursor) -> None:
        if self.turns is None:
            cur.execute("BEGIN IMMEDIATE")
        elif self._background():
            self.turns.give_way()
            cur.execute("BEGIN IMMEDIATE")
        else:
            with self.turns.live():
                cur.execute("BEGIN IMMEDIATE")

    def _usable(self, conn: sqlite3.Connection) -> bool:
        # Some errors (a full disk, an I/O error) make SQLite roll the whole transaction back.
        return conn.in_transaction


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
        self._turns = None if self._wal is None else WriteTurns(self.path)
        self._writer = self._new_writer()
        self._checkpointer = None if self._wal is None else Checkpointer(self.path)

    def _new_writer(self) -> SQLiteWriter:
        # A backfill's store (its changes on the backfill lane) gives way to live writers.
        return SQLiteWriter(self._new_connection, turns=self._turns, background=lambda: self.feed_lane == "backfill")

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new_connection()
        return conn

    def _new_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")  # other processes' writers (a CLI beside the server)
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute(f"PRAGMA journal_size_limit={self.wal_limit}")
        if self._wal is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it, off the commit path
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

    def _write_cursor(self) -> AbstractContextManager[Cursor]:
        return _writable(self._unit())

    @contextmanager
    def _unit(self) -> Iterator[Cursor]:
        if self._wal is None:  # ":memory:": each connection is its own database, so the thread's own serves
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
            return
        with self._writer.unit(self._bound_wal) as shared:
            yield shared

    def _spare_ids(self) -> list[int] | None:
        return None if self._wal is None else self._writer.spare_ids()

    def write_batch(self) -> AbstractContextManager[WriteBatch]:
        """This thread's transactions until the block ends, committed together at its end."""
        return _writable(self._batch())

    @contextmanager
    def _batch(self) -> Iterator[WriteBatch]:
        if self._wal is None:  # ":memory:": the thread's own connection commits each transaction
            yield _UNSHARED
            return
        with self._writer.hold() as batch:
            yield batch

    def _bound_wal(self, conn: sqlite3.Connection) -> None:
        """After a commit, with the writer connection still held: wake the checkpointer, and
        empty the WAL here if passive checkpoints could not keep it under the limit."""
        if self._wal is None or self._checkpointer is None:
            return
        self._checkpointer.nudge()
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
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            if self._all and self._wal is not None:
                try:
                    self._all[0].execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass  # another thread is mid-write: SQLite checkpoints when the last connection closes
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._writer = self._new_writer()
        if self._turns is not None:
            self._turns.close()
        self._local = threading.local()
