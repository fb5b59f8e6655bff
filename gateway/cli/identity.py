"""``gateway identity review …``: pairs waiting for a person to decide, and merges.

Works directly on the store named by the settings (``identity.enabled`` must be on, and the
rule file readable). Every decision is recorded like the admin API's: a Provenance naming the
operator (``--by``, default ``cli:$USER``) and an AuditEvent (``identity-accept``, …).
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from gateway import jsonio
from gateway.cli.common import ConfigOption, DevOption, console, fail, settings_from
from gateway.cli.identity_estimate import estimate_command
from gateway.errors import GatewayError, exit_code_for

if TYPE_CHECKING:
    from gateway.audit import AccessRecord
    from gateway.identity import Decision, IdentityEngine, ReviewPair

__all__ = ["identity_app"]

identity_app = typer.Typer(name="identity", help="Patient identity: review pairs, merges, the model's m/u.",
                           no_args_is_help=True, add_completion=False)
review_app = typer.Typer(name="review", help="Review doubtful pairs, merge and unmerge records.",
                         no_args_is_help=True, add_completion=False)
identity_app.add_typer(review_app, name="review")
identity_app.command("estimate")(estimate_command)
ByOption = Annotated[str | None, typer.Option("--by", help="Who decides (recorded); default cli:$USER.")]


@contextmanager
def _engine(config: ConfigOption, dev: bool) -> Iterator[IdentityEngine]:
    from gateway.services import ServicePlan, Services

    settings = settings_from(config, dev)
    if not settings.identity.enabled:
        fail("identity.enabled is false in this configuration: there is nothing to review")
    try:
        services = Services.build(settings, ServicePlan())
    except GatewayError as exc:
        fail(str(exc), exit_code_for(exc))
    try:
        if services.identity is None:
            fail("identity.enabled is false in this configuration: there is nothing to review")
        yield services.identity
    finally:
        services.close_now()


def _decide(
    engine: IdentityEngine, action: str, run: Callable[[str], Decision], by: str | None,
    *, patients: tuple[str, ...] = (), pair: str | None = None,
) -> None:
    """Run a decision as ``by``, record its AuditEvent (naming the Patients or the pair asked
    about, even when refused) and print what it wrote."""
    from gateway.audit import AccessRecord

    who = by or f"cli:{getpass.getuser()}"
    record = AccessRecord(time.time(), f"identity-{action}", "U", rest=False, client=who)
    record.patients.update(patients)
    if pair is not None:
        record.objects.append(("identity-review", pair))
    try:
        decision = run(who)
    except GatewayError as exc:
        record.status = exc.status
        _audit(engine, record)
        fail(str(exc), 1)
    record.status = 200
    for pid in decision.patients:
        record.touched("Patient", pid)
    record.touched("Provenance", decision.provenance)
    _audit(engine, record)
    typer.echo(f"{decision.action}: recorded by Provenance/{decision.provenance}")
    for ref in decision.written:
        typer.echo(f"  wrote {ref}")


def _audit(engine: IdentityEngine, record: AccessRecord) -> None:
    """Store the AuditEvent of a decision made here (the API's come from its audit middleware)."""
    from gateway.audit import audit_event, audit_index

    event = audit_event(record)
    engine.store.audit_append([event], [audit_index(event)])


def _table(pairs: list[ReviewPair]) -> None:
    from rich.table import Table

    table = Table("pair", "status", "score", "field", "level", "first record", "second record")
    for pair in pairs:
        rows = pair.evidence or []
        head = [pair.task, pair.status, "" if pair.score is None else f"{pair.score:.1f}"]
        table.add_row(*head, "patients", "", pair.first, pair.second)
        for e in rows:
            table.add_row("", "", "", e.field, e.level or "-", e.first, e.second)
    console().print(table)


@review_app.command("list")
def list_command(
    config: ConfigOption = None,
    dev: DevOption = False,
    status: Annotated[str, typer.Option(help="pending, accepted, rejected or all.")] = "pending",
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List review pairs, best score first, with the evidence per field."""

    from gateway.identity import STATUSES, list_pairs

    if status != "all" and status not in STATUSES:
        fail(f"--status: one of {', '.join([*STATUSES, 'all'])}")
    with _engine(config, dev) as engine:
        pairs = list_pairs(engine.store, engine.rules, status, limit)
    if as_json:
        for pair in pairs:
            typer.echo(jsonio.dumps(pair.to_json()).decode())
    elif not pairs:
        typer.echo(f"no {status} pairs")
    else:
        _table(pairs)


@review_app.command("show")
def show_command(pair: str, config: ConfigOption = None, dev: DevOption = False) -> None:
    """Show one pair with the evidence per field."""
    from gateway.identity import show_pair

    with _engine(config, dev) as engine:
        try:
            found = show_pair(engine.store, engine.rules, pair)
        except GatewayError as exc:
            fail(str(exc), 1)
    _table([found])


@review_app.command("accept")
def accept_command(pair: str, config: ConfigOption = None, dev: DevOption = False, by: ByOption = None) -> None:
    """Accept a pair: link the two records (one person, one golden record)."""
    from gateway.identity import accept

    with _engine(config, dev) as engine:
        _decide(engine, "accept", lambda who: accept(engine.store, engine.rules, pair, who), by, pair=pair)


@review_app.command("reject")
def reject_command(pair: str, config: ConfigOption = None, dev: DevOption = False, by: ByOption = None) -> None:
    """Reject a pair: keep the two records apart (unlinking them if they were linked)."""
    from gateway.identity import reject

    with _engine(config, dev) as engine:
        _decide(engine, "reject", lambda who: reject(engine.store, engine.rules, pair, who), by, pair=pair)


def _patient_id(given: str) -> str:
    """A Patient as its id or as the reference the FHIR API and the review table write (``Patient/abc``)."""
    return given.removeprefix("Patient/")


@review_app.command("merge")
def merge_command(
    survivor: str, loser: str, config: ConfigOption = None, dev: DevOption = False, by: ByOption = None
) -> None:
    """Merge the Patient LOSER into SURVIVOR (both stay readable; undo with unmerge)."""
    from gateway.identity import merge_records

    survivor, loser = _patient_id(survivor), _patient_id(loser)
    with _engine(config, dev) as engine:
        _decide(engine, "merge", lambda who: merge_records(engine.store, engine.rules, survivor, loser, who), by,
                patients=(survivor, loser))


@review_app.command("unmerge")
def unmerge_command(patient: str, config: ConfigOption = None, dev: DevOption = False, by: ByOption = None) -> None:
    """Undo the merge of PATIENT: every record it wrote goes back to its version before."""
    from gateway.identity import unmerge_record

    patient = _patient_id(patient)
    with _engine(config, dev) as engine:
        _decide(engine, "unmerge", lambda who: unmerge_record(engine.store, engine.rules, patient, who), by,
                patients=(patient,))


@review_app.command("unlink")
def unlink_command(
    first: str, second: str, config: ConfigOption = None, dev: DevOption = False, by: ByOption = None
) -> None:
    """Keep apart two Patients the matcher linked on its own (the pair is recorded as rejected)."""
    from gateway.identity import unlink

    first, second = _patient_id(first), _patient_id(second)
    with _engine(config, dev) as engine:
        _decide(engine, "unlink", lambda who: unlink(engine.store, engine.rules, first, second, who), by,
                patients=(first, second))
