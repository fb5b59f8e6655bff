"""Engine behaviour: deterministic ids, linking across records, stamping, refusals."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from gateway import jsonio
from gateway.mapping import (
    MAPPING_TAG_SYSTEM,
    MappingError,
    MappingSet,
    load_mapping_sets,
    to_operation_outcome,
)
from gateway.mapping.engine import MAX_REPEAT
from gateway.mapping.golden import find_cases
from gateway.mapping.inputs import read_records

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


def _fixture(sets: dict[str, MappingSet], set_name: str, case: str) -> Any:
    (found,) = [c for c in find_cases(sets[set_name]) if c.name == case]
    records, _ = read_records(found.input_path)
    return records[0]


def _golden_records(sets: dict[str, MappingSet]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for name, mapping_set in sets.items():
        for case in find_cases(mapping_set):
            records, _ = read_records(case.input_path)
            out.extend((name, record) for record in records)
    return out


def _urls(bundle: dict[str, Any]) -> list[str]:
    return [entry["request"]["url"] for entry in bundle["entry"]]


def _by_type(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def test_same_record_gives_the_same_bundle(sets) -> None:
    for name, record in _golden_records(sets):
        try:
            first = sets[name].map_record(record)
        except MappingError:
            continue
        assert sets[name].map_record(copy.deepcopy(record)) == first


def test_bundle_shape_and_stamps(sets) -> None:
    record = _fixture(sets, "commcare", "tb-dot-visit")
    bundle = sets["commcare"].map_record(record)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        assert resource["meta"]["tag"] == [
            {"system": MAPPING_TAG_SYSTEM, "code": "commcare-tb-dot-visit@1.0.0"}
        ]
        assert resource["meta"]["source"] == "urn:chw-gateway:commcare:pih-chw-demo"
    (provenance,) = _by_type(bundle, "Provenance")
    assert [t["reference"] for t in provenance["target"]] == _urls(bundle)[:-1]
    assert provenance["entity"][0]["what"]["identifier"]["value"] == record["id"]
    assert provenance["policy"] == [f"{MAPPING_TAG_SYSTEM}:commcare-tb-dot-visit:1.0.0"]
    assert len(set(_urls(bundle))) == len(bundle["entry"])


def test_record_identifier_on_record_scoped_resources_only(sets) -> None:
    record = _fixture(sets, "commcare", "tb-dot-visit")
    bundle = sets["commcare"].map_record(record)
    own = {"system": "urn:chw-gateway:commcare:pih-chw-demo:record", "value": record["id"]}
    for resource in (r["resource"] for r in bundle["entry"]):
        if resource["resourceType"] in ("Practitioner", "PractitionerRole", "Provenance"):
            assert own not in resource.get("identifier", [])
        else:
            assert own in resource["identifier"], resource["resourceType"]


def test_edited_record_updates_the_same_resources(sets) -> None:
    record = _fixture(sets, "commcare", "tb-dot-visit")
    edited = copy.deepcopy(record)
    edited["form"]["vitals"]["weight_kg"] = "47.9"
    first, second = sets["commcare"].map_record(record), sets["commcare"].map_record(edited)
    assert _urls(first) == _urls(second)
    assert first != second


def test_blank_answers_leave_no_observation(sets) -> None:
    record = _fixture(sets, "commcare", "tb-dot-visit")
    codes = [
        o["code"]["coding"][0]["code"] for o in _by_type(sets["commcare"].map_record(record), "Observation")
    ]
    assert "56072-2" not in codes  # muac_cm is ""
    record = copy.deepcopy(record)
    record["form"]["vitals"]["muac_cm"] = "13.1"
    codes = [
        o["code"]["coding"][0]["code"] for o in _by_type(sets["commcare"].map_record(record), "Observation")
    ]
    assert "56072-2" in codes


def test_visit_before_registration_links_by_deterministic_id(sets) -> None:
    report = _fixture(sets, "cht", "report-data-record-assessment")
    person = _fixture(sets, "cht", "person-patient")
    visit = sets["cht"].map_record(report)  # arrives first
    (patient,) = _by_type(sets["cht"].map_record(person), "Patient")
    (encounter,) = _by_type(visit, "Encounter")
    assert encounter["subject"] == {"reference": f"Patient/{patient['id']}"}
    for observation in _by_type(visit, "Observation"):
        assert observation["subject"] == encounter["subject"]
    # the household place the child belongs to is the Location the place mapping makes
    (place,) = _by_type(
        sets["cht"].map_record(_fixture(sets, "cht", "place-household-configurable")), "Location"
    )
    assert patient["extension"][0]["valueReference"] == {"reference": f"Location/{place['id']}"}


def test_commcare_form_case_and_household_link_up(sets) -> None:
    visit = sets["commcare"].map_record(_fixture(sets, "commcare", "tb-dot-visit"))
    case = sets["commcare"].map_record(_fixture(sets, "commcare", "tb-patient-case"))
    (patient,) = _by_type(case, "Patient")
    assert _by_type(visit, "Encounter")[0]["subject"] == {"reference": f"Patient/{patient['id']}"}
    household = sets["commcare"].map_record(
        _fixture(sets, "commcare", "household-registration-single-repeat")
    )
    (group,) = _by_type(household, "Group")
    household_id = _fixture(sets, "commcare", "tb-patient-case")["indices"]["parent"]["case_id"]
    assert group["identifier"][0]["value"] == household_id


def test_single_iteration_repeat_equals_a_one_item_list(sets) -> None:
    record = _fixture(sets, "commcare", "household-registration-single-repeat")
    as_list = copy.deepcopy(record)
    as_list["form"]["members"]["member"] = [as_list["form"]["members"]["member"]]
    assert sets["commcare"].map_record(record) == sets["commcare"].map_record(as_list)


def test_repeat_items_get_their_own_resources(sets) -> None:
    record = _fixture(sets, "commcare", "tb-dot-visit")
    related = _by_type(sets["commcare"].map_record(record), "RelatedPerson")
    assert [r["name"][0]["text"] for r in related] == ["Jean Baptiste M.", "Marie Claire M."]


def test_mapping_does_not_mutate_the_record_or_share_output(sets) -> None:
    for name, record in _golden_records(sets):
        before = copy.deepcopy(record)
        try:
            first = sets[name].map_record(record)
        except MappingError:
            continue
        assert record == before
        reference = copy.deepcopy(first)
        for entry in first["entry"]:  # scribble over every container of the first output
            _scribble(entry["resource"])
        assert sets[name].map_record(record) == reference


def _scribble(value: Any) -> None:
    if isinstance(value, dict):
        for key in list(value):
            _scribble(value[key])
            value[key] = "x"
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _scribble(item)
            value[index] = "x"


def test_interpreted_mode_gives_the_same_bundles() -> None:
    compiled = load_mapping_sets(MAPPINGS)
    interpreted = load_mapping_sets(MAPPINGS, interpret=True)
    for name, record in _golden_records(compiled):
        try:
            expected = compiled[name].map_record(record)
        except MappingError as exc:
            with pytest.raises(MappingError) as raised:
                interpreted[name].map_record(record)
            assert raised.value.path == exc.path
            continue
        assert interpreted[name].map_record(record) == expected


@pytest.mark.parametrize(
    ("mutate", "path", "code"),
    [
        (lambda r: r.__setitem__("id", ""), "id", "required"),
        (lambda r: r["form"]["vitals"].__setitem__("weight_kg", "heavy"), "form.vitals.weight_kg", "value"),
        (
            lambda r: r["form"]["referral"].__setitem__("refer_patient", "perhaps"),
            "form.referral.refer_patient",
            "value",
        ),
        (lambda r: r["form"].__setitem__("danger_signs", "no_such_sign"), "%item", "code-invalid"),
        (lambda r: r.__setitem__("received_on", None), "received_on", "required"),
    ],
)
def test_bad_values_are_mapping_errors_with_a_path(sets, mutate, path: str, code: str) -> None:
    record = copy.deepcopy(_fixture(sets, "commcare", "tb-dot-visit"))
    mutate(record)
    with pytest.raises(MappingError) as raised:
        sets["commcare"].map_record(record)
    assert (raised.value.path, raised.value.code) == (path, code)
    assert raised.value.mapping == "commcare-tb-dot-visit"
    outcome = to_operation_outcome(raised.value)
    # An item's error also names the record field the item came from (the test below).
    assert outcome["issue"][0]["expression"] == ([path, "form.danger_signs"] if path == "%item" else [path])
    assert outcome["issue"][0]["code"] == code


@pytest.mark.parametrize("record", [[], "x", 5, None, {"unrelated": True}])
def test_records_no_mapping_accepts(sets, record: Any) -> None:
    with pytest.raises(MappingError) as raised:
        sets["commcare"].map_record(record)
    assert raised.value.path == "$"


@pytest.mark.parametrize(
    ("set_name", "record", "field", "value", "wanted"),
    [
        # A CHT form nobody mapped: the report's type is right, its form is not.
        ("cht", {"doc": {"_id": "r-1", "_rev": "1-a", "type": "data_record", "form": "pregnancy_home_visit",
                         "reported_date": 1765101234567, "fields": {"patient_uuid": "p-1"}}},
         "doc.form", "'pregnancy_home_visit'", "cht-assessment takes doc.form = 'assessment'"),
        # A CommCare form of another xmlns, and a case of another type.
        ("commcare", {"id": "f-1", "received_on": "2026-12-07T08:00:00Z",
                      "form": {"@xmlns": "http://openrosa.org/formdesigner/MUAC", "meta": {"userID": "u"}}},
         "form.`@xmlns`", "'http://openrosa.org/formdesigner/MUAC'",
         "commcare-tb-dot-visit takes form.`@xmlns` = 'http://openrosa.org/formdesigner/8E2B5C1A"),
        ("commcare", {"case_id": "c-1", "properties": {"case_type": "child"}},
         "properties.case_type", "'child'", "commcare-person-case takes properties.case_type = 'tb_patient'"),
        ("kobo", {"_id": 1, "_xform_id_string": "aNutrition", "_submission_time": "2026-12-07T08:00:00"},
         "_xform_id_string", "'aNutrition'",
         "kobo-hypertension-visit takes _xform_id_string = 'aQ8rZk3YfG7mN2pLwX4vTs'"),
    ],
)
def test_a_record_no_mapping_takes_is_refused_naming_the_field_that_chose(
    sets, set_name: str, record: Any, field: str, value: str, wanted: str
) -> None:
    """The quarantine's OperationOutcome says which field kept every mapping from the record, with
    its value and what the closest mappings take; it named only ``$``."""
    with pytest.raises(MappingError) as raised:
        sets[set_name].map_record(record)
    issue = to_operation_outcome(raised.value)["issue"][0]
    assert issue["code"] == "not-supported"
    assert raised.value.path == field and issue["expression"][0] == field
    assert f"({field} is {value}" in issue["diagnostics"]
    assert wanted in issue["diagnostics"]


def test_a_record_without_any_field_the_matches_read_names_them_missing(sets) -> None:
    with pytest.raises(MappingError) as raised:
        sets["commcare"].map_record({"unrelated": True})
    issue = to_operation_outcome(raised.value)["issue"][0]
    assert issue["expression"] == ["$", "form.`@xmlns`", "properties.case_type"]
    assert "form.`@xmlns` is missing, properties.case_type is missing" in issue["diagnostics"]


def test_repeat_count_is_bounded(sets) -> None:
    record = copy.deepcopy(_fixture(sets, "commcare", "tb-dot-visit"))
    record["form"]["household_contacts"]["contact"] = [
        {"contact_name": f"c {i}"} for i in range(MAX_REPEAT + 1)
    ]
    with pytest.raises(MappingError) as raised:
        sets["commcare"].map_record(record)
    assert raised.value.code == "too-costly"


def test_two_rules_making_one_resource_differently_is_refused(sets) -> None:
    record = copy.deepcopy(_fixture(sets, "odk", "household-visit-expanded"))
    members = record["household"]["member"]
    members[1]["__id"] = members[0]["__id"]  # two rows claim the same member id
    with pytest.raises(MappingError) as raised:
        sets["odk"].map_record(record)
    assert raised.value.code == "duplicate"


def test_record_without_time_is_refused_not_stamped_with_now(sets) -> None:
    record = _fixture(sets, "cht", "outbound-patient-no-date")
    with pytest.raises(MappingError) as raised:
        sets["cht"].map_record(record)
    assert raised.value.path == "doc.reported_date"


def test_a_selection_made_once_gives_what_selecting_again_gives(sets) -> None:
    # Ingest selects each record's mapping once and hands it to record_key and map_outputs.
    for name, record in _golden_records(sets):
        mapping_set = sets[name]
        chosen = mapping_set.selected(record)
        if chosen is None:
            with pytest.raises(MappingError):
                mapping_set.select(record)
            continue
        assert chosen is mapping_set.select(record)
        assert mapping_set.record_key(record, chosen) == mapping_set.record_key(record)
        try:
            expected = mapping_set.map_outputs(record)
        except MappingError:
            continue
        assert mapping_set.map_outputs(record, chosen) == expected
    assert sets["commcare"].selected(["not", "an", "object"]) is None


@pytest.mark.parametrize(
    ("set_name", "case", "answer"),
    [
        ("kobo", "hypertension-visit", lambda r, v: r.__setitem__("symptoms/danger_signs", v)),
        ("cht", "report-data-record-assessment",
         lambda r, v: r["doc"]["fields"]["group_danger_signs"].__setitem__("danger_signs", v)),
        ("commcare", "tb-dot-visit", lambda r, v: r["form"].__setitem__("danger_signs", v)),
        ("odk", "household-visit-expanded", lambda r, v: r["household"]["member"][0].__setitem__("danger_signs", v)),
    ],
)  # fmt: skip
def test_the_answer_none_to_danger_signs_is_no_danger_sign(sets, set_name: str, case: str, answer: Any) -> None:
    # "none" is a choice of every danger-sign list; the ConceptMap maps it to no code (unmatched).
    # A CHW who ticks it records the same visit as one who ticks nothing: not a refused record
    # ("the Observation code is empty"), nor a "danger signs present" finding.
    ticked_none, ticked_nothing = (copy.deepcopy(_fixture(sets, set_name, case)) for _ in range(2))
    answer(ticked_none, "none")
    answer(ticked_nothing, "")
    assert sets[set_name].map_record(ticked_none) == sets[set_name].map_record(ticked_nothing)


def test_a_decimal_keeps_the_precision_the_record_gave_it(sets) -> None:
    record = _fixture(sets, "kobo", "hypertension-visit")
    for weight in ("71.20", "7.120E1"):
        bundle = sets["kobo"].map_record({**record, "vitals/weight_kg": weight})
        assert b'"value":' + weight.encode() in jsonio.dumps(bundle)
    bundle = sets["kobo"].map_record({**record, "vitals/weight_kg": "71.2"})
    assert b'"value":71.2,' in jsonio.dumps(bundle)
    as_number = jsonio.loads(b'{"w": 71.20}')["w"]  # a JSON source's number literal
    bundle = sets["kobo"].map_record({**record, "vitals/weight_kg": as_number})
    assert b'"value":71.20' in jsonio.dumps(bundle)


def test_an_odk_repeat_sent_as_a_navigation_link_only_is_refused_not_dropped(sets) -> None:
    """An ODK Central OData row fetched without ``$expand=*`` carries its repeat group as
    ``member@odata.navigationLink`` alone: mapped as it came, the household lost every member
    (no Patient, no Observation, a Group without members) and the record was stored as if whole."""
    record = copy.deepcopy(_fixture(sets, "odk", "household-visit-expanded"))
    del record["household"]["member"]
    with pytest.raises(MappingError) as raised:
        sets["odk"].map_record(record)
    assert raised.value.path == "household.member"
    assert raised.value.code == "incomplete"
    assert "household.member@odata.navigationLink" in raised.value.message
    assert "$expand=*" in raised.value.message
    # A repeat answered with no rows (an empty list, or no key and no link) is no error.
    no_rows: list[list[Any] | None] = [[], None]
    for rows in no_rows:
        empty = copy.deepcopy(record)
        del empty["household"]["member@odata.navigationLink"]
        if rows is not None:
            empty["household"]["member"] = rows
        assert _by_type(sets["odk"].map_record(empty), "Patient") == []
    expanded = copy.deepcopy(record)
    expanded["household"]["member"] = []
    assert _by_type(sets["odk"].map_record(expanded), "Patient") == []


@pytest.mark.parametrize(
    ("mutate", "path", "field"),
    [
        # An answer of a space-separated multiple choice: the item is a piece of that field's text.
        (lambda r: r["form"].__setitem__("danger_signs", "difficulty_breathing chest_pain"),
         "%item", "form.danger_signs"),
        # A question of a group read with entries: the item is that question.
        (lambda r: r["form"]["tb_symptoms"].__setitem__("chest_pain", "yes"),
         "%item.key", "form.tb_symptoms.chest_pain"),
        (lambda r: r["form"]["tb_symptoms"].__setitem__("fever", "maybe"), "%item.value", "form.tb_symptoms.fever"),
    ],
)
def test_an_item_made_by_a_converter_names_the_record_field_it_came_from(sets, mutate, path: str, field: str) -> None:
    """The OperationOutcome of an item of ``for_each: "x | split"`` (or ``| entries``) named only
    ``%item``, no field of the record; the field it came from is now its second expression."""
    record = copy.deepcopy(_fixture(sets, "commcare", "tb-dot-visit"))
    mutate(record)
    with pytest.raises(MappingError) as raised:
        sets["commcare"].map_record(record)
    assert to_operation_outcome(raised.value)["issue"][0]["expression"] == [path, field]


@pytest.mark.parametrize(
    ("set_name", "case", "drop", "path"),
    [
        ("commcare", "tb-dot-visit", lambda r: r["form"].pop("case"), "form.case.`@case_id`"),
        ("cht", "report-data-record-assessment", lambda r: r["doc"]["fields"].__setitem__("patient_uuid", ""),
         "doc.fields.patient_uuid"),
    ],
)
def test_a_visit_without_its_patient_is_refused_not_stored_about_no_one(
    sets, set_name: str, case: str, drop: Any, path: str
) -> None:
    """The patient of these forms is made by other records (case forwarding, the CHT person), so
    nothing in the form's own rules needed the key: a form without it was stored with an Encounter
    and Observations about no one. ``| required`` refuses it, naming the field."""
    record = copy.deepcopy(_fixture(sets, set_name, case))
    drop(record)
    with pytest.raises(MappingError) as raised:
        sets[set_name].map_record(record)
    assert (raised.value.path, raised.value.code) == (path, "required")
