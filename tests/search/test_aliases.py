"""Parameters whose values other parameters' index rows hold (``combo-code``, ``patient``): no rows of
their own are written, and every search reads the others' rows with the same answers."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from gateway.search.extract import index_rows
from gateway.search.query import QueryParser
from gateway.search.registry import SearchParam, default_registry
from gateway.store.sql import SqlStore
from tests.search.test_extraction_plan import _all_resources
from tests.support.examples import iter_examples

REGISTRY = default_registry()
PARSER = QueryParser(REGISTRY, 50, 1000)
LOINC = "http://loinc.org"


def test_the_r4_unions_and_restricted_references_are_aliases_of_their_parts() -> None:
    observation = REGISTRY.params("Observation")
    assert observation["combo-code"].stored_as == ("code", "component-code")
    assert observation["combo-value-quantity"].stored_as == ("component-value-quantity", "value-quantity")
    assert (observation["patient"].stored_as, observation["patient"].target_type) == (("subject",), "Patient")
    practitioner = REGISTRY.params("Encounter")["practitioner"]
    assert (practitioner.stored_as, practitioner.target_type) == (("participant",), "Practitioner")
    assert REGISTRY.params("Provenance")["patient"].stored_as == ("target",)
    # Parameters the SQL names itself (data policies, Group export) keep rows of their own.
    for rtype, code in (("Patient", "organization"), ("Organization", "partof"), ("Group", "member"),
                        ("Observation", "code"), ("Observation", "subject"), ("Patient", "address")):
        param = REGISTRY.get(rtype, code)
        assert param is not None and not param.stored_as, (rtype, code)
    # AuditEvent.patient unites two restricted paths: not one parameter's rows, so it keeps its own.
    assert not REGISTRY.params("AuditEvent")["patient"].stored_as


def test_no_alias_is_indexed_and_every_alias_reads_rows_that_are_written() -> None:
    aliases = 0
    for rtype in sorted(REGISTRY._by_type):
        indexed = {p.code for p in REGISTRY.indexed(rtype)}
        for param in REGISTRY.params(rtype).values():
            if param.stored_as:
                aliases += 1
                assert param.code not in indexed
                assert set(param.stored_as) <= indexed, (rtype, param.code)
                assert param.table in ("token", "reference", "number")  # never a sort key's table
    assert aliases >= 40


def _rows(resource: dict[str, Any], param: SearchParam) -> Counter[tuple[Any, ...]]:
    found = index_rows(resource, [param])
    return Counter(row[1:] for table in ("token", "reference", "number") for row in getattr(found, table))


def test_every_alias_has_exactly_its_parts_values_in_every_official_example() -> None:
    checked = 0
    for _, example in iter_examples():
        for resource in _all_resources(example):
            for param in REGISTRY.params(resource["resourceType"]).values():
                if not param.stored_as:
                    continue
                own = _rows(resource, param)
                parts: Counter[tuple[Any, ...]] = Counter()
                for code in param.stored_as:
                    base = REGISTRY.get(resource["resourceType"], code)
                    assert base is not None
                    parts += _rows(resource, base)
                if param.target_type is not None:
                    parts = Counter({row: n for row, n in parts.items() if row[0] == param.target_type})
                assert own == parts, (resource["resourceType"], resource.get("id"), param.code)
                checked += bool(own)
    assert checked > 500


def _observation(rid: str, subject: str, code: str | None = None, component: str | None = None,
                 value: float | None = None) -> dict[str, Any]:  # fmt: skip
    resource: dict[str, Any] = {"resourceType": "Observation", "id": rid, "status": "final",
                                "code": {"coding": [{"system": LOINC, "code": code or "0000-0"}]},
                                "subject": {"reference": subject}}  # fmt: skip
    if component is not None:
        resource["component"] = [{"code": {"coding": [{"system": LOINC, "code": component}]},
                                   "valueQuantity": {"value": 7, "unit": "mmHg"}}]  # fmt: skip
    if value is not None:
        resource["valueQuantity"] = {"value": value, "unit": "mg/dL"}
    return resource


@pytest.fixture
def observations(store: SqlStore) -> SqlStore:
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "p1", "name": [{"family": "Okoth"}]})
        tx.update({"resourceType": "Group", "id": "p1", "type": "person", "actual": True})
        tx.update(_observation("by-code", "Patient/p1", code="8480-6", value=3))
        tx.update(_observation("by-component", "Patient/p1", component="8480-6"))
        tx.update(_observation("other", "Group/p1", code="718-7", value=12))
    return store


def find(store: SqlStore, rtype: str, *items: tuple[str, str]) -> list[str]:
    return sorted(r.id for r in store.search(PARSER.parse(rtype, list(items))).resources)


def test_searches_on_aliases_answer_as_their_definitions_say(observations: SqlStore) -> None:
    store = observations
    assert find(store, "Observation", ("combo-code", "8480-6")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("combo-code", f"{LOINC}|8480-6")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("combo-code:not", "8480-6")) == ["other"]
    assert find(store, "Observation", ("combo-code", "8480-6"), ("status", "final")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("combo-value-quantity", "gt5")) == ["by-component", "other"]
    assert find(store, "Observation", ("combo-value-quantity", "7")) == ["by-component"]
    # patient: subject when it is a Patient; the Group of the same id is not one.
    assert find(store, "Observation", ("patient", "p1")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("patient", "Patient/p1")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("subject", "p1")) == ["by-code", "by-component", "other"]
    assert find(store, "Observation", ("patient:missing", "true")) == ["other"]
    assert find(store, "Observation", ("patient:missing", "false")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("patient.family", "okoth")) == ["by-code", "by-component"]
    assert find(store, "Observation", ("patient", "p1"), ("combo-code", "8480-6"), ("code", "8480-6")) == ["by-code"]
    assert find(store, "Patient", ("_has:Observation:patient:combo-code", "8480-6")) == ["p1"]
    assert find(store, "Group", ("_has:Observation:patient:code", "718-7")) == []
    included = store.search(PARSER.parse("Observation", [("_id", "by-code"), ("_include", "Observation:patient")]))
    assert sorted((r.type, r.id) for r in [*included.resources, *included.included]) == [
        ("Observation", "by-code"), ("Patient", "p1")]  # fmt: skip
    rev = store.search(PARSER.parse("Patient", [("_id", "p1"), ("_revinclude", "Observation:patient")]))
    assert sorted(r.id for r in rev.included) == ["by-code", "by-component"]
    by_patient = store.search(PARSER.parse("Observation", [("_sort", "patient"), ("_sort", "_id")]))
    assert [r.id for r in by_patient.resources] == ["by-code", "by-component", "other"]  # no patient: last


def test_aliases_write_no_index_rows(observations: SqlStore) -> None:
    with observations._read_cursor() as cur:  # the store's own tables, as a DBA would look
        cur.execute("SELECT DISTINCT param FROM idx_token WHERE rtype = 'Observation'")
        tokens = {row[0] for row in cur.fetchall()}
        cur.execute("SELECT DISTINCT param FROM idx_ref WHERE rtype = 'Observation'")
        references = {row[0] for row in cur.fetchall()}
    assert "code" in tokens and "component-code" in tokens and "combo-code" not in tokens
    assert "subject" in references and "patient" not in references
