"""``gateway identity estimate``: the Patient matcher's model.

``estimate`` estimates the Fellegi–Sunter m/u from the stored Patients (or an NDJSON file of
Patients) by EM (``gateway.identity.em``), prints them next to the rule file's, and with
``--write`` puts them in the rule file's ``estimated:`` section; ``model: estimated`` in the
file makes the matcher use them (README "Identity").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway import jsonio
from gateway.cli.common import ConfigOption, DevOption, fail, settings_from
from gateway.errors import exit_code_for

if TYPE_CHECKING:
    from gateway.identity import Features, Rules
    from gateway.settings import Settings

__all__ = ["estimate_command"]

_MARK = "# m/u estimated by EM"
_BATCH = 1000


def _rule_file(settings: Settings) -> Path:
    directory = settings.identity.rules_dir or settings.mappings_dir / "identity"
    files = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    if len(files) != 1:
        fail(f"{directory}: one identity rule file (*.yaml) expected, found {len(files)}")
    return files[0]


def _stored(settings: Settings) -> Iterator[dict[str, Any]]:
    """Every live Patient of the store, read through the change feed as the matcher reads it."""

    from gateway.store import open_store

    store = open_store(settings.store_url)
    try:
        seq = 0
        while changes := store.changes(seq, _BATCH):
            seq = changes[-1].seq
            ids = list(dict.fromkeys(c.id for c in changes if c.type == "Patient"))
            for found in store.read_many([("Patient", pid) for pid in ids]):
                if not found.deleted and found.content:
                    yield jsonio.loads(found.content)
    finally:
        store.close()


def _from_file(path: Path) -> Iterator[dict[str, Any]]:
    import orjson

    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        fail(f"{path}: cannot be read ({exc.strerror})")
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                value = jsonio.loads(line)
            except orjson.JSONDecodeError as exc:
                fail(f"{path}:{number}: not JSON ({exc})")
            if not isinstance(value, dict) or value.get("resourceType") != "Patient":
                fail(f"{path}:{number}: not a Patient resource")
            yield value


def _features(patients: Iterator[dict[str, Any]], rules: Rules) -> list[Features]:
    from gateway.identity import features

    latest = {str(p.get("id", n)): p for n, p in enumerate(patients)}  # the feed repeats edited Patients
    return [features({**p, "id": pid}, rules) for pid, p in latest.items()]


def estimate_command(
    config: ConfigOption = None,
    dev: DevOption = False,
    patients: Annotated[Path | None, typer.Option(
        "--patients", help="NDJSON file of Patients to estimate from, instead of the store", dir_okay=False)] = None,
    write: Annotated[bool, typer.Option(
        "--write", help="Write the estimates into the rule file's estimated: section")] = False,
    random_pairs: Annotated[int, typer.Option(min=1000, help="Random pairs u is estimated from")] = 200_000,
    iterations: Annotated[int, typer.Option(min=1, max=10_000, help="EM iterations at most")] = 200,
) -> None:
    """Estimate the matcher's m/u by EM from the stored Patients; print them, or --write them."""
    from gateway.identity import FIELD_LEVELS, IdentityRuleError, estimate, estimated_yaml, load_rules

    settings = settings_from(config, dev)
    path = _rule_file(settings)
    try:
        rules = load_rules(path)
    except IdentityRuleError as exc:
        fail(str(exc), exit_code_for(exc))
    records = _features(_from_file(patients) if patients else _stored(settings), rules)
    if len(records) < 2:
        fail("fewer than 2 Patients to estimate from", 1)
    found = estimate(records, rules, random_pairs=random_pairs, iterations=iterations)
    levels = rules.fields
    typer.echo(f"{len(records)} Patients, {found.blocked_pairs} blocked pairs, {found.random_pairs} random pairs,"
               f" {found.iterations} iterations{'' if found.converged else ' (not converged)'}")
    typer.echo(f"{'field':<10}{'level':<19}{'m (file)':>10}{'m (EM)':>10}{'u (file)':>10}{'u (EM)':>10}")
    for name, names in FIELD_LEVELS.items():
        for level in names:
            hand = levels.get(name, {}).get(level)
            typer.echo(f"{name:<10}{level:<19}{hand.m if hand else float('nan'):>10.4f}{found.m[name][level]:>10.4f}"
                       f"{hand.u if hand else float('nan'):>10.4f}{found.u[name][level]:>10.4f}")
    if write:
        _write(path, estimated_yaml(found))
        typer.echo(f"wrote the estimated: section of {path} (set model: estimated to use it)")


def _write(path: Path, section: str) -> None:
    """Replace (or add) the file's estimated section, which this command keeps at the end of the file."""
    from gateway.identity import IdentityRuleError, load_rules

    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(_MARK)), None)
    if start is None and any(line.startswith("estimated:") for line in lines):
        fail(f"{path}: has an estimated: section not written by this command; remove it first")
    kept = "".join(lines[:start] if start is not None else lines).rstrip("\n") + "\n\n"
    path.write_text(kept + section, encoding="utf-8")
    try:
        load_rules(path)
    except IdentityRuleError as exc:
        path.write_text(text, encoding="utf-8")
        fail(f"{path}: left unchanged, the estimates do not fit: {exc}", exit_code_for(exc))
