"""A repeat inside a repeat in one rule (issue 15, finding 7): ``for_each`` with named levels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.mapping import load_mapping_sets, load_mappings
from gateway.mapping.coverage import mapping_coverage

SET = "name: example\nsystem: urn:example\n"
RECORD = {
    "id": "R-1",
    "households": [
        {"id": "H-1", "members": [{"name": "Amina", "age": "3"}, {"name": "Brian", "age": "41"}]},
        {"id": "H-2", "members": {"name": "Chisomo", "age": "7"}},  # one repeat row sent as an object
        {"id": "H-3"},  # no members
        {"id": "H-4", "members": [{"name": "Dalia", "age": "12"}]},
    ],
}
MAPPING = """\
mapping: nested
version: 1.0.0
record_id: id
provenance: {recorded: "2025-03-01T09:00:00Z"}
rules:
  - name: person
    kind: resource
    resourceType: Patient
    for_each:
      household: households
      member: "%household.members"
    template:
      name: [{text: "{{ %member.name }}"}]
      identifier:
        - system: "urn:example:position"
          value: "{{ %household.id }}/{{ %household_index }}/{{ %member_index }}/{{ %index }}/{{ %key }}"
  - name: age
    kind: observation
    for_each:
      household: households
      member: "%household.members"
    code: {text: Age in years}
    value: "{{ %item.age | integer }}"
    unit: a
    subject: "{{ %person }}"
"""


def _line(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def _bundle(mappings_dir, mapping: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    root = mappings_dir({"example/set.yaml": SET, "example/m.yaml": mapping})
    bundle = load_mapping_sets(root)["example"].map_record(record)
    return [entry["resource"] for entry in bundle["entry"]]


def test_one_rule_walks_every_member_of_every_household_with_each_levels_item_and_position(mappings_dir) -> None:
    made = _bundle(mappings_dir, MAPPING, RECORD)
    patients = [resource for resource in made if resource["resourceType"] == "Patient"]
    ages = [resource for resource in made if resource["resourceType"] == "Observation"]
    assert [patient["name"][0]["text"] for patient in patients] == ["Amina", "Brian", "Chisomo", "Dalia"]
    positions = [patient["identifier"][0]["value"] for patient in patients]
    assert positions == ["H-1/0/0/0/0.0", "H-1/0/1/1/0.1", "H-2/1/0/0/1.0", "H-4/3/0/0/3.0"]
    assert len({patient["id"] for patient in patients}) == 4  # default keys never collide across households
    # %person inside a rule over the same levels is the Patient made for the same member
    assert [(age["valueQuantity"]["value"], age["subject"]["reference"]) for age in ages] == [
        (int(member_age), f"Patient/{patient['id']}")
        for member_age, patient in zip(("3", "41", "7", "12"), patients, strict=True)
    ]


def test_the_same_record_gives_the_same_ids_and_a_key_of_ones_own_keys_them(mappings_dir) -> None:
    first = _bundle(mappings_dir, MAPPING, RECORD)
    assert _bundle(mappings_dir, MAPPING, RECORD) == first
    keyed = MAPPING.replace(
        '      member: "%household.members"\n    template:',
        '      member: "%household.members"\n    key: "%household.id + \'/\' + %member.name"\n    template:',
    )
    made = _bundle(mappings_dir, keyed, RECORD)
    keys = [patient["identifier"][0]["value"].rsplit("/", 1)[1] for patient in made[:1]]
    assert keys == ["Amina"]  # %key is the rule's own key (the tail after the last /)


def test_a_level_sees_only_the_levels_before_it_and_level_names_must_be_fresh(mappings_dir) -> None:
    backwards = MAPPING.replace(
        'household: households\n      member: "%household.members"\n    template',
        'member: "%household.members"\n      household: households\n    template',
    )
    root = mappings_dir({"example/set.yaml": SET, "example/m.yaml": backwards})
    (issue,) = load_mappings(root).issues
    assert issue.where == "rules[0] (person).for_each.member"
    assert "unknown variable %household" in issue.message
    assert issue.line == _line(backwards, 'member: "%household')
    clash = MAPPING.replace("household: households\n      member: \"%household.members\"\n    template",
                            "age: households\n      member: \"%age.members\"\n    template")
    root = mappings_dir({"example/set.yaml": SET, "example/m.yaml": clash})
    issues = load_mappings(root).issues
    assert ("rules[0] (person).for_each.age", "%age is already a name here; choose another level name") in [
        (issue.where, issue.message) for issue in issues
    ]


def test_a_field_typo_under_an_inner_level_is_reported_with_did_you_mean(mappings_dir) -> None:
    files = {
        "example/set.yaml": SET,
        "example/m.yaml": MAPPING.replace("%member.name", "%member.nmae"),
        "example/tests/households.input.json": json.dumps(RECORD),
    }
    root = mappings_dir(files)
    (issue,) = load_mappings(root).issues
    assert issue.line == _line(files["example/m.yaml"], "nmae")
    assert "%member.nmae: no field 'nmae' under %member" in issue.message
    assert "did you mean 'name'?" in issue.message
    files["example/m.yaml"] = MAPPING.replace("%item.age | integer", "%item.age | date")
    (issue,) = load_mappings(mappings_dir(files)).issues
    assert re.search(r"converter date does not fit %item\.age: the golden inputs hold '(3|41|7|12)'", issue.message)


def test_coverage_counts_what_a_nested_rule_reads_through_its_levels(mappings_dir) -> None:
    files = {
        "example/set.yaml": SET,
        "example/m.yaml": MAPPING,
        "example/tests/households.input.json": json.dumps(RECORD),
    }
    root = mappings_dir(files)
    loaded = load_mappings(root)
    (report,) = mapping_coverage(loaded, loaded.sets["example"])
    assert report.unread == []
    assert report.never_fired == []


@pytest.mark.parametrize("levels", ["{}", "{household: households, member: '%household.members.where('}"])
def test_a_broken_nested_for_each_is_refused_at_load_time(mappings_dir, levels: str) -> None:
    broken = re.sub(r"for_each:\n      household: households\n      member: \"%household.members\"\n    template",
                    f"for_each: {levels}\n    template", MAPPING)
    assert broken != MAPPING
    root = mappings_dir({"example/set.yaml": SET, "example/m.yaml": broken})
    expected = "for_each needs at least one level" if levels == "{}" else "unbalanced brackets"
    assert (_line(broken, "for_each:"), expected) in [
        (issue.line, issue.message) for issue in load_mappings(root).issues
    ]


def test_the_readme_example_links_each_answer_to_its_contact(mappings_dir) -> None:
    text = (Path(__file__).resolve().parents[2] / "mappings" / "README.md").read_text(encoding="utf-8")
    (record,) = re.findall(r"<!-- example-record -->\n```json\n(.*?)```", text, re.DOTALL)
    (example,) = [block for block in re.findall(r"<!-- example -->\n```yaml\n(.*?)```", text, re.DOTALL)
                  if "mapping: symptoms" in block]
    made = _bundle(mappings_dir, example, json.loads(record))
    patients, answers = made[:2], made[2:5]
    assert [(answer["code"]["coding"][0]["code"], answer["valueBoolean"], answer["subject"]["reference"])
            for answer in answers] == [
        ("49727002", True, f"Patient/{patients[0]['id']}"),
        ("49727002", False, f"Patient/{patients[1]['id']}"),
        ("386661006", True, f"Patient/{patients[1]['id']}"),
    ]
