"""``WriteLane``: the requests' write transactions run on one thread, a burst at a time, under one commit.

Each FHIR write is one store transaction. Run one thread each, concurrent writes queued for
the store's writer connection and handed it on from thread to thread (``GroupCommit``): on
one core, those hand-overs and the wake-ups of each worker thread cost about a quarter of
the gateway's CPU under the CRUD mix. Here the event loop queues the units of work; one
thread takes all that have queued (up to ``max_units``) and runs them back to back inside
one held store batch (``ResourceStore.write_batch``), commits once, hands the loop the
burst's outcomes and goes straight on with the units queued meanwhile. Waiting for the loop
to start each next burst left the thread idle ~6 ms of every ~27 ms burst cycle under the
CRUD mix, and the core idle through each commit's fsync (the gateway used ~80% of its core).

A request still answers only after the commit holding its work: a failed commit fails every
unit of its burst (none is stored). A unit that fails alone (a version conflict, a rejected
resource) is rolled back alone and fails alone. A unit that takes the whole transaction
with it has its earlier units, undone with it, run again in the next burst.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.store import ResourceStore

log = logging.getLogger("gateway.api")

T = TypeVar("T")

#: Units one burst holds at most (as ``GroupCommit``'s own bound).
MAX_UNITS = 48
#: Seconds after which a burst takes no more units (as ``GroupCommit``'s): later ones wait for the next.
MAX_OPEN = 0.02

_Unit = tuple[Callable[[], Any], "asyncio.Future[Any]"]
_DONE, _FAILED, _AGAIN = "done", "failed", "again"
_Outcome = tuple[str, Any]  # (_DONE, result) | (_FAILED, exception) | (_AGAIN, None): run it in the next burst


class WriteLane:
    """Runs units of work that are each one store transaction, a burst at a time on one thread."""

    def __init__(
        self,
        store: ResourceStore,
        after: Callable[[], object] | None = None,
        max_units: int = MAX_UNITS,
        max_open: float = MAX_OPEN,
    ) -> None:
        """``after`` runs on the lane's thread after each committed burst (e.g. identity matching)."""
        self.store = store
        self.after = after
        self.max_units = max_units
        self.max_open = max_open
        self.bursts = 0  # bursts committed or failed (the tests read it)
        self._queue: list[_Unit] = []
        self._lock = threading.Lock()  # the queue and ``_running``: the loop adds, the lane's thread takes
        self._running = False
        self._closed = False
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="write-lane")

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (one store transaction) in the next burst; return its result once committed.

        ``fn`` may run more than once: when another unit of its burst loses the transaction,
        ``fn``'s work is rolled back with it and ``fn`` runs again in the next burst.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:  # the app is shutting down: nothing takes this unit any more
                raise RuntimeError("the write lane is closed")
            self._queue.append((fn, future))
            start, self._running = not self._running, True
        if start:
            self._thread.submit(self._drain, loop)
        # A cancelled caller cancels only its future: the unit runs all the same (``_settle``
        # skips a future already done), as it would on a thread of its own.
        return await future

    def close(self) -> None:
        """Stop the lane's thread once the units queued are done; later units fail (nothing stored)."""
        with self._lock:
            self._closed = True
        self._thread.shutdown(wait=True)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the lane's thread: run bursts while units are queued.

        The next burst starts as soon as one commits, not when the event loop gets round to
        its outcomes: on one core the loop answering a burst's requests and this thread's
        next burst (its commit's fsync above all) then overlap instead of taking turns.
        """
        while True:
            with self._lock:
                burst, self._queue = self._queue[: self.max_units], self._queue[self.max_units :]
                if not burst:
                    self._running = False
                    return
            try:
                outcomes = self._run_burst([fn for fn, _ in burst])
            except BaseException as exc:  # not the units' own failures: those are outcomes
                outcomes = [(_FAILED, exc)] * len(burst)
            self.bursts += 1
            again = [unit for n, unit in enumerate(burst) if n >= len(outcomes) or outcomes[n][0] == _AGAIN]
            if again:
                with self._lock:
                    self._queue[0:0] = again
            try:
                loop.call_soon_threadsafe(self._settle, burst, outcomes)
            except RuntimeError:  # the loop is closed: no caller is left to answer
                log.debug("a burst ended after its event loop closed")

    @staticmethod
    def _settle(burst: list[_Unit], outcomes: list[_Outcome]) -> None:
        """On the loop: give each unit run to its end its outcome (those to run again wait for theirs)."""
        for (_, future), (state, value) in zip(burst, outcomes, strict=False):
            if future.done():  # only a cancelled caller's future can be; its unit still ran
                continue
            if state == _DONE:
                future.set_result(value)
            elif state == _FAILED:
                future.set_exception(value)

    def _run_burst(self, units: list[Callable[[], Any]]) -> list[_Outcome]:
        """On the lane's thread: the units in one held batch, and how each went (missing: not run yet)."""
        outcomes: list[_Outcome] = []
        lost = False
        try:
            with self.store.write_batch() as batch:
                for fn in units:
                    try:
                        outcomes.append((_DONE, fn()))
                    except Exception as exc:  # the unit's own failure: it alone is rolled back
                        outcomes.append((_FAILED, exc))
                    if batch.lost:
                        lost = True
                        break
                    if batch.seconds_open > self.max_open:
                        break
        except Exception as exc:
            if lost:  # one unit took the transaction with it: the others' work is undone, so they run again
                return [(_AGAIN, None) if state == _DONE else (state, value) for state, value in outcomes]
            # The commit failed: nothing of the burst is stored, and every unit says so.
            return [(_FAILED, exc) if state == _DONE else (state, value) for state, value in outcomes]
        if self.after is not None:
            try:
                self.after()
            except Exception as exc:  # the burst is committed; the follower catches up after the next one
                log.error("after-commit step failed (%s)", type(exc).__name__)
        return outcomes
