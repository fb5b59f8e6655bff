"""One backfill of one input: read it in batches, ingest each like a push, then save the position.

The records go through the same ``IngestService`` as ``POST /ingest/{source}`` and the pull
connectors (mapping, validation, quarantine, retractions, skip of unchanged resources). The
position is saved in the store (``PullCursors``, under ``backfill/<source>/<input key>``) only
after its batch is stored or quarantined, as a pull saves its cursor after its page: after
``kill -9`` a rerun reads again from the last saved position, so at most one batch is read
twice, and a record read twice writes nothing (deterministic ids, unchanged content skipped).
Memory is bounded by the batch: nothing else of the input is held.

A store that cannot be reached for a while (a PostgreSQL restart or failover) does not end a
backfill of hours: the batch (ingest, then its position) is tried again, after 1, 2, 4 … 30 s,
for up to ``store_wait`` seconds; nothing of a failed attempt was applied, and a retried batch
writes nothing it wrote before.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from gateway import jsonio
from gateway.backfill.inputs import Input
from gateway.backfill.readers import Item, Resume, read
from gateway.errors import invalid
from gateway.ingest import IngestReport, IngestService, ReceivedRecord
from gateway.store import PullCursors, StoreUnavailable

__all__ = ["BackfillReport", "BackfillRunner", "position_key"]

log = logging.getLogger("gateway.backfill")

DONE = -1  # the saved record count of an input read to its end
STORE_WAIT = 300.0  # seconds a batch is retried while the store cannot be reached
T = TypeVar("T")


@dataclass(slots=True)
class BackfillReport:
    """What a backfill did (counts and issue codes only: no patient data)."""

    records: int = 0  # records handled in this run (not those skipped as already done)
    stored: int = 0
    unchanged: int = 0
    deleted: int = 0
    stale: int = 0  # older than the version already stored (a newer export went first)
    quarantined: int = 0
    skipped_inputs: int = 0  # inputs a previous run finished
    reasons: Counter[str] = field(default_factory=Counter)  # quarantine issue "code at path" -> count
    stopped: bool = False  # the progress callback asked to stop: the rest waits for a rerun

    def add(self, other: BackfillReport) -> None:
        """Add another report's counts to this one's (the parts of a parallel run)."""
        for name in ("records", "stored", "unchanged", "deleted", "stale", "quarantined", "skipped_inputs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.stopped = self.stopped or other.stopped

    def summary(self) -> str:
        """One line for the log and the command line."""
        return (
            f"{self.records} record(s): {self.stored} stored, {self.unchanged} unchanged,"
            f" {self.deleted} deleted, {self.quarantined} quarantined"
            + (f", {self.stale} stale" if self.stale else "")
            + (f"; {self.skipped_inputs} input(s) already done" if self.skipped_inputs else "")
        )


#: Called after each saved batch with (records handled, bytes read) since the previous call; and
#: first with (0, bytes) when a resumed input skips that many bytes without reading them. It
#: returns False (not just nothing) to stop there (a signal): the run ends with ``stopped``, its position saved.
Progress = Callable[[int, int], bool | None]


def position_key(source: str, item: Input) -> str:
    """Where the position of ``item`` for ``source`` is saved (a name no source can have: it holds "/")."""
    return f"backfill/{source}/{item.key}"


class BackfillRunner:
    """Backfills inputs into an ``IngestService`` (see the module docstring)."""

    def __init__(
        self, ingest: IngestService, positions: PullCursors, *, batch: int = 500, store_wait: float = STORE_WAIT
    ) -> None:
        self.ingest = ingest
        self.positions = positions
        self.batch = batch
        self.store_wait = store_wait

    def resume_point(self, source: str, item: Input) -> Resume | None:
        """Where a previous run left ``item`` (None: never started; ``records == DONE``: finished)."""
        saved = self.positions.pull_cursor(position_key(source, item))
        if saved is None:
            return None
        value = jsonio.loads(saved)
        return Resume(int(value["records"]), value.get("offset"))

    def forget(self, source: str, item: Input) -> None:
        """Drop the saved position of ``item`` (``--restart``)."""
        self.positions.set_pull_cursor(position_key(source, item), None)

    def run(self, source: str, item: Input, progress: Progress | None = None) -> BackfillReport:
        """Backfill ``item`` into ``source`` from its saved position; see the module docstring."""
        self.ingest.registry.source(source)  # an unknown source fails before anything is read
        report = BackfillReport()
        resume = self._patiently(lambda: self.resume_point(source, item)) or Resume()
        if resume.records == DONE:
            report.skipped_inputs = 1
            return report
        done, read_before = resume.records, 0
        if resume.offset is not None and not item.is_url:
            # A JSON-lines file resumed at its saved offset seeks over what earlier runs read: said
            # once, as bytes done with no records, so the progress shows them done but the rate
            # (and the ETA) counts only the bytes this run reads.
            read_before = resume.offset - item.start
            if progress is not None and read_before > 0:
                progress(0, read_before)
        batch: list[Item] = []
        for found in read(item, resume):
            batch.append(found)
            if len(batch) >= self.batch:
                done = self._store(source, item, batch, done, report)
                if progress is not None and progress(len(batch), found.read - read_before) is False:
                    report.stopped = True  # after a saved batch: a rerun goes on from here
                    return report
                read_before = found.read
                batch = []
        if batch:
            done = self._store(source, item, batch, done, report)
            if progress is not None and progress(len(batch), batch[-1].read - read_before) is False:
                report.stopped = True
                return report
        self.positions.set_pull_cursor(position_key(source, item), jsonio.dumps({"records": DONE}).decode())
        log.info("backfill source=%s input=%s: %s", source, item.key, report.summary())
        return report

    def _store(self, source: str, item: Input, batch: list[Item], done: int, report: BackfillReport) -> int:
        """Ingest one batch (broken items straight to the quarantine), then save the position after it."""
        received = [
            ReceivedRecord(n, i.record, i.raw, i.content_type, origin=f"{item.name}: {i.place}")
            for n, i in enumerate(batch) if i.problem is None
        ]
        for broken in (i for i in batch if i.problem is not None):
            self._quarantine_broken(source, item, broken, report)
        if received:
            _count(report, self._patiently(lambda: self.ingest.ingest(source, received)))
        report.records += len(batch)
        done += len(batch)
        position = {"records": done, "offset": batch[-1].offset} if batch[-1].offset is not None else {"records": done}
        saved = jsonio.dumps(position).decode()
        self._patiently(lambda: self.positions.set_pull_cursor(position_key(source, item), saved))
        return done

    def _patiently(self, step: Callable[[], T]) -> T:
        """``step``, tried again while the store cannot be reached (see the module docstring)."""
        give_up = time.monotonic() + self.store_wait
        delay = 1.0
        while True:
            try:
                return step()
            except StoreUnavailable as exc:
                if time.monotonic() + delay > give_up:
                    raise
                log.warning("backfill: the store is unavailable (%s); trying the batch again in %gs",
                            type(exc.__cause__ or exc).__name__, delay)  # fmt: skip
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _quarantine_broken(self, source: str, item: Input, broken: Item, report: BackfillReport) -> None:
        error = invalid(f"{item.name}: {broken.place}: {broken.problem}", [broken.place], code="structure")
        self.ingest.store.quarantine_add(source, broken.raw, broken.content_type, error.outcome(), None)
        report.quarantined += 1
        report.reasons["structure (the input line itself)"] += 1


def _count(report: BackfillReport, ingested: IngestReport) -> None:
    for result in ingested.results:
        if result.status == "quarantined":
            report.quarantined += 1
            issue = ((result.outcome or {}).get("issue") or [{}])[0]
            where = ",".join(issue.get("expression", [])[:1])
            report.reasons[f"{issue.get('code', 'invalid')} at {where}" if where else str(issue.get("code"))] += 1
        elif result.status == "deleted":
            report.deleted += 1
        elif result.status == "unchanged":
            report.unchanged += 1
        elif result.status == "stale":
            report.stale += 1
        else:
            report.stored += 1
