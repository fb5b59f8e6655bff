"""The rules generated from the R4 definitions: data sanity, narrative rules, invariant planning."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.fhir.invariants import UNCHECKED_TYPES, _evaluate, _follow, default_invariants, plan_invariants
from gateway.fhir.narrative import narrative_problem
from gateway.fhir.strict import default_checker
from gateway.r4 import load_table
from scripts.gen_r4_rules import build
from tests.support.examples import examples_dir, iter_examples
from tests.support.npm import R4_EXAMPLES, package_dir

XHTML = 'xmlns="http://www.w3.org/1999/xhtml"'


# -- generated data ---------------------------------------------------------------------


def test_the_committed_data_is_what_the_generator_writes() -> None:
    bindings, invariants = build(package_dir(R4_EXAMPLES), load_table("r4-elements.json"))
    assert bindings == load_table("r4-bindings.json")
    assert invariants == load_table("r4-invariants.json")


def test_bindings_cover_the_schema_enums_and_more() -> None:
    table, bindings = load_table("r4-elements.json"), load_table("r4-bindings.json")
    enums = {
        (name, prop): set(table["enums"][int(spec.strip("#[]"))])
        for name, entry in table["types"].items()
        for prop, spec in entry["p"].items()
        if spec.startswith("#")
    }
    for (name, prop), codes in enums.items():
        if (name, prop) == ("Expression", "language"):
            assert prop not in bindings["elements"].get(name, {})  # extensible in 4.0.1
            continue
        assert set(bindings["valueSets"][bindings["elements"][name][prop]]) == codes, (name, prop)
    bound = {(name, prop) for name, props in bindings["elements"].items() for prop in props}
    assert len(bound) == 339 and len(bound - set(enums)) == 94
    assert bindings["elements"]["MedicationRequest"]["status"].endswith("/medicationrequest-status")
    assert "question" not in bindings["valueSets"][bindings["elements"]["Questionnaire_Item"]["type"]]  # abstract
    assert "urn:ietf:bcp:13" in bindings["skipped"]["Attachment.contentType"]


def test_invariant_counts() -> None:
    assert default_invariants().summary() == {
        "evaluated": 768,
        "warning": 176,
        "needs references": 1,
        "narrative checked by gateway.fhir.narrative": 2,
        "type test fhirpathpy answers wrongly": 1,
    }


# -- narrative --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "div",
    [
        f"<div {XHTML}>x</div>",
        f'<div {XHTML} xml:lang="en"><p class="a">&lt;&amp;&#169;&#x00A9;</p><img src="#a" alt="x"/></div>',
        f'<div {XHTML}><table border="1"><tr><td colspan="2"><a href="http://x">x</a></td></tr></table></div>',
        f"<div {XHTML}><!-- a comment --><pre>  </pre></div>",
    ],
)
def test_good_narratives(div: str) -> None:
    assert narrative_problem(div) is None


@pytest.mark.parametrize(
    ("div", "says"),
    [
        (f"<div {XHTML}>&reg;</div>", "not well-formed"),
        (f"<div {XHTML}><script>x</script></div>", "<script>"),
        (f"<div {XHTML}><object/></div>", "<object>"),
        (f"<div {XHTML}><style>p{{}}</style></div>", "<style>"),
        (f'<div {XHTML}><img src="x" onerror="alert(1)"/></div>', "onerror"),
        (f'<div {XHTML}><a href=" JavaScript:alert(1)">x</a></div>', "script URLs"),
        (f'<div {XHTML}><a href="java&#x09;script:alert(1)">x</a></div>', "script URLs"),
        ("<div>x</div>", "XHTML namespace"),
        (f"<p {XHTML}>x</p>", "single div"),
        (f'<div {XHTML}><svg xmlns="http://www.w3.org/2000/svg"/></div>', "XHTML namespace"),
        (f'<?xml-stylesheet href="x"?><div {XHTML}>x</div>', "processing"),
        (f'<!DOCTYPE d [<!ENTITY e "x">]><div {XHTML}>&e;</div>', "declarations"),
        (f"<div {XHTML}>x</div><div {XHTML}>y</div>", "not well-formed"),
        (f"<div {XHTML}>\ud800<b>x</b></div>", "not well-formed"),  # a lone surrogate, on both paths
        (f'<div {XHTML}><!-- c -->\ud800</div>', "not well-formed"),
    ],
)
def test_bad_narratives(div: str, says: str) -> None:
    problem = narrative_problem(div)
    assert problem is not None and says in problem
    assert "alert" not in problem


# -- invariants -------------------------------------------------------------------------


def _full_verdicts(resource: dict[str, Any]) -> set[tuple[str, str]]:
    """Every error invariant evaluated whole by fhirpathpy, no planning (the reference)."""
    from gateway.fhir.invariants import _contexts, _present

    checker, table = default_checker(), default_invariants()
    failed = set()
    for ctype, locator, owner_locator, root_locator, location in _contexts(checker, resource):
        data = _follow(resource, locator)
        for invariant in table.of(ctype.name):
            if invariant.ast is None or (invariant.element and not _present(data, invariant.element)):
                continue
            owner, root = _follow(resource, owner_locator), _follow(resource, root_locator)
            node = invariant.ast["children"][0]
            if _evaluate(node, data, table.path_of(ctype.name), owner, root) is False:
                where = f"{location}.{invariant.element}" if invariant.element else location
                failed.add((invariant.key, where))
    return failed


_CLINICAL = [
    name
    for name, resource in iter_examples()
    if resource["resourceType"] not in UNCHECKED_TYPES | {"Bundle"} and len(json.dumps(resource)) < 60_000
]


def test_planned_verdicts_equal_fhirpathpy_on_the_official_examples() -> None:
    checker, table = default_checker(), default_invariants()
    compared = 0
    for name in _CLINICAL[::3]:
        resource = json.loads((examples_dir() / name).read_text(encoding="utf-8"))
        if checker.check(resource):
            continue
        plan = plan_invariants(checker, table, resource)
        flatten_values = [v for v in _leaves(resource)]
        planned = {(v.key, v.location) for v in plan.run(resource, flatten_values)}
        assert planned == _full_verdicts(resource), name
        compared += 1
    assert compared > 150


def _leaves(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [leaf for value in node.values() for leaf in _leaves(value)]
    if isinstance(node, list):
        return [leaf for value in node for leaf in _leaves(value)]
    return [node]


@pytest.mark.parametrize(
    ("prediction", "fails"),
    [
        ({"probabilityDecimal": 101}, True),
        ({"probabilityDecimal": 100}, False),
        ({"probabilityRange": {"low": {"value": 1, "code": "%", "system": "http://unitsofmeasure.org"}}}, False),
        ({"probabilityRange": {"low": {"value": 1, "code": "mg", "system": "http://unitsofmeasure.org"}}}, True),
        ({"qualitativeRisk": {"text": "high"}}, False),
    ],
)
def test_one_plan_per_shape_still_judges_each_value(prediction: dict[str, Any], fails: bool) -> None:
    resource = {
        "resourceType": "RiskAssessment",
        "status": "final",
        "subject": {"reference": "Patient/1"},
        "prediction": [prediction],
    }
    plan = plan_invariants(default_checker(), default_invariants(), resource)
    assert bool(plan.run(resource, _leaves(resource))) is fails
    assert bool(_full_verdicts(resource)) is fails


def test_shape_only_invariants_are_decided_when_planning() -> None:
    # obs-6: dataAbsentReason.empty() or value.empty(): the shape alone decides it.
    both = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueString": "a",
        "dataAbsentReason": {"text": "b"},
    }
    plan = plan_invariants(default_checker(), default_invariants(), both)
    assert [v.key for v in plan.violations] == ["obs-6"]
    assert not any(check.invariant.key == "obs-6" for check in plan.checks)
    period = {"resourceType": "Encounter", "status": "planned", "class": {"code": "x"}, "period": {"start": "2020"}}
    plan = plan_invariants(default_checker(), default_invariants(), period)
    assert not plan.checks and not plan.violations  # per-1 needs both ends


def test_memoised_results_follow_the_values() -> None:
    table = default_invariants()
    make = lambda use: {"resourceType": "Organization", "name": "x", "telecom": [{"system": "phone", "use": use}]}  # noqa: E731
    plan = plan_invariants(default_checker(), table, make("work"))
    for use, fails in (("work", False), ("home", True), ("work", False), ("home", True)):
        resource = make(use)
        assert [v.key for v in plan.run(resource, _leaves(resource))] == (["org-3"] if fails else [])


@pytest.mark.parametrize(
    "repeat",
    [
        {"period": 1, "periodUnit": "d"},
        {"period": -1, "periodUnit": "d"},
        {"duration": -0.5, "durationUnit": "h"},
        {"duration": 0, "durationUnit": "h"},
    ],
)
def test_native_deciders_agree_with_fhirpathpy(repeat: dict[str, Any]) -> None:
    resource = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "#p"},
        "contained": [{"resourceType": "Patient", "id": "p"}],
        "dosageInstruction": [{"timing": {"repeat": repeat}}],
    }
    plan = plan_invariants(default_checker(), default_invariants(), resource)
    planned = {(v.key, v.location) for v in plan.run(resource, _leaves(resource))}
    assert planned == _full_verdicts(resource)
    assert bool(planned) is (min(v for v in repeat.values() if not isinstance(v, str)) < 0)


def test_unreferenced_contained_resources_break_dom_3() -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "contained": [{"resourceType": "Patient", "id": "p"}, {"resourceType": "Patient", "id": "q"}],
        "subject": {"reference": "#p"},
    }
    plan = plan_invariants(default_checker(), default_invariants(), resource)
    # fhirpathpy cannot evaluate dom-3 (it fails inside, which counts as passed): only
    # the native decider enforces it.
    assert [v.key for v in plan.run(resource, _leaves(resource))] == ["dom-3"]
    resource["performer"] = [{"reference": "#q"}]
    plan = plan_invariants(default_checker(), default_invariants(), resource)
    assert plan.run(resource, _leaves(resource)) == []


def _divs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [d for k, v in node.items() for d in ([v] if k == "div" and isinstance(v, str) else _divs(v))]
    if isinstance(node, list):
        return [d for v in node for d in _divs(v)]
    return []


def test_narrative_fast_paths_judge_as_the_parser_does() -> None:
    # The plain-text and markup fast paths against expat with per-element callbacks, on
    # every narrative of the official examples and on broken copies of them.
    from gateway.fhir.narrative import _parsed_problem

    divs = [d for _, resource in iter_examples() for d in _divs(resource)]
    broken = [
        changed
        for d in divs[::5]
        for changed in (
            d.replace("<p>", "<script>", 1), d.replace("<td", '<td onclick="x"', 1), d.replace("</div>", "&reg;</div>"),
            d + "x", d.replace(f" {XHTML}", "", 1), d.replace("<b>", "<b\x01>"),
            d.replace('href="', 'href="javascript:'),
            d.replace("<td", "<td xml:space='x'", 1), d.replace("<td", '<td title="a>b" src=" vbscript:x"', 1),
            d.replace("<p>", '<p xmlns:s="http://s"><s:script/>', 1), d.replace("<br/>", "<br/ >"),
        )
        if changed != d
    ]  # fmt: skip
    assert len(divs) > 5000 and len(broken) > 5000
    for div in divs + broken:
        assert (narrative_problem(div) is None) is (_parsed_problem(div) is None), div[:200]
