"""``gateway queue …`` and ``gateway worker``: delivery from the command line.

    gateway queue status                          # depth, lag, circuit, live workers per destination
    gateway queue workers                         # worker heartbeats
    gateway queue dead-letters --destination shr --reason 'http_4*' --since 24h
    gateway queue replay shr:1234                 # one dead letter
    gateway queue replay --destination shr --reason http_422
    gateway queue replay --all
    gateway queue pause shr / gateway queue resume shr
    gateway queue purge --destination shr --until 2024-01-01 --yes
    gateway worker [--destination shr]            # outbox + workers until SIGTERM

This module is the CLI boundary: it is where the environment (``os.environ``) is read
and handed to ``resolve_credentials``.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gateway import jsonio
from gateway.cli.common import ConfigOption, DevOption, config_file, console, describe_validation_error, fail, where
from gateway.errors import GatewayError, exit_code_for

if TYPE_CHECKING:
    from gateway.delivery import DeadLetterFilter, DeliveryAdmin, DeliverySections

T = TypeVar("T")

queue_app = typer.Typer(help="The delivery queue: status, dead letters, replay.", no_args_is_help=True)

DestinationsOption = Annotated[
    Path | None,
    typer.Option("--destinations", help="YAML file with destinations/delivery sections", dir_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
DestinationFilter = Annotated[str | None, typer.Option("--destination", "-d", help="destination name")]
ReasonFilter = Annotated[str | None, typer.Option("--reason", help="reason code, or a prefix ending in *")]
SinceFilter = Annotated[str | None, typer.Option("--since", help="ISO time, or an age like 24h")]
UntilFilter = Annotated[str | None, typer.Option("--until", help="ISO time, or an age like 1h")]


def _load(config: Path | None, destinations: Path | None, dev: bool = False) -> tuple[Any, DeliverySections]:
    from pydantic import ValidationError

    from gateway.connectors import DeliveryConfigError
    from gateway.settings import ConfigFileError, delivery_sections, load_settings

    config = config_file(config, dev)
    try:
        settings = load_settings(config)
        return settings, delivery_sections(settings, destinations)
    except (ConfigFileError, DeliveryConfigError) as exc:
        fail(str(exc), exit_code_for(exc))
    except ValidationError as exc:  # file:line (or GATEWAY_ variable) and setting, as `config check`
        fail(describe_validation_error(exc, config))


def _with_admin(
    config: Path | None,
    destinations: Path | None,
    action: Callable[[DeliveryAdmin], Awaitable[T]],
    dev: bool = False,
    empty: str | None = None,
) -> T:
    """Run ``action`` on the queue's admin view; when it returns nothing, say so (``empty``) and where."""
    from gateway.delivery import UnknownDeadLetter, UnknownDestination, open_admin
    from gateway.subscriptions import subscription_destination

    settings, sections = _load(config, destinations, dev)
    # The subscriptions' own destination: its notifications' dead letters are listed and replayed here too.
    base = settings.public_base_url or "http://localhost"
    internal = [subscription_destination(settings.subscriptions, base)] if settings.subscriptions.enabled else []

    async def run() -> T:
        store = _open_feed(settings.store_url)
        handle = open_admin(settings.queue_url, sections, feed=store, prefix=settings.queue_prefix,
                            internal=internal)
        try:
            return await action(handle.admin)
        finally:
            await handle.queue.close()
            if store is not None:
                store.close()

    try:
        result = asyncio.run(run())
    except (UnknownDestination, UnknownDeadLetter) as exc:
        # Found nothing: say where it looked (a wrong ./gateway.yaml or GATEWAY_CONFIG shows at once).
        fail(f"{exc.diagnostics} ({where(settings)})", exit_code_for(exc))
    except GatewayError as exc:
        fail(exc.diagnostics, exit_code_for(exc))
    if empty is not None and not result:
        typer.echo(f"{empty} ({where(settings)})", err=True)
    return result


def _open_feed(store_url: str) -> Any:
    """The store, for delivery lag; None when its SQLite file does not exist (never create one here)."""
    from gateway.store import open_store

    if store_url.startswith("sqlite:///"):
        path = Path(store_url[len("sqlite:///") :].partition("?")[0])
        if not path.is_file():
            return None
    try:
        return open_store(store_url)
    except Exception:  # unreachable database: the queue's view still helps, lag shows "-"
        return None


def parse_when(value: str | None, *, now: float | None = None) -> float | None:
    """Epoch seconds from an ISO 8601 time, or from an age (``24h`` means 24 hours ago)."""
    from gateway.connectors import parse_duration

    if value is None:
        return None
    if re.fullmatch(r"\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*", value):
        return (now if now is not None else time.time()) - float(parse_duration(value))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"not a time: {value!r} (use ISO 8601 or an age like 24h)")
    if when.tzinfo is None:
        when = when.astimezone()
    return when.timestamp()


