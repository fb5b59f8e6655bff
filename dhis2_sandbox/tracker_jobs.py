"""Asynchronous tracker imports: the job list behind ``/api/tracker/jobs/{id}``.

``POST /api/tracker`` (``async`` defaults to true) answers "Tracker job added" before any
validation; the import then runs in the background. Polling ``/jobs/{id}`` lists the
notifications newest first, the first one ``completed: true`` once done; ``/report`` then
gives the ImportReport. As in DHIS2 the jobs live in memory only: a restart, or many
newer jobs, makes a report disappear (404), which clients must survive.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread

from dhis2_sandbox.tracker_import import TrackerImportResult
from dhis2_sandbox.tracker_payload import generate_uid

__all__ = ["TrackerJobs"]

JsonObject = dict[str, Any]

_STAGES = (
    "Loading file resource",
    "Loading file content",
    "Running PreHeat",
    "Calculating Payload Size",
    "Running PreProcess",
    "Running Validation",
    "Running Rule Engine",
    "Running Rule Engine Validation",
    "Commit Transaction",
    "PostCommit",
)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


@dataclass
class _Job:
    notifications: list[JsonObject] = field(default_factory=list)  # oldest first
    report: JsonObject | None = None

    def note(self, message: str, *, completed: bool = False, level: str = "INFO", **extra: Any) -> None:
        uid = generate_uid()
        item = {
            "uid": uid,
            "level": level,
            "category": "TRACKER_IMPORT_JOB",
            "time": _stamp(),
            "message": message,
            "completed": completed,
            **extra,
            "id": uid,
        }
        self.notifications.append(item)


class TrackerJobs:
    """In-memory registry of tracker import jobs, bounded like DHIS2's."""

    def __init__(self, *, delay: float = 0.0, keep: int = 1000) -> None:
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._delay = delay
        self._keep = keep

    def submit(self, run: Callable[[], TrackerImportResult], parameters: JsonObject) -> str:
        """Queue an import; returns the job id at once."""
        job_id = generate_uid()
        job = _Job()
        job.note("Tracker import started", dataType="PARAMETERS", data=parameters)
        self._jobs[job_id] = job
        while len(self._jobs) > self._keep:
            self._jobs.popitem(last=False)
        task = asyncio.get_running_loop().create_task(self._run(job, run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job_id

    async def _run(self, job: _Job, run: Callable[[], TrackerImportResult]) -> None:
        if self._delay:
            await asyncio.sleep(self._delay)
        for stage in _STAGES[:6]:
            job.note(stage)
        try:
            result = await anyio.to_thread.run_sync(run)
        except Exception as exc:  # an import that blows up is reported, as DHIS2's job log does
            job.note(f"Import failed: {type(exc).__name__}", completed=True, level="ERROR")
            return
        for stage in _STAGES[6:]:
            job.note(stage)
        job.report = result.report
        job.note(
            f"Import complete with status {result.status}, {result.created} created, "
            f"{result.updated} updated, {result.deleted} deleted, {result.ignored} ignored",
            completed=True,
        )

    def notifications(self, job_id: str) -> list[JsonObject] | None:
        """Notifications newest first, or None for an unknown job."""
        job = self._jobs.get(job_id)
        return None if job is None else list(reversed(job.notifications))

    def report(self, job_id: str) -> JsonObject | None:
        """The finished job's ImportReport, or None (unknown or still running)."""
        job = self._jobs.get(job_id)
        return None if job is None else job.report

    def forget(self) -> None:
        """Drop every job (what a DHIS2 restart does)."""
        self._jobs.clear()

    async def drain(self) -> None:
        """Wait for running jobs (used on shutdown)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
