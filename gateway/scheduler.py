"""Periodic background tasks on an injected clock: deterministic, no jitter, never fatal.

``gateway serve`` and ``gateway worker`` run one ``Scheduler`` for the tasks destinations
declare (for DHIS2: metadata refresh, org-unit pull, monthly report; see
``gateway.connectors.dhis2.tasks``):

    scheduler = Scheduler([PeriodicTask("dhis2/metadata", 86_400, refresh)], clock)
    await scheduler.start()
    ...
    await scheduler.stop()

A task with interval ``I`` and offset ``O`` runs at every ``k*I + O`` seconds since the Unix
epoch (UTC): every 24h at 00:00 UTC, every 1h on the hour. The times depend on nothing but
the clock, so tests move a ``ManualClock`` to a boundary and see the task run, and two
processes (``serve`` plus a ``worker``, or many of each) run a task at the same moments.
A ``cluster_once`` task (writing to the shared store, sending a report) runs once per
moment across all of them: each run is a *slot* (``k`` of ``k*I + O``) that the processes
``claim`` through the shared store, and only the first claim runs; the others skip it. A
task without it (refreshing a cache each process holds) runs in every process. Were the
claim impossible (the database unreachable), the run goes ahead: every task is idempotent
(deterministic ids, writes skipped when unchanged), so a second run costs work, never
duplicates. ``run_at_start`` tasks also run when the scheduler starts, as the run of the
current slot (a ``cluster_once`` one only if no process ran that slot yet). A run that
overruns its next time skips it (no catch-up bursts), and a task never overlaps itself.

A task that raises is logged with its name and the exception type (messages can carry
record data) and is retried after 1, 2, 4 ... minutes (at most an hour apart) while the retry
still falls before its next time: a daily report that met DHIS2 down at 00:00 goes out when the
link is back, not a day later. Only the process that claimed the slot retries it. Nothing a
task does stops the others or the process.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from gateway.clock import Clock
from gateway.errors import raised_at

__all__ = ["Claim", "PeriodicTask", "Scheduler", "SchedulerSettings", "next_run", "slot_of"]

log = logging.getLogger(__name__)

#: Seconds before the first retry of a failed run; each further retry waits twice as long.
RETRY_FIRST = 60.0
#: The longest wait between two retries of a failed run.
RETRY_MOST = 3600.0


class SchedulerSettings(BaseModel):
    """The ``scheduler:`` section: whether this process runs the destinations' periodic tasks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(True, description="run periodic tasks (DHIS2 metadata, org units, monthly report)")


@dataclass(frozen=True, slots=True)
class PeriodicTask:
    """Work to repeat: ``run`` returns a one-line summary for the log (never patient data)."""

    name: str
    interval: float  # seconds, > 0
    run: Callable[[], Awaitable[str]]
    offset: float = 0.0  # seconds after each interval boundary
    run_at_start: bool = False
    cluster_once: bool = False  # one process of all those sharing the store runs each slot

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"task {self.name}: the interval must be positive")


Claim = Callable[[str, int], Awaitable[bool]]


def _timing(task: PeriodicTask | None) -> tuple[float, float] | None:
    return (task.interval, task.offset) if task is not None else None


def slot_of(task: PeriodicTask, at: float) -> int:
    """The slot ``k`` of the run due at ``at`` (the last boundary at or before it)."""
    return math.floor((at - task.offset) / task.interval + 1e-9)


def next_run(task: PeriodicTask, now: float) -> float:
    """The first time ``k * interval + offset`` strictly after ``now``."""
    k = math.floor((now - task.offset) / task.interval) + 1
    return k * task.interval + task.offset


