"""Issue 15's findings about the mapping language, each as behaviour that failed before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.mapping import MappingError, find_cases, load_mapping_sets, load_mappings, mapping_coverage, run_case

SET = """\
name: tbc
system: urn:test:tbc
"""

CONTACTS = """\
mapping: tb-contacts
version: 1.0.0
record_id: id
provenance: {recorded: "{{ submitted | datetime }}"}
let:
  index_case: "{{ index_id | ref('Patient') }}"
rules:
  - name: contact
    kind: resource
    resourceType: Patient
    for_each: contacts
    key: "%item.contact_id"
    let:
      full_name: "{{ %item.name | trim }}"
    template:
      name: ["{{ %full_name | human_name('family_first') }}"]
  - name: contact_age
    kind: observation
    for_each: contacts
    key: "%item.contact_id"
    when: "%item.age | present"
    code: {text: Age}
    value: "{{ %item.age | integer }}"
    unit: a
    subject: "{{ %contact }}"
"""

RECORD = {
    "id": "F-1", "submitted": "2025-03-01T09:00:00Z", "index_id": "IDX-1",
    "contacts": [
        {"contact_id": "C-1", "name": "Uwimana Claudine", "age": "34"},
        {"contact_id": "C-2", "name": "Ti Jozèf", "age": ""},
    ],
}


def _set(mappings_dir, mapping: str, extra: dict[str, str] | None = None) -> Path:
    root: Path = mappings_dir(
        {"tbc/set.yaml": SET, "tbc/contacts.yaml": mapping, **(extra or {})}
    )
    return root


def test_a_per_item_rule_refers_to_another_rules_resource_for_the_same_item(mappings_dir) -> None:
    """Finding 1: ``%contact`` inside another for_each rule over the same items was an unknown
    variable; a rule-level ``let`` sees ``%item``."""
    root = _set(mappings_dir, CONTACTS)
    bundle = load_mapping_sets(root)["tbc"].map_record(RECORD)
    resources = [entry["resource"] for entry in bundle["entry"]]
    patients = [r for r in resources if r["resourceType"] == "Patient"]
    (age,) = [r for r in resources if r["resourceType"] == "Observation"]
    assert [p["name"][0] for p in patients] == [
        {"text": "Uwimana Claudine", "family": "Uwimana", "given": ["Claudine"]},
        {"text": "Ti Jozèf", "given": ["Ti Jozèf"]},
    ]
    assert age["subject"] == {"reference": f"Patient/{patients[0]['id']}"}
    assert age["valueQuantity"]["value"] == 34


def test_a_sibling_that_does_not_fire_for_the_item_is_nothing(mappings_dir) -> None:
    mapping = CONTACTS.replace(
        "    key: \"%item.contact_id\"\n    let:",
        "    key: \"%item.contact_id\"\n    when: \"%item.age | present\"\n    let:",
    ).replace("    when: \"%item.age | present\"\n    code", "    code").replace(
        "    value: \"{{ %item.age | integer }}\"\n    unit: a\n", "    value: \"{{ %item.name }}\"\n"
    )
    bundle = load_mapping_sets(_set(mappings_dir, mapping))["tbc"].map_record(RECORD)
    observations = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert [("subject" in o, o["valueString"]) for o in observations] == [
        (True, "Uwimana Claudine"), (False, "Ti Jozèf")
    ]


def test_a_rule_let_needs_for_each_and_a_fresh_name(mappings_dir) -> None:
    mapping = CONTACTS.replace(
        "    let:\n      full_name:", "    let:\n      index_case:"
    ).replace("%full_name", "%index_case")
    messages = [issue.message for issue in load_mappings(_set(mappings_dir, mapping)).issues]
    assert messages == ["%index_case is already a name here; choose another"]


@pytest.mark.parametrize(
    ("order", "text", "expected"),
    [
        ("family_first", "Uwimana Claudine", {"family": "Uwimana", "given": ["Claudine"]}),
        ("given_first", "Ti Jozèf Pierre", {"family": "Pierre", "given": ["Ti Jozèf"]}),
        ("given_first", "Maria dos Santos", {"family": "dos Santos", "given": ["Maria"]}),
        ("family_first", "van der Berg Anna Maria", {"family": "van der Berg", "given": ["Anna", "Maria"]}),
        ("text_only", "Aisha Nakato", {}),
        # "Family, Given" says which is which, whatever the order
        ("given_first", "Wanjiru, Grace", {"family": "Wanjiru", "given": ["Grace"]}),
        ("family_first", "dos Santos, Maria Clara", {"family": "dos Santos", "given": ["Maria", "Clara"]}),
        ("given_first", "Nakato,", {"family": "Nakato"}),
    ],
)
def test_human_name_orders_and_particles(mappings_dir, order: str, text: str, expected: dict[str, object]) -> None:
    """Finding 4: the last word was always the family name."""
    mapping = CONTACTS.replace("'family_first'", f"'{order}'")
    record = {**RECORD, "contacts": [{"contact_id": "C-1", "name": text}]}
    bundle = load_mapping_sets(_set(mappings_dir, mapping))["tbc"].map_record(record)
    assert bundle["entry"][0]["resource"]["name"] == [{"text": text, **expected}]


def test_human_name_refuses_an_unknown_order(mappings_dir) -> None:
    mapping = CONTACTS.replace("'family_first'", "'surname_first'")
    (issue,) = load_mappings(_set(mappings_dir, mapping)).issues
    assert "order 'surname_first' must be one of given_first, family_first, text_only" in issue.message


TABLE = """\
resourceType: ConceptMap
id: contact-relation
status: active
group:
  - target: http://terminology.hl7.org/CodeSystem/v3-RoleCode
    element:
      - code: {code}
        target: [{{code: {target}, display: {display}, equivalence: equivalent}}]
