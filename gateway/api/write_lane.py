"""``WriteLane``: the requests' write transactions run on one thread, a burst at a time, under one commit.

Each FHIR write is one store transaction. Run one thread each, concurrent writes queued for
the store's writer connection and handed it on from thread to thread (``GroupCommit``): on
one core, those hand-overs and the wake-ups of each worker thread cost about a quarter of
the gateway's CPU under the CRUD mix. Here the event loop queues the units of work; one
thread takes all that have queued (up to ``max_units``) and runs them back to back inside
one held store batch (``ResourceStore.write_batch``), commits once, and the loop hands each
request its own outcome: one wake-up of the thread and one of the loop a burst.

A request still answers only after the commit holding its work: a failed commit fails every
unit of its burst (none is stored). A unit that fails alone (a version conflict, a rejected
resource) is rolled back alone and fails alone. A unit that takes the whole transaction
with it has its earlier units, undone with it, run again in the next burst.
"""

from __future__ import annotations

import asyncio
import logging
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
        self._queue.append((fn, future))
        if not self._running:
            self._start(loop)
        # A cancelled caller cancels only its future: the unit runs all the same (``_settle``
        # skips a future already done), as it would on a thread of its own.
        return await future

    def close(self) -> None:
        """Stop the lane's thread once the bursts in flight are done; later units fail (nothing stored)."""
        self._closed = True
        self._thread.shutdown(wait=True)

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed:  # the app is shutting down: nothing takes these units any more
            for _, future in self._queue:
                if not future.done():
                    future.set_exception(RuntimeError("the write lane is closed"))
            self._queue = []
            return
        burst, self._queue = self._queue[: self.max_units], self._queue[self.max_units :]
        self._running = True
        done = loop.run_in_executor(self._thread, self._run_burst, [fn for fn, _ in burst])
        done.add_done_callback(lambda finished: self._settle(loop, burst, finished))

    def _settle(self, loop: asyncio.AbstractEventLoop, burst: list[_Unit], finished: asyncio.Future[Any]) -> None:
        """On the loop: give each unit its outcome, requeue those to run again, start the next burst."""
        self.bursts += 1
        error = finished.exception()
        outcomes: list[_Outcome] = [] if error is not None else finished.result()
        again: list[_Unit] = []
        for n, unit in enumerate(burst):
            future = unit[1]
            state: str
            value: Any
            if error is not None:
                state, value = _FAILED, error
            else:
                state, value = outcomes[n] if n < len(outcomes) else (_AGAIN, None)
            if future.done():  # only a cancelled caller's future can be; its unit still runs
                if state == _AGAIN:
                    again.append(unit)
            elif state == _DONE:
                future.set_result(value)
            elif state == _FAILED:
                future.set_exception(value)
            else:
                again.append(unit)
        self._queue[0:0] = again
        self._running = False
        if self._queue:
            self._start(loop)

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
