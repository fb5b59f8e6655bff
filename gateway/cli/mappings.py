"""``gateway mappings …``: integrator tooling for mapping files.

* ``validate``: load every mapping and ConceptMap; exit 1 listing ``file:line: problem``;
* ``run SET FILE``: dry run, print the Bundle (or OperationOutcome) for each record;
* ``test [SET…]``: golden tests, with a readable diff on failure (``--update`` rewrites);
* ``coverage [SET…]``: source fields no rule reads, rules that never fired.

``SET`` is a mapping set name: the folder under ``--dir`` and what a configured source's
``mapping`` names.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from gateway.mapping import LoadedMappings, MappingSet

__all__ = ["mappings_app"]

mappings_app = typer.Typer(
    name="mappings",
    help="Validate, dry-run, test and measure the coverage of mapping files.",
    no_args_is_help=True,
    add_completion=False,
)

DirOption = Annotated[
    Path, typer.Option("--dir", "-d", help="The mappings folder.", file_okay=False, show_default=True)
]
SetsArgument = Annotated[
    list[str] | None, typer.Argument(help="Mapping sets (default: all).", show_default=False)
]


def _load(root: Path, *, new_cases: bool = True) -> LoadedMappings:
    from gateway.mapping import load_mappings

    if not root.is_dir():  # a usage error (a wrong --dir, or run outside the checkout), not a bad mapping
        typer.echo(f"{root}: mappings folder not found (give it with --dir)", err=True)
        raise typer.Exit(2)
    loaded = load_mappings(root, new_cases=new_cases)
    if loaded.issues:
        for issue in loaded.issues:
            typer.echo(str(issue), err=True)
        typer.echo(f"{len(loaded.issues)} problem(s) in {root}", err=True)
        raise typer.Exit(1)
    return loaded


def _pick(loaded: LoadedMappings, names: list[str] | None) -> list[MappingSet]:
    if not names:
        return list(loaded.sets.values())
    unknown = [name for name in names if name not in loaded.sets]
    if unknown:
        known = ", ".join(sorted(loaded.sets)) or "none"
        typer.echo(f"unknown mapping set {unknown[0]!r} (known: {known})", err=True)
        raise typer.Exit(2)
    return [loaded.sets[name] for name in names]


@mappings_app.command()
def validate(root: DirOption = Path("mappings")) -> None:
    """Check every mapping file and ConceptMap: schema, FHIRPath, converters, references.

    Field paths and converters are checked against the golden inputs and the form
    definitions (XLSForm, XForm, CommCare app JSON) a set.yaml lists under forms.
    """
    loaded = _load(root)
    count = sum(len(mapping_set.mappings) for mapping_set in loaded.sets.values())
    typer.echo(f"ok: {len(loaded.sets)} set(s), {count} mapping(s), {len(loaded.tables)} ConceptMap(s)")


@mappings_app.command()
def run(
    mapping_set: Annotated[str, typer.Argument(metavar="SET", help="Mapping set to apply.")],
    file: Annotated[Path, typer.Argument(help="A .json record (or array of records) or a .csv file.")],
    root: DirOption = Path("mappings"),
) -> None:
    """Dry run: print the transaction Bundle(s) a record file produces; nothing is stored."""
    import orjson

    from gateway import jsonio
    from gateway.fhir import operation_outcome
    from gateway.mapping import InputError, map_outcome, parse_csv_rows, read_records, record_problems

    loaded = _load(root)
    (selected,) = _pick(loaded, [mapping_set])
    unreadable: dict[int, str] = {}  # as the server does: a CSV line of the wrong width is refused alone
    try:
        if file.suffix.lower() == ".csv":
            _, rows = parse_csv_rows(file.read_bytes())
            records, many = [row.record for row in rows], True
            unreadable = {n: f"CSV line {row.line} {row.problem}" for n, row in enumerate(rows) if row.problem}
            places = [f"{file}:{row.line}" for row in rows]
        else:
            records, many = read_records(file)
            places = [f"{file}[{n}]" if many else str(file) for n in range(len(records))]
    except OSError as exc:
        typer.echo(f"gateway: cannot read {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(2) from exc
    except InputError as exc:  # read_records names the file itself; a CSV's parse does not
        message = str(exc)
        typer.echo(f"gateway: {message if message.startswith(str(file)) else f'{file}: {message}'}", err=True)
        raise typer.Exit(2) from exc
    outputs: list[dict[str, Any]] = [
        operation_outcome("structure", unreadable[n]) if n in unreadable else map_outcome(selected, record)
        for n, record in enumerate(records)
    ]
    refusals = [
        (place, issue) for place, output in zip(places, outputs, strict=True)
        if output.get("resourceType") == "OperationOutcome"
        for issue in output.get("issue", []) if issue.get("severity") in ("error", "fatal")
    ]  # fmt: skip
    failed = len({place for place, _ in refusals})
    sys.stdout.write(
        jsonio.dumps(outputs if many else outputs[0], option=orjson.OPT_INDENT_2).decode() + "\n"
    )
    for place, issue in refusals:  # where each refused record is in the file: its CSV line or array item
        typer.echo(f"{place}: {issue.get('diagnostics', issue.get('code', 'refused'))}", err=True)
    problems = [problem for record, output in zip(records, outputs, strict=True)
                for problem in record_problems(selected, record, output)]
    for problem in problems:
        typer.echo(f"invalid FHIR: {problem}", err=True)
    if failed or problems:
        typer.echo(f"{failed} of {len(outputs)} record(s) refused, {len(problems)} FHIR problem(s)", err=True)
        raise typer.Exit(1)


@mappings_app.command()
def test(
    sets: SetsArgument = None,
    root: DirOption = Path("mappings"),
    update: Annotated[bool, typer.Option("--update", help="Rewrite expected files from the output.")] = False,
) -> None:
    """Run the golden tests: <set>/tests/ (input + expected Bundle) and <set>/outbound/tests/ (outcome + payload)."""
    from gateway.mapping import find_cases, run_case

    loaded = _load(root, new_cases=not update)  # a new case's deliberately bad record is written, not refused
    failures = 0
    total = 0
    for mapping_set in _pick(loaded, sets):
        for case in find_cases(mapping_set):
            total += 1
            result = run_case(mapping_set, case, update=update)
            typer.echo(f"{result.status.upper():7} {case.set_name}/{case.name}")
            for line in result.lines:
                typer.echo(f"        {line}")
            if result.status == "fail":
                failures += 1
    typer.echo(f"{total - failures} passed, {failures} failed" if not update else f"{total} case(s) written")
    if failures or total == 0:
        raise typer.Exit(1)


@mappings_app.command()
def coverage(sets: SetsArgument = None, root: DirOption = Path("mappings")) -> None:
    """Report source fields no rule reads and rules that never fired on the golden inputs."""
    from gateway.mapping import mapping_coverage

    loaded = _load(root)
    for mapping_set in _pick(loaded, sets):
        for report in mapping_coverage(loaded, mapping_set):
            read = report.fields - len(report.unread)
            fired = report.rules - len(report.never_fired)
            typer.echo(
                f"{mapping_set.name}/{report.mapping}: {report.records} record(s), "
                f"fields read {read}/{report.fields}, rules fired {fired}/{report.rules}"
            )
            if report.records == 0:
                typer.echo("    no golden input matches this mapping")
                continue
            for path in report.unread:
                typer.echo(f"    unread field: {path}")
            for rule in report.never_fired:
                typer.echo(f"    rule never fired: {rule}")
