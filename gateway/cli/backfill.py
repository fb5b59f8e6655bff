"""``gateway backfill SOURCE FILE|DIR|URL...``: historical records in, resumable, in parallel.

Each input (a directory gives its files, sorted) is read record by record and ingested in
batches through the source's mapping set, like ``POST /ingest/SOURCE``; the position of each
input is saved in the store after every batch, so a rerun of the same command after a kill
goes on from there (``--restart`` reads everything again). ``--processes N`` spreads the inputs
(and the byte ranges of a large JSON-lines file) over N worker processes; on SQLite, which has
one writer at a time, it runs one. Changes a backfill writes are marked in the change feed, and
their delivery jobs wait in the queue's backfill lane behind live ones.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.common import ConfigOption, DevOption, fail, settings_from
from gateway.errors import exit_code_for

if TYPE_CHECKING:
    from concurrent.futures import Future

    from gateway.backfill import BackfillReport, BackfillRunner, Input
    from gateway.services import Services
    from gateway.settings import Settings

__all__ = ["backfill_command"]

TICK = 10.0  # seconds between progress lines off a terminal (--quiet, logs, CI)
#: Exit status of a backfill stopped by SIGTERM/SIGINT: a clean stop, resumable by rerunning it.
STOPPED_EXIT = 0


# Set by SIGTERM/SIGINT in the command's process; in a worker process, the event the parent sets.
_stop: Any = threading.Event()
#: Records a backfill commits in one transaction at most (a live push beside it waits for one).
BACKFILL_GROUP_RECORDS = 100


def backfill_command(
    source: Annotated[str, typer.Argument(help="The configured source whose mapping set reads the records.")],
    inputs: Annotated[list[str], typer.Argument(
        help="Files (.jsonl/.ndjson, .json: an array, a CommCare Form API page {objects: [...]} or ODK Central"
             " OData {value: [...]}, .csv, .zip of those), directories of them, or http(s) URLs.",
        show_default=False)],
    config: ConfigOption = None,
    dev: DevOption = False,
    processes: Annotated[int, typer.Option(
        min=1, help="Worker processes (PostgreSQL; SQLite takes one writer, so it runs one).")] = 1,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Records per saved position.")] = 500,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="jsonl, json or csv, for inputs whose name does not say.")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget the saved positions: read everything again.")]
    = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress bar: a progress line every 10 s (also when not on a terminal).")] = False,
) -> None:
    """Backfill historical records into SOURCE: streamed, resumable after a kill, in parallel."""
    from gateway.backfill import BackfillInputError, expand
    from gateway.ingest import IngestConfigError
    from gateway.store import StoreUnavailable

    settings = settings_from(config, dev)
    if source not in {s.name for s in settings.sources}:
        fail(f"source {source!r} is not configured (sources: {', '.join(s.name for s in settings.sources) or 'none'})")
    if fmt is not None and fmt not in ("jsonl", "json", "csv"):
        fail(f"--format {fmt!r}: give jsonl, json or csv")
    try:
        items = expand(inputs, fmt)
    except BackfillInputError as exc:
        fail(str(exc), exit_code_for(exc))
    if processes > 1 and settings.store_url.startswith("sqlite"):
        typer.echo("gateway: SQLite takes one writer at a time: backfilling with 1 process", err=True)
        processes = 1
    units = _units(items, processes)
    previous = _stop_on_signals()
    try:
        if processes == 1:
            report = _run_here(settings, source, units, batch, restart, quiet)
        else:
            report = _run_parallel(config, dev, settings, source, units, processes, batch, restart, quiet)
    except (BackfillInputError, IngestConfigError) as exc:
        fail(str(exc), exit_code_for(exc))
    except StoreUnavailable as exc:  # for longer than the runner waits: one line, not a traceback
        fail(f"{exc}; run the same command again to go on from the saved positions", exit_code_for(exc))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if report.stopped:
        # Every process stopped after a saved batch: nothing half-done, nothing left running.
        typer.echo(f"gateway: backfill of {source} stopped by a signal; run the same command again to go on"
                   " from the saved positions", err=True)
        raise typer.Exit(STOPPED_EXIT)
    if report.stored:
        _refresh_statistics(settings)
    typer.echo(f"{source}: {report.summary()}")
    if report.quarantined:
        typer.echo("  quarantined, by issue:")
        for reason, count in report.reasons.most_common(8):
            typer.echo(f"    {count:>8}  {reason}")
        typer.echo(f"  see `gateway quarantine list --source {source}`; after fixing the mapping,"
                   f" `gateway quarantine replay --all --source {source}`")


def _stop_on_signals() -> dict[int, Any]:
    """SIGTERM and SIGINT ask the backfill to stop after its current batches; the handlers replaced."""
    _stop.clear()

    def stop(signum: int, frame: object) -> None:
        _stop.set()

    previous: dict[int, Any] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, stop)
    return previous


def _refresh_statistics(settings: Settings) -> None:
    """Let the planner see what the backfill wrote (PostgreSQL's ``ANALYZE``), instead of waiting
    for autovacuum while searches are planned on the store's size before."""
    from gateway.store import open_store

    store = open_store(settings.store_url)
    try:
        store.refresh_statistics()
    finally:
        store.close()


def _units(items: list[Input], processes: int) -> list[Input]:
    """The inputs, with large JSON-lines files cut so that every process has work."""
    from gateway.backfill import split

    if processes < 2 or len(items) >= processes:
        return items
    return [part for item in items for part in split(item, processes)]


def _services(settings: Settings) -> Services:
    from gateway.services import ServicePlan, Services

    services = Services.build(settings, ServicePlan(ingest=True, environ=os.environ))
    # Its changes go on the backfill lane (delivered after live ones); on SQLite its store also
    # gives way to live writers, who then wait for one of its transactions: a short one.
    services.store.feed_lane = "backfill"
    assert services.ingest is not None
    services.ingest.group_records = BACKFILL_GROUP_RECORDS
    return services


def _runner(services: Services, batch: int) -> BackfillRunner:
    from gateway.backfill import BackfillRunner

    assert services.ingest is not None
    return BackfillRunner(services.ingest, services.store, batch=batch)


def _run_here(
    settings: Settings, source: str, units: list[Input], batch: int, restart: bool, quiet: bool
) -> BackfillReport:
    from gateway.backfill import BackfillReport

    services = _services(settings)
    try:
        runner = _runner(services, batch)
        report = BackfillReport()
        with _Meter(source, units, quiet) as meter:
            for unit in units:
                if restart:
                    runner.forget(source, unit)

                def advance(records: int, read: int) -> bool:
                    if services.messages is not None:
                        services.messages.flush_now()  # keep the message log's buffer small
                    meter.advance(records, read)
                    return not _stop.is_set()  # after a saved batch: a rerun goes on from there

                report.add(runner.run(source, unit, advance))
                if report.stopped:
                    break
        return report
    finally:
        services.close_now()


# -- worker processes ---------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _start_worker(config: Path | None, dev: bool, batch: int, progress: Any, stop: Any) -> None:
    """Initialise a worker process: its own services (store connection, ingest writer).

    The parent alone decides when to stop: a Ctrl-C (SIGINT to the whole process group) or a
    SIGTERM to every process (systemd's stop) would end a worker mid-batch, so the workers ignore
    them and stop after their batch when the parent sets ``stop``, or when the parent is gone.
    """
    global _stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop = stop
    services = _services(settings_from(config, dev))
    _worker.update(services=services, runner=_runner(services, batch), progress=progress, parent=os.getppid())


def _work(source: str, unit: Input) -> BackfillReport:
    """Backfill one unit in a worker process, reporting progress to the parent."""
    services: Services = _worker["services"]

    def advance(records: int, read: int) -> bool:
        if services.messages is not None:
            services.messages.flush_now()
        _worker["progress"].put((records, read))
        # Stop when asked, or when the parent was killed (nobody would read the progress).
        return not (_stop.is_set() or os.getppid() != _worker["parent"])

    try:
        report: BackfillReport = _worker["runner"].run(source, unit, advance)
        return report
    finally:
        if services.messages is not None:
            services.messages.flush_now()


def _run_parallel(
    config: Path | None, dev: bool, settings: Settings, source: str, units: list[Input], processes: int,
    batch: int, restart: bool, quiet: bool,
) -> BackfillReport:
    import multiprocessing
    import queue
    from concurrent.futures import ProcessPoolExecutor

    from gateway.backfill import BackfillReport

    if restart:
        services = _services(settings)
        try:
            runner = _runner(services, batch)
            for unit in units:
                runner.forget(source, unit)
        finally:
            services.close_now()
    context = multiprocessing.get_context("spawn")  # fresh interpreters: no inherited connections or threads
    progress = context.Queue()
    stop = context.Event()
    report = BackfillReport()
    with _Meter(source, units, quiet) as meter, ProcessPoolExecutor(
        max_workers=min(processes, len(units)), mp_context=context, initializer=_start_worker,
        initargs=(config, dev, batch, progress, stop),
    ) as pool:  # fmt: skip
        futures: list[Future[BackfillReport]] = [pool.submit(_work, source, unit) for unit in units]
        while not all(f.done() for f in futures) or not progress.empty():
            if _stop.is_set() and not stop.is_set():
                stop.set()  # each worker stops after its batch in progress; units not started never start
                for future in futures:
                    future.cancel()
            try:
                records, read = progress.get(timeout=0.2)
            except queue.Empty:
                continue
            meter.advance(records, read)
        for future in futures:
            if future.cancelled():  # a unit the stop kept from starting
                report.stopped = True
                continue
            report.add(future.result())
    return report


class _Meter:
    """The progress display: a rich bar (records, records/s, bytes, ETA) on a terminal, else a line every TICK."""

    def __init__(self, source: str, units: list[Input], quiet: bool) -> None:
        sizes = [u.size for u in units]
        self.total = None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)
        self.source = source
        self.records = 0
        self.read = 0
        self.skipped = 0  # bytes of resumed inputs seeked over: done, not read by this run
        self.started = time.monotonic()
        self.last_line = self.started
        self.bar: Any = None
        if not quiet and sys.stdout.isatty():
            from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]backfill {task.fields[source]}"), BarColumn(), DownloadColumn(),
                TextColumn("{task.fields[records]} records, {task.fields[rate]}/s"), TextColumn("ETA"),
                TimeRemainingColumn(),
            )  # fmt: skip
            self.task = self.bar.add_task("backfill", total=self.total, source=source, records=0, rate="0")

    def __enter__(self) -> _Meter:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.stop()
        else:
            self._line()

    def rate(self) -> float:
        """Records per second since the start."""
        return self.records / max(time.monotonic() - self.started, 1e-6)

    def advance(self, records: int, read: int) -> None:
        """Count a saved batch; ``records == 0``: bytes a resumed input skips (done before, not read now)."""
        self.records += records
        self.read += read
        if records == 0:
            self.skipped += read
            if self.bar is not None:  # done, but not in the speed the bar's ETA is computed from
                self.bar.reset(self.task, total=self.total, completed=self.read, records=f"{self.records:,}",
                               rate=f"{self.rate():,.0f}")
            return
        if self.bar is not None:
            self.bar.update(self.task, advance=read, records=f"{self.records:,}", rate=f"{self.rate():,.0f}")
        elif time.monotonic() - self.last_line >= TICK:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        rate = self.rate()
        done = f", {100 * self.read / self.total:.1f}% of {self.total:,} bytes" if self.total else ""
        eta = ""
        if self.total and self.read > self.skipped:
            seconds = (self.total - self.read) * (time.monotonic() - self.started) / (self.read - self.skipped)
            eta = f", ETA {int(seconds // 60)}m{int(seconds % 60):02d}s"
        typer.echo(f"backfill {self.source}: {self.records:,} records, {rate:,.0f}/s{done}{eta}")
