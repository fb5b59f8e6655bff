"""``GroupCommit``: concurrent write units of one process share one transaction and one commit.

Both SQL backends serialise writers: SQLite has one write lock per database, and PostgreSQL
writers take an advisory lock (reserved row ids and change-feed numbers must grow in commit
order). Taken once per write, either lock is held through that write's commit and fsync, so
writers ran one at a time with one fsync each. Here the writers of a process queue for one
writer connection instead; those that queue up behind one another share its transaction (a
savepoint each, rolled back alone if that unit fails) and one commit, so the lock is taken
and one fsync paid once per burst. Each caller still returns only after the commit holding
its work, so a 2xx still means stored, and it then reads its own write anywhere.

The backends differ only in the steps of ``_Steps``: how to connect, how to open the
transaction (and take the lock), and whether a connection's transaction can still go on.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from gateway.store.rows import Cursor

log = logging.getLogger("gateway.store")

#: Units of work one commit covers at most: below the 64 subtransaction ids PostgreSQL caches per
#: backend (one per savepoint that wrote); past them every reader checks pg_subtrans.
MAX_UNITS = 48
#: Seconds a batch's transaction stays open for more units; past it, the unit ending commits.
#: Sharing a commit pays off for short units (API writes of a few ms, where the commit's
#: fsync is a large part). Long units (ingest batches of 100 records, 100+ ms each) gain
#: little, and holding their callers until a whole burst ends stopped each sender's Python
#: preparing its next batch while another's was written: ingest on PostgreSQL with 4 senders
#: fell from 121 to 94 records/s before this bound.
MAX_OPEN = 0.02


class Connection(Protocol):
    """The DB-API connection subset used here (sqlite3 and psycopg both fit)."""

    def cursor(self) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def close(self) -> None: ...


C = TypeVar("C", bound=Connection)


@dataclass(slots=True)
class _Batch:
    """The units of work sharing one open transaction, and how its commit went."""

    open: bool = False
    started: float = 0.0  # time.monotonic() at BEGIN
    units: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    held_by: int | None = None  # the thread holding the batch open (``hold``), if one does
    unreleased: bool = False  # the last held unit's savepoint is still to release
    spare_ids: list[int] = field(default_factory=list)  # row ids reserved in this transaction, not yet used
    after_commit: list[Callable[[Any], None]] = field(default_factory=list)  # held units' steps, run once each


class HeldBatch:
    """What the thread holding a batch (``GroupCommit.hold``) may ask about it."""

    __slots__ = ("_batch",)

    def __init__(self, batch: _Batch) -> None:
        self._batch = batch

    @property
    def lost(self) -> bool:
        """Whether a unit's failure took the whole transaction with it (the batch will roll back)."""
        return self._batch.error is not None

    @property
    def seconds_open(self) -> float:
        """How long the batch's transaction has been open (0 before its first unit)."""
        return time.monotonic() - self._batch.started if self._batch.open else 0.0


