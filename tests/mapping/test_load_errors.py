"""Invalid mapping files are refused at load with file:line:rule messages, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.mapping import MappingLoadError, load_mapping_sets, validate_mappings

SET = "name: demo\nsystem: urn:test:demo\n"
GOOD = """\
mapping: demo-visit
version: 1.0.0
record_id: id
provenance:
  recorded: "{{ when | datetime }}"
let:
  patient: "{{ patient_id | ref('Patient') }}"
defaults:
  subject: "{{ %patient }}"
rules:
  - name: encounter
    kind: resource
    resourceType: Encounter
    template:
      status: finished
      class: {system: "http://terminology.hl7.org/CodeSystem/v3-ActCode", code: HH}
      subject: "{{ %patient }}"
  - name: weight
    kind: observation
    code: "{{ 'body_weight' | concept('chw-observations') }}"
    value: "{{ weight | decimal }}"
    unit: kg
"""


def _issues(make, text: str) -> list[str]:
    root = make({"demo/set.yaml": SET, "demo/visit.yaml": text})
    return [str(issue) for issue in validate_mappings(root)]


def _line_of(text: str, needle: str) -> int:
    """The line of the last occurrence of ``needle``."""
    return [number for number, line in enumerate(text.splitlines(), 1) if needle in line][-1]


def test_good_file_loads(mappings_dir) -> None:
    root = mappings_dir({"demo/set.yaml": SET, "demo/visit.yaml": GOOD})
    sets = load_mapping_sets(root)
    bundle = sets["demo"].map_record(
        {"id": "r1", "when": "2025-01-02T03:04:05Z", "patient_id": "p", "weight": "7"}
    )
    assert [entry["request"]["url"].split("/")[0] for entry in bundle["entry"]] == [
        "Encounter",
        "Observation",
        "Provenance",
    ]


@pytest.mark.parametrize(
    ("old", "new", "needle", "message"),
    [
        ("unit: kg", "unit: kg\n    colour: red", "colour: red", "rules[1] (weight).colour: unknown field"),
        ("kind: observation", "kind: observaton", "kind: observaton", "kind must be one of"),
        ("| decimal }}", "| decmal }}", "decmal", "unknown converter 'decmal'"),
        ("weight | decimal", "weight..x | decimal", "weight..x", "FHIRPath syntax error"),
        ("weight | decimal", "weight.foo() | decimal", "weight.foo()", "unknown FHIRPath function foo()"),
        ("weight | decimal", "now() | decimal", "now()", "now() is not allowed"),
        ("weight | decimal", "%nope | decimal", "%nope", "unknown variable %nope"),
        (
            "concept('chw-observations')",
            "concept('no-such-map')",
            "no-such-map",
            "unknown ConceptMap 'no-such-map'",
        ),
        ("'body_weight' |", "'bodyweight' |", "bodyweight", "code 'bodyweight' is not in ConceptMap"),
        (
            "resourceType: Encounter",
            "resourceType: Encountr",
            "Encountr",
            "'Encountr' is not an R4 resource type",
        ),
        ("status: finished", "statuss: finished", "statuss", "no element 'statuss'; did you mean 'status'?"),
        ("status: finished", "Status: finished", "Status", "no element 'Status'; did you mean 'status'?"),
        (
            "| ref('Patient')",
            "| ref('Patient', 'x')",
            "ref('Patient', 'x')",
            "ref takes 1 argument(s), got 2",
        ),
        ("    unit: kg\n", "    unit: kg\n    key: '%index'\n", "key: '%index'", "key needs for_each"),
        ("  patient: ", "  record_id: ", "  record_id: ", "%record_id is reserved"),
        ("name: weight", "name: encounter", "name: encounter", "rule name 'encounter' is used twice"),
        ("{{ weight | decimal }}", "{{ weight | decimal", "weight | decimal", "unclosed '{{' placeholder"),
        ("{{ weight | decimal }}", "{{ weight | split(x) }}", "split(x)", "must be a quoted text"),
        ("{{ weight | decimal }}", "{{ weight | a | b }}", "weight | a", "unknown converter 'a'"),
        ('subject: "{{ %patient }}"\n', 'subject: "{{ %item }}"\n', "%item", "unknown variable %item"),
    ],
)
def test_problem_is_reported_with_file_and_line(mappings_dir, old, new, needle, message) -> None:
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    issues = _issues(mappings_dir, text)
    assert issues, "expected a problem"
    line = _line_of(text, needle)
    assert any(f"visit.yaml:{line}:" in issue and message in issue for issue in issues), issues


def test_every_problem_is_listed_not_just_the_first(mappings_dir) -> None:
    text = GOOD.replace("| decimal", "| decmal").replace("status: finished", "statuss: finished")
    issues = _issues(mappings_dir, text)
    assert len(issues) == 2
    with pytest.raises(MappingLoadError) as raised:
        load_mapping_sets(mappings_dir({"demo/set.yaml": SET, "demo/visit.yaml": text}))
    assert len(raised.value.issues) == 2


def test_yaml_syntax_error_names_the_line(mappings_dir) -> None:
    text = GOOD.replace("    unit: kg", "    unit: [kg")
    (issue,) = _issues(mappings_dir, text)
    assert "visit.yaml:" in issue and "invalid YAML" in issue


def test_duplicate_yaml_keys_are_refused(mappings_dir) -> None:
    text = GOOD.replace("    unit: kg", "    unit: kg\n    unit: g")
    (issue,) = _issues(mappings_dir, text)
    assert f"visit.yaml:{_line_of(text, 'unit: g')}:" in issue and "duplicate key 'unit'" in issue


def test_yes_and_no_stay_text(mappings_dir) -> None:
    text = GOOD.replace('value: "{{ weight | decimal }}"', "value: yes")
    root = mappings_dir({"demo/set.yaml": SET, "demo/visit.yaml": text})
    bundle = load_mapping_sets(root)["demo"].map_record({"id": "r", "when": "2025-01-01", "patient_id": "p"})
    assert bundle["entry"][1]["resource"]["valueString"] == "yes"


def test_unquoted_dates_stay_text(mappings_dir) -> None:
    """YAML 1.2 has no timestamps: an unquoted date is a FHIR date string, not a Python date."""
    text = GOOD.replace("      status: finished", "      status: finished\n      period: {start: 2025-06-03}")
    root = mappings_dir({"demo/set.yaml": SET, "demo/visit.yaml": text})
    bundle = load_mapping_sets(root)["demo"].map_record({"id": "r", "when": "2025-01-01", "patient_id": "p"})
    assert bundle["entry"][0]["resource"]["period"] == {"start": "2025-06-03"}


def test_an_impossible_unquoted_date_is_a_located_problem_not_a_crash(mappings_dir) -> None:
    text = GOOD.replace("      status: finished", "      status: finished\n      period: {start: 2025-13-01}")
    (issue,) = _issues(mappings_dir, text)
    assert f"visit.yaml:{_line_of(text, '2025-13-01')}:" in issue and "2025-13-01" in issue


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{text: "{{ weight }}"}', {"text": "heavy"}),
        ('{coding: [{code: "{{ weight }}"}], text: x}', {"coding": [{"code": "heavy"}], "text": "x"}),
        ('{system: "urn:x", code: "{{ weight }}"}', {"coding": [{"system": "urn:x", "code": "heavy"}]}),
    ],
)
def test_an_observation_value_that_is_a_codeable_concept_stays_one(mappings_dir, value, expected) -> None:
    """A text-only CodeableConcept was taken for a Coding: ``coding: [{text}]``, invalid FHIR."""
    text = GOOD.replace('value: "{{ weight | decimal }}"\n    unit: kg', f"value: {value}")
    root = mappings_dir({"demo/set.yaml": SET, "demo/visit.yaml": text})
    record = {"id": "r", "when": "2025-01-01", "patient_id": "p", "weight": "heavy"}
    bundle = load_mapping_sets(root)["demo"].map_record(record)
    assert bundle["entry"][1]["resource"]["valueCodeableConcept"] == expected


def test_set_file_problems(mappings_dir) -> None:
    root = mappings_dir({"demo/set.yaml": "name: demo\nsystem: not a uri\n"})
    (issue,) = [str(issue) for issue in validate_mappings(root)]
    assert "set.yaml:2: system:" in issue
    root = mappings_dir({"demo/set.yaml": SET + "mappings: [missing.yaml]\n"})
    issues = [str(issue) for issue in validate_mappings(root)]
    assert any("set.yaml:3: mappings[0]: missing.yaml not found" in issue for issue in issues), issues


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "resourceType: ConceptMap\nid: x\nstatus: active\ngroup:\n  - element:\n"
            "      - {code: a, target: [{code: b, equivalence: sameish}]}\n",
            "group[0].element[0].target[0].equivalence",
        ),
        ("resourceType: ValueSet\nid: x\n", "not a ConceptMap"),
        ("resourceType: ConceptMap\nstatus: active\n", "needs an id"),
        (
            "resourceType: ConceptMap\nid: x\nstatus: active\ngroup:\n  - element:\n      - {code: a}\n"
            "      - {code: a}\n",
            "code 'a' listed twice",
        ),
        (
            "resourceType: ConceptMap\nid: x\nstatus: active\ngroup:\n  - target: snomed\n    element:\n"
            "      - {code: a, target: [{code: '1', equivalence: equivalent}]}\n",
            "zz-bad.yaml:5: group[0].target: 'snomed' is not an absolute URI",
        ),
        (
            "resourceType: ConceptMap\nid: x\nstatus: active\ngroup:\n  - source: local-codes\n"
            "    target: http://snomed.info/sct\n    element:\n"
            "      - {code: a, target: [{code: '1', equivalence: equivalent}]}\n",
            "zz-bad.yaml:5: group[0].source: 'local-codes' is not an absolute URI",
        ),
    ],
)
def test_conceptmap_problems(mappings_dir, text: str, message: str) -> None:
    root = mappings_dir({"conceptmaps/zz-bad.yaml": text})
    issues = [str(issue) for issue in validate_mappings(root)]
    assert any("zz-bad.yaml:" in issue and message in issue for issue in issues), issues


def test_missing_folder(tmp_path: Path) -> None:
    (issue,) = validate_mappings(tmp_path / "nope")
    assert "mappings folder not found" in str(issue)


def test_entered_in_error_on_a_type_without_such_a_status_is_refused_with_its_line(mappings_dir) -> None:
    text = GOOD.replace(
        "  - name: encounter\n    kind: resource\n    resourceType: Encounter\n",
        "  - name: place\n    kind: resource\n    resourceType: Location\n    on_retract: entered-in-error\n"
        "    template: {name: home}\n"
        "  - name: encounter\n    kind: resource\n    resourceType: Encounter\n",
    )
    issues = _issues(mappings_dir, text)
    assert len(issues) == 1, issues
    assert f"visit.yaml:{_line_of(text, 'on_retract')}" in issues[0]
    assert "Location has no status" in issues[0] and "use delete or keep" in issues[0]
    assert _issues(mappings_dir, text.replace("on_retract: entered-in-error", "on_retract: delete")) == []
    wrong = _issues(mappings_dir, text.replace("on_retract: entered-in-error", "on_retract: void"))
    assert len(wrong) == 1 and "on_retract" in wrong[0]


def test_a_broken_retract_expression_in_set_yaml_is_refused_with_its_line(mappings_dir) -> None:
    broken = SET + "retract:\n  when: \"deleted = \"\n  record_id: id\n"
    root = mappings_dir({"demo/set.yaml": broken, "demo/visit.yaml": GOOD})
    issues = [str(issue) for issue in validate_mappings(root)]
    assert len(issues) == 1 and "set.yaml:4" in issues[0], issues


def test_a_set_recognises_its_deleted_records_and_rules_say_how_to_retract(mappings_dir) -> None:
    with_retract = SET + "retract:\n  when: \"deleted = true\"\n  record_id: id\n"
    root = mappings_dir({"demo/set.yaml": with_retract, "demo/visit.yaml": GOOD})
    demo = load_mapping_sets(root)["demo"]
    assert demo.retracted_key({"id": "r1", "deleted": True}) == "r1"
    assert demo.retracted_key({"id": "r1", "deleted": False}) is None
    assert demo.retracted_key({"id": "r1"}) is None
    _, outputs = demo.map_outputs({"id": "r1", "when": "2025-01-02T03:04:05Z", "patient_id": "p", "weight": "7"})
    assert [(o.rtype, o.rule, o.on_retract) for o in outputs] == [
        ("Encounter", "encounter", "status"),
        ("Observation", "weight", "status"),
    ]


def test_a_missing_key_and_a_bad_rule_name_say_what_is_wrong(mappings_dir) -> None:
    text = GOOD.replace("record_id: id\n", "").replace("name: weight", "name: Body_Weight")
    issues = _issues(mappings_dir, text)
    assert "record_id is required here" in issues[0]
    (bad_name,) = [issue for issue in issues if "Body_Weight" in issue]
    assert "must be lower case letters, digits and _ (starting with a letter)" in bad_name
    assert f":{_line_of(text, 'Body_Weight')}:" in bad_name


def test_the_cli_calls_a_missing_mappings_folder_a_usage_error(tmp_path: Path) -> None:
    """Exit 2 (how it was called), not 1 (problems found in the mappings)."""
    from typer.testing import CliRunner

    from gateway.cli import app

    for command in (["mappings", "validate"], ["mappings", "test"], ["mappings", "run", "cht", "x.json"]):
        result = CliRunner().invoke(app, [*command, "--dir", str(tmp_path / "nope")])
        assert result.exit_code == 2, (command, result.output)
        assert "mappings folder not found" in result.stderr
