"""FHIRPath Patch (fhirpatch.html) on a resource's JSON: each operation type, values built from
parts, choice elements, primitives found wherever a path selects them, and the errors (400 for a
malformed Parameters, 422 naming the operation when it does not fit the resource)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.errors import FhirError
from gateway.fhir.fhirpath_patch import MAX_OPERATIONS, apply_fhirpath_patch, is_fhirpath_patch

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1",
    "name": [{"use": "official", "family": "Achieng", "given": ["Mary", "Atieno"]}, {"family": "Otieno"}],
    "birthDate": "1990-04-02", "_birthDate": {"extension": [{"url": "http://x.org/e", "valueString": "est"}]},
    "telecom": [{"system": "phone", "value": "0700"}, {"system": "email", "value": "m@x.org"}],
}  # fmt: skip


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One ``operation`` parameter; ``value`` is the value part's body (``{"valueString": ...}``)."""
    out: list[dict[str, Any]] = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "value":
            out.append({"name": "value", **value})
        elif name in ("index", "source", "destination"):
            out.append({"name": name, "valueInteger": value})
        else:
            out.append({"name": name, "valueString": value})
    return {"name": "operation", "part": out}


def patched(*operations: dict[str, Any], resource: dict[str, Any] | None = None) -> dict[str, Any]:
    document = copy.deepcopy(resource or PATIENT)
    return apply_fhirpath_patch(document, {"resourceType": "Parameters", "parameter": list(operations)})


def refused(*operations: dict[str, Any], status: int = 422) -> str:
    with pytest.raises(FhirError) as caught:
        patched(*operations)
    assert caught.value.status == status, caught.value
    return str(caught.value)


def test_a_parameters_resource_is_a_fhirpath_patch() -> None:
    assert is_fhirpath_patch({"resourceType": "Parameters"})
    assert not is_fhirpath_patch([{"op": "add"}]) and not is_fhirpath_patch({"resourceType": "Binary"})


def test_replace_a_primitive_keeps_its_extension() -> None:
    out = patched(operation("replace", "Patient.birthDate", value={"valueDate": "1991-05-06"}))
    assert out["birthDate"] == "1991-05-06" and out["_birthDate"] == PATIENT["_birthDate"]


def test_a_primitive_is_found_through_a_function_ending_the_path() -> None:
    out = patched(operation("replace", "Patient.name.given.first()", value={"valueString": "Maria"}),
                  operation("delete", "Patient.name[0].given.where($this = 'Atieno')"),
                  operation("replace", "Patient.telecom.value.last()", value={"valueString": "a@x.org"}))
    assert out["name"][0]["given"] == ["Maria"] and out["telecom"][1]["value"] == "a@x.org"
    assert out["telecom"][0]["value"] == "0700"


def test_a_boolean_or_a_computed_value() -> None:
    # Booleans cannot be marked: found through the last step, like before.
    flagged = {**PATIENT, "active": True}
    assert patched(operation("replace", "Patient.active", value={"valueBoolean": False}), resource=flagged)[
        "active"] is False
    # A value the path computes is no element of the resource.
    message = refused(operation("replace", "Patient.name.family.first().lower()", value={"valueString": "x"}))
    assert "not elements of the resource" in message


def test_paths_count_the_elements_of_the_resource_only() -> None:
    # children() and descendants() see no trace of how the selected elements are found again.
    out = patched(operation("delete", "Patient.telecom.where(children().count() = 2 and system = 'email')"),
                  operation("delete", "Patient.name.where(descendants().count() = 1)"))
    assert out["telecom"] == PATIENT["telecom"][:1] and len(out["name"]) == 1


def test_an_extension_is_added_onto_a_primitive() -> None:
    extension = {"name": "value", "part": [{"name": "url", "valueUri": "http://x.org/src"},
                                           {"name": "value", "valueString": "chw"}]}
    one = {"name": "operation", "part": [{"name": "type", "valueCode": "add"},
                                         {"name": "path", "valueString": "Patient.birthDate"},
                                         {"name": "name", "valueString": "extension"}, extension]}
    out = patched(one)
    assert out["_birthDate"]["extension"][1] == {"url": "http://x.org/src", "valueString": "chw"}
    second_given = {**one, "part": [one["part"][0], {"name": "path", "valueString": "Patient.name[0].given[1]"},
                                    *one["part"][2:]]}
    out = patched(second_given)
    assert out["name"][0]["_given"] == [None, {"extension": [{"url": "http://x.org/src", "valueString": "chw"}]}]
    assert out["name"][0]["given"] == ["Mary", "Atieno"]
    assert "elements of its own" in refused(operation("add", "Patient.birthDate", name="family",
                                                      value={"valueString": "x"}))


