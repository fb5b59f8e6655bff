"""Compiled invariant predicates answer as fhirpathpy does, on the official R4 examples and mutants of them."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from gateway.fhir.fhirpath import walk_ast
from gateway.fhir.invariant_predicates import Unsure
from gateway.fhir.invariants import (
    _NATIVE,
    UNCHECKED_TYPES,
    Invariant,
    _contexts,
    _evaluate,
    _follow,
    default_invariants,
)
from gateway.fhir.strict import ComplexType, default_checker
from tests.support.examples import examples_dir, iter_examples

_EXPRESSIONS = {
    "AndExpression", "OrExpression", "ImpliesExpression", "EqualityExpression", "InequalityExpression",
    "MembershipExpression", "InvocationExpression", "TermExpression",
}  # fmt: skip
# Values swapped in for an element's own: the literals invariants compare with, numbers
# around their bounds, dates of several precisions, and JSON types the strict checks refuse.
_STRINGS = ["group", "display", "home", "entered-in-error", "resolved", "choice", "data-x", "named-event",
            "http://unitsofmeasure.org", "%", "a", "proposed", "changes", "C", "2020-01-01", "2019-12-31",
            "2020-01", "2020-01-01T10:00:00Z", "2020-01-01T09:00:00Z", "2020-01-01T10:00:00+01:00",
            "2020-01-01T09:30:00+01:00", "2020-01-01T10:00:00", "2020-01-01T10:00:00.5Z", ""]  # fmt: skip
_NUMBERS = [0, 1, -1, 100, 101, 100.0, 100.5, 99.99, 0.0, -0.5, Decimal("100.00"), 1e2]
_OTHER: list[Any] = [True, False, None, [], {}, ["a", "b"], [{"code": "x"}]]


def _node_expressions(invariant: Invariant) -> Iterator[dict[str, Any]]:
    assert invariant.ast is not None
    for node in walk_ast(invariant.ast["children"][0]):
        if node.get("type") in _EXPRESSIONS:
            yield node


def _mutants(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key, value in data.items():
        if key == "resourceType":
            continue
        without = dict(data)
        del without[key]
        yield without
        replacements: list[Any] = [*_STRINGS, *_NUMBERS, *_OTHER]
        if isinstance(value, dict):
            for inner in _mutants(value):
                yield {**data, key: inner}
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in _mutants(value[0]):
                yield {**data, key: [inner, *value[1:]]}
            yield {**data, key: value + value}
        for replacement in replacements:
            yield {**data, key: replacement}
        yield {**data, "_" + key: {"extension": [{"url": "http://x", "valueString": "y"}]}}


def _replaced(resource: dict[str, Any], locator: tuple[str | int, ...], node: Any) -> Any:
    if not locator:
        return node
    head, rest = locator[0], locator[1:]
    copied = copy.copy(resource)
    copied[head] = _replaced(resource[head], rest, node)  # type: ignore[index]
    return copied


def _compare(
    ctype: ComplexType, type_path: str, data: Any, owner: Any, root: Any, node: dict[str, Any], stats: dict[str, int]
) -> None:
    predicate = default_invariants().predicate(default_checker(), ctype, node)
    if predicate is None:
        stats["not compiled"] += 1
        return
    try:
        fast = predicate(data)
    except Unsure:
        stats["unsure"] += 1
        return
    stats["compared"] += 1
    slow = _evaluate(node, data, type_path, owner, root)
    assert fast is slow, (type_path, json.dumps(data, default=str)[:300], node.get("text"))


# per-1: fhirpathpy mis-orders date-times across time zones; dom-3: fhirpathpy cannot
# evaluate it (``test_r4_rules`` pins both natives on their own).
_NATIVE_DIFFERS = {"per-1", "dom-3"}


def _compare_native(
    invariant: Invariant, type_path: str, data: Any, owner: Any, root: Any, stats: dict[str, int]
) -> None:
    if invariant.element:
        return  # natives decide whole-node invariants
    native = _NATIVE[invariant.key](data, owner, root, [])
    if native is None:
        return
    assert invariant.ast is not None
    stats["native"] += 1
    slow = _evaluate(invariant.ast["children"][0], data, type_path, owner, root)
    # Only a failure counts: natives may call "passed" what FHIRPath leaves empty.
    assert (native is False) is (slow is False), (invariant.key, json.dumps(data, default=str)[:300])


def _examples() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in iter_examples():
        if resource["resourceType"] not in UNCHECKED_TYPES | {"Bundle"} and len(json.dumps(resource)) < 60_000:
            yield name, json.loads((examples_dir() / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("mutate", [False, True], ids=["as-is", "mutated"])
def test_compiled_predicates_agree_with_fhirpathpy_on_the_official_examples(mutate: bool) -> None:
    checker, table = default_checker(), default_invariants()
    stats = {"compared": 0, "unsure": 0, "not compiled": 0, "native": 0}
    examples = list(_examples())
    for _, resource in examples if not mutate else examples[::25]:
        if checker.check(resource):
            continue
        for ctype, locator, owner_locator, root_locator, _ in _contexts(checker, resource):
            invariants = [i for i in table.of(ctype.name) if i.ast is not None]
            if not invariants:
                continue
            data = _follow(resource, locator)
            owner, root = _follow(resource, owner_locator), _follow(resource, root_locator)
            type_path = table.path_of(ctype.name)
            for candidate in _mutants(data) if mutate else [data]:
                if mutate:
                    # Predicates run on resources the strict checks passed: so must mutants.
                    changed = _replaced(resource, locator, candidate)
                    if checker.check(changed):
                        continue
                    owner, root = _follow(changed, owner_locator), _follow(changed, root_locator)
                for invariant in invariants:
                    if invariant.key in _NATIVE and invariant.key not in _NATIVE_DIFFERS:
                        _compare_native(invariant, type_path, candidate, owner, root, stats)
                    for node in _node_expressions(invariant):
                        _compare(ctype, type_path, candidate, owner, root, node, stats)
    print(stats)
    assert stats["compared"] > (40_000 if mutate else 20_000)
