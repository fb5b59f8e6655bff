"""Validation cost per resource, shape cache warm: before issue 12 vs now (same run).

"Before" is the validator as it was: the schema's enums as required bindings, the narrative
only checked for being a non-empty string, no invariants. "After" adds the required
bindings of the R4 definitions, the XHTML narrative check and the base invariants.
Both run on the same resources, each with its own warm shape cache, interleaved.

Mixes: the official R4 examples (clinical and administrative resources, conformance
resources left out) and a community-health mix (the examples of the resource types a
CHW programme writes: Patient, Observation, Encounter, Immunization, Condition…).

Columns add one part at a time: the required bindings of the definitions, the narrative
check, the invariants (with their per-shape memos cleared before every pass, as for
resources whose values were never seen; "memo warm" repeats values, as codes do). The
third mix drops the narratives: the gateway's mappings write none, so it is the ingest
path's cost. Each cell is the fastest of the rounds: on a loaded machine the median
measures the neighbours.

Run: ``python -m bench.validation_cost [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import cache
from typing import Any

from gateway.errors import FhirError
from gateway.fhir.invariants import default_invariants
from gateway.fhir.shapes import ShapeCache
from gateway.fhir.strict import StrictChecker, default_checker
from gateway.fhir.validate import Validator
from gateway.r4 import load_table
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


@cache
def _no_narrative_checker() -> StrictChecker:
    return StrictChecker(load_table("r4-elements.json"), load_table("r4-bindings.json"))


def measure(resources: list[dict[str, Any]], rounds: int) -> tuple[int, list[float]]:
    """Resources measured, and the fastest µs per resource of each validator, ``rounds`` interleaved passes."""
    now = Validator(default_checker, default_invariants, ShapeCache(100_000))
    validators = [
        Validator(_legacy_checker, None, ShapeCache(100_000)),  # before
        Validator(_no_narrative_checker, None, ShapeCache(100_000)),  # + bindings
        Validator(default_checker, None, ShapeCache(100_000)),  # + narrative
        now,  # + invariants, memos cold (cleared before every pass)
        Validator(default_checker, default_invariants, ShapeCache(100_000)),  # memos warm
    ]
    accepted = resources
    for validator in validators:
        accepted = _accepted(validator, accepted)
    times: list[list[float]] = [[] for _ in validators]
    for _ in range(rounds):
        for plan in now.plans.plans():
            if plan.invariants is not None:
                plan.invariants.forget()
        for validator, spent in zip(validators, times, strict=True):
            spent.append(_time(validator, accepted))
    return len(accepted), [min(spent) for spent in times]


def main() -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    examples = _examples()
    chw = [r for r in examples if r["resourceType"] in _CHW]
    # What the gateway's mappings write: the same resources without a narrative.
    mapped = [{k: v for k, v in r.items() if k != "text"} for r in chw]
    mixes = {"official R4 examples": examples, "CHW-like types": chw, "CHW-like, no narrative": mapped}
    columns = ("before", "+bindings", "+narrative", "+invariants", "memo warm")
    print(f"{'mix (µs per resource)':<26}{'n':>5}" + "".join(f"{c:>13}" for c in columns) + f"{'ratio':>8}")
    for name, resources in mixes.items():
        count, medians = measure(resources, args.rounds)
        cells = "".join(f"{m:>13.1f}" for m in medians)
        print(f"{name:<26}{count:>5}{cells}{medians[3] / medians[0]:>8.2f}")
    print("ratio: +invariants (everything now, memos cold) / before; goal <= 1.20, shape cache warm")
    print("memo warm: the same resources again, so invariant results are memoised by the values they read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
