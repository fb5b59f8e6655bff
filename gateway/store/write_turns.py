"""Live writers first: other processes' background writers (a backfill) give way on SQLite.

SQLite's write lock is no queue: a writer that finds it taken sleeps in its busy handler (1, 2,
5 … 100 ms) and tries again, and a backfill process that starts its next transaction the moment
the last one commits takes the lock back before the sleeper wakes. A live push then waited
0.7 s at the median and 3.4 s at worst beside a backfill (and could wait out the busy timeout).

Here a live writer holds a shared ``fcntl`` lock on a small file beside the database
(``<db>-turns``) while it waits for ``BEGIN IMMEDIATE``, and a background writer, before each
of its transactions, waits while anyone holds one: a live write then waits for at most the
background transaction of the moment. Locks of one process never block that process itself
(POSIX record locks belong to the process), so the live server and its own threads are
unaffected; it costs two system calls a transaction. A background writer waits at most
``MAX_GIVE_WAY`` seconds a transaction, so a stuck peer cannot stop a backfill.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # not a POSIX system: writers take turns as SQLite's busy handler lets them
    fcntl = None  # type: ignore[assignment]

__all__ = ["MAX_GIVE_WAY", "WriteTurns"]

#: Seconds a background writer waits for live writers before each of its transactions, at most.
MAX_GIVE_WAY = 5.0
#: Seconds between a background writer's looks at whether live writers still wait.
_POLL = 0.002


class WriteTurns:
    """The turn file of one SQLite database (created on first use, never removed: it holds no data)."""

    def __init__(self, database: str) -> None:
        self.path = database + "-turns"
        self._fd: int | None = None
        self._open_lock = threading.Lock()

    def _file(self) -> int | None:
        if fcntl is None:
            return None
        if self._fd is None:
            with self._open_lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        return self._fd

    @contextmanager
    def live(self) -> Iterator[None]:
        """Around a live writer's wait for the write lock: background writers hold back meanwhile."""
        fd = self._file()
        if fd is None:
            yield
            return
        fcntl.lockf(fd, fcntl.LOCK_SH, 1, 0)
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)

    def give_way(self, limit: float = MAX_GIVE_WAY) -> None:
        """Before a background transaction: wait (at most ``limit`` s) while a live writer waits."""
        fd = self._file()
        if fd is None:
            return
        deadline = time.monotonic() + limit
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            except OSError:  # held shared by a live writer of another process
                if time.monotonic() >= deadline:
                    return
                time.sleep(_POLL)
                continue
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
            return

    def close(self) -> None:
        """Close the file (its locks go with it)."""
        with self._open_lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