def _filter(
    destination: str | None, reason: str | None, since: str | None, until: str | None
) -> DeadLetterFilter:
    from gateway.delivery import DeadLetterFilter

    return DeadLetterFilter(destination, reason, parse_when(since), parse_when(until))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


@queue_app.command("status")
def status(
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    json: JsonOption = False,
    dev: DevOption = False,
) -> None:
    """Per destination: depth, oldest age, in flight, retrying, dead, delivered/min, lag, live workers, circuit."""
    import orjson
    from rich.table import Table

    rows = _with_admin(config, destinations, lambda admin: admin.status(), dev, "no destinations configured")
    workers = _with_admin(config, destinations, lambda admin: admin.workers(), dev) if rows else []
    if json:
        typer.echo(jsonio.dumps([row.as_json() for row in rows], option=orjson.OPT_INDENT_2).decode())
        return
    table = Table(
        "destination", "kind", "depth", "oldest", "in flight", "retrying", "dead", "/min", "lag", "lag age",
        "workers", "circuit",
    )
    now = time.time()
    for row in rows:
        s = row.stats
        circuit = s.circuit + (" (paused)" if s.paused else "") + ("" if row.enabled else " (disabled)")
        beat = f", last {_age(now - row.last_heartbeat)} ago" if row.last_heartbeat is not None else ""
        table.add_row(
            row.name,
            row.kind,
            str(s.depth),
            _age(s.oldest_pending_age),
            str(s.in_flight),
            str(s.retrying),
            str(s.dead),
            f"{s.delivered_per_min:.0f}",
            "-" if row.lag_changes is None else str(row.lag_changes),
            _age(row.lag_seconds),
            f"{row.workers_alive} live{beat}",
            circuit,
        )
    out = console()
    out.print(table)
    if not any(worker.alive for worker in workers):
        settings, _ = _load(config, destinations, dev)
        start = (
            "start `gateway serve`, which delivers in-process, or `gateway worker`"
            if settings.delivery.in_process_worker
            else "run `gateway worker`: delivery.in_process_worker is false, so `gateway serve` does not deliver"
        )
        out.print(f"no live delivery worker: nothing is delivering ({start})")


