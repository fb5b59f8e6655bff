"""Export jobs: each runs on a worker thread of the API process, paging the store by row id
(memory stays bounded whatever the size), writing NDJSON files, with its state in the store.

A job's heartbeat (``ExportJob.updated``) moves at least every few seconds while it runs;
one whose heartbeat is older than ``stale_seconds`` died with its process (a restart), and
is reported failed rather than left running forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import repeat
from pathlib import Path
from typing import Any

from gateway import jsonio
from gateway.errors import FhirError, RequestError
from gateway.fhir import Deidentifier, DeidentifyRules, as_policy_gives
from gateway.search import SearchQuery
from gateway.store import BulkExports, ExportJob, ExportScope

from .kickoff import ExportRequest
from .ndjson import NdjsonFiles
from .profiles import load_profiles
from .settings import BulkExportSettings

log = logging.getLogger(__name__)

ACTIVE = ("accepted", "running")
_HEARTBEAT_SECONDS = 2.0


class _Stop(RequestError):
    """The job was cancelled, or the server is stopping."""

    def __init__(self, diagnostics: str = "the export job stops") -> None:
        super().__init__(diagnostics)


class _Run:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reason = "cancelled"
        self.task: asyncio.Future[None] | None = None


def export_dir(settings: BulkExportSettings, job_id: str) -> Path:
    """The folder of one job's files."""
    return settings.directory / job_id


