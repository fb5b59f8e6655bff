"""One pull of a source: read its API page by page, ingest each page like a push, then save the cursor.

The records go through the same ``IngestService`` as ``POST /ingest/{source}`` (same mapping
set, validation, quarantine, retractions, and skip of unchanged resources, so a record read
twice writes nothing). The cursor is saved only after its page is stored or quarantined: a
crash re-reads that page, it never skips one. A record that fails is quarantined like a
pushed one; a failure of the source's API (after the retry policy's tries) or of the store
ends the pull with the cursor at the last stored page.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import anyio.to_thread
import httpx

from gateway import jsonio
from gateway.connectors import resolve_credentials
from gateway.ingest import PULL_KINDS, IngestService, ReceivedRecord, SourceConfig
from gateway.pull.base import Page, PullConnector, PullError
from gateway.pull.cht_changes import ChtChanges
from gateway.pull.commcare_api import CommCareApi
from gateway.pull.config import PullOptions, pull_options
from gateway.pull.http import Fetcher, Sleep
from gateway.pull.kobo_api import KoboApi
from gateway.pull.odk_central import OdkCentral
from gateway.scheduler import PeriodicTask
from gateway.store import PullCursors

__all__ = ["PullReport", "PullRunner", "pull_tasks"]

log = logging.getLogger("gateway.pull")

CONNECTORS: dict[str, Callable[[PullOptions, Fetcher], PullConnector]] = {
    "odk-central": OdkCentral, "commcare-api": CommCareApi, "cht-changes": ChtChanges, "kobo-api": KoboApi,
}


@dataclass(slots=True)
class PullReport:
    """What one pull did (counts only: no patient data)."""

    source: str
    pages: int = 0
    records: int = 0
    stored: int = 0
    unchanged: int = 0
    quarantined: int = 0
    deleted: int = 0
    stale: int = 0  # older than the version stored (a page read again after the record changed)
    retries: int = 0
    cursor: str | None = None

    def summary(self) -> str:
        """One line for the log and the scheduler."""
        return (
            f"pulled {self.records} record(s) in {self.pages} page(s): {self.stored} stored,"
            f" {self.unchanged} unchanged, {self.deleted} deleted, {self.quarantined} quarantined"
            + (f", {self.stale} stale" if self.stale else "")
            + (f", {self.retries} retried request(s)" if self.retries else "")
        )


class PullRunner:
    """Pulls the configured pulled sources into an ``IngestService`` (see the module docstring)."""

    def __init__(
        self,
        ingest: IngestService,
        cursors: PullCursors,
        *,
        environ: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
    ) -> None:
        self.ingest = ingest
        self.cursors = cursors
        self.environ = environ
        self._transport = transport
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}

    def pulled_sources(self) -> list[SourceConfig]:
        """The configured sources the gateway pulls."""
        return [s for s in self.ingest.registry.sources.values() if s.kind in PULL_KINDS]

    async def pull(
        self,
        name: str,
        *,
        since: str | None = None,
        progress: Callable[[PullReport], None] | None = None,
    ) -> PullReport:
        """Pull source ``name`` from its saved cursor (or from ``since``); see the module docstring."""
        source = self.ingest.registry.source(name)
        if source.kind not in PULL_KINDS or source.pull is None:
            raise PullError(f"source {name} is pushed (kind {source.kind}), not pulled")
        options = pull_options(source.kind, source.pull)
        auth = resolve_credentials(options.auth, self.environ).httpx_auth() if options.auth is not None else None
        lock = self._locks.setdefault(name, asyncio.Lock())
        report = PullReport(name)
        async with lock, httpx.AsyncClient(
            auth=auth, timeout=options.timeout, transport=self._transport, follow_redirects=True,
            headers={"Accept": "application/json"},
        ) as client:  # fmt: skip
            fetcher = Fetcher(client, name, options.retry, sleep=self._sleep or anyio.sleep)
            connector: PullConnector = CONNECTORS[source.kind](options, fetcher)
            cursor = connector.start(since) if since is not None else await anyio.to_thread.run_sync(
                self.cursors.pull_cursor, name
            )
            report.cursor = cursor
            try:
                async for page in connector.pages(cursor):
                    await anyio.to_thread.run_sync(self._store_page, name, page, report)
                    report.pages += 1
                    report.cursor = page.cursor
                    report.retries = fetcher.retries
                    if progress is not None:
                        progress(report)
            except PullError as exc:  # the scheduler logs only the type: say why here (no values in it)
                log.error("pull source=%s stopped after %d page(s): %s", name, report.pages, exc)
                raise
            finally:
                report.retries = fetcher.retries
        log.info("pull source=%s: %s", name, report.summary())
        return report

    def _store_page(self, name: str, page: Page, report: PullReport) -> None:
        """Ingest a page's records, then (only then) save its cursor."""
        if page.records:
            received = [
                ReceivedRecord(i, record, jsonio.dumps(record), "application/json")
                for i, record in enumerate(page.records)
            ]
            for result in self.ingest.ingest(name, received).results:
                _count(report, result.status)
        report.records += len(page.records)
        self.cursors.set_pull_cursor(name, page.cursor)


def _count(report: PullReport, status: str) -> None:
    if status == "quarantined":
        report.quarantined += 1
    elif status == "deleted":
        report.deleted += 1
    elif status == "unchanged":
        report.unchanged += 1
    elif status == "stale":
        report.stale += 1
    else:
        report.stored += 1


def pull_tasks(runner: PullRunner) -> list[PeriodicTask]:
    """One scheduled task per pulled source, every ``pull.interval``, run by one process of those
    sharing the store (``cluster_once``)."""
    tasks: list[PeriodicTask] = []
    for source in runner.pulled_sources():
        assert source.pull is not None
        options = pull_options(source.kind, source.pull)

        async def run(name: str = source.name) -> str:
            return (await runner.pull(name)).summary()

        tasks.append(PeriodicTask(f"pull-{source.name}", options.interval, run, run_at_start=True, cluster_once=True))
    return tasks
