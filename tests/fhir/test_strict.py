"""The strict FHIR JSON checker: what fhir.resources lets through must be caught here."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.fhir.strict import StrictIssue, check_strict, default_checker
from tests.support.examples import iter_examples, load_example, r4b_verdicts
from tests.support.schema_oracle import default_oracle

# The one official example that R4B accepts and both the R4 schema and this checker reject:
# its id has 71 characters (datatypes.html#id allows 64).
KNOWN_INVALID_EXAMPLES = {
    "SearchParameter-questionnaireresponse-extensions-QuestionnaireResponse-item-subject.json"
}


def patient(**fields: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **fields}


def codes(issues: list[StrictIssue]) -> list[tuple[str, str]]:
    return [(i.expression, i.code) for i in issues]


# -- the four laxities fhir.md §0.6 found in fhir.resources ---------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"active": "true"}, [("Patient.active", "structure")]),
        ({"active": None}, [("Patient.active", "structure")]),
        ({"name": []}, [("Patient.name", "structure")]),
        ({"gender": "dog"}, [("Patient.gender", "code-invalid")]),
    ],
)
def test_rejects_what_the_r4b_models_accept(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert codes(check_strict(patient(**fields))) == expected


def test_clean_resources_have_no_issues() -> None:
    assert check_strict(load_example("Patient-example.json")) == []
    assert check_strict(load_example("Observation-example.json")) == []
    assert check_strict(patient(active=True, gender="female", birthDate="1974-12-25")) == []


# -- JSON types of primitives -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expression"),
    [
        ({"birthDate": 1974}, "Patient.birthDate"),
        ({"multipleBirthInteger": "2"}, "Patient.multipleBirthInteger"),
        ({"multipleBirthInteger": 2.5}, "Patient.multipleBirthInteger"),
        ({"multipleBirthInteger": True}, "Patient.multipleBirthInteger"),
        ({"multipleBirthBoolean": 1}, "Patient.multipleBirthBoolean"),
        ({"name": [{"given": ["Ann", 7]}]}, "Patient.name[0].given[1]"),
        ({"name": [{"family": {"value": "x"}}]}, "Patient.name[0].family"),
    ],
)
def test_wrong_json_type_for_a_primitive(fields: dict[str, Any], expression: str) -> None:
    issues = check_strict(patient(**fields))
    assert codes(issues) == [(expression, "structure")]
    assert "must be" in issues[0].diagnostics or "expected" in issues[0].diagnostics


def test_decimal_accepts_json_numbers_and_decimal_but_not_strings_or_nan() -> None:
    def quantity(value: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "x"},
            "valueQuantity": {"value": value},
        }

    assert check_strict(quantity(1)) == []
    assert check_strict(quantity(1.25)) == []
    assert check_strict(quantity(Decimal("1.250"))) == []  # json.loads(parse_float=Decimal)
    assert codes(check_strict(quantity("1.25"))) == [("Observation.valueQuantity.value", "structure")]
    assert codes(check_strict(quantity(float("nan")))) == [("Observation.valueQuantity.value", "value")]
    assert codes(check_strict(quantity(True))) == [("Observation.valueQuantity.value", "structure")]


@pytest.mark.parametrize(
    ("value", "ok"),
    [(0, True), (-2147483648, True), (2147483647, True), (2147483648, False), (-2147483649, False)],
)
def test_integer_range(value: int, ok: bool) -> None:
    assert (check_strict(patient(multipleBirthInteger=value)) == []) is ok


def test_positive_and_unsigned_int_ranges() -> None:
    def timing(**repeat: Any) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": "x"},
            "subject": {"reference": "Patient/p1"},
            "dosageInstruction": [{"timing": {"repeat": repeat}}],
        }

    base = "MedicationRequest.dosageInstruction[0].timing.repeat"
    assert check_strict(timing(count=1, frequency=1)) == []
    assert codes(check_strict(timing(count=0))) == [(f"{base}.count", "value")]  # positiveInt
    assert codes(check_strict(timing(offset=-1))) == [(f"{base}.offset", "value")]  # unsignedInt
    assert check_strict(timing(offset=0)) == []


# -- null, empty, array vs single ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": [None]}, [("Patient.name[0]", "structure")]),
        ({"name": [{}]}, [("Patient.name[0]", "structure")]),
        ({"maritalStatus": {}}, [("Patient.maritalStatus", "structure")]),
        ({"name": [{"given": []}]}, [("Patient.name[0].given", "structure")]),
        ({"gender": ["male"]}, [("Patient.gender", "structure")]),
        ({"name": {"family": "Chalmers"}}, [("Patient.name", "structure")]),
        ({"maritalStatus": [{"text": "married"}]}, [("Patient.maritalStatus", "structure")]),
        ({"name": [{"family": ["Chalmers"]}]}, [("Patient.name[0].family", "structure")]),
        ({"name": [{"given": "Peter"}]}, [("Patient.name[0].given", "structure")]),
        ({"birthDate": ""}, [("Patient.birthDate", "value")]),
        ({"name": [{"family": ""}]}, [("Patient.name[0].family", "value")]),
    ],
)
def test_null_empty_and_cardinality_shape(fields: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert codes(check_strict(patient(**fields))) == expected


def test_empty_resource_body_and_non_objects() -> None:
    assert check_strict({"resourceType": "Patient"}) == []
    assert codes(check_strict([])) == [("$", "structure")]  # type: ignore[arg-type]
    assert codes(check_strict({"id": "x"})) == [("resourceType", "structure")]
    assert codes(check_strict({"resourceType": "Dog"})) == [("resourceType", "structure")]
    assert codes(check_strict({"resourceType": 5})) == [("resourceType", "structure")]


# -- unknown properties and choice types ----------------------------------------------------


def test_unknown_property() -> None:
    issues = check_strict(patient(nickname="Jim"))
    assert codes(issues) == [("Patient.nickname", "structure")]
    assert issues[0].diagnostics == "unknown property of Patient"


def test_fhir_comments_is_unknown() -> None:
    assert codes(check_strict(patient(fhir_comments=["x"]))) == [("Patient.fhir_comments", "structure")]


def test_wrong_choice_type_suffix() -> None:
    issues = check_strict(patient(deceasedString="yes"))
    assert codes(issues) == [("Patient.deceasedString", "structure")]
    assert issues[0].diagnostics == "unknown type for a choice element"
    # A choice element by its bare name is not valid JSON either.
    assert codes(check_strict(patient(deceased=True))) == [("Patient.deceased", "structure")]


def test_two_types_of_one_choice_element() -> None:
    issues = check_strict(patient(deceasedBoolean=True, deceasedDateTime="2020-01-01"))
    assert codes(issues) == [("Patient.deceasedDateTime", "structure")]
    assert "deceased[x]" in issues[0].diagnostics


def test_non_choice_pairs_that_look_like_choices_are_fine() -> None:
    # reasonCode/reasonReference and instantiatesCanonical/instantiatesUri are separate elements.
    procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "reasonCode": [{"text": "x"}],
        "reasonReference": [{"reference": "Condition/c1"}],
        "instantiatesCanonical": ["http://example.org/pd"],
        "instantiatesUri": ["http://example.org/x"],
    }
    assert check_strict(procedure) == []


def test_resource_type_inside_a_datatype_is_unknown() -> None:
    assert codes(check_strict(patient(maritalStatus={"resourceType": "CodeableConcept", "text": "x"}))) == [
        ("Patient.maritalStatus.resourceType", "structure")
    ]


# -- primitive formats ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expression"),
    [
        ({"id": "a_b!"}, "Patient.id"),
        ({"id": "x" * 65}, "Patient.id"),
        ({"birthDate": "1974-13-01"}, "Patient.birthDate"),
        ({"birthDate": "1974-02-30"}, "Patient.birthDate"),
        ({"birthDate": "1974-1-1"}, "Patient.birthDate"),
        ({"birthDate": "1974-12-25T10:00:00Z"}, "Patient.birthDate"),
        ({"deceasedDateTime": "2015-02-07T13:28:17"}, "Patient.deceasedDateTime"),  # time without zone
        ({"deceasedDateTime": "2015-02-07 13:28:17Z"}, "Patient.deceasedDateTime"),
        ({"meta": {"lastUpdated": "2015-02-07"}}, "Patient.meta.lastUpdated"),  # instant needs a time
        ({"language": "en  US"}, "Patient.language"),  # code: single inner spaces only
        ({"language": " en"}, "Patient.language"),
        ({"implicitRules": "http://x.org/a b"}, "Patient.implicitRules"),
        ({"photo": [{"data": "not base64!"}]}, "Patient.photo[0].data"),
        ({"photo": [{"data": "abc"}]}, "Patient.photo[0].data"),
        ({"name": [{"family": "Ch\x00almers"}]}, "Patient.name[0].family"),
        ({"name": [{"family": "Ch\x1balmers"}]}, "Patient.name[0].family"),
        # uri, canonical and code are strings too: no control characters (a NUL made PostgreSQL,
        # whose text holds none, fail the write of an indexed one with a 500)
        ({"implicitRules": "http://x.org/a\x00b"}, "Patient.implicitRules"),
        ({"identifier": [{"system": "urn:a\x00b", "value": "v"}]}, "Patient.identifier[0].system"),
        ({"meta": {"profile": ["http://x.org/p\x00"]}}, "Patient.meta.profile[0]"),
        ({"meta": {"source": "http://x.org/\x1b"}}, "Patient.meta.source"),
        ({"language": "en\x00"}, "Patient.language"),
        ({"photo": [{"url": "http://x.org/\x07"}]}, "Patient.photo[0].url"),
        (
            {"extension": [{"url": "http://x.org/e", "valueOid": "urn:oid:1.2.x"}]},
            "Patient.extension[0].valueOid",
        ),
        (
            {"extension": [{"url": "http://x.org/e", "valueUuid": "urn:uuid:X"}]},
            "Patient.extension[0].valueUuid",
        ),
        (
            {"extension": [{"url": "http://x.org/e", "valueTime": "25:00:00"}]},
            "Patient.extension[0].valueTime",
        ),
    ],
)
def test_bad_primitive_formats(fields: dict[str, Any], expression: str) -> None:
    issues = check_strict(patient(**fields))
    assert codes(issues) == [(expression, "value")]
    assert "1974" not in issues[0].diagnostics and "Chalmers" not in issues[0].diagnostics  # no values echoed


@pytest.mark.parametrize(
    "fields",
    [
        {"birthDate": "1974"},
        {"birthDate": "1974-12"},
        {"birthDate": "2000-02-29"},
        {"deceasedDateTime": "2015-02-07T13:28:17.239+02:00"},
        {"deceasedDateTime": "2015-02-07T13:28:17-05:00"},
        {"meta": {"lastUpdated": "2015-02-07T13:28:17.2391Z"}},
        {"photo": [{"data": "aGVsbG8gd29ybGQ="}]},
        {"photo": [{"data": "aGVs\nbG8g"}]},
        {"name": [{"family": "Zoë\tvan\u00a0Dijk\r\n"}]},  # tab/CR/LF and no-break space are allowed
        {"language": "en-US"},
        {"extension": [{"url": "http://x.org/e", "valueOid": "urn:oid:2.16.840.1.113883.2.4.6.3"}]},
        {"extension": [{"url": "http://x.org/e", "valueTime": "23:59:60"}]},
        {"text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}},
    ],
)
def test_good_primitive_formats(fields: dict[str, Any]) -> None:
    assert check_strict(patient(**fields)) == []


def test_leap_years() -> None:
    assert check_strict(patient(birthDate="1900-02-29")) != []
    assert check_strict(patient(birthDate="2024-02-29")) == []
    assert check_strict(patient(birthDate="2023-04-31")) != []


def test_required_binding_lists_allowed_codes_but_not_the_value() -> None:
    issues = check_strict(patient(gender="Female"))
    assert codes(issues) == [("Patient.gender", "code-invalid")]
    assert "female" in issues[0].diagnostics and "Female" not in issues[0].diagnostics


def test_array_of_required_codes() -> None:
    timing = {"repeat": {"when": ["MORN", "ACM"]}}
    request = {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
        "dosageInstruction": [{"timing": timing}],
    }
    assert check_strict(request) == []
    timing["repeat"]["when"] = ["MORN", "TEATIME"]
    assert codes(check_strict(request)) == [
        ("MedicationRequest.dosageInstruction[0].timing.repeat.when[1]", "code-invalid")
    ]


def test_fhir_version_4_0_1_is_accepted() -> None:
    # The published schema's FHIRVersion enum stops at 4.0.0; the generator adds 4.0.1.
    capability = load_example("CapabilityStatement-example.json")
    assert capability["fhirVersion"] == "4.0.1"
    assert check_strict(capability) == []


# -- primitive extensions -----------------------------------------------------------------------


def test_primitive_extension_shapes() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert check_strict(patient(birthDate="1970", _birthDate=ext)) == []
    assert check_strict(patient(_birthDate=ext)) == []  # extension without a value
    assert codes(check_strict(patient(_birthDate=[ext]))) == [("Patient._birthDate", "structure")]
    assert codes(check_strict(patient(_birthDate="x"))) == [("Patient._birthDate", "structure")]
    assert codes(check_strict(patient(_birthDate={}))) == [("Patient._birthDate", "structure")]
    assert codes(check_strict(patient(_birthDate=None))) == [("Patient._birthDate", "structure")]
    assert codes(check_strict(patient(_birthDate={"foo": 1}))) == [("Patient._birthDate.foo", "structure")]
    # Only primitives have a "_" twin, and never the id.
    assert codes(check_strict(patient(_name={"id": "x"}))) == [("Patient._name", "structure")]
    assert codes(check_strict(patient(_id={"id": "x"}))) == [("Patient._id", "structure")]


def test_primitive_array_extensions_align_with_nulls() -> None:
    ext = {"extension": [{"url": "http://example.org/x", "valueCode": "a"}]}
    assert check_strict(patient(name=[{"given": ["A", None], "_given": [None, ext]}])) == []
    assert codes(check_strict(patient(name=[{"given": ["A", None]}]))) == [
        ("Patient.name[0].given[1]", "structure")
    ]
    assert codes(check_strict(patient(name=[{"given": ["A", "B"], "_given": [None]}]))) == [
        ("Patient.name[0]._given", "structure")
    ]
    assert codes(check_strict(patient(name=[{"given": ["A"], "_given": [None]}]))) == []
    assert codes(check_strict(patient(name=[{"given": [None], "_given": [None]}]))) == [
        ("Patient.name[0].given[0]", "structure"),
        ("Patient.name[0]._given[0]", "structure"),
    ]
    assert codes(check_strict(patient(name=[{"_given": ext}]))) == [("Patient.name[0]._given", "structure")]


def test_extension_on_an_extension_value() -> None:
    # Legal FHIR that the R4B models reject (fhir.md §0.6): CodeSystem translations do this.
    translated = {"extension": [{"url": "lang", "valueCode": "nl"}]}
    resource = patient(
        extension=[{"url": "http://example.org/x", "valueString": "a", "_valueString": translated}]
    )
    assert check_strict(resource) == []


def test_canonical_primitive_extension_allowed() -> None:
    # The R4 schema forgets _x for canonical elements (Meta.profile); FHIR JSON allows it.
    ext = {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}
    assert check_strict(patient(meta={"profile": ["http://example.org/p"], "_profile": [ext]})) == []


# -- nested resources and required elements ----------------------------------------------------


def test_contained_and_bundle_resources_are_checked() -> None:
    resource = patient(contained=[{"resourceType": "Organization", "id": "o", "active": "yes"}])
    assert codes(check_strict(resource)) == [("Patient.contained[0].ofType(Organization).active", "structure")]
    assert codes(check_strict(patient(contained=[{"resourceType": "Nope"}]))) == [
        ("Patient.contained[0].resourceType", "structure")
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(gender="dog"), "request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "FETCH", "url": "Patient"}},
        ],
    }
    assert codes(check_strict(bundle)) == [
        ("Bundle.entry[0].resource.ofType(Patient).gender", "code-invalid"),
        ("Bundle.entry[1].request.method", "code-invalid"),
    ]


def test_missing_mandatory_complex_element() -> None:
    observation = {"resourceType": "Observation", "status": "final"}
    assert codes(check_strict(observation)) == [("Observation.code", "required")]


def test_all_errors_are_reported_not_just_the_first() -> None:
    issues = check_strict(patient(active="true", gender="dog", name=[], bogus=1))
    assert {i.expression for i in issues} == {
        "Patient.active",
        "Patient.gender",
        "Patient.name",
        "Patient.bogus",
    }


# -- the official examples ------------------------------------------------------------------------


def test_every_official_example_r4b_accepts_passes_except_known_invalid_ones() -> None:
    verdicts = r4b_verdicts()
    rejected = {}
    for name, resource in iter_examples():
        if verdicts[name] is None:
            issues = check_strict(resource)
            if issues:
                rejected[name] = issues
    assert set(rejected) == KNOWN_INVALID_EXAMPLES, {k: v[:2] for k, v in rejected.items()}
    assert len(verdicts) == 5306


def test_r4b_rejects_that_are_valid_fhir_json_pass() -> None:
    # 47 CodeSystems R4B rejects only for Extension._valueString, and the R4-only types
    # (MedicinalProduct…) R4B has no model for: all are valid FHIR JSON.
    verdicts = r4b_verdicts()
    for name in (
        "CodeSystem-v2-0003.json",
        "MedicinalProduct-example.json",
        "EffectEvidenceSynthesis-example.json",
    ):
        assert verdicts[name] is not None
        assert check_strict(load_example(name)) == []


# -- differential test against the R4 JSON schema -------------------------------------------------

_SAMPLES = [
    "Patient-example.json",
    "Observation-example.json",
    "Bundle-bundle-transaction.json",
    "MedicationRequest-medrx0301.json",
    "Questionnaire-f201.json",
    "Encounter-example.json",
]
_BAD_VALUES: list[Any] = [
    None,
    [],
    {},
    "",
    "x y",
    1.5,
    -1,
    True,
    "true",
    [None],
    [{}],
    {"a": 1},
    "9999-99-99",
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "resourceType":
                out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(_paths(value, (*prefix, index)))
    return out


@pytest.fixture(scope="module")
def samples() -> list[tuple[dict[str, Any], list[tuple[Any, ...]]]]:
    loaded = [load_example(name) for name in _SAMPLES]
    return [(resource, _paths(resource)) for resource in loaded]


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_stricter_than_the_json_schema(data: st.DataObject, samples: Any) -> None:
    """Whatever the schema rejects in a mutated example, the checker rejects too."""
    resource, paths = data.draw(st.sampled_from(samples))
    mutated = copy.deepcopy(resource)
    path = data.draw(st.sampled_from(paths))
    parent: Any = mutated
    for step in path[:-1]:
        parent = parent[step]
    if data.draw(st.booleans()):
        parent[path[-1]] = data.draw(st.sampled_from(_BAD_VALUES))
    elif isinstance(parent, dict):
        parent[data.draw(st.sampled_from(["bogus", "valueFoo", "_id", "_" + str(path[-1])]))] = "x"
    else:
        parent[path[-1]] = data.draw(st.sampled_from(_BAD_VALUES))
    schema_errors = default_oracle().errors(mutated)
    if schema_errors:
        assert check_strict(mutated), (path, schema_errors, json.dumps(mutated)[:500])


def test_checker_is_loaded_once() -> None:
    assert default_checker() is default_checker()
    assert "Patient" in default_checker().resource_types