class GroupCommit(ABC, Generic[C]):
    """One writer connection; concurrent units of work share its transaction and one commit.

    A unit runs inside a savepoint (rolled back alone if it fails). When it ends while other
    writers wait, it leaves the transaction open for them and waits for the commit; the last
    unit of a burst (nobody waiting, ``max_units`` reached or the transaction open
    ``max_open`` seconds) commits for all. If a unit's
    failure cannot be undone alone (the savepoint rollback fails, or the transaction is left
    unusable), or the commit itself fails, every unit of the batch fails.
    """

    #: Whether the driver takes several statements in one ``execute`` (then a held unit's
    #: release travels with the next one's savepoint: one round trip less a unit on PostgreSQL).
    joins_statements = False

    def __init__(self, max_units: int = MAX_UNITS, max_open: float = MAX_OPEN) -> None:
        self.max_units = max_units
        self.max_open = max_open
        self.commits = 0  # transactions committed (the tests read it)
        self._conn: C | None = None
        # Writers waiting for the connection queue in arrival order and are handed it one at a
        # time, each its own event (a hand-over wakes one, not all 38 of a burst to find it taken
        # again). Handed on directly, the connection is never free between two writers, so one
        # that wants it again at once (the API's write lane, burst after burst) cannot take it
        # before those already waiting (the audit trail's writer): it had starved them.
        self._turn = threading.Lock()
        self._busy = False  # a unit (or a commit) is using the connection; False only while nobody waits
        self._queue: deque[threading.Event] = deque()
        self._batch = _Batch()

    @property
    def waiting(self) -> int:
        """Writers queued for the connection (the tests read it)."""
        return len(self._queue)

    # -- what a backend provides ------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> C:
        """A new writer connection (not in a transaction)."""

    @abstractmethod
    def _begin(self, cur: Cursor) -> None:
        """Open the transaction (and take the writers' lock)."""

    @abstractmethod
    def _usable(self, conn: C) -> bool:
        """Whether the connection's transaction is open and can go on (not rolled back or aborted)."""

    def _stale(self, conn: C) -> bool:
        """Whether the connection is closed or broken, so the next batch needs a new one."""
        return False

    def _committed_anyway(self, exc: Exception) -> bool:
        """Whether the transaction whose COMMIT failed with ``exc`` was committed all the same (the
        server carried it out and its answer was lost with the connection), as the server says."""
        return False

    # -- the shared transaction -------------------------------------------------------------
    def _connection(self) -> C:
        conn = self._conn
        if conn is None or self._stale(conn):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # already broken: nothing left to release
                    log.debug("closing a broken writer connection failed", exc_info=True)
            conn = self._conn = self._connect()
        return conn

    @contextmanager
    def unit(self, after_commit: Callable[[C], None] | None = None) -> Iterator[Cursor]:
        """A cursor inside the shared transaction; returns once the work is committed (or raises).

        ``after_commit`` runs once per commit, on the connection, before the units are woken.
        Inside ``hold`` on this thread, the unit returns once its work is done, uncommitted.
        """
        held = self._batch.held_by == threading.get_ident()
        if held:
            batch = self._batch
            if batch.error is not None:  # the held transaction is lost: nothing more can join it
                raise batch.error
        else:
            batch = self._take_turn()
        failed: BaseException | None = None
        conn: C | None = None
        try:
            conn = self._connection()
            cur = conn.cursor()
            try:
                if not batch.open:
                    batch.open = True  # before BEGIN: a failed BEGIN still ends in a rollback
                    try:
                        self._begin(cur)
                    except Exception:
                        if not self._stale(conn):
                            raise
                        # The server dropped the idle connection (a restart, a failover): nothing
                        # ran in it yet, so a new one takes its place instead of failing this write.
                        log.info("the writer connection was dropped by the server; reconnecting")
                        cur.close()
                        conn = self._connection()
                        cur = conn.cursor()
                        self._begin(cur)
                    batch.started = time.monotonic()
                if batch.unreleased:
                    batch.unreleased = False
                    try:  # the previous held unit's release, in this savepoint's round trip
                        cur.execute("RELEASE SAVEPOINT unit; SAVEPOINT unit")
                    except BaseException as exc:
                        # Half done, a rollback to "unit" could undo the previous unit's work.
                        batch.error = batch.error or exc
                        raise
                else:
                    cur.execute("SAVEPOINT unit")
                try:
                    yield cur
                    if held and self.joins_statements:
                        batch.unreleased = True  # released by the next held unit, or by the commit
                    else:
                        cur.execute("RELEASE SAVEPOINT unit")
                except BaseException as exc:
                    failed = exc
                    self._undo(conn, cur, batch, exc)
                    raise
                batch.units += 1
            finally:
                cur.close()
        except BaseException as exc:
            failed = failed or exc
            if batch.open and (conn is None or not self._usable(conn)):
                batch.error = batch.error or exc  # the transaction is lost: earlier units' work too
            raise
        finally:
            if not held:
                self._finish(batch, after_commit)
            elif after_commit is not None and after_commit not in batch.after_commit:
                batch.after_commit.append(after_commit)
        if failed is None and not held:
            batch.done.wait()
            if batch.error is not None:
                raise batch.error

    def spare_ids(self) -> list[int]:
        """The row ids the open transaction reserved and no unit used yet (for the unit using the
        connection: ids a batch reserves once serve its units, instead of a round trip each)."""
        return self._batch.spare_ids

    @contextmanager
    def hold(self) -> Iterator[HeldBatch]:
        """Run this thread's units, until the block ends, in one transaction committed at its end.

        For a caller that gathers many units itself (one thread, no hand-overs between threads):
        each ``unit`` inside returns when its work is done, not committed; the end of the block
        commits them all, or raises if the commit failed or a unit lost the transaction (then
        none of them is stored). Other threads' units wait until then.
        """
        batch = self._take_turn()
        batch.held_by = threading.get_ident()
        try:
            yield HeldBatch(batch)
        except BaseException as exc:
            batch.error = batch.error or exc  # the holder failed: roll back what its units did
            raise
        finally:
            batch.held_by = None
            steps = batch.after_commit

            def after(conn: C) -> None:
                for step in steps:
                    step(conn)

            self._finish(batch, after if steps else None, hand_over=False)
        if batch.error is not None:
            raise batch.error

    def _take_turn(self) -> _Batch:
        """Wait for the connection (first come, first served), take it, and return the batch its transaction is."""
        with self._turn:
            if not self._busy:
                self._busy = True
                return self._batch
            handed = threading.Event()
            self._queue.append(handed)
        try:
            handed.wait()
        except BaseException:  # interrupted (Ctrl-C on the main thread): leave the queue, or pass the turn on
            with self._turn:
                if handed.is_set():
                    self._hand_on()
                else:
                    self._queue.remove(handed)
            raise
        with self._turn:
            return self._batch

    def _hand_on(self) -> None:
        """Give the connection to the writer waiting longest, or free it (holding ``_turn``)."""
        if self._queue:
            self._queue.popleft().set()
        else:
            self._busy = False

    def _undo(self, conn: C, cur: Cursor, batch: _Batch, exc: BaseException) -> None:
        """Roll one failed unit back to its savepoint, so the others of its batch can commit."""
        try:
            cur.execute("ROLLBACK TO SAVEPOINT unit")
            cur.execute("RELEASE SAVEPOINT unit")
        except Exception:  # the connection or the transaction is beyond saving: the batch fails
            batch.error = batch.error or exc
        if not self._usable(conn):
            batch.error = batch.error or exc

    def _finish(self, batch: _Batch, after_commit: Callable[[C], None] | None, hand_over: bool = True) -> None:
        """Hand the open transaction to a waiting writer, or commit it (and wake its units)."""
        with self._turn:
            if (
                hand_over
                and self._queue
                and batch.error is None
                and batch.units < self.max_units
                and time.monotonic() - batch.started < self.max_open
            ):
                self._hand_on()
                return
            self._batch = _Batch()
        conn = self._conn
        try:
            if conn is not None and batch.open:
                if batch.error is None and not self._usable(conn):
                    # PostgreSQL answers COMMIT of an aborted transaction by rolling it back, no error.
                    raise RuntimeError("the shared write transaction was lost before its commit")
                if batch.error is None:
                    try:
                        conn.commit()
                    except Exception as exc:
                        # An answer lost with the connection does not say the COMMIT was not
                        # carried out: "not applied" would have a client repeat what was done.
                        if not self._committed_anyway(exc):
                            raise
                        log.warning("the answer to a COMMIT was lost (%s); the server says it committed",
                                    type(exc).__name__)  # fmt: skip
                    self.commits += 1
                else:
                    conn.rollback()
        except BaseException as exc:
            batch.error = batch.error or exc  # a failed commit fails every unit it held
            try:
                if conn is not None:
                    conn.rollback()
            except Exception:  # the connection is gone; the next batch opens a new one
                log.debug("rollback after a failed commit failed", exc_info=True)
        try:
            if conn is not None and batch.error is None and after_commit is not None:
                after_commit(conn)
        except Exception:
            # The units' work is committed: a failed clean-up after it must not tell their
            # callers otherwise (a client told "failed" retries, and a create would repeat).
            log.warning("after-commit step failed", exc_info=True)
        finally:
            batch.done.set()
            with self._turn:
                self._hand_on()

    def close(self) -> None:
        """Close the writer connection once no unit is using it; a later unit opens another."""
        batch = self._take_turn()
        while batch.open:  # handed the connection by units waiting for their commit: commit them first
            self._finish(batch, None, hand_over=False)
            batch = self._take_turn()
        with self._turn:
            conn, self._conn = self._conn, None
            self._hand_on()
        if conn is not None:
            conn.close()