"""


def test_a_set_has_its_own_conceptmaps_folder(mappings_dir) -> None:
    """Finding 5: ConceptMaps lived in one global folder only."""
    mapping = CONTACTS.replace(
        "      name: [",
        "      contact: [{relationship: [\"{{ %item.relation | concept('contact-relation') }}\"]}]\n      name: [",
    )
    other = mapping.replace("mapping: tb-contacts", "mapping: other")
    root = mappings_dir({
        "tbc/set.yaml": SET, "tbc/contacts.yaml": mapping,
        "tbc/conceptmaps/relations.yaml": TABLE.format(code="mother", target="MTH", display="mother"),
        "other/set.yaml": SET.replace("tbc", "other"), "other/contacts.yaml": other,
    })
    issues = load_mappings(root).issues
    assert [(Path(issue.file).parent.name, issue.message) for issue in issues] == [
        ("other", "unknown ConceptMap 'contact-relation'")
    ]
    (root / "other" / "contacts.yaml").unlink()
    (root / "other" / "set.yaml").unlink()
    record = {**RECORD, "contacts": [{"contact_id": "C-1", "name": "A B", "relation": "mother"}]}
    patient = load_mapping_sets(root)["tbc"].map_record(record)["entry"][0]["resource"]
    assert patient["contact"][0]["relationship"][0]["coding"][0]["code"] == "MTH"


def test_coverage_does_not_list_empty_containers(mappings_dir) -> None:
    """Finding 7: ``_attachments: []`` was listed as an unread field."""
    root = _set(mappings_dir, CONTACTS, {
        "tbc/tests/one.input.json": json.dumps({**RECORD, "_attachments": [], "extra": {}, "note": "x"}),
    })
    loaded = load_mappings(root)
    (report,) = mapping_coverage(loaded, loaded.sets["tbc"])
    assert report.unread == ["note"]


def test_a_golden_diff_shows_the_whole_refusal_reason(mappings_dir) -> None:
    """Finding 7: golden-test diffs cut the refusal reason off."""
    bad = {**RECORD, "contacts": [{"contact_id": "C-1", "name": "A B", "age": "thirty-four years and a bit"}]}
    root = _set(mappings_dir, CONTACTS)
    mapping_set = load_mapping_sets(root)["tbc"]
    # written after loading: the static checks would refuse the mapping for this input
    (root / "tbc" / "tests").mkdir()
    (root / "tbc" / "tests" / "one.input.json").write_text(json.dumps(bad))
    (root / "tbc" / "tests" / "one.expected.json").write_text(json.dumps({"resourceType": "Bundle", "entry": []}))
    (case,) = find_cases(mapping_set)
    result = run_case(mapping_set, case)
    assert result.status == "fail"
    (line,) = result.lines
    assert line.startswith("! refused: [tb-contacts rule contact_age at tbc: ")
    assert "contacts.yaml:17] item contacts[0] (key C-1): %item.age: 'thirty-four years and a bit'" in line
    assert line.endswith("is not a whole number")


def test_a_golden_case_expecting_a_refusal_does_not_feed_the_static_checks(mappings_dir) -> None:
    bad = {**RECORD, "contacts": [{"contact_id": "C-1", "name": "A B", "age": "old"}]}
    refusal = {"resourceType": "OperationOutcome", "issue": []}
    files = {"tbc/tests/one.input.json": json.dumps(bad)}
    mapping = CONTACTS
    (issue,) = load_mappings(_set(mappings_dir, mapping, files)).issues
    assert "converter integer does not fit %item.age" in issue.message
    files["tbc/tests/one.expected.json"] = json.dumps(refusal)
    assert load_mappings(_set(mappings_dir, mapping, files)).issues == []


AGE = """\
mapping: tb-contacts
version: 1.0.0
record_id: id
provenance: {recorded: "{{ submitted | datetime }}"}
let:
  visit_date: "{{ submitted | date }}"
