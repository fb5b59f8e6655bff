"""Skipping parameters by resource keys never changes the index rows extracted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.mapping import MappingError, load_mapping_sets
from gateway.mapping.golden import find_cases
from gateway.mapping.inputs import read_records
from gateway.search.extract import ExtractionPlan, index_rows
from gateway.search.registry import default_registry
from tests.support.examples import iter_examples


def _all_resources(node: Any) -> list[dict[str, Any]]:
    """A resource and every resource inside it (contained, Bundle entries, Parameters)."""
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            found.append(node)
        for value in node.values():
            found.extend(_all_resources(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_all_resources(item))
    return found


def test_plans_extract_the_same_rows_as_every_parameter_for_every_official_example() -> None:
    registry = default_registry()
    plans: dict[str, ExtractionPlan] = {}
    checked = skipped = 0
    for _, example in iter_examples():
        for resource in _all_resources(example):
            rtype = resource["resourceType"]
            params = registry.indexed(rtype)
            if not params:
                continue
            plan = plans.setdefault(rtype, ExtractionPlan(params))
            assert index_rows(resource, plan) == index_rows(resource, params), rtype
            skipped += len(params) - len(plan.candidates(resource))
            checked += 1
    assert checked > 5000
    assert skipped > checked * 5  # the plan does skip most parameters


def test_plans_extract_the_same_rows_as_every_parameter_for_every_mapping_output() -> None:
    registry = default_registry()
    plans: dict[str, ExtractionPlan] = {}
    checked = rows = 0
    for mapping_set in load_mapping_sets(Path(__file__).resolve().parents[2] / "mappings").values():
        for case in find_cases(mapping_set):
            for record in read_records(case.input_path)[0]:
                try:
                    bundle = mapping_set.map_record(record)
                except MappingError:
                    continue
                for entry in bundle["entry"]:
                    resource = entry["resource"]
                    rtype = resource["resourceType"]
                    plan = plans.setdefault(rtype, ExtractionPlan(registry.indexed(rtype)))
                    found = index_rows(resource, plan)
                    assert found == index_rows(resource, registry.indexed(rtype)), rtype
                    checked += 1
                    rows += len(found.token) + len(found.reference) + len(found.string) + len(found.date)
    assert checked > 100 and rows > checked * 5
