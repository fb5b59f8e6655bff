"""A visit's plan is reused only while every read it was planned from answers the same."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.connectors.dhis2.plan_cache import PlanCache
from gateway.connectors.dhis2.sources import ResourceBundle, ResourceSource

ENCOUNTER = {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"}}
PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Old"}]}
MUAC = {"resourceType": "Observation", "id": "o1", "encounter": {"reference": "Encounter/e1"}, "valueInteger": 11}


class Planner:
    """A stand-in plan: what the patient and the visit's observations say, counting its runs."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, source: ResourceSource) -> tuple[Any, ...]:
        self.runs += 1
        patient = source.get("Patient", "p1")
        values = [o.get("valueInteger") for o in source.find("Observation", "encounter", "Encounter/e1")]
        return (patient and patient["name"][0]["family"], tuple(values))


def test_the_plan_is_reused_until_a_read_answers_differently() -> None:
    bundle = ResourceBundle([ENCOUNTER, PATIENT, MUAC])
    cache, planner = PlanCache(), Planner()
    first = cache.plan(ENCOUNTER, bundle, planner)
    assert cache.plan(ENCOUNTER, bundle, planner) is first and planner.runs == 1

    bundle.add({**MUAC, "valueInteger": 12})  # a corrected value of the visit
    assert cache.plan(ENCOUNTER, bundle, planner) == ("Old", (12,)) and planner.runs == 2
    bundle.add({**PATIENT, "name": [{"family": "New"}]})  # the person edited
    assert cache.plan(ENCOUNTER, bundle, planner) == ("New", (12,)) and planner.runs == 3
    bundle.add({"resourceType": "Observation", "id": "o2", "encounter": {"reference": "Encounter/e1"}})
    assert cache.plan(ENCOUNTER, bundle, planner) == ("New", (12, None)) and planner.runs == 4

    edited = {**ENCOUNTER, "status": "finished"}  # another Encounter content is another plan
    cache.plan(edited, bundle, planner)
    assert planner.runs == 5


def test_errors_are_not_kept_and_the_cache_is_bounded() -> None:
    bundle = ResourceBundle([ENCOUNTER, PATIENT, MUAC])
    cache, planner = PlanCache(size=1), Planner()

    def failing(source: ResourceSource) -> Any:
        source.get("Patient", "p1")
        raise ValueError("not yet")

    with pytest.raises(ValueError):
        cache.plan(ENCOUNTER, bundle, failing)
    cache.plan(ENCOUNTER, bundle, planner)
    assert planner.runs == 1
    cache.plan({**ENCOUNTER, "id": "e2"}, bundle, planner)  # evicts e1's plan
    cache.plan(ENCOUNTER, bundle, planner)
    assert planner.runs == 3
