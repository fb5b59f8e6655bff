"""``gateway sources …``: the configured sources, and pulling the ones that do not push.

``gateway sources pull odk`` reads ODK Central (CommCare, CHT, Kobo) from the source's saved
cursor, ingests page by page like ``POST /ingest/odk``, and saves the cursor after each page;
``--since`` starts from a given time (or CHT sequence) instead, ``--restart`` from the beginning.
The scheduler does the same every ``pull.interval`` in ``gateway serve`` / ``gateway worker``.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from gateway.cli.common import ConfigOption, DevOption, console, fail, settings_from, where
from gateway.errors import exit_code_for

__all__ = ["sources_app"]

sources_app = typer.Typer(
    name="sources", help="Configured sources; pull the ones that do not push.", no_args_is_help=True,
    add_completion=False,
)  # fmt: skip


@sources_app.command("list")
def list_sources(config: ConfigOption = None, dev: DevOption = False) -> None:
    """List the configured sources: kind, mapping set, and for pulled ones the saved cursor."""
    from gateway.store import open_store

    settings = settings_from(config, dev)
    store = open_store(settings.store_url)
    try:
        for source in settings.sources:
            cursor = store.pull_cursor(source.name) if source.pull is not None else None
            how = f"pulled, cursor {cursor}" if source.pull is not None and cursor else (
                "pulled, never yet" if source.pull is not None else "pushed")
            typer.echo(f"{source.name}\t{source.kind}\t{source.mapping}\t{how}")
    finally:
        store.close()


@sources_app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="A pulled source (odk-central, commcare-api, cht-changes, kobo-api).")],
    config: ConfigOption = None,
    dev: DevOption = False,
    since: Annotated[
        str | None,
        typer.Option(help="Start here, not at the saved cursor: an ISO time (ODK, CommCare, Kobo) or a CHT sequence."),
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget the saved cursor: read all again.")] = False,
) -> None:
    """Pull a source now, with a progress bar; the cursor is saved after every stored page."""
    import anyio
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from gateway.connectors import DeliveryConfigError
    from gateway.errors import FhirError
    from gateway.ingest import IngestConfigError
    from gateway.pull import PullError, PullReport
    from gateway.services import ServicePlan, Services

    settings = settings_from(config, dev)
    try:
        services = Services.build(settings, ServicePlan(ingest=True, environ=os.environ))
    except IngestConfigError as exc:
        fail(str(exc), exit_code_for(exc))
    try:
        runner = services.pulls
        assert runner is not None
        if name not in {s.name for s in runner.pulled_sources()}:
            pulled = ", ".join(s.name for s in runner.pulled_sources()) or "none is configured"
            if name not in {s.name for s in settings.sources}:
                fail(f"no source named {name!r} in {where(settings)} (pulled sources: {pulled})")
            fail(f"source {name!r} is not a pulled source (pulled sources: {pulled})")
        kind = next(s.kind for s in runner.pulled_sources() if s.name == name)
        if since is not None and (problem := _since_problem(kind, since)) is not None:
            fail(f"--since {since!r}: {problem}")
        if restart:
            services.store.set_pull_cursor(name, None)
        with Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed} records, {task.fields[pages]} pages, {task.fields[quarantined]} quarantined"),
            TimeElapsedColumn(), console=console(), transient=False,
        ) as bar:  # fmt: skip
            task = bar.add_task(f"pull {name}", total=None, pages=0, quarantined=0)

            def advance(report: PullReport) -> None:
                bar.update(task, completed=report.records, pages=report.pages, quarantined=report.quarantined)

            try:
                report = anyio.run(lambda: runner.pull(name, since=since, progress=advance))
            except (PullError, DeliveryConfigError, FhirError) as exc:
                bar.stop()
                fail(str(exc), exit_code_for(exc))
            bar.update(task, total=max(report.records, 1), completed=max(report.records, 1))
        typer.echo(f"{name}: {report.summary()}")
        if report.quarantined:
            typer.echo(f"  see `gateway quarantine list --source {name}`")
    finally:
        services.close_now()


def _since_problem(kind: str, since: str) -> str | None:
    """Why ``--since`` cannot start a pull of a source of ``kind`` (None when it can): a time for
    the time-cursor sources (it becomes their filter, which a source would refuse or misread)."""
    from datetime import datetime

    if not since.strip():
        return "give a time or a CHT sequence"
    if kind == "cht-changes":  # CouchDB sequences are opaque strings
        return None
    try:
        datetime.fromisoformat(since)
    except ValueError:
        return f"a source of kind {kind} starts at an ISO date or time, like 2026-01-31 or 2026-01-31T08:00:00Z"
    return None