rules:
  - name: contact
    kind: resource
    resourceType: Patient
    for_each: contacts
    key: "%item.contact_id"
    template:
      birthDate: "{{ %visit_date.combine(%item.age) | birth_date_from_age }}"
      _birthDate: "{{ %item.age | estimated }}"
"""


def test_an_age_becomes_an_estimated_birth_date_with_its_extension(mappings_dir) -> None:
    """Language item: age → estimated birth date, marked on ``_birthDate``."""
    from gateway.mapping import fhir_problems

    bundle = load_mapping_sets(_set(mappings_dir, AGE))["tbc"].map_record(RECORD)
    first, second = (entry["resource"] for entry in bundle["entry"][:2])
    assert first["birthDate"] == "1991-03-01"
    assert first["_birthDate"] == {
        "extension": [{"url": "urn:chw-gateway:extension:birth-date-estimated", "valueBoolean": True}]
    }
    assert "birthDate" not in second and "_birthDate" not in second  # no age given
    assert fhir_problems(bundle) == []


def test_an_unknown_age_unit_is_refused_at_load(mappings_dir) -> None:
    mapping = AGE.replace("birth_date_from_age }}", "birth_date_from_age('decades') }}")
    (issue,) = load_mappings(_set(mappings_dir, mapping)).issues
    assert "unit 'decades' must be one of years, months, weeks, days" in issue.message


@pytest.mark.parametrize(("fmt", "message"), [
    ("dd/mm", "date format 'dd/mm' must hold dd, mm and yyyy once each"),
    ("ddmmyyyy", "separate dd, mm and yyyy by a sign"),
    ("xl", "date format 'xl' must hold dd, mm and yyyy once each (e.g. 'dd/mm/yyyy'), or be 'excel'"),
])
def test_a_date_format_that_reads_no_date_is_refused_at_load(mappings_dir, fmt: str, message: str) -> None:
    mapping = AGE.replace('"{{ submitted | date }}"', f"\"{{{{ submitted | date('{fmt}') }}}}\"")
    (issue,) = load_mappings(_set(mappings_dir, mapping)).issues
    assert message in issue.message and issue.line is not None


def test_a_date_written_day_first_or_as_a_spreadsheet_serial_is_read(mappings_dir) -> None:
    for fmt, written in [("dd/mm/yyyy", "29/02/2024"), ("mm-dd-yyyy", "02-29-2024"), ("excel", "45351"),
                         ("excel", 45351.5), ("dd/mm/yyyy", "2024-02-29")]:
        mapping = AGE.replace('"{{ submitted | date }}"', f"\"{{{{ submitted | date('{fmt}') }}}}\"")
        mapping = mapping.replace('{recorded: "{{ submitted | datetime }}"}', '{recorded: "2024-03-01T00:00:00Z"}')
        record = {**RECORD, "submitted": written}
        bundle = load_mapping_sets(_set(mappings_dir, mapping))["tbc"].map_record(record)
        assert bundle["entry"][0]["resource"]["birthDate"] == "1990-02-28", (fmt, written)  # 34 years before the visit
    mapping = AGE.replace('"{{ submitted | date }}"', "\"{{ submitted | date('dd/mm/yyyy') }}\"")
    with pytest.raises(MappingError, match="is not a date written dd/mm/yyyy"):
        load_mapping_sets(_set(mappings_dir, mapping))["tbc"].map_record({**RECORD, "submitted": "02/29/2024"})


ACROSS = CONTACTS + """\
  - name: household
    kind: resource
    resourceType: Group
    template:
      type: person
      actual: true
      member: ["{{ %contact | wrap('entity') }}"]
  - name: screening
    kind: observation
    for_each: screenings
    code: {text: Screened}
    value: "{{ %item.result }}"
    subject: "{{ %contact[%index] }}"