class BulkExporter:
    """Starts, runs, cancels and expires export jobs (see the module docstring)."""

    def __init__(self, store: BulkExports, settings: BulkExportSettings) -> None:
        self.store = store
        self.settings = settings
        self.profiles: dict[str, DeidentifyRules] = load_profiles(settings.profiles)
        key = settings.deidentify_key
        self._key = key.get_secret_value().encode() if key is not None else None
        self._runs: dict[str, _Run] = {}  # accepted (waiting for a slot) or running here
        self._slots: asyncio.Semaphore | None = None  # made on the loop that runs the jobs
        # Threads of their own: a job holds one for its whole run (not one of the request
        # threads), and the next job reuses it with its warm store connection (SQLite's page cache).
        self._pool = ThreadPoolExecutor(max_workers=settings.max_concurrent_jobs, thread_name_prefix="bulk-export")

    @property
    def deidentify_ready(self) -> bool:
        """Whether de-identified exports can run (a key is configured)."""
        return self._key is not None

    async def start(self) -> None:
        """Report jobs a restart interrupted as failed, and remove expired ones."""
        await asyncio.to_thread(self.housekeeping)

    async def stop(self) -> None:
        """Stop running jobs (they end failed: the server stopped) and wait for their threads."""
        runs = list(self._runs.values())
        for run in runs:
            run.reason = "stopped"
            run.stop.set()
        for run in runs:
            if run.task is not None:
                with contextlib.suppress(Exception):
                    await run.task
        self._pool.shutdown(wait=False)

    def housekeeping(self) -> None:
        """Fail jobs whose heartbeat stopped; delete expired jobs and their files."""
        now = datetime.now(UTC)
        for job in self.store.export_list():
            if job.status in ACTIVE:
                self.check_alive(job, now)
            elif job.expires is not None and job.expires <= now:
                self.remove(job.job_id)

    def check_alive(self, job: ExportJob, now: datetime | None = None) -> ExportJob:
        """``job`` as it stands: failed when it is active but nobody has run it for ``stale_seconds``."""
        now = now or datetime.now(UTC)
        if job.status not in ACTIVE or job.job_id in self._runs:
            return job
        if (now - job.updated).total_seconds() <= self.settings.stale_seconds:
            return job
        failed = replace(job, status="failed", updated=now, expires=now + self._retention(),
                         progress="the export stopped without finishing (the server restarted)")
        self.store.export_update(failed)
        return failed

    async def submit(self, client: str, url: str, request: ExportRequest) -> ExportJob:
        """Store a new job and start it on a worker thread when a slot is free (429 when too many wait)."""
        if len(self._runs) >= self.settings.max_concurrent_jobs + self.settings.max_queued_jobs:
            raise FhirError(f"{len(self._runs)} exports are running or waiting; try again later", status=429,
                            code="throttled", headers={"Retry-After": "30"})
        job = await asyncio.to_thread(self._create, client, url, request)
        run = self._runs[job.job_id] = _Run()
        run.task = asyncio.ensure_future(self._run(job, request, run))
        return job

    def _create(self, client: str, url: str, request: ExportRequest) -> ExportJob:
        self.housekeeping()
        now = datetime.now(UTC)
        snapshot = self.store.export_snapshot()
        for queries in request.queries.values():
            for query in queries:
                query.snapshot = snapshot  # one consistent point for every type
        job = ExportJob(job_id=uuid.uuid4().hex, client=client, status="accepted", request=url,
                        params=request.params, created=now, updated=now, transaction_time=now)
        self.store.export_save(job)
        return job

    def cancel(self, job_id: str) -> None:
        """Cancel a job: it stops, its files and its record go."""
        run = self._runs.get(job_id)
        self.store.export_delete(job_id)  # a running job's next heartbeat finds nothing and stops
        if run is not None:
            run.reason = "cancelled"
            run.stop.set()
        else:
            shutil.rmtree(export_dir(self.settings, job_id), ignore_errors=True)

    def remove(self, job_id: str) -> None:
        """Delete a finished job's record and files."""
        self.store.export_delete(job_id)
        shutil.rmtree(export_dir(self.settings, job_id), ignore_errors=True)

    def running(self, job_id: str) -> bool:
        """Whether this process is running the job."""
        return job_id in self._runs

    def _retention(self) -> timedelta:
        return timedelta(hours=self.settings.retention_hours)

    async def _run(self, job: ExportJob, request: ExportRequest, run: _Run) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_concurrent_jobs)
        try:
            async with self._slots:
                if run.stop.is_set():  # cancelled or stopped while waiting
                    if run.reason != "cancelled":
                        await asyncio.to_thread(self._fail, job, "the server stopped before the export started")
                    return
                await asyncio.get_running_loop().run_in_executor(self._pool, self._export, job, request, run)
        finally:
            del self._runs[job.job_id]

    def _export(self, job: ExportJob, request: ExportRequest, run: _Run) -> None:
        folder = export_dir(self.settings, job.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        files = NdjsonFiles(folder, self.settings.max_file_bytes, self.settings.max_file_resources)
        job = replace(job, status="running")
        beat = [0.0]
        scope = None if request.level == "system" else ExportScope(group=request.group, patients=request.patients)
        transform = self._transform(request)
        total = 0
        try:
            types = sorted(request.queries)
            for done, rtype in enumerate(types):
                count = 0
                for page in self._pages(request.queries[rtype], scope, run):
                    if transform is not None:
                        page = [jsonio.dumps(transform(jsonio.loads(content))) for content in page]
                    elif max(map(bytes.find, page, repeat(b"\n"))) >= 0:  # memchr a line, no copy
                        # Stored JSON is compact; a newline inside one would split its NDJSON line.
                        page = [jsonio.dumps(jsonio.loads(c)) if b"\n" in c else c for c in page]
                    files.write_page(rtype, page)
                    count += len(page)
                    job = self._heartbeat(job, run, beat, f"{done}/{len(types)} types; {total + count} resources")
                total += count
                job = self._heartbeat(job, run, beat, f"{done + 1}/{len(types)} types; {total} resources")
            output = files.close()
            errors = _error_file(folder, request.refused)
            now = datetime.now(UTC)
            finished = replace(job, status="done", updated=now, expires=now + self._retention(),
                               progress=f"done: {total} resources", output=tuple(output), error=errors)
            if not self.store.export_update(finished):
                raise _Stop
            log.info("export %s done: %d resources in %d files", job.job_id, total, len(output))
        except _Stop:
            files.close()
            if run.reason == "cancelled":
                shutil.rmtree(folder, ignore_errors=True)
                log.info("export %s cancelled", job.job_id)
            else:
                self._fail(job, "the server stopped before the export finished")
        except Exception as exc:
            files.close()
            # The type only: a message may carry data (a search value, a path).
            log.exception("export %s failed (%s)", job.job_id, type(exc).__name__)
            self._fail(job, f"the export failed ({type(exc).__name__})")

    def _fail(self, job: ExportJob, why: str) -> None:
        now = datetime.now(UTC)
        self.store.export_update(replace(job, status="failed", updated=now, expires=now + self._retention(),
                                         progress=why))

    def _heartbeat(self, job: ExportJob, run: _Run, beat: list[float], progress: str) -> ExportJob:
        """Check for a cancel; every few seconds, record the progress (a write: not every page)."""
        if run.stop.is_set():
            raise _Stop
        now = time.monotonic()
        if now - beat[0] < _HEARTBEAT_SECONDS:
            return job
        beat[0] = now
        job = replace(job, updated=datetime.now(UTC), progress=progress)
        if not self.store.export_update(job):
            run.reason = "cancelled"
            raise _Stop
        return job

    def _pages(self, queries: list[SearchQuery], scope: ExportScope | None, run: _Run) -> Iterator[list[bytes]]:
        """Every match of any of ``queries``, once each, in row-id order, a page at a time."""
        limit = self.settings.page_size
        after = 0
        while True:
            if run.stop.is_set():
                raise _Stop
            pages = [self.store.export_page(query, after, limit, scope) for query in queries]
            if len(pages) == 1:
                rows = pages[0]
                more = len(rows) == limit
            else:
                # Each search pages on its own; below the lowest last row id of a full page,
                # every search has shown all its matches, so the merge is complete up to there.
                full = [page[-1][0] for page in pages if len(page) == limit]
                cutoff = min(full) if full else None
                merged = {rid: res for page in pages for rid, res in page if cutoff is None or rid <= cutoff}
                rows = sorted(merged.items(), key=lambda item: item[0])
                more = cutoff is not None
            if rows:
                yield [content for _, content in rows]
            if not more or not rows:
                return
            after = rows[-1][0]

    def _transform(self, request: ExportRequest) -> Any:
        policy = _policy_transform(bool(request.params.get("policy_deidentify")),
                                   bool(request.params.get("policy_limits_rows")))
        if request.profile is None:
            return policy
        assert self._key is not None  # parse_kickoff refuses a profile without a key
        profile = Deidentifier(self.profiles[request.profile], self._key).apply
        if policy is None:
            return profile
        # A profile the client picks adds to what its data policy strips; it never replaces it
        # (a configured profile may keep names or full dates that the policy takes away).
        return lambda resource: policy(profile(resource))


def _policy_transform(deidentified: bool, limits_rows: bool) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    """What the client's data policy does to each exported resource, as to its reads (None: nothing)."""
    if not deidentified and not limits_rows:
        return None
    return partial(as_policy_gives, limits_rows=limits_rows, deidentified=deidentified)


def _error_file(folder: Path, refused: Mapping[str, str]) -> tuple[dict[str, Any], ...]:
    """One NDJSON file of OperationOutcomes, one per type that could not be exported (none: no file)."""
    if not refused:
        return ()
    lines = [jsonio.dumps({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "not-supported", "diagnostics": why, "expression": [rtype]}]})
        for rtype, why in sorted(refused.items())]
    name = "errors-OperationOutcome.ndjson"  # NdjsonFiles names are <Type>-<n>.ndjson: no clash
    (folder / name).write_bytes(b"\n".join(lines) + b"\n")
    return ({"type": "OperationOutcome", "file": name, "count": len(lines)},)


def manifest(job: ExportJob, base: str) -> dict[str, Any]:
    """The completion manifest of a finished job (Bulk Data Access 2.0), with file URLs under ``base``."""
    def entry(item: Any) -> dict[str, Any]:
        return {"type": item["type"], "url": f"{base}/$export-file/{job.job_id}/{item['file']}",
                "count": item["count"]}

    return {
        "transactionTime": job.transaction_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "request": job.request,
        "requiresAccessToken": True,
        "output": [entry(o) for o in job.output],
        "error": [entry(e) for e in job.error],
    }
