"""DHIS2 mapping files: loading against metadata, the checks before sending, the transforms."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.connectors.dhis2.aggregate_transform import measure_report_to_data_value_set
from gateway.connectors.dhis2.mapping_load import check_mapping, load_aggregate, load_tables, load_tracker
from gateway.connectors.dhis2.measure import compute_measure_report, load_measure, report_id
from gateway.connectors.dhis2.orgunits import OrgUnitResolver
from gateway.connectors.dhis2.periods import parse_period
from gateway.connectors.dhis2.sources import ResourceBundle
from gateway.connectors.dhis2.tracker_transform import (
    Dhis2MappingError,
    Dhis2PendingError,
    TrackerTransformer,
)
from gateway.connectors.dhis2.uids import derive_uid
from gateway.mapping.errors import MappingLoadError
from tests.dhis2.conftest import MAPPINGS, demo_snapshot
from tests.dhis2.records import chw_record, household, patient, places, visit
from tests.sandbox.conftest import Demo

SNAPSHOT = demo_snapshot()
TABLES = load_tables(MAPPINGS, [])
TRACKER = MAPPINGS / "dhis2" / "chw-household-visit.yaml"
AGGREGATE = MAPPINGS / "dhis2" / "chw-monthly-report.yaml"


def transformer() -> TrackerTransformer:
    return TrackerTransformer(load_tracker(TRACKER, SNAPSHOT, TABLES), namespace="t")


@pytest.mark.parametrize("path", sorted((MAPPINGS / "dhis2").glob("*.yaml")))
def test_the_shipped_mappings_validate_against_the_demo_dhis2(path: Path) -> None:
    if path.name == "chw-monthly-measure.yaml":
        load_measure(path)
    else:
        assert check_mapping(path, SNAPSHOT, TABLES) == []


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    folder = tmp_path / "dhis2"
    shutil.copytree(MAPPINGS / "dhis2", folder)
    return folder


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_unknown_metadata_is_reported_with_file_and_line(broken: Path) -> None:
    mapping = broken / "chw-household-visit.yaml"
    edit(mapping, "data_element: code:CHW_TEMP_C", "data_element: code:NO_SUCH_ELEMENT")
    edit(mapping, "data_element: code:CHW_FEVER", "data_element: code:CHW_HH_SIZE")
    edit(mapping, 'value: "valueQuantity.value"\n', 'value: "valueQuantity.value | nope"\n')
    edit(broken / "org-units.yaml", 'org_unit: "code:CU_MLIMA"', 'org_unit: "code:GONE"')
    issues = check_mapping(mapping, SNAPSHOT, TABLES)
    text = "\n".join(str(issue) for issue in issues)
    assert (
        "dataElement NO_SUCH_ELEMENT" not in text and "code:NO_SUCH_ELEMENT does not exist in DHIS2" in text
    )
    assert "code:CHW_HH_SIZE is not in stage household_visit" in text
    assert "unknown converter 'nope'" in text
    assert "org unit code:GONE does not exist in DHIS2" in text
    lines = {issue.line for issue in issues if issue.file.endswith("chw-household-visit.yaml")}
    assert all(line > 1 for line in lines)


def line_of(path: Path, text: str) -> int:
    return next(number for number, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_broken_fhirpath_in_a_tracker_mapping_is_reported_with_file_and_line(broken: Path) -> None:
    mapping = broken / "chw-household-visit.yaml"
    edit(mapping, 'value: "name.first().family"', 'value: "name.first()..family"')
    edit(mapping, "code = '439708006').exists()\"", "code = '439708006').exists() and\"")
    issues = check_mapping(mapping, SNAPSHOT, TABLES)
    found = {(issue.line, issue.where): issue.message for issue in issues}
    assert all(issue.file == str(mapping) for issue in issues) and len(found) == 2
    family = found[(line_of(mapping, "name.first()..family"), "tracked_entity.attributes[2].value")]
    assert family.startswith("FHIRPath syntax error at column 14")
    when = found[(line_of(mapping, "exists() and"), "stages[0].when")]
    assert when.startswith("FHIRPath syntax error")
    assert f"{mapping}:{line_of(mapping, 'exists() and')}: stages[0].when: FHIRPath syntax error" in str(
        MappingLoadError(issues)
    )


def test_broken_fhirpath_in_a_measure_is_reported_with_file_and_line(broken: Path) -> None:
    measure = broken / "chw-monthly-measure.yaml"
    edit(measure, 'date: "authoredOn"', 'date: "authoredOn authoredOn"')
    with pytest.raises(MappingLoadError) as caught:
        load_measure(measure)
    [issue] = caught.value.issues
    assert (issue.file, issue.line) == (str(measure), line_of(measure, "authoredOn authoredOn"))
    assert issue.message == "unexpected text after the expression: 'authoredOn'"


def test_option_codes_a_concept_map_can_produce_must_exist(demo: Demo) -> None:
    snapshot = demo_snapshot()
    option_set = snapshot.get("optionSets", snapshot.option_set_of("dataElements", demo.de("CHW_RDT_RESULT")))
    assert option_set is not None
    option_set["options"] = [o for o in option_set["options"] if o["code"] != "POSITIVE"]
    issues = check_mapping(TRACKER, snapshot, TABLES)
    assert [i.message for i in issues] == [
        "ConceptMap dhis2-rdt-result gives option codes the option set lacks: ['POSITIVE']"
    ]


def test_aggregate_strata_must_be_combos_of_the_element(broken: Path) -> None:
    mapping = broken / "chw-monthly-report.yaml"
    edit(
        mapping,
        "data_element: code:CHW_M_HH_VISITED",
        "data_element: code:CHW_M_HH_VISITED\n    strata: {under-5: code:AGE_U5}",
    )
    with pytest.raises(MappingLoadError) as caught:
        load_aggregate(mapping, SNAPSHOT, TABLES)
    assert "code:AGE_U5 is not a category option combo of code:CHW_M_HH_VISITED" in str(caught.value)


def test_plans_put_parents_first_with_derived_uids(demo: Demo) -> None:
    resources = places() + chw_record(1)
    plan = transformer().plan(resources[3], ResourceBundle(resources))
    assert [o.tracker_type for o in plan.objects] == ["TRACKED_ENTITY", "ENROLLMENT", "EVENT"]
    te, en, ev = plan.objects
    assert te.uid == derive_uid("t", "TRACKED_ENTITY", "Patient/pt-1")
    assert en.uid == derive_uid("t", "ENROLLMENT", f"Patient/pt-1|{demo.program}")
    assert ev.uid == derive_uid("t", "EVENT", "Encounter/enc-1") and plan.primary == ("EVENT", ev.uid)
    assert te.payload["orgUnit"] == demo.ou("CU_KISIWA")  # household → CHW area → org unit table
    assert ev.origin_of(demo.de("CHW_MUAC_CM")) == "Observation/enc-1-muac"


def test_the_enrollment_is_dated_by_the_first_visit_whichever_comes_first() -> None:
    resources = places() + chw_record(1) + visit("enc-0", "pt-1", "hh-1", start="2024-04-01T08:00:00+03:00")
    source = ResourceBundle(resources)
    later = transformer().plan(resources[3], source)
    earlier = transformer().plan(next(r for r in resources if r["id"] == "enc-0"), source)
    assert later.objects[1].payload == earlier.objects[1].payload
    assert later.objects[1].payload["enrolledAt"] == "2024-04-01T08:00:00+03:00"


def test_an_episode_of_care_is_the_enrollment(demo: Demo) -> None:
    episode = {
        "resourceType": "EpisodeOfCare",
        "id": "eoc-1",
        "status": "active",
        "type": [{"coding": [{"code": "chw-household-program"}]}],
        "patient": {"reference": "Patient/pt-1"},
        "period": {"start": "2024-03-01"},
        "managingOrganization": {"reference": "Location/area-kisiwa"},
    }
    resources = places() + chw_record(1) + [episode]
    source = ResourceBundle(resources)
    by_episode = transformer().plan(episode, source)
    assert by_episode.primary == ("ENROLLMENT", derive_uid("t", "ENROLLMENT", "EpisodeOfCare/eoc-1"))
    by_visit = transformer().plan(resources[3], source)
    assert by_visit.objects[1].uid == by_episode.objects[1].uid
    assert by_visit.objects[2].payload["enrollment"] == by_episode.objects[1].uid
    assert by_episode.objects[1].payload["enrolledAt"] == "2024-03-01"


def test_what_is_not_sent_and_what_waits() -> None:
    resources = places() + chw_record(1)
    source = ResourceBundle(resources)
    other = {**resources[3], "id": "enc-x", "type": [{"coding": [{"system": "x", "code": "y"}]}]}
    assert transformer().plan(other, source).primary is None
    loose = {"resourceType": "Observation", "id": "o", "status": "final", "code": {}}
    assert transformer().plan(loose, source).note == "Observation without an Encounter is not sent to DHIS2"
    orphan_visit = visit("enc-9", "pt-9", "hh-1")[0]
    with pytest.raises(Dhis2PendingError):
        transformer().plan(orphan_visit, source)
    nowhere = {**resources[3], "id": "enc-n", "location": [{"location": {"reference": "Location/unknown"}}]}
    with pytest.raises(Dhis2PendingError) as waiting:
        transformer().plan(nowhere, source)
    assert waiting.value.waiting_for == "location"
    source.add({"resourceType": "Location", "id": "unknown", "status": "active"})
    with pytest.raises(Dhis2MappingError) as caught:
        transformer().plan(nowhere, source)
    assert caught.value.code == "org-unit" and "Location/unknown maps to no DHIS2 org unit" in caught.value.message


def test_a_patient_before_its_household_waits_and_an_unmapped_household_is_an_error() -> None:
    person = patient("pt-1", "hh-1", "C-1")
    source = ResourceBundle([person])
    with pytest.raises(Dhis2PendingError) as waiting:
        transformer().plan(person, source)
    assert waiting.value.waiting_for == "location" and "Location/hh-1" in str(waiting.value)
    source.add(household("hh-1", area_id="area-x"))  # its area is still to come
    with pytest.raises(Dhis2PendingError) as waiting:
        transformer().plan(person, source)
    assert "Location/area-x" in str(waiting.value)
    source.add({**places()[0], "id": "area-x", "identifier": [{"system": "urn:other", "value": "X"}]})
    with pytest.raises(Dhis2MappingError) as caught:
        transformer().plan(person, source)
    assert caught.value.code == "org-unit" and caught.value.fhir_ref == "Patient/pt-1"
    assert "Location/hh-1 (partOf Location/area-x) maps to no DHIS2 org unit" in caught.value.message
    for place in places(area_id="area-x"):
        source.add(place)
    assert transformer().plan(person, source).primary is not None


def test_muac_in_millimetres_is_converted_to_centimetres(demo: Demo) -> None:
    resources = places() + [
        household("hh-1"),
        patient("pt-1", "hh-1", "C-1"),
        *visit("enc-1", "pt-1", "hh-1"),
    ]
    muac = next(r for r in resources if r["id"] == "enc-1-muac")
    muac["valueQuantity"] = {"value": 112, "code": "mm", "unit": "mm"}
    event = transformer().plan(resources[3], ResourceBundle(resources)).objects[2]
    values = {v["dataElement"]: v["value"] for v in event.payload["dataValues"]}
    assert values[demo.de("CHW_MUAC_CM")] == "11.2"


def measure_report(resources: list[dict[str, Any]], demo: Demo, period: str = "202405") -> dict[str, Any]:
    aggregate = load_aggregate(AGGREGATE, SNAPSHOT, TABLES)
    source = ResourceBundle(resources)
    return compute_measure_report(
        load_measure(MAPPINGS / "dhis2" / "chw-monthly-measure.yaml"),
        resources,
        source=source,
        resolver=OrgUnitResolver(aggregate.org_units, source),
        org_unit=demo.ou("CU_KISIWA"),
        reporter="Location/area-kisiwa",
        period=parse_period(period),
    )


def scores(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for group in report["group"]:
        code = group["code"]["coding"][0]["code"]
        out[code] = group["measureScore"]["value"]
        for stratum in (group.get("stratifier") or [{}])[0].get("stratum", []):
            out[f"{code}/{stratum['value']['coding'][0]['code']}"] = stratum["measureScore"]["value"]
    return out


def test_the_monthly_report_counts_by_month_org_unit_and_age(demo: Demo) -> None:
    adult = patient("pt-3", "hh-3", "C-3")
    adult["birthDate"] = "1990-01-01"
    elsewhere = places("CHW-AREA-MLIMA", "area-mlima") + [
        household("hh-9", "area-mlima"),
        patient("pt-9", "hh-9", "C-9"),
        *visit("enc-9", "pt-9", "hh-9"),
    ]
    resources = (
        places()
        + chw_record(1)
        + chw_record(2, muac=12.0, rdt="260385009")
        + [household("hh-3"), adult, *visit("enc-3", "pt-3", "hh-3", muac=11.0)]
        + visit("enc-1b", "pt-1", "hh-1", start="2024-05-30T10:00:00Z")  # same household again
        + chw_record(4, start="2024-06-01T00:30:00+03:00")  # June
        + elsewhere
    )
    report = measure_report(resources, demo)
    assert report["id"] == report_id(
        "urn:chw-gateway:Measure:chw-monthly-report", "Location/area-kisiwa", parse_period("202405")
    )
    assert scores(report) == {
        "households-visited": 3,
        "referrals": 4,
        "referrals/under-5": 3,
        "referrals/5-plus": 1,
        "malaria-rdt-performed": 4,
        "malaria-rdt-performed/under-5": 3,
        "malaria-rdt-performed/5-plus": 1,
        "malaria-rdt-positive": 3,
        "malaria-rdt-positive/under-5": 2,
        "malaria-rdt-positive/5-plus": 1,
        "muac-below-11.5cm": 3,
        "muac-below-11.5cm/under-5": 2,
        "muac-below-11.5cm/5-plus": 1,
    }


def test_measure_reports_become_data_value_sets(demo: Demo) -> None:
    aggregate = load_aggregate(AGGREGATE, SNAPSHOT, TABLES)
    resources = places() + chw_record(1)
    report = measure_report(resources, demo)
    resolver = OrgUnitResolver(aggregate.org_units, ResourceBundle(resources))
    payload = measure_report_to_data_value_set(report, aggregate, resolver).payload
    assert payload is not None
    assert (payload["period"], payload["orgUnit"], payload["completeDate"]) == (
        "202405",
        demo.ou("CU_KISIWA"),
        "2024-06-01",
    )
    assert len(payload["dataValues"]) == 9
    two_months = {**report, "period": {"start": "2024-05-01", "end": "2024-06-30"}}
    with pytest.raises(Dhis2MappingError) as caught:
        measure_report_to_data_value_set(two_months, aggregate, resolver)
    assert caught.value.code == "E7632"
    nowhere = {**report, "reporter": {"reference": "Location/unknown"}}
    with pytest.raises(Dhis2MappingError) as unresolved:
        measure_report_to_data_value_set(nowhere, aggregate, resolver)
    assert unresolved.value.code == "E7612"
    draft = {**report, "status": "pending"}
    assert measure_report_to_data_value_set(draft, aggregate, resolver).payload is None


@pytest.fixture
def mappings_copy(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    return root


def _female(tables: dict[str, Any]) -> list[str]:
    return [coding["code"] for coding in tables["dhis2-sex"].lookup("female")]


def test_code_sees_a_conceptmap_of_a_mapping_sets_own_folder(mappings_copy: Path) -> None:
    """Issue 15, finding 5: the DHIS2 side's code() looked in conceptmaps/ and dhis2/conceptmaps/ only."""
    (mappings_copy / "cht" / "conceptmaps").mkdir(exist_ok=True)
    (mappings_copy / "dhis2" / "conceptmaps" / "dhis2-sex.yaml").rename(
        mappings_copy / "cht" / "conceptmaps" / "dhis2-sex.yaml")
    issues: list[Any] = []
    tables = load_tables(mappings_copy, issues)
    assert issues == [] and _female(tables) == ["FEMALE"]
    assert check_mapping(mappings_copy / "dhis2" / "chw-household-visit.yaml", SNAPSHOT, tables) == []
    # Two sets with a table of that id: each is its own set's, so DHIS2 sees neither and says so.
    (mappings_copy / "odk" / "conceptmaps").mkdir(exist_ok=True)
    shutil.copy(mappings_copy / "cht" / "conceptmaps" / "dhis2-sex.yaml", mappings_copy / "odk" / "conceptmaps")
    tables = load_tables(mappings_copy, [])
    problems = check_mapping(mappings_copy / "dhis2" / "chw-household-visit.yaml", SNAPSHOT, tables)
    assert [p.message for p in problems] == ["unknown ConceptMap 'dhis2-sex'"]


def test_dhis2s_own_conceptmap_replaces_a_shared_one_of_the_same_id(mappings_copy: Path) -> None:
    """As a set's own ConceptMap replaces a shared one for that set (it used to be an error)."""
    own = mappings_copy / "dhis2" / "conceptmaps" / "dhis2-sex.yaml"
    (mappings_copy / "conceptmaps" / "dhis2-sex.yaml").write_text(own.read_text().replace("code: FEMALE", "code: F"))
    issues: list[Any] = []
    tables = load_tables(mappings_copy, issues)
    assert issues == [] and _female(tables) == ["FEMALE"]
    own.unlink()
    assert _female(load_tables(mappings_copy, [])) == ["F"]  # the shared one, when DHIS2 has none
