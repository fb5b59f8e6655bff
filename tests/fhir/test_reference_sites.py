"""Reference targets judged at the sites of a resource's shape give the verdicts of the full walk."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import FhirError
from gateway.fhir.reference_targets import check_reference_sites, check_reference_targets, reference_sites
from gateway.mapping import MappingError, load_mapping_sets
from gateway.mapping.golden import find_cases
from gateway.mapping.inputs import read_records
from tests.support.examples import iter_examples

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def _verdict(check: Any, *args: Any) -> list[dict[str, Any]] | None:
    try:
        check(*args, where="X.")
    except FhirError as exc:
        return exc.issues()
    return None


def _mapped_resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for mapping_set in load_mapping_sets(MAPPINGS).values():
        for case in find_cases(mapping_set):
            for record in read_records(case.input_path)[0]:
                try:
                    bundle = mapping_set.map_record(record)
                except MappingError:
                    continue
                out.extend(entry["resource"] for entry in bundle["entry"])
    return out


def _retargeted(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with every literal reference pointing at a Location (allowed in few places)."""
    changed = copy.deepcopy(resource)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("reference"), str) and "/" in node["reference"]:
                node["reference"] = "Location/x"
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(changed)
    return changed


def _same_verdicts(resources: list[dict[str, Any]]) -> tuple[int, int]:
    planned = refused = 0
    for resource in resources:
        for candidate in (resource, _retargeted(resource)):
            sites = reference_sites(candidate)
            if sites is None:
                continue
            expected = _verdict(check_reference_targets, candidate)
            assert _verdict(check_reference_sites, candidate, sites) == expected
            planned += 1
            refused += expected is not None
    return planned, refused


def test_sites_judge_every_mapping_output_as_the_walk_does() -> None:
    planned, refused = _same_verdicts(_mapped_resources())
    assert planned > 100 and refused > 20  # retargeted References are refused somewhere


@pytest.mark.parametrize("part", [0, 1])
def test_sites_judge_the_official_examples_as_the_walk_does(part: int) -> None:
    examples = [example for index, (_, example) in enumerate(iter_examples()) if index % 2 == part]
    planned, refused = _same_verdicts(examples)
    assert planned > 500 and refused > 50


def test_resources_holding_resources_are_walked_each_time() -> None:
    held = {"resourceType": "Observation", "contained": [{"resourceType": "Patient", "id": "p"}]}
    assert reference_sites(held) is None
    assert reference_sites({"resourceType": "Bundle", "type": "collection"}) is None