def test_replace_an_element_selected_by_where() -> None:
    official = "Patient.name.where(use = 'official').family"
    out = patched(operation("replace", official, value={"valueString": "Odhiambo"}))
    assert [n.get("family") for n in out["name"]] == ["Odhiambo", "Otieno"]
    out = patched(operation("replace", "Patient.telecom.where(system = 'email')",
                            value={"valueContactPoint": {"system": "sms", "value": "0711"}}))
    assert out["telecom"][1] == {"system": "sms", "value": "0711"}


def test_add_appends_to_a_list_and_sets_an_absent_single_element() -> None:
    out = patched(
        operation("add", "Patient", name="gender", value={"valueCode": "female"}),
        operation("add", "Patient", name="identifier", value={"valueIdentifier": {"system": "urn:x", "value": "1"}}),
        operation("add", "Patient", name="identifier", value={"valueIdentifier": {"system": "urn:x", "value": "2"}}),
        operation("add", "Patient.name[1]", name="given", value={"valueString": "Akinyi"}),
    )
    assert out["gender"] == "female"
    assert [i["value"] for i in out["identifier"]] == ["1", "2"]
    assert out["name"][1]["given"] == ["Akinyi"]


def test_add_takes_a_choice_element_by_its_value_type() -> None:
    out = patched(operation("add", "Patient", name="deceased", value={"valueDateTime": "2024-01-02"}))
    assert out["deceasedDateTime"] == "2024-01-02" and "deceased" not in out
    message = refused(operation("add", "Patient", name="birthDate", value={"valueDate": "2000-01-01"}))
    assert "does not repeat and already has a value" in message
    twice = operation("add", "Patient", name="deceased", value={"valueBoolean": True})
    with pytest.raises(FhirError, match="already has a value"):
        patched(twice, resource={**PATIENT, "deceasedDateTime": "2024-01-02"})


def test_add_builds_an_element_no_data_type_describes_from_parts() -> None:
    contact = {"part": [
        {"name": "relationship", "valueCodeableConcept": {"text": "mother"}},
        {"name": "name", "valueHumanName": {"family": "Wanjiru"}},
        {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "0722"}},
    ]}  # fmt: skip
    out = patched(operation("add", "Patient", name="contact", value=contact))
    assert out["contact"] == [{"relationship": [{"text": "mother"}], "name": {"family": "Wanjiru"},
                               "telecom": [{"system": "phone", "value": "0722"}]}]  # fmt: skip
    assert "has no element 'nickname'" in refused(operation("add", "Patient", name="contact", value={
        "part": [{"name": "nickname", "valueString": "x"}]}))


def test_an_extension_is_added_from_parts_and_its_value_replaced() -> None:
    url = "http://example.org/fhir/StructureDefinition/chw-household"
    extension = {"part": [{"name": "url", "valueUri": url}, {"name": "value", "valueString": "HH-12"}]}
    out = patched(operation("add", "Patient", name="extension", value=extension))
    assert out["extension"] == [{"url": url, "valueString": "HH-12"}]
    out = patched(operation("replace", f"Patient.extension('{url}').value", value={"valueString": "HH-13"}),
                  resource=out)
    assert out["extension"] == [{"url": url, "valueString": "HH-13"}]
    out = patched(operation("delete", f"Patient.extension.where(url = '{url}')"), resource=out)
    assert "extension" not in out


def test_insert_and_move_within_a_list() -> None:
    out = patched(
        operation("insert", "Patient.telecom", index=0, value={"valueContactPoint": {"system": "sms", "value": "1"}}),
        operation("move", "Patient.telecom", source=2, destination=0),
    )
    assert [t["system"] for t in out["telecom"]] == ["email", "sms", "phone"]
    out = patched(operation("insert", "Patient.identifier", index=0, value={"valueIdentifier": {"value": "9"}}))
    assert out["identifier"] == [{"value": "9"}]  # an absent list is an empty one
    assert "past the end" in refused(operation("insert", "Patient.telecom", index=3, value={
        "valueContactPoint": {"value": "1"}}))
    assert "below the list's length" in refused(operation("move", "Patient.telecom", source=0, destination=2))
    assert "does not repeat" in refused(operation("move", "Patient.birthDate", source=0, destination=0))