"""


def test_a_repeating_rule_is_every_items_reference_outside_its_items(mappings_dir) -> None:
    """Finding 1: across items, ``%contact`` is the list of per-item References, so
    ``%contact[%index]`` picks one and a single rule can list them all."""
    record = {**RECORD, "screenings": [{"result": "negative"}, {"result": "positive"}]}
    bundle = load_mapping_sets(_set(mappings_dir, ACROSS))["tbc"].map_record(record)
    resources = [entry["resource"] for entry in bundle["entry"]]
    contacts = [f"Patient/{r['id']}" for r in resources if r["resourceType"] == "Patient"]
    (group,) = [r for r in resources if r["resourceType"] == "Group"]
    assert [member["entity"]["reference"] for member in group["member"]] == contacts
    screened = [r for r in resources if r["resourceType"] == "Observation" and "valueString" in r]
    assert [(o["subject"]["reference"], o["valueString"]) for o in screened] == [
        (contacts[0], "negative"), (contacts[1], "positive")
    ]


def test_a_repeating_rule_cannot_refer_to_itself(mappings_dir) -> None:
    link = "      link: [{other: \"{{ %contact }}\", type: seealso}]\n"
    mapping = CONTACTS.replace("      name: [", link + "      name: [")
    (issue,) = load_mappings(_set(mappings_dir, mapping)).issues
    assert issue.message.startswith("unknown variable %contact")


def test_coverage_counts_the_fields_the_sets_retract_reads(mappings_dir) -> None:
    """The fields that tell a void (``set.yaml`` ``retract``) are read: coverage listed ODK's
    ``__system.reviewState`` and ``deletedAt`` as fields no rule reads."""
    retract = (
        SET + "retract:\n  when: \"__system.deletedAt.exists() or __system.reviewState = 'rejected'\"\n"
        "  record_id: __id\n  modified: __system.updatedAt\n"
    )
    record = {**RECORD, "__id": "uuid:1", "note": "x",
              "__system": {"deletedAt": None, "reviewState": "approved", "updatedAt": "2025-03-01T09:00:00Z"}}
    root = _set(mappings_dir, CONTACTS, {"tbc/set.yaml": retract, "tbc/tests/one.input.json": json.dumps(record)})
    loaded = load_mappings(root)
    (report,) = mapping_coverage(loaded, loaded.sets["tbc"])
    assert report.unread == ["note"]


def test_a_refused_repeat_item_is_named_with_its_place_and_key(mappings_dir) -> None:
    """In a household of many children, "%item.age: 'x' is not a whole number" did not say
    which child: the outcome names the item (position and key) and its field in the record."""
    record = {**RECORD, "contacts": [*RECORD["contacts"], {"contact_id": "C-3", "name": "Paul", "age": "thirty"}]}
    (mapping_set,) = load_mapping_sets(_set(mappings_dir, CONTACTS)).values()
    with pytest.raises(MappingError) as caught:
        mapping_set.map_record(record)
    (issue,) = caught.value.outcome()["issue"]
    assert "item contacts[2] (key C-3): %item.age: 'thirty' is not a whole number" in issue["diagnostics"]
    assert issue["expression"] == ["%item.age", "contacts[2].age"]
