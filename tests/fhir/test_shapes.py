"""Validation compiled per shape: the same verdict as the full check, whatever came before."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import FhirError
from gateway.fhir import validate
from gateway.fhir.shapes import CANONICAL, ShapeCache, ShapePlan, canonical_instance, flatten, leaf_checks
from gateway.fhir.strict import check_strict, default_checker
from gateway.fhir.validate import validate_resource
from tests.support.examples import load_example

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "muac-1",
    "meta": {"source": "https://cht.example.org", "tag": [{"system": "urn:x", "code": "cht@1"}]},
    "status": "final",
    "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                              "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "56072-2"}], "text": "MUAC"},
    "subject": {"reference": "Patient/p1"},
    "effectiveDateTime": "2026-03-02T09:15:00+03:00",
    "valueQuantity": {"value": 11.2, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
    "note": [{"text": "Zo\u00eb, no-break\u00a0space"}],
}  # fmt: skip


def verdict(resource: dict[str, Any]) -> tuple[str, ...]:
    """The outcome of validation: accepted, or the status and issue codes/paths raised."""
    try:
        validate_resource(resource)
    except FhirError as exc:
        return (str(exc.status), *(f"{i['code']}@{','.join(i.get('expression', []))}" for i in exc.issues()))
    return ("accepted",)


@pytest.fixture(autouse=True)
def cold_cache() -> None:
    validate._PLANS.clear()


def test_flatten_separates_structure_from_values() -> None:
    tokens, values = flatten(OBSERVATION)
    edited = copy.deepcopy(OBSERVATION)
    edited["valueQuantity"]["value"] = 13.9
    edited["subject"]["reference"] = "Patient/p2"
    tokens2, values2 = flatten(edited)
    assert tokens == tokens2 and values != values2
    assert "Observation" in tokens and "final" not in tokens and "final" in values
    # One more array item, or another JSON type of a leaf, is another shape.
    longer = copy.deepcopy(OBSERVATION)
    longer["note"].append({"text": "second"})
    assert flatten(longer)[0] != tokens
    as_int = copy.deepcopy(OBSERVATION)
    as_int["valueQuantity"]["value"] = 11
    assert flatten(as_int)[0] != tokens


def test_a_key_that_looks_like_a_marker_cannot_forge_a_shape() -> None:
    # Markers are ints and keys strings: {"a": {}} and {"a": "x"} never share tokens with keys.
    assert flatten({"resourceType": "Basic", "a": {"b": 1}})[0] != flatten({"resourceType": "Basic", "a": "{"})[0]


def test_leaf_checks_line_up_with_values() -> None:
    checker = default_checker()
    tokens, values = flatten(OBSERVATION)
    checks = leaf_checks(checker, OBSERVATION)
    assert len(checks) == len(values)
    assert all(check(value) for check, value in zip(checks, values, strict=True))
    plan = ShapePlan(tuple(checks), None)
    bad = list(values)
    bad[values.index("final")] = "done"  # not an ObservationStatus code
    assert not plan.values_ok(bad)


def test_canonical_instance_keeps_structure_and_drops_values() -> None:
    checker = default_checker()
    with_extension = {**OBSERVATION, "_status": {"extension": [{"url": "http://x.org/e", "valueString": "y"}]}}
    canonical = canonical_instance(checker, with_extension)
    assert "_status" not in canonical
    assert canonical["status"] == CANONICAL["code"]
    assert canonical["valueQuantity"]["value"] == CANONICAL["decimal"]
    assert canonical["subject"] == {"reference": CANONICAL["string"]}
    assert _skeleton(canonical_instance(checker, OBSERVATION)) == _skeleton(OBSERVATION)


def _skeleton(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _skeleton(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_skeleton(item) for item in node]
    return None


def test_a_known_shape_is_checked_by_its_plan() -> None:
    assert verdict(OBSERVATION) == ("accepted",)
    assert len(validate._PLANS) == 1
    other = copy.deepcopy(OBSERVATION)
    other["effectiveDateTime"] = "2026-02-30"  # same shape, impossible date
    assert verdict(other) == ("400", "value@Observation.effectiveDateTime")
    assert len(validate._PLANS) == 1  # a bad value does not make a new plan


def test_a_structural_model_error_is_remembered_per_shape() -> None:
    # status is a required primitive: check_strict leaves it to the R4B models.
    no_status = {k: v for k, v in OBSERVATION.items() if k != "status"}
    first = verdict(no_status)
    assert first[0] == "422" and "required@Observation.status" in first
    assert verdict(no_status) == first
    assert len(validate._PLANS) == 1


def _mutations() -> st.SearchStrategy[tuple[list[str], Any]]:
    """A leaf (by path) and a replacement value, clean or dirty."""
    leaves = [
        ["status"], ["code", "text"], ["subject", "reference"], ["effectiveDateTime"],
        ["valueQuantity", "value"], ["valueQuantity", "code"], ["note", 0, "text"], ["id"],
        ["meta", "source"], ["category", 0, "coding", 0, "code"],
    ]  # fmt: skip
    values = st.one_of(
        st.sampled_from(["final", "amended", "x", "", " ", "\u00a0", "a\u00a0b", "2026-02-29", "2024-02-29",
                         "2026-01-01T10:00:00Z", "23:59:60", "Patient/p9", "bad id!", "urn:uuid:x"]),
        st.text(max_size=8),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    )  # fmt: skip
    return st.tuples(st.sampled_from(leaves), values)


def _mutated(mutations: list[tuple[list[str], Any]]) -> dict[str, Any]:
    resource = copy.deepcopy(OBSERVATION)
    for path, value in mutations:
        node: Any = resource
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    return resource


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_mutations(), max_size=3), min_size=2, max_size=6))
def test_verdicts_do_not_depend_on_what_came_before(batches: list[list[tuple[list[str], Any]]]) -> None:
    resources = [_mutated(batch) for batch in batches]
    cold = []
    for resource in resources:
        validate._PLANS.clear()
        cold.append(verdict(resource))
    validate._PLANS.clear()
    warm_forward = [verdict(resource) for resource in resources]
    warm_backward = [verdict(resource) for resource in reversed(resources)][::-1]
    assert cold == warm_forward == warm_backward
    for resource, outcome in zip(resources, cold, strict=True):
        if check_strict(resource):
            assert outcome[0] == "400"  # values and JSON types: the strict checker's verdict


def test_official_examples_give_the_same_verdict_warm_and_cold() -> None:
    names = ["Patient-example.json", "Observation-example.json", "Bundle-bundle-example.json",
             "Questionnaire-qs1.json", "CodeSystem-v2-0550.json"]  # fmt: skip
    examples = [load_example(name) for name in names]
    cold = []
    for example in examples:
        validate._PLANS.clear()
        cold.append(verdict(example))
    assert [verdict(example) for example in examples] == cold
    assert cold[-1] == ("accepted",)  # U+00A0 in codes is legal FHIR (XML Schema \s), whatever R4B says


def test_cache_is_bounded() -> None:
    cache = ShapeCache(size=2)
    plan = ShapePlan((), None)
    for n in range(5):
        cache.put((n,), plan)
    assert len(cache) == 2 and cache.get((4,)) is plan and cache.get((0,)) is None