def test_delete_one_element_or_nothing() -> None:
    out = patched(
        operation("delete", "Patient.telecom.where(system = 'email')"),
        operation("delete", "Patient.name[0].given[1]"),
        operation("delete", "Patient.address"),  # not there: nothing to do
        operation("delete", "Patient.birthDate"),
    )
    assert out["telecom"] == [{"system": "phone", "value": "0700"}]
    assert out["name"][0]["given"] == ["Mary"]
    assert "birthDate" not in out and "_birthDate" not in out  # the value and its extension
    out = patched(operation("delete", "Patient.telecom[0]"), operation("delete", "Patient.telecom[0]"))
    assert "telecom" not in out  # an emptied list goes (FHIR JSON has no empty arrays)
    assert "selects 2 elements" in refused(operation("delete", "Patient.name"))
    assert "cannot be deleted" in refused(operation("delete", "Patient"))


def test_observation_value_is_replaced_by_another_type() -> None:
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "weight"},
                   "valueQuantity": {"value": 61, "unit": "kg"}}  # fmt: skip
    out = patched(operation("replace", "Observation.value", value={"valueString": "not weighed"}), resource=observation)
    assert out["valueString"] == "not weighed" and "valueQuantity" not in out
    out = patched(operation("replace", "Observation.value.value", value={"valueDecimal": 62.5}), resource=observation)
    assert out["valueQuantity"] == {"value": 62.5, "unit": "kg"}


def test_contained_resources_are_typed_by_their_own_resource_type() -> None:
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "contained": [{"resourceType": "Patient", "id": "c1"},
                              {"resourceType": "Practitioner", "id": "c2"}]}  # fmt: skip
    out = patched(operation("add", "Observation.contained[0]", name="gender", value={"valueCode": "male"}),
                  operation("insert", "Observation.contained[1].qualification", index=0,
                            value={"part": [{"name": "code", "valueCodeableConcept": {"text": "CHW"}}]}),
                  resource=resource)  # fmt: skip
    assert out["contained"][0]["gender"] == "male"
    assert out["contained"][1]["qualification"] == [{"code": {"text": "CHW"}}]


OPERATION = "Parameters.parameter[0]"
PATH = f"{OPERATION}.part.path"


@pytest.mark.parametrize(("parameter", "where"), [
    ({"name": "op", "part": []}, "Parameters.parameter[0].name"),
    ({"name": "operation"}, "Parameters.parameter[0].part"),
    (operation("upsert", "Patient"), "Parameters.parameter[0].part.type"),
    (operation("replace", "Patient..birthDate", value={"valueDate": "2000-01-01"}), PATH),
    (operation("replace", "Patient.birthDate"), "Parameters.parameter[0].part"),
    (operation("insert", "Patient.telecom", value={"valueString": "x"}, index=-1), f"{OPERATION}.part.index"),
    (operation("add", "Patient", name="gender", value={}), "Parameters.parameter[0].part.value"),
    (operation("delete", "Patient." + "name." * 300 + "family"), "Parameters.parameter[0].part.path"),
    (operation("delete", "Patient.name.select(%context.name.select(%context.name)).where(false)"),
     "Parameters.parameter[0].part.path"),
    (operation("delete", "Patient.name.trace('names').where(false)"), "Parameters.parameter[0].part.path"),
    ({"name": "operation", "part": [{"name": "type", "valueCode": "delete"}, {"name": "colour", "valueString": "x"}]},
     "Parameters.parameter[0].part[1].name"),
])  # fmt: skip
def test_a_malformed_patch_is_a_400_naming_the_part(parameter: dict[str, Any], where: str) -> None:
    with pytest.raises(FhirError) as caught:
        patched(parameter)
    assert caught.value.status == 400
    assert caught.value.expression == [where], caught.value.expression


def test_a_patch_holds_a_bounded_number_of_operations() -> None:
    many = [operation("add", "Patient", name="identifier", value={"valueIdentifier": {"value": str(n)}})
            for n in range(MAX_OPERATIONS)]
    assert len(patched(*many)["identifier"]) == MAX_OPERATIONS
    with pytest.raises(FhirError) as caught:
        patched(*many, many[0])
    assert caught.value.status == 400 and f"more than {MAX_OPERATIONS}" in str(caught.value)


def test_errors_name_the_operation_and_its_path_but_no_stored_value() -> None:
    message = refused(operation("replace", "Patient.telecom", value={"valueContactPoint": {"value": "1"}}))
    assert "operation 0 (replace at 'Patient.telecom')" in message and "selects 2 elements" in message
    assert "0700" not in message and "m@x.org" not in message
    assert "has no element 'colour'" in refused(operation("add", "Patient", name="colour", value={"valueString": "x"}))
    assert "selects 0 elements" in refused(operation("replace", "Patient.gender", value={"valueCode": "male"}))
    assert not patched(operation("delete", "Patient.name.where(family = 'Nobody')")) == {}
