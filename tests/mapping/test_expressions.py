"""Expressions: the compiled fast routes agree with fhirpathpy; converters parse strictly."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import fhirpathpy
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.mapping.converters import CompileContext
from gateway.mapping.errors import MappingError
from gateway.mapping.expressions import CompileError, Scope, compile_expression, split_pipeline

CTX = CompileContext(system="urn:test")
SCOPE = Scope(frozenset({"item"}))

KEYS = st.sampled_from(["a", "b", "c", "x1"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from(["", "yes", "no", "a", "1", "x y"]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)
RECORDS = st.dictionaries(KEYS, JSON, max_size=4)
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(".".join)
LITERALS = st.sampled_from(["'yes'", "'a'", "''", "1", "0", "true", "false", "1.5"])


def _normal(value: Any) -> Any:
    """fhirpathpy returns floats as Decimal, also inside objects."""
    if isinstance(value, list):
        return [_normal(item) for item in value]
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    if isinstance(value, Decimal | float) and not isinstance(value, bool):
        return float(value)
    return value


def _null_in_list(value: Any) -> bool:
    """fhirpathpy keeps JSON nulls inside arrays; the engine drops them (absent answers)."""
    if isinstance(value, list):
        return any(item is None or _null_in_list(item) for item in value)
    if isinstance(value, dict):
        return any(_null_in_list(item) for item in value.values())
    return False


def _fast(text: str):
    expression = compile_expression(text, CTX, SCOPE)
    return expression.run


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=RECORDS, path=PATHS)
def test_simple_paths_match_fhirpath(record: dict[str, Any], path: str) -> None:
    assume(not _null_in_list(record))
    assert _normal(_fast(path)(record, {})) == _normal(fhirpathpy.evaluate(record, path))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=RECORDS, path=PATHS, op=st.sampled_from(["=", "!="]), literal=LITERALS)
def test_comparisons_match_fhirpath(record: dict[str, Any], path: str, op: str, literal: str) -> None:
    assume(not _null_in_list(record))
    text = f"{path} {op} {literal}"
    # FHIRPath has no implicit Boolean/number conversion (true = 1 is false); fhirpathpy
    # compares them as Python does. The engine follows the specification.
    values = _fast(path)(record, {})
    numeric_literal = literal[0].isdigit()
    assume(not any(isinstance(v, bool) for v in values) or not numeric_literal)
    assume(
        not any(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        or literal
        not in (
            "true",
            "false",
        )
    )
    try:
        expected = fhirpathpy.evaluate(record, text)
    except Exception:  # fhirpathpy rejects some mixed-type comparisons; ours must not crash
        _fast(text)(record, {})
        return
    assert _fast(text)(record, {}) == expected


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=RECORDS, left=PATHS, right=PATHS, join=st.sampled_from(["and", "or"]))
def test_boolean_logic_matches_fhirpath(record: dict[str, Any], left: str, right: str, join: str) -> None:
    assume(not _null_in_list(record))
    text = f"({left} = 'yes') {join} {right}.exists() and {left}.empty().not()"
    assert _fast(text)(record, {}) == fhirpathpy.evaluate(record, text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    record=RECORDS,
    operands=st.lists(st.one_of(PATHS, st.sampled_from(["'v:'", "''", "'x y'"])), min_size=2, max_size=4),
    operator=st.sampled_from(["+", "&"]),
)
def test_text_joins_match_fhirpath(record: dict[str, Any], operands: list[str], operator: str) -> None:
    assume(not _null_in_list(record))
    text = f" {operator} ".join(operands)
    try:
        expected = fhirpathpy.evaluate(record, text)
    except Exception:  # e.g. a number joined to a text: the engine must fail the same way
        with pytest.raises(MappingError):
            _fast(text)(record, {})
        return
    assert _normal(_fast(text)(record, {})) == _normal(expected)


def test_text_joins_take_the_fast_route() -> None:
    run = _fast("'village:' + a.b")
    assert run({"a": {"b": "12"}}, {}) == ["village:12"]
    assert run({"a": {}}, {}) == []
    assert _fast("'village:' & a.b")({"a": {}}, {}) == ["village:"]
    assert "concat" in run.__qualname__


def test_variables_and_backticks() -> None:
    run = _fast("%item.`patient/given_name`")
    assert run({}, {"item": [{"patient/given_name": "Chisomo"}]}) == ["Chisomo"]
    assert _fast("form.case.`@case_id`")({"form": {"case": [{"@case_id": "1"}, {"@case_id": "2"}]}}, {}) == [
        "1",
        "2",
    ]


def test_fhirpath_route_handles_keys_fhirpathpy_mistakes_for_types() -> None:
    # fhirpathpy alone raises KeyError on a root key starting with "_" in a non-FHIR object.
    run = _fast("_xform_id_string.where($this = 'abc').exists()")
    assert run({"_xform_id_string": "abc"}, {}) == [True]


def test_fhirpath_runtime_failure_is_a_mapping_error() -> None:
    run = _fast("a.toInteger() + b")
    with pytest.raises(MappingError) as raised:
        run({"a": "1", "b": {"c": 1}}, {})
    assert raised.value.code == "processing"


def test_literal_pipelines_are_folded_at_load() -> None:
    expression = compile_expression("'a b' | split", CTX, SCOPE)
    assert expression.constant == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("a.b", ("a.b", [])),
        ("a | split | concept('x')", ("a", [("split", []), ("concept", ["x"])])),
        ("a.where(b = 'x|y') | default(0)", ("a.where(b = 'x|y')", [("default", [0])])),
        ("a | multiply(1.5)", ("a", [("multiply", [1.5])])),
        ('a | default("it\'s")', ("a", [("default", ["it's"])])),
    ],
)
def test_split_pipeline(text: str, parts: tuple[str, list[Any]]) -> None:
    assert split_pipeline(text) == parts


@pytest.mark.parametrize("text", ["", "a | ", "a | split(", "'abc", "a | f(x)", "a..b", "a.b("])
def test_bad_expressions_are_compile_errors(text: str) -> None:
    with pytest.raises(CompileError):
        compile_expression(text, CTX, SCOPE)


def _convert(pipeline: str, value: Any) -> list[Any]:
    return compile_expression(f"v | {pipeline}", CTX, SCOPE).run({"v": value}, {})


@pytest.mark.parametrize(
    ("pipeline", "value", "expected"),
    [
        ("decimal", "48.5", [48.5]),
        ("decimal", "48,5", [48.5]),  # a decimal comma (a spreadsheet in French, Portuguese...)
        ("decimal", "-0,25", [-0.25]),
        ("decimal", "11,4567", [11.4567]),
        ("decimal", "118", [118]),
        ("decimal", " 7 ", [7]),
        ("decimal", "", []),
        ("integer", "7", [7]),
        ("integer", 7.0, [7]),
        ("boolean", "Yes", [True]),
        ("boolean", "0", [False]),
        ("date", "2025-05-13", ["2025-05-13"]),
        ("date", "2025-05-13T09:34:07.412000Z", ["2025-05-13"]),
        ("date", "2025-05", ["2025-05"]),
        ("date", "2025-8-3", ["2025-08-03"]),  # year first: one reading only
        ("date", "2025-12-3", ["2025-12-03"]),
        ("datetime", "2025-05-13T09:34:07.412000Z", ["2025-05-13T09:34:07.412000Z"]),
        ("datetime", "2025-05-10T08:33:47", ["2025-05-10T08:33:47Z"]),
        ("datetime", "2025-05-10 08:33:47+02:00", ["2025-05-10T08:33:47+02:00"]),
        ("datetime", "2025-05-10", ["2025-05-10"]),
        ("epoch_ms", 1747213145211, ["2025-05-14T08:59:05.211Z"]),
        ("epoch_s", "1747213145", ["2025-05-14T08:59:05Z"]),
        ("split", "a  b c", ["a", "b", "c"]),
        ("split(',')", "malaria2,malaria1", ["malaria2", "malaria1"]),
        ("join('-')", ["a", "b"], ["a-b"]),
        ("first", ["", "b", "c"], ["b"]),
        ("default('x')", "", ["x"]),
        ("default('x')", "y", ["y"]),
        ("multiply(10)", "11.9", [119.0]),
        ("multiply(10)", 12, [120]),
        ("strip_prefix('uuid:')", "uuid:abc", ["abc"]),
        ("human_name", "Aisha  Nakato", [{"text": "Aisha Nakato", "family": "Nakato", "given": ["Aisha"]}]),
        ("human_name", "Aisha", [{"text": "Aisha", "given": ["Aisha"]}]),
        ("position", "18.97 -72.1 312.0 8.0", [{"longitude": -72.1, "latitude": 18.97, "altitude": 312.0}]),
        (
            "position",
            {"type": "Point", "coordinates": [32.5, 0.3, 1190.3]},
            [{"longitude": 32.5, "latitude": 0.3, "altitude": 1190.3}],
        ),
        ("position", {"latitude": 0.3, "longitude": 32.5}, [{"longitude": 32.5, "latitude": 0.3}]),
        ("wrap('entity')", "x", [{"entity": "x"}]),
        ("entries", {"a": "yes", "b": ""}, [{"key": "a", "value": "yes"}]),
        ("present", "", [False]),
        ("present", "x", [True]),
        ("string", True, ["true"]),
        ("string", 12.0, ["12"]),
        ("upper", "ab", ["AB"]),
    ],
)
def test_converters(pipeline: str, value: Any, expected: list[Any]) -> None:
    assert _convert(pipeline, value) == expected


@pytest.mark.parametrize(
    ("pipeline", "value", "message"),
    [
        ("decimal", "1,234", "'1,234' is ambiguous: a decimal comma or a thousands separator"),
        ("decimal", "1,234.5", "is not a number"),
        ("decimal", "nan", "is not a number"),
        ("decimal", True, "is not a number"),
        ("integer", "7.5", "is not a whole number"),
        ("boolean", "maybe", "is not yes/no or true/false"),
        ("date", "13/05/2025", "is not a date"),
        ("date", "2025-02-30", "is not a date"),
        ("date", "2025-2-30", "is not a date"),
        ("datetime", "yesterday at noon", "is not an ISO 8601 date-time"),
        ("datetime", "yesterday", "'yesterday' is not an ISO 8601 date-time"),  # short text: not "a date"
        ("datetime", 1780000000000, "reads with | epoch_ms or | epoch_s"),
        ("datetime", True, "true is not an ISO 8601 date-time"),  # JSON's spelling, as sent
        ("epoch_ms", "soon", "is not a timestamp number"),
        ("epoch_ms", 10**20, "is not a timestamp in range"),
        ("epoch_ms", 1754295600, "1754295600 is not milliseconds since 1970 (it reads as a moment of 1973 or before"),
        ("epoch_ms", 0, "seconds? use epoch_s"),  # a placeholder, not a visit on 1970-01-01
        ("epoch_s", 1754295600000, "milliseconds? use epoch_ms"),
        ("required", "  ", "the record has no value here, and one is required"),
        ("required", None, "the record has no value here, and one is required"),
        ("position", "north", "is not a 'lat lon [alt acc]' geopoint"),
        ("position", "95 10", "is not a geopoint on Earth"),
        # A geopoint whose pieces are not numbers is named whole, not by the piece that failed ('a').
        ("position", "not a gps", "'not a gps' is not a 'lat lon [alt acc]' geopoint"),
        ("position", "-1.29 36.82 high 5", "'-1.29 36.82 high 5' is not a 'lat lon [alt acc]' geopoint"),
        ("position", {"type": "Point", "coordinates": ["x", 1]}, "is not a GeoJSON Point"),
        ("position", {"latitude": "", "longitude": "36.8"}, "is not a geopoint"),
        ("entries", "x", "is not an object"),
        ("split", 5, "is not a text value to split"),
        ("string", {"a": 1}, "is not a text value"),
    ],
)
def test_converter_errors_name_the_field(pipeline: str, value: Any, message: str) -> None:
    with pytest.raises(MappingError) as raised:
        _convert(pipeline, value)
    assert raised.value.path == "v"
    assert message in raised.value.message


def test_required_passes_what_is_answered_and_names_the_field_of_what_is_not() -> None:
    """A record that lacks the key of an entity other records make (the TB case of a visit form,
    the CHT patient of a report) is refused naming the field; ``ref`` alone gave nothing, and the
    record was stored with Observations about no one."""
    assert _convert("required | ref('Patient')", "P-1") == _convert("ref('Patient')", "P-1")
    assert _convert("required", ["a", ""]) == ["a"]
    with pytest.raises(MappingError) as raised:
        _convert("required | ref('Patient')", "")
    assert (raised.value.path, raised.value.code) == ("v", "required")


def test_long_values_are_truncated_in_messages() -> None:
    with pytest.raises(MappingError) as raised:
        _convert("decimal", "x" * 500)
    assert len(raised.value.message) < 80


def test_ref_and_uuid_are_deterministic() -> None:
    (ref,) = _convert("ref('Patient')", "abc")
    (rid,) = _convert("uuid('Patient')", "abc")
    assert ref == {"reference": f"Patient/{rid}"}
    assert _convert("uuid('Patient')", "abc") == [rid]
    assert _convert("uuid('Patient')", "abd") != [rid]


def test_a_fhirpath_failure_says_what_fhirpath_said() -> None:
    expression = compile_expression("muac_cm.replace(',', '.') | decimal", CTX, SCOPE)
    assert expression.run({"muac_cm": "11,8"}, {}) == [11.8]
    with pytest.raises(MappingError) as caught:
        expression.run({"muac_cm": 11.8}, {})  # a JSON number: replace() needs text
    assert "FHIRPath evaluation failed: Exception: Expected string, but got 11.8" in str(caught.value)
    assert caught.value.code == "processing"
