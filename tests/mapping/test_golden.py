"""Every shipped mapping's golden tests pass and produce valid FHIR R4."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mapping import load_mappings
from gateway.mapping.golden import find_cases, run_case

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
_LOADED = load_mappings(MAPPINGS)
CASES = [
    pytest.param(mapping_set, case, id=f"{case.set_name}/{case.name}")
    for mapping_set in _LOADED.sets.values()
    for case in find_cases(mapping_set)
]


def test_every_set_ships_golden_tests() -> None:
    assert _LOADED.issues == []
    assert sorted(_LOADED.sets) == ["cht", "commcare", "csv", "kobo", "odk"]
    for mapping_set in _LOADED.sets.values():
        matched = {case.name for case in find_cases(mapping_set)}
        assert matched, f"{mapping_set.name} has no golden test"


def test_every_shipped_mapping_is_exercised_by_a_golden_input() -> None:
    from gateway.mapping.inputs import read_records

    used: set[str] = set()
    for mapping_set in _LOADED.sets.values():
        for case in find_cases(mapping_set):
            if case.outbound:
                continue  # an outcome context, not a source record
            records, _ = read_records(case.input_path)
            used.update(mapping_set.select(record).name for record in records)
    every = {mapping.name for mapping_set in _LOADED.sets.values() for mapping in mapping_set.mappings}
    assert used == every


@pytest.mark.parametrize(("mapping_set", "case"), CASES)
def test_golden(mapping_set, case) -> None:
    result = run_case(mapping_set, case)
    assert result.status == "pass", "\n".join(result.lines)


APPOINTMENT = """\
mapping: fp-appointment
version: 1.0.0
record_id: id
provenance: {recorded: "{{ due | datetime }}"}
rules:
  - name: next_visit
    kind: resource
    resourceType: Appointment
    template:
      status: proposed
      start: "{{ due | datetime }}"
      participant: [{actor: "{{ patient | ref('Patient') }}", status: needs-action}]
"""


def test_a_resource_the_store_refuses_fails_its_golden_case(mappings_dir) -> None:
    """``mappings test`` said PASS for an Appointment without ``end`` (app-2), which every ingest
    then quarantined: a golden case checks what the store checks, invariants included."""
    from gateway.mapping import fhir_problems

    root = mappings_dir({
        "fp/set.yaml": "name: fp\nsystem: urn:test:fp\n",
        "fp/appointment.yaml": APPOINTMENT,
        "fp/tests/next.input.json": '{"id": "r1", "due": "2025-09-03T08:00:00Z", "patient": "p1"}',
    })
    mapping_set = load_mappings(root).sets["fp"]
    (case,) = find_cases(mapping_set)
    updated = run_case(mapping_set, case, update=True)
    assert updated.status == "fail"
    result = run_case(mapping_set, case)
    assert result.status == "fail"
    assert any("app-2: Either start and end are specified, or neither" in line for line in result.lines), result.lines
    bundle = mapping_set.map_record({"id": "r1", "due": "2025-09-03T08:00:00Z", "patient": "p1"})
    (problem,) = fhir_problems(bundle)
    assert problem.startswith("Appointment/") and "app-2" in problem