class Scheduler:
    """Runs ``PeriodicTask``s until stopped (see the module docstring)."""

    def __init__(
        self,
        tasks: Sequence[PeriodicTask],
        clock: Clock,
        *,
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        claim: Claim | None = None,
    ) -> None:
        self.tasks = list(tasks)
        self.clock = clock
        self._claim = claim
        self.skipped: dict[str, int] = {task.name: 0 for task in self.tasks}  # slots another process ran
        self.runs: dict[str, int] = {task.name: 0 for task in self.tasks}  # completed runs, ok or failed
        self.failures: dict[str, int] = {task.name: 0 for task in self.tasks}
        self._on_stop = list(on_stop)
        self._loops: list[asyncio.Task[None]] = []
        self._started = False

    async def start(self) -> None:
        """Start one loop per task."""
        self._started = True
        self._loops = [asyncio.create_task(self._loop(task), name=f"scheduled-{task.name}") for task in self.tasks]
        if self.tasks:
            log.info("scheduler: %s", ", ".join(f"{t.name} every {t.interval:g}s" for t in self.tasks))

    async def stop(self) -> None:
        """Cancel the loops (a task in progress is interrupted) and release what the tasks hold."""
        loops, self._loops = self._loops, []
        self._started = False
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for close in self._on_stop:
            await close()

    async def replace(self, prefix: str, tasks: Sequence[PeriodicTask]) -> list[str]:
        """Make ``tasks`` the ones whose names start with ``prefix`` (a configuration reload); return
        what changed. A task whose name and interval stay keeps its loop (a run in progress goes on);
        a removed or re-timed one is cancelled, and a new or re-timed one starts as ``start`` would."""
        old = {task.name: task for task in self.tasks if task.name.startswith(prefix)}
        new = {task.name: task for task in tasks}
        gone = [name for name, task in old.items() if (task.interval, task.offset) != _timing(new.get(name))]
        added = [task for name, task in new.items() if (task.interval, task.offset) != _timing(old.get(name))]
        for name in gone:
            loop = next((loop for loop in self._loops if loop.get_name() == f"scheduled-{name}"), None)
            if loop is not None:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
                self._loops.remove(loop)
        kept = [task for task in self.tasks if task.name not in gone]
        self.tasks = kept + added
        for task in added:
            for counts in (self.skipped, self.runs, self.failures):
                counts.setdefault(task.name, 0)
            if self._started:
                self._loops.append(asyncio.create_task(self._loop(task), name=f"scheduled-{task.name}"))
        changes = [f"{name} stopped" for name in gone if name not in new]
        changes += [f"{task.name} every {task.interval:g}s" for task in added]
        if changes:
            log.info("scheduler: %s", ", ".join(changes))
        return changes

    async def run_once(self, name: str) -> bool:
        """Run one task now, as its loop would (True if it succeeded)."""
        task = next(t for t in self.tasks if t.name == name)
        return await self._run(task)

    async def _loop(self, task: PeriodicTask) -> None:
        if task.run_at_start:
            await self._run_slot_until_done(task, slot_of(task, self.clock.now()))
        while True:
            due = next_run(task, self.clock.now())
            await self.clock.sleep(due - self.clock.now())
            await self._run_slot_until_done(task, slot_of(task, due))

    async def _run_slot_until_done(self, task: PeriodicTask, slot: int) -> None:
        """Run the slot; retry a failed run with a growing pause while the next slot is still ahead."""
        ok = await self._run_slot(task, slot)
        attempt = 0
        while not ok:
            pause = min(RETRY_FIRST * 2**attempt, RETRY_MOST)
            now = self.clock.now()
            if now + pause >= next_run(task, now):
                return  # the next slot's run comes first
            log.info("scheduled task %s: retrying in %gs", task.name, pause)
            await self.clock.sleep(pause)
            attempt += 1
            ok = await self._run(task)

    async def _run_slot(self, task: PeriodicTask, slot: int) -> bool:
        """Claim and run the slot (True if it ran well or another process has it)."""
        if task.cluster_once and self._claim is not None:
            try:
                mine = await self._claim(task.name, slot)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - better twice than never: tasks are idempotent
                log.warning("scheduled task %s: cannot claim its run (%s); running it", task.name, type(exc).__name__)
                mine = True
            if not mine:
                self.skipped[task.name] += 1
                log.debug("scheduled task %s: slot %d runs in another process", task.name, slot)
                return True
        return await self._run(task)

    async def _run(self, task: PeriodicTask) -> bool:
        try:
            summary = await task.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed run must not end the loop, nor the process
            log.error("scheduled task %s failed: %s at %s", task.name, type(exc).__name__, raised_at(exc))
            self.failures[task.name] += 1
            self.runs[task.name] += 1
            return False
        log.info("scheduled task %s: %s", task.name, summary)
        self.runs[task.name] += 1
        return True
