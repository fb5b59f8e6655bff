"""Why no mapping of a set takes a record: the fields its mappings' ``match`` tests, as the record has them.

A record of a form the set has no mapping for (a new CHT form, another CommCare xmlns, a case
type nobody mapped) used to be quarantined with ``$: no mapping of set 'cht' matches this
record``, which names no field. Each ``match`` is split into its alternatives (``or``) and
their conditions (``and``); the alternatives that come closest (most conditions true on fields the record has) say
which of their conditions failed, and the error names the fields those conditions read with
the record's values:

    no mapping of set 'cht' matches this record (doc.form is 'pregnancy_home_visit'):
    cht-assessment takes doc.form = 'assessment'

The error's path (and first OperationOutcome expression) is the first such field the record
has, else ``$``. Only the failure path runs this; a condition that cannot be evaluated on its
own counts as not true.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.fhir import member_reads
from gateway.mapping.errors import MappingError, quote
from gateway.mapping.fastpath import walk
from gateway.mapping.fhirpath import Evaluator, fhirpath_evaluator, parse_fhirpath

if TYPE_CHECKING:
    from gateway.mapping.engine import CompiledMapping

__all__ = ["Condition", "match_alternatives", "unmatched_error"]

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Alternatives listed in one message (a set of many mappings would make it unreadable).
_MAX_LISTED = 6
_MAX_TEXT = 120


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition of a ``match`` alternative: its text, the record fields it reads, how to run it."""

    text: str
    fields: tuple[tuple[str, ...], ...]
    run: Evaluator | None


def _unwrap(node: dict[str, Any]) -> dict[str, Any]:
    """``(x)`` → ``x`` (a TermExpression holding a ParenthesizedTerm)."""
    while True:
        children = node.get("children") or []
        if node.get("type") in ("TermExpression", "ParenthesizedTerm") and len(children) == 1 and (
            node.get("type") == "ParenthesizedTerm" or children[0].get("type") == "ParenthesizedTerm"
        ):
            node = children[0] if node.get("type") == "ParenthesizedTerm" else children[0]["children"][0]
            continue
        return node


def _flatten(node: dict[str, Any], kind: str, word: str) -> list[dict[str, Any]]:
    node = _unwrap(node)
    if node.get("type") == kind and node.get("terminalNodeText") == [word] and len(node.get("children") or []) == 2:
        left, right = node["children"]
        return _flatten(left, kind, word) + _flatten(right, kind, word)
    return [node]


def _render(node: dict[str, Any]) -> str | None:
    """Readable FHIRPath text of a node (the parser's ``text`` drops the spaces around words)."""
    kind = node.get("type")
    children = node.get("children") or []
    operators = node.get("terminalNodeText") or []
    if kind == "ParenthesizedTerm" and len(children) == 1:
        inner = _render(children[0])
        return None if inner is None else f"({inner})"
    if kind == "TermExpression" and len(children) == 1 and children[0].get("type") == "ParenthesizedTerm":
        return _render(children[0])
    if (
        kind not in ("InvocationExpression", "IndexerExpression", "TermExpression")
        and len(children) == 2
        and len(operators) == 1
    ):
        left, right = _render(children[0]), _render(children[1])
        if left is None or right is None:
            return None
        return f"{left} {operators[0]} {right}"
    text = node.get("text")
    return text if isinstance(text, str) else None


def _condition(node: dict[str, Any]) -> Condition | None:
    text = _render(node)
    if text is None:
        return None
    fields = tuple(dict.fromkeys(keys for variable, keys in member_reads(node) if variable is None and keys))
    try:
        run: Evaluator | None = fhirpath_evaluator(text)
    except Exception:  # fhirpathpy refuses what it cannot compile on its own; the condition only goes unscored
        run = None
    return Condition(text, fields, run)


@functools.lru_cache(maxsize=256)
def match_alternatives(text: str) -> tuple[tuple[Condition, ...], ...]:
    """A ``match`` text as alternatives (``or``) of conditions (``and``); () if it cannot be split.
    Kept per text: compiling the conditions costs ~15 ms, and a batch of a form no mapping takes
    asks again for every record."""
    try:
        ast = parse_fhirpath(text)
    except Exception:  # it compiled as a whole when the set loaded; a piece that does not is left out
        return ()
    top = (ast.get("children") or [None])[0]
    if not isinstance(top, dict):
        return ()
    alternatives: list[tuple[Condition, ...]] = []
    for alternative in _flatten(top, "OrExpression", "or"):
        conditions = [_condition(node) for node in _flatten(alternative, "AndExpression", "and")]
        if conditions and all(condition is not None for condition in conditions):
            alternatives.append(tuple(condition for condition in conditions if condition is not None))
    return tuple(alternatives)


def _holds(condition: Condition, record: dict[str, Any], env: dict[str, list[Any]]) -> bool:
    if condition.run is None:
        return False
    try:
        return condition.run(record, env) == [True]
    except MappingError:
        return False


def field_text(keys: tuple[str, ...]) -> str:
    """``form.`@xmlns``` from ``("form", "@xmlns")``: the spelling mapping files use."""
    return ".".join(key if _PLAIN_KEY.match(key) else f"`{key}`" for key in keys)


def unmatched_error(set_name: str, mappings: list[CompiledMapping], record: dict[str, Any]) -> MappingError:
    """The ``not-supported`` error for a record no mapping of the set takes, naming the fields."""
    plain = f"no mapping of set {set_name!r} matches this record"
    scored: list[tuple[int, str, list[Condition]]] = []
    for mapping in mappings:
        if mapping.match is None:
            continue
        env = {"system": [mapping.system]}
        for alternative in match_alternatives(mapping.match.text):
            failed = [condition for condition in alternative if not _holds(condition, record, env)]
            if failed:
                # A condition that holds only on what the record lacks (x.empty()) is no sign of closeness.
                held = [condition for condition in alternative if condition not in failed
                        and any(walk([record], keys) for keys in condition.fields)]
                scored.append((len(held), mapping.name, failed))
    if not scored:
        return MappingError("$", plain, code="not-supported")
    best = max(score for score, _, _ in scored)
    closest = [(name, failed) for score, name, failed in scored if score == best]
    fields = list(dict.fromkeys(keys for _, failed in closest for condition in failed for keys in condition.fields))
    present = [keys for keys in fields if walk([record], keys)]
    absent = [keys for keys in fields if keys not in present]
    has = [f"{field_text(keys)} is {_values(walk([record], keys))}" for keys in present]
    has += [f"{field_text(keys)} is missing" for keys in absent]
    wants = [f"{name} takes " + " and ".join(condition.text for condition in failed) for name, failed in closest]
    if len(wants) > _MAX_LISTED:
        wants = [*wants[:_MAX_LISTED], f"{len(wants) - _MAX_LISTED} more"]
    message = f"{plain} ({', '.join(has)})" if has else plain
    message += ": " + "; ".join(wants)
    path = field_text(present[0]) if present else "$"
    error = MappingError(path, message, code="not-supported")
    error.expression = list(dict.fromkeys([path, *(field_text(keys) for keys in present + absent)]))
    return error


def _value(value: Any) -> str:
    """A short rendering of one value; text keeps up to 120 characters (a CommCare xmlns is long)."""
    if type(value) is str:
        text = repr(value)
        return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."
    return quote(value)


def _values(values: list[Any]) -> str:
    return _value(values[0]) if len(values) == 1 else "[" + ", ".join(_value(value) for value in values[:5]) + "]"
