"""Static checks: mistakes in a mapping are reported by ``mappings validate`` with file:line,
before any record is sent (issue 15, findings 2 and 3 and the five typical mistakes)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.mapping import MappingError, load_mapping_sets, load_mappings

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
KOBO = "kobo/hypertension-visit.yaml"


def _copy(tmp_path: Path, edits: list[tuple[str, str]], file: str = KOBO) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    path = root / file
    text = path.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text, encoding="utf-8")
    return root


def _line_of(root: Path, needle: str, file: str = KOBO) -> int:
    lines = (root / file).read_text(encoding="utf-8").splitlines()
    return next(number for number, line in enumerate(lines, 1) if needle in line)


FIVE = [
    # (name, old text, new text, line needle, message fragment)
    ("field typo", "`vitals/weight_kg` | decimal", "`vitals/weight_kgg` | decimal", "weight_kgg",
     "did you mean 'vitals/weight_kg'"),
    ("bad FHIRPath", "when: \"`meds/on_treatment` | boolean\"", "when: \"`meds/on_treatment`..x | boolean\"",
     "on_treatment`..x", "FHIRPath syntax error"),
    ("unknown ConceptMap", "concept('medications')", "concept('medication')", "concept('medication')",
     "unknown ConceptMap 'medication'"),
    ("wrong converter", "visit_date: \"{{ visit_date | date }}\"", "visit_date: \"{{ visit_date | epoch_ms }}\"",
     "visit_date | epoch_ms", "converter epoch_ms does not fit visit_date"),
    ("invalid FHIR value", "gender: \"{{ `patient/sex` | code('administrative-gender') }}\"", "gender: f",
     "gender: f", "Patient.gender: 'f' is not in its required value set"),
]


def test_the_five_typical_mistakes_are_all_reported_with_file_and_line(tmp_path: Path, monkeypatch) -> None:
    root = _copy(tmp_path, [(old, new) for _, old, new, _, _ in FIVE])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["mappings", "validate", "--dir", str(root)])
    assert result.exit_code == 1
    output = result.output
    for name, _, _, needle, fragment in FIVE:
        line = _line_of(root, needle)
        pattern = re.escape(f"{root / KOBO}:{line}: ") + r"[^\n]*" + re.escape(fragment)
        assert re.search(pattern, output), f"{name} not reported at line {line}:\n{output}"
    assert "5 problem(s)" in output


@pytest.mark.parametrize("name", [mistake[0] for mistake in FIVE])
def test_each_mistake_alone_refuses_the_set(tmp_path: Path, name: str) -> None:
    _, old, new, needle, fragment = next(mistake for mistake in FIVE if mistake[0] == name)
    root = _copy(tmp_path, [(old, new)])
    issues = load_mappings(root).issues
    assert [(issue.line, fragment in issue.message) for issue in issues] == [(_line_of(root, needle), True)]


def test_a_unit_that_is_not_ucum_is_refused(tmp_path: Path) -> None:
    root = _copy(tmp_path, [("unit: kg", "unit: millimetre")])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, "unit: millimetre")
    assert "'millimetre' is not a UCUM unit code" in issue.message


def test_ucum_codes_in_shipped_sets_pass_and_annotations_are_ucum() -> None:
    from gateway.mapping.checks import ucum_problem

    assert [ucum_problem(code) for code in ("mm", "kg", "mm[Hg]", "{tbl}", "/min", "10*9/L")] == [None] * 6
    assert ucum_problem("mmHg") is not None


def test_a_code_outside_a_required_binding_the_schema_has_no_enum_for_is_refused(tmp_path: Path) -> None:
    """MedicationDispense.status is bound (required) in the R4 definitions but is a plain code in
    the JSON schema: validate said ok and the store refused every record the rule made."""
    root = _copy(tmp_path, [("      status: completed", "      status: complete")])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, "      status: complete")
    assert "MedicationDispense.status: 'complete' is not in its required value set" in issue.message
    assert "did you mean 'completed'?" in issue.message


BP1 = "    category: vital-signs\n    when: \"`vitals/bp_systolic_1` | present\""


@pytest.mark.parametrize(
    ("new", "needle", "message"),
    [
        (BP1.replace("vital-signs", "vital-sign"), "category: vital-sign",
         "'vital-sign' is not an observation-category code (activity, exam, imaging, laboratory, "
         "procedure, social-history, survey, therapy, vital-signs); did you mean 'vital-signs'?"),
        (BP1.replace("vital-signs", "[vital-signs, exams]"), "category: [vital-signs, exams]",
         "'exams' is not an observation-category code"),
        ("    status: finl\n" + BP1, "status: finl",
         "Observation.status: 'finl' is not in its required value set (amended, cancelled, corrected, "
         "entered-in-error, final, preliminary, registered, unknown)"),
    ],
)
def test_an_observation_rules_own_category_and_status_are_checked(tmp_path: Path, new, needle, message) -> None:
    """Both are written into the Observation as they are: a typo made a code outside the HL7
    category system, or a status the store refused for every record."""
    root = _copy(tmp_path, [(BP1, new)])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, needle)
    assert message in issue.message


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ('class: {system: "http://terminology.hl7.org/CodeSystem/v3-ActCode"', "class: {system: v3-ActCode",
         "class: {system: v3-ActCode", "Coding.system: 'v3-ActCode' is not an absolute URI"),
        ("    category: vital-signs\n    when: \"`vitals/bp_systolic_1` | present\"\n"
         "    code: \"{{ 'bp_panel' | concept('chw-observations') }}\"",
         "    category: vital-signs\n    when: \"`vitals/bp_systolic_1` | present\"\n"
         "    code: {coding: [{system: LOINC, code: 85354-9}]}",
         "system: LOINC", "Coding.system: 'LOINC' is not an absolute URI"),
    ],
)
def test_a_code_system_that_is_not_a_uri_is_refused(tmp_path: Path, old, new, needle, message) -> None:
    """``system: LOINC`` was written into every Coding as it is (a Coding.system is an absolute URI)."""
    root = _copy(tmp_path, [(old, new)])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, needle)
    assert message in issue.message


def test_a_reference_to_the_wrong_resource_type_is_refused(tmp_path: Path) -> None:
    root = _copy(tmp_path, [("      subject: \"{{ %patient }}\"\n\n  - name: visit_site",
                             "      subject: \"{{ %chw }}\"\n\n  - name: visit_site")])
    (issue,) = load_mappings(root).issues
    assert "Condition.subject may refer to Group, Patient, not Practitioner" in issue.message


def test_a_facility_of_the_wrong_shape_is_named_with_file_and_line(tmp_path: Path) -> None:
    """Finding 2: a wrong ``facility`` shape was only found by the store, without file or line."""
    root = _copy(tmp_path, [
        ("      identifier: {system: \"{{ %system }}:facility\", value: \"{{ `refer/facility` }}\"}",
         "      reference: {system: \"{{ %system }}:facility\", value: \"{{ `refer/facility` }}\"}"),
    ])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, "      reference: {system")
    assert issue.message == "Reference.reference is a string, not an object"
    assert "(referral).facility" in issue.where


def test_a_ucum_code_in_a_template_quantity_is_checked(tmp_path: Path) -> None:
    """A Quantity written out in a template (a component, a dispense quantity) names its UCUM code
    as literally as an Observation rule's ``unit``: ``mmHg`` for ``mm[Hg]`` went unnoticed until
    a receiver refused it (placeholders are checked when the record maps)."""
    root = _copy(tmp_path, [('system: "http://unitsofmeasure.org", code: "{tbl}"',
                             'system: "http://unitsofmeasure.org", code: "tablets"')])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, 'code: "tablets"')
    assert "'tablets' is not a UCUM unit code" in issue.message
    # another system's code is not UCUM's business; a placeholder is only known per record
    root = _copy(tmp_path / "other", [('system: "http://unitsofmeasure.org", code: "{tbl}"',
                                       'system: "urn:example:units", code: "tablets"')])
    assert load_mappings(root).issues == []


def test_a_run_time_error_names_set_file_line_and_rule(tmp_path: Path) -> None:
    root = _copy(tmp_path, [])
    record = {
        "_xform_id_string": "aQ8rZk3YfG7mN2pLwX4vTs", "meta/rootUuid": "uuid:1",
        "_submission_time": "2025-05-10T08:00:00",
        "chw_id": "C1", "visit_date": "2025-05-10", "patient/patient_id": "P1", "vitals/weight_kg": "heavy",
    }
    with pytest.raises(MappingError) as caught:
        load_mapping_sets(root)["kobo"].map_record(record)
    line = _line_of(root, "- name: weight")
    assert f"rule weight at kobo: {Path(KOBO).name}:{line}]" in str(caught.value)  # the file by its name in the set


def test_a_broken_for_each_is_reported_once_and_the_checks_go_on(tmp_path: Path) -> None:
    root = _copy(tmp_path, [("for_each: med_refills", "for_each: \"med_refills.where(\""),
                            ("unit: kg", "unit: kilogram")])
    messages = sorted(issue.message for issue in load_mappings(root).issues)
    assert len(messages) == 2
    assert messages[0].startswith("'kilogram' is not a UCUM unit code")
    assert "unbalanced brackets" in messages[1]


def test_a_set_declares_example_records_for_fields_no_golden_input_has(tmp_path: Path) -> None:
    """A field the app sends only sometimes: the set lists an example record that has it."""
    root = _copy(tmp_path, [("`vitals/weight_kg` | decimal", "`vitals/muac_mm` | decimal")])
    (issue,) = load_mappings(root).issues
    assert "no field 'vitals/muac_mm'" in issue.message
    example = {"_xform_id_string": "aQ8rZk3YfG7mN2pLwX4vTs", "vitals/muac_mm": "118"}
    (root / "kobo" / "examples").mkdir()
    (root / "kobo" / "examples" / "muac.json").write_text(json.dumps(example))
    set_file = root / "kobo" / "set.yaml"
    set_file.write_text(set_file.read_text() + "inputs: [examples/muac.json, examples/none.json]\n")
    (issue,) = load_mappings(root).issues
    assert issue.where == "inputs[1]" and issue.message.startswith("cannot read")
    set_file.write_text(set_file.read_text().replace(", examples/none.json", ""))
    assert load_mappings(root).issues == []


def test_a_number_copied_into_a_text_element_is_reported_with_the_fix(tmp_path: Path) -> None:
    # Kobo's `_id` is a JSON number (412873019 in the golden input); Identifier.value is a string,
    # so the record would be refused at run time. `| string` is the fix the message names.
    edit = ('value: "{{ chw_id }}"', 'value: "{{ _id }}"')
    root = _copy(tmp_path, [edit])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line_of(root, "{{ _id }}")
    assert "Identifier.value is a string (text) but _id is a number (the golden inputs hold 412873019)" in issue.message
    assert "{{ _id | string }}" in issue.message
    fixed = _copy(tmp_path / "fixed", [(edit[0], 'value: "{{ _id | string }}"')])
    assert load_mappings(fixed).issues == []