@queue_app.command("workers")
def workers_command(
    config: ConfigOption = None, destinations: DestinationsOption = None, json: JsonOption = False,
    dev: DevOption = False,
) -> None:
    """Delivery worker processes: destinations, jobs in flight, last heartbeat, live or not."""
    import orjson
    from rich.table import Table

    workers = _with_admin(config, destinations, lambda admin: admin.workers(), dev)
    if json:
        typer.echo(jsonio.dumps([w.as_json() for w in workers], option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("worker", "destinations", "in flight", "started", "last heartbeat", "live")
    for worker in workers:
        beat = worker.beat
        # A worker no longer heard from holds nothing: its leases lapse and its jobs go back to the queue.
        in_flight = str(beat.in_flight) if worker.alive else "-"
        table.add_row(
            beat.name, ", ".join(beat.destinations), in_flight, _iso(beat.started_at),
            f"{_age(worker.age)} ago", "yes" if worker.alive else "no",
        )
    console().print(table)


@queue_app.command("dead-letters")
def dead_letters(
    destination: DestinationFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 100,
    show: Annotated[str | None, typer.Option("--show", help="print one dead letter in full")] = None,
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    dev: DevOption = False,
    json: JsonOption = False,
) -> None:
    """List dead letters (filter by destination, reason, time), or --show one with request/response."""
    import orjson
    from rich.table import Table

    from gateway.delivery import dead_letter_detail, dead_letter_summary

    if show is not None:
        letter = _with_admin(config, destinations, lambda admin: admin.dead_letter(show), dev)
        typer.echo(jsonio.dumps(dead_letter_detail(letter), option=orjson.OPT_INDENT_2).decode())
        return
    chosen = _filter(destination, reason, since, until)
    letters = _with_admin(
        config, destinations, lambda admin: admin.dead_letters(chosen, limit=limit), dev, "no dead letters"
    )
    if json:
        summaries = [dead_letter_summary(letter) for letter in letters]
        typer.echo(jsonio.dumps(summaries, option=orjson.OPT_INDENT_2).decode())
        return
    if not letters:
        return  # said on stderr: no empty table on stdout
    table = Table("id", "resource", "reason", "status", "attempts", "died")
    for letter in letters:
        row = dead_letter_summary(letter)
        status_code = str(row["status"]) if row["status"] is not None else "-"
        # A grouped letter (one refused DHIS2 object) names its object and how many jobs it holds.
        resource = row["resource"]
        if row["group"]:
            resource += f" +{len(row['jobs']) - 1} jobs, {row['group']}"
        # Superseded: the resource's later version has its own job; replaying would discard this one.
        reason = row["reason"]
        if row["superseded_by"] is not None:
            reason += f" (superseded by v{row['superseded_by']})"
        table.add_row(
            row["id"],
            resource,
            reason,
            status_code,
            str(row["attempts"]),
            _iso(row["died_at"]),
        )
    console().print(table)


def _bulk(
    verb: str,
    action: Callable[[DeliveryAdmin, DeadLetterFilter, Callable[[int, int], None]], Awaitable[int]],
    chosen: DeadLetterFilter,
    config: Path | None,
    destinations: Path | None,
    dev: bool,
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"{verb} dead letters"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as progress:
        task = progress.add_task(verb, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return _with_admin(config, destinations, lambda admin: action(admin, chosen, update), dev)


@queue_app.command("replay")
def replay(
    job_id: Annotated[str | None, typer.Argument(help="one dead letter id, e.g. shr:1234")] = None,
    destination: DestinationFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    all_: Annotated[bool, typer.Option("--all", help="replay every dead letter")] = False,
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    dev: DevOption = False,
) -> None:
    """Send dead letters again: one id, a filtered set, or --all (with a progress bar)."""
    filtered = any(v is not None for v in (destination, reason, since, until))
    if job_id is not None:
        if filtered or all_:
            fail("give a dead letter id, or filters, or --all; not several")
        jobs = _with_admin(config, destinations, lambda admin: admin.replay(job_id), dev)
        typer.echo(f"replayed {job_id}" + (f" with the {jobs - 1} other jobs of its dead letter" if jobs > 1 else ""))
        return
    if not filtered and not all_:
        fail("say what to replay: an id, --destination/--reason/--since/--until, or --all")
    chosen = _filter(destination, reason, since, until)
    count = _bulk(
        "replaying",
        lambda admin, w, p: admin.replay_matching(w, progress=p),
        chosen,
        config,
        destinations,
        dev,
    )
    typer.echo(f"replayed {count} dead letters")


@queue_app.command("purge")
def purge(
    destination: DestinationFilter = None,
    reason: ReasonFilter = None,
    since: SinceFilter = None,
    until: UntilFilter = None,
    yes: Annotated[bool, typer.Option("--yes", help="really delete them")] = False,
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    dev: DevOption = False,
) -> None:
    """Delete dead letters and their payloads for good (needs --yes)."""
    if not yes:
        fail("purging deletes dead letters and their payloads; add --yes to confirm")
    chosen = _filter(destination, reason, since, until)
    count = _bulk(
        "purging", lambda admin, w, p: admin.purge_matching(w, progress=p), chosen, config, destinations, dev
    )
    typer.echo(f"purged {count} dead letters")


@queue_app.command("pause")
def pause(
    name: Annotated[str, typer.Argument(help="destination name")],
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    dev: DevOption = False,
) -> None:
    """Stop delivering to a destination (its jobs keep queueing)."""
    _with_admin(config, destinations, lambda admin: admin.pause(name), dev)
    typer.echo(f"paused {name}")


@queue_app.command("resume")
def resume(
    name: Annotated[str, typer.Argument(help="destination name")],
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    dev: DevOption = False,
) -> None:
    """Deliver to a paused destination again."""
    _with_admin(config, destinations, lambda admin: admin.resume(name), dev)
    typer.echo(f"resumed {name}")


def worker_command(
    config: ConfigOption = None,
    destinations: DestinationsOption = None,
    dev: DevOption = False,
    only: Annotated[
        list[str] | None, typer.Option("--destination", "-d", help="deliver only to these (repeatable)")
    ] = None,
) -> None:
    """Run delivery workers (and the outbox, and the periodic tasks) in this process until SIGTERM or Ctrl-C.

    SIGHUP reloads the configuration file's sources and their pull schedules.
    """
    import logging

    from gateway.cli.logs import configure_logging
    from gateway.connectors import DeliveryConfigError
    from gateway.reload import hold_sighup
    from gateway.services import run_worker

    hold_sighup()  # a SIGHUP while starting is a reload once running, not the end of the process
    settings, sections = _load(config, destinations, dev)
    configure_logging(settings)
    logging.getLogger("gateway.cli").info("gateway worker: %s", where(settings))
    try:
        asyncio.run(
            run_worker(
                settings,
                sections,
                environ=dict(os.environ),
                only=only,
                scheduler=settings.scheduler.enabled,
            )
        )
    except DeliveryConfigError as exc:
        fail(str(exc), exit_code_for(exc))
    except GatewayError as exc:  # a store or queue it cannot use (refused schema, unreachable): one line
        fail(f"{type(exc).__name__}: {exc}", exit_code_for(exc))
