"""Golden tests of mappings: recorded inputs and the Bundle each must produce.

Each set folder may hold ``tests/<case>.input.json`` (one record, or a JSON array of them)
or ``tests/<case>.input.csv`` next to ``tests/<case>.expected.json``. The expected file holds
what the engine must return for each record: a transaction Bundle, or the OperationOutcome
of a record that must be refused (a list of those for a list or CSV input).

A case passes when the output equals the expected JSON *and* every produced resource is
valid FHIR R4 as the store judges it (``gateway.fhir.validate_resource``: strict JSON, the
R4B models, the base invariants, reference target types). A failure
lists the differences by JSON path, entries matched by their ``request.url``::

    - Observation/67c2… (Body weight) .valueQuantity.value: expected 48.5, got 48

``update=True`` (``gateway mappings test --update``) rewrites expected files from the
current output, for reviewing the change with ``git diff``.

Outbound cases (``outbound/tests/<case>.input.json``: a referral outcome context, see
``gateway.mapping.outbound``) expect the payload sent back to the source app, or ``null``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway import jsonio
from gateway.errors import FhirError
from gateway.fhir import validate_resource
from gateway.mapping.engine import MappingSet
from gateway.mapping.errors import MappingError, to_operation_outcome
from gateway.mapping.inputs import InputError, read_records
from gateway.mapping.outbound import OUTBOUND_DIR, read_context, render_outcome

__all__ = [
    "GoldenCase",
    "GoldenResult",
    "diff_json",
    "find_cases",
    "fhir_problems",
    "record_problems",
    "rules_of",
    "map_outcome",
    "outbound_outcome",
    "run_case",
]

_MAX_LINES = 40


@dataclass(frozen=True, slots=True)
class GoldenCase:
    """One golden test: an input file and its expected-output file."""

    set_name: str
    name: str
    input_path: Path
    expected_path: Path
    outbound: bool = False  # an outcome context → the payload sent back to the source app


@dataclass(slots=True)
class GoldenResult:
    """``status`` is pass, fail or updated; ``lines`` explains a failure."""

    case: GoldenCase
    status: str
    lines: list[str] = field(default_factory=list)


def find_cases(mapping_set: MappingSet) -> list[GoldenCase]:
    """The golden cases in ``<set folder>/tests/``, sorted by name."""
    folder = Path(mapping_set.folder) / "tests"
    cases: list[GoldenCase] = []
    if not folder.is_dir():
        return cases
    for path in sorted([*folder.glob("*.input.json"), *folder.glob("*.input.csv")]):
        name = path.name.rsplit(".input.", 1)[0]
        cases.append(GoldenCase(mapping_set.name, name, path, folder / f"{name}.expected.json"))
    outbound = Path(mapping_set.folder) / OUTBOUND_DIR / "tests"
    for path in sorted(outbound.glob("*.input.json")) if outbound.is_dir() else ():
        name = path.name.rsplit(".input.", 1)[0]
        expected = outbound / f"{name}.expected.json"
        cases.append(GoldenCase(mapping_set.name, f"{OUTBOUND_DIR}/{name}", path, expected, outbound=True))
    return cases


def outbound_outcome(mapping_set: MappingSet, context: dict[str, Any]) -> Any:
    """The payload an outcome context makes (None: nothing sent), or the OperationOutcome of its error."""
    try:
        return render_outcome(mapping_set.outbound, context)
    except MappingError as exc:
        return to_operation_outcome(exc)


def map_outcome(mapping_set: MappingSet, record: Any) -> dict[str, Any]:
    """The Bundle for a record, or the OperationOutcome of its ``MappingError`` (an informational
    one for a record its source deleted or voided: it is not mapped, it retracts)."""
    try:
        deleted = mapping_set.retracted_key(record)
        if deleted is not None:
            return {
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "information", "code": "informational",
                    "diagnostics": f"the source deleted or voided record {deleted!r}: "
                                   "ingest retracts everything it produced",
                }],
            }  # fmt: skip
        return mapping_set.map_record(record)
    except MappingError as exc:
        return to_operation_outcome(exc)


def fhir_problems(output: dict[str, Any], made_by: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Why the resources of a Bundle are not valid FHIR R4 (empty if they are): what the store
    checks on every write (``gateway.fhir.validate_resource``: strict JSON and required bindings,
    the models, the base invariants, reference target types), so a case that passes is stored.
    ``made_by`` (``rules_of``) names the rule that made each resource, as ingest's quarantine does."""
    if output.get("resourceType") != "Bundle":
        return []
    problems: list[str] = []
    for entry in output.get("entry", []):
        resource = entry.get("resource", {})
        label = f"{resource.get('resourceType')}/{resource.get('id')}"
        rule = (made_by or {}).get((str(resource.get("resourceType")), str(resource.get("id"))))
        label = f"{rule} {label}" if rule else label
        try:
            validate_resource(resource)
        except FhirError as exc:
            for issue in exc.issues():
                where = (issue.get("expression") or [""])[0]
                text = str(issue.get("diagnostics", ""))
                shown = f"{label} {where}" if where and not text.startswith(where) else label
                problems.append(f"{shown}: {text}")
    return problems


def rules_of(mapping_set: MappingSet, record: Any) -> dict[tuple[str, str], str]:
    """The rule that made each resource of ``record``'s Bundle, ``[mapping rule R at set: file:line]``
    by (type, id); empty when the record is refused."""
    try:
        mapping = mapping_set.select(record)
        _, outputs = mapping_set.map_outputs(record, mapping)
    except MappingError:
        return {}
    return {(o.rtype, o.id): f"[{mapping.name} rule {o.rule} at {mapping.where(o.rule)}]" for o in outputs}


