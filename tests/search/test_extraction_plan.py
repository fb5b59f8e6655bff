"""Skipping parameters by resource keys never changes the index rows extracted."""

from __future__ import annotations

from typing import Any

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
