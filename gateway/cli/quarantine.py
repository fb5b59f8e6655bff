"""``gateway quarantine …``: list and replay records that could not be ingested.

Works directly on the store named by the settings, with the mapping files as they are on
disk now, so the usual cycle is: ``gateway quarantine list`` → fix the mapping →
``gateway mappings test`` → ``gateway quarantine replay --all``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from gateway import jsonio
from gateway.cli.common import ConfigOption, DevOption, fail, settings_from, where
from gateway.errors import exit_code_for

if TYPE_CHECKING:
    from gateway.errors import FhirError
    from gateway.ingest import IngestService, RecordResult
    from gateway.settings import Settings

__all__ = ["quarantine_app"]

quarantine_app = typer.Typer(
    name="quarantine", help="Records that could not be ingested.", no_args_is_help=True, add_completion=False
)


@contextmanager
def _service(settings: Settings) -> Iterator[IngestService]:
    from gateway.ingest import IngestConfigError
    from gateway.services import ServicePlan, Services

    try:
        services = Services.build(settings, ServicePlan(ingest=True))
    except IngestConfigError as exc:
        fail(str(exc), exit_code_for(exc))
    try:
        yield services.require_ingest()
    finally:
        services.close_now()


def _echo_result(result: RecordResult) -> None:
    if result.status == "quarantined":
        issue = (result.outcome or {}).get("issue", [{}])[0]
        typer.echo(f"  #{result.quarantine_id}: still held: {issue.get('diagnostics', '')}")
    else:
        typer.echo(f"  #{result.quarantine_id}: {result.status}, {len(result.resources)} resource(s)")


@quarantine_app.command("list")
def list_records(
    config: ConfigOption = None,
    dev: DevOption = False,
    source: Annotated[str | None, typer.Option(help="Only this source.")] = None,
    status: Annotated[str, typer.Option(help="held, replayed, discarded or all.")] = "held",
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List quarantined records, oldest first, with the reason each failed."""

    settings = settings_from(config, dev)
    with _service(settings) as service:
        found = service.store.quarantine_list(
            source=source, status=None if status == "all" else status, limit=limit
        )
    for held in found:
        issue = held.outcome.get("issue", [{}])[0]
        if as_json:
            line = {
                "id": held.qid,
                "source": held.source,
                "record": held.record_key,
                "status": held.status,
                "received": held.received.isoformat(),
                "attempts": held.attempts,
                "outcome": held.outcome,
            }
            typer.echo(jsonio.dumps(line).decode())
        else:
            reason = f"{issue.get('code', '')}: {issue.get('diagnostics', '')}"
            typer.echo(
                f"#{held.qid} {held.received:%Y-%m-%d %H:%M} {held.source} {held.record_key or '-'} "
                f"[{held.status}, {held.attempts} attempt(s)] {reason}"
            )
    if not found:
        typer.echo(f"nothing in the quarantine ({where(settings)})", err=True)
    if not as_json:
        typer.echo(f"{len(found)} record(s)")


@quarantine_app.command("replay")
def replay(
    ids: Annotated[
        list[int] | None, typer.Argument(help="Quarantine ids to replay.", show_default=False)
    ] = None,
    config: ConfigOption = None,
    dev: DevOption = False,
    all_held: Annotated[bool, typer.Option("--all", help="Replay every held record.")] = False,
    source: Annotated[str | None, typer.Option(help="With --all: only this source.")] = None,
) -> None:
    """Run held records again with the mapping files as they are now."""
    from gateway.errors import FhirError

    if bool(ids) == all_held:
        typer.echo("gateway: give quarantine ids or --all", err=True)
        raise typer.Exit(2)
    refused = 0  # ids that are not held records (unknown, already replayed or discarded): not "still held"
    settings = settings_from(config, dev)
    with _service(settings) as service:
        results: list[RecordResult] = []
        if all_held:
            results = service.replay_all(source)
        else:
            for qid in ids or []:
                try:
                    results.append(service.replay(qid))
                except FhirError as exc:
                    typer.echo(f"gateway: #{qid}: {_looked_in(exc, settings)}", err=True)
                    refused += 1
    for result in results:
        _echo_result(result)
    still = sum(1 for result in results if result.status == "quarantined")
    summary = f"{len(results) - still} replayed, {still} still held"
    typer.echo(summary + (f", {refused} not replayable" if refused else ""))
    if still or refused:
        raise typer.Exit(1)


@quarantine_app.command("discard")
def discard(
    ids: Annotated[list[int], typer.Argument(help="Quarantine ids to give up on.")],
    config: ConfigOption = None,
    dev: DevOption = False,
) -> None:
    """Mark held records discarded (they are kept, not deleted)."""
    from gateway.errors import FhirError

    done: list[int] = []
    refused: list[tuple[int, FhirError]] = []
    settings = settings_from(config, dev)
    with _service(settings) as service:
        for qid in ids:
            try:
                service.discard(qid)
                done.append(qid)
            except FhirError as exc:  # the others are still done: each id is reported
                typer.echo(f"gateway: #{qid}: {_looked_in(exc, settings)}", err=True)
                refused.append((qid, exc))
    listed = f": {', '.join(f'#{q}' for q in done)}" if refused and done else ""  # which ones, when not all
    typer.echo(f"{len(done)} record(s) discarded{listed}")
    if refused:
        raise typer.Exit(exit_code_for(refused[0][1]))


def _looked_in(exc: FhirError, settings: Settings) -> str:
    """Why an id was refused; for one the store does not hold, where the command looked (a wrong
    ``--config`` or store is the usual cause)."""
    return f"{exc.diagnostics} ({where(settings)})" if exc.status == 404 else exc.diagnostics
