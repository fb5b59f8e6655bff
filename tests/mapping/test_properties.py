"""Property tests: random and malformed records never break the engine.

Whatever a sender posts, every shipped mapping set either returns a transaction Bundle or
raises ``MappingError`` (which the ingest path turns into a quarantined record with an
OperationOutcome). Any other exception would be a 500 and a lost record.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mapping import MappingError, MappingSet, load_mapping_sets, to_operation_outcome
from gateway.mapping.golden import find_cases
from gateway.mapping.inputs import read_records

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SETS = load_mapping_sets(MAPPINGS)
FIXTURES: list[tuple[str, Any]] = [
    (name, record)
    for name, mapping_set in sorted(SETS.items())
    for case in find_cases(mapping_set)
    for record in read_records(case.input_path)[0]
]
PROFILE = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "yes", "no", "true", "1", "0", "2025-05-13", "2025-13-45", "uuid:x", "a b c"]),
)

def as_received(value: Any) -> Any:
    """``value`` as the gateway reads it from a JSON body or file: orjson reads integers past 64 bits as floats."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value)
    if isinstance(value, list):
        return [as_received(item) for item in value]
    if isinstance(value, dict):
        return {key: as_received(item) for key, item in value.items()}
    return value


JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
).map(as_received)


def _check(mapping_set: MappingSet, record: Any) -> None:
    try:
        bundle = mapping_set.map_record(record)
    except MappingError as exc:
        outcome = to_operation_outcome(exc)
        orjson.dumps(outcome)  # always serialisable
        assert outcome["issue"][0]["expression"]
        return
    orjson.dumps(bundle)
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"]["url"] == f"{resource['resourceType']}/{resource['id']}"


@PROFILE
@given(name=st.sampled_from(sorted(SETS)), record=JSON)
def test_random_values_never_crash(name: str, record: Any) -> None:
    _check(SETS[name], record)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


@st.composite
def mutated_fixture(draw: st.DrawFn) -> tuple[str, Any]:
    """A shipped golden record with a few fields deleted, retyped or replaced."""
    name, original = draw(st.sampled_from(FIXTURES))
    record = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 4))):
        paths = [path for path in _paths(record) if path]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = record
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "replace", "wrap", "null", "blank", "unwrap"]))
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(JSON)
        elif action == "wrap":
            parent[key] = [parent[key], parent[key]]
        elif action == "null":
            parent[key] = None
        elif action == "blank":
            parent[key] = ""
        elif isinstance(parent[key], list | dict) and parent[key]:
            inner = parent[key]
            parent[key] = inner[0] if isinstance(inner, list) else next(iter(inner.values()))
    return name, record


@PROFILE
@given(case=mutated_fixture())
def test_mutated_real_records_never_crash(case: tuple[str, Any]) -> None:
    name, record = case
    _check(SETS[name], record)


@PROFILE
@given(case=mutated_fixture())
def test_mapping_is_deterministic_on_any_input(case: tuple[str, Any]) -> None:
    name, record = case
    try:
        first = SETS[name].map_record(record)
    except MappingError as exc:
        try:
            SETS[name].map_record(copy.deepcopy(record))
        except MappingError as again:
            assert str(again) == str(exc)
        return
    assert SETS[name].map_record(copy.deepcopy(record)) == first
