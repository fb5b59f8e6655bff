"""Validation cost per resource, shape cache warm: before issue 12 vs now (same run).

"Before" is the validator as it was: the schema's enums as required bindings, the narrative
only checked for being a non-empty string, no invariants. "After" adds the required
bindings of the R4 definitions, the XHTML narrative check and the base invariants.
Both run on the same resources, each with its own warm shape cache, interleaved.

Mixes: the official R4 examples (clinical and administrative resources, conformance
resources left out) and a community-health mix (the examples of the resource types a
CHW programme writes: Patient, Observation, Encounter, Immunization, Condition…).

Run: ``python -m bench.validation_cost [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from functools import cache
from typing import Any

from gateway.errors import FhirError
from gateway.fhir.invariants import default_invariants
from gateway.fhir.shapes import ShapeCache
from gateway.fhir.strict import StrictChecker, default_checker, load_table
from gateway.fhir.validate import Validator
from tests.support.npm import R4_EXAMPLES, package_dir

_CONFORMANCE = {
    "StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "ConceptMap", "OperationDefinition",
    "CapabilityStatement", "CompartmentDefinition", "ImplementationGuide", "NamingSystem", "StructureMap",
    "GraphDefinition", "MessageDefinition", "TerminologyCapabilities", "ExampleScenario", "TestScript",
    "TestReport", "Bundle",
}  # fmt: skip
_CHW = {"Patient", "Observation", "Encounter", "Immunization", "Condition", "MedicationRequest",
        "Practitioner", "Organization", "Location", "CarePlan", "RelatedPerson", "QuestionnaireResponse"}  # fmt: skip


@cache
def _legacy_checker() -> StrictChecker:
    return StrictChecker(load_table("r4-elements.json"))


def _examples() -> list[dict[str, Any]]:
    out = []
    for path in sorted(package_dir(R4_EXAMPLES).glob("*.json")):
        if path.name in ("package.json", ".index.json"):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("resourceType") not in _CONFORMANCE:
            out.append(data)
    return out


def _accepted(validator: Validator, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ok = []
    for resource in resources:
        try:
            validator.validate(resource)
        except FhirError:
            continue
        ok.append(resource)
    return ok


def _time(validator: Validator, resources: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for resource in resources:
        validator.validate(resource)
    return (time.perf_counter() - start) / len(resources) * 1e6


def measure(resources: list[dict[str, Any]], rounds: int) -> tuple[float, float]:
    """Median µs per resource (before, after) over ``rounds`` interleaved passes, caches warm."""
    before = Validator(_legacy_checker, None, ShapeCache(100_000))
    after = Validator(default_checker, default_invariants, ShapeCache(100_000))
    both = _accepted(after, _accepted(before, resources))
    old, new = [], []
    for _ in range(rounds):
        old.append(_time(before, both))
        new.append(_time(after, both))
    return statistics.median(old), statistics.median(new)


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    examples = _examples()
    mixes = {"official R4 examples": examples, "CHW-like types": [r for r in examples if r["resourceType"] in _CHW]}
    print(f"{'mix':<24}{'resources':>10}{'before µs':>12}{'after µs':>12}{'ratio':>8}")
    for name, resources in mixes.items():
        old, new = measure(resources, args.rounds)
        print(f"{name:<24}{len(resources):>10}{old:>12.1f}{new:>12.1f}{new / old:>8.2f}")
    print("goal: ratio <= 1.20 (after / before, shape cache warm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