def record_problems(mapping_set: MappingSet, record: Any, output: dict[str, Any]) -> list[str]:
    """``fhir_problems`` of ``output`` (``record``'s Bundle), each naming the rule that made the resource."""
    problems = fhir_problems(output)
    return fhir_problems(output, rules_of(mapping_set, record)) if problems else problems


def run_case(mapping_set: MappingSet, case: GoldenCase, *, update: bool = False) -> GoldenResult:
    """Run one golden case (rewriting its expected file when ``update``)."""
    actual: Any
    try:
        if case.outbound:
            actual, problems = outbound_outcome(mapping_set, read_context(case.input_path)), []
        else:
            records, many = read_records(case.input_path)
            outputs = [map_outcome(mapping_set, record) for record in records]
            actual = outputs if many else outputs[0]
            problems = [problem for record, output in zip(records, outputs, strict=True)
                        for problem in record_problems(mapping_set, record, output)]
    except (InputError, OSError, ValueError) as exc:
        return GoldenResult(case, "fail", [f"cannot read {case.input_path.name}: {exc}"])
    if update:
        case.expected_path.write_bytes(jsonio.dumps(actual, option=orjson.OPT_INDENT_2) + b"\n")
        return GoldenResult(case, "fail" if problems else "updated", problems[:_MAX_LINES])
    if not case.expected_path.is_file():
        return GoldenResult(
            case, "fail", [f"{case.expected_path.name} is missing (run with --update to write it)"]
        )
    try:
        expected = jsonio.loads(case.expected_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        return GoldenResult(case, "fail", [f"{case.expected_path.name}: invalid JSON: {exc}"])
    lines = diff_json(expected, actual) + [f"invalid FHIR: {problem}" for problem in problems]
    if not lines:
        return GoldenResult(case, "pass")
    if len(lines) > _MAX_LINES:
        lines = [*lines[:_MAX_LINES], f"… and {len(lines) - _MAX_LINES} more"]
    return GoldenResult(case, "fail", lines)


def _short(value: Any) -> str:
    text = jsonio.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def _entry_label(entry: Any) -> str:
    url = str(entry.get("request", {}).get("url", "?")) if isinstance(entry, dict) else "?"
    rtype, _, rid = url.partition("/")
    resource = entry.get("resource", {}) if isinstance(entry, dict) else {}
    code = resource.get("code") if isinstance(resource, dict) else None
    text = code.get("text") if isinstance(code, dict) else None
    label = f"{rtype}/{rid[:8]}…" if len(rid) > 8 else url
    return f"{label} ({text})" if text else label


def _bundle_diff(expected: dict[str, Any], actual: dict[str, Any], path: str) -> list[str]:
    def by_url(bundle: dict[str, Any]) -> dict[str, Any]:
        entries = bundle.get("entry") or []
        return {str(e.get("request", {}).get("url")): e for e in entries if isinstance(e, dict)}

    want, got = by_url(expected), by_url(actual)
    lines: list[str] = []
    for url, entry in want.items():
        if url not in got:
            lines.append(f"- {path}{_entry_label(entry)}: missing from the output")
    for url, entry in got.items():
        if url not in want:
            lines.append(f"+ {path}{_entry_label(entry)}: not expected: {_short(entry.get('resource'))}")
    for url, entry in want.items():
        if url in got:
            label = _entry_label(entry)
            lines.extend(_plain_diff(entry, got[url], f"{path}{label} "))
    if [u for u in want if u in got] != [u for u in got if u in want] and not lines:
        lines.append(f"~ {path}entries are in a different order")
    rest_want = {k: v for k, v in expected.items() if k != "entry"}
    rest_got = {k: v for k, v in actual.items() if k != "entry"}
    lines.extend(_plain_diff(rest_want, rest_got, path))
    return lines


def diff_json(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Differences between two JSON values, one line per changed path (empty if equal).

    Bundles are compared entry by entry, matched by ``request.url``.
    """
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [
            line
            for index, pair in enumerate(zip(expected, actual, strict=True))
            for line in diff_json(*pair, f"{path}[{index}] ")
        ]
    if (
        isinstance(expected, dict)
        and isinstance(actual, dict)
        and expected.get("resourceType") == actual.get("resourceType") == "Bundle"
    ):
        return _bundle_diff(expected, actual, path)
    if _refusal(actual) and not _refusal(expected):
        # The whole reason, never cut short: it is what the integrator has to fix.
        return [f"! {path}refused: {issue.get('diagnostics', '')}" for issue in actual.get("issue", [])]
    return _plain_diff(expected, actual, path)


def _refusal(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"


def _plain_diff(expected: Any, actual: Any, path: str) -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        lines: list[str] = []
        for key in expected:
            if key not in actual:
                lines.append(f"- {path}.{key}: missing, expected {_short(expected[key])}")
        for key in actual:
            if key not in expected:
                lines.append(f"+ {path}.{key}: not expected: {_short(actual[key])}")
        for key in expected:
            if key in actual:
                lines.extend(_plain_diff(expected[key], actual[key], f"{path}.{key}"))
        return lines
    if isinstance(expected, list) and isinstance(actual, list):
        lines = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
            lines.extend(_plain_diff(want, got, f"{path}[{index}]"))
        if len(expected) != len(actual):
            lines.append(f"~ {path}: expected {len(expected)} items, got {len(actual)}")
        return lines
    if type(expected) is not type(actual) or expected != actual:
        return [f"~ {path or '$'}: expected {_short(expected)}, got {_short(actual)}"]
    return []
