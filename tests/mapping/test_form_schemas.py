"""Input schemas from form definitions (issue 15): a set's ``forms`` (XLSForm, XForm, CommCare
app JSON) give ``mappings validate`` the fields, types and choices of what the source sends."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.mapping import load_mappings
from gateway.mapping.forms import FormError, read_form
from gateway.mapping.formschema import record_schema

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
SET = "name: screening\nsystem: urn:example\nforms:\n  - {file: forms/nutrition.xlsx, layout: kobo, mapping: m.yaml}\n"
SURVEY = [
    ("type", "name", "label"),
    ("text", "chw", "CHW"),
    ("begin_group", "child", "Child"),
    ("text", "child_id", "Child ID"),
    ("select_one sex", "sex", "Sex"),
    ("date", "dob", "Date of birth"),
    ("end_group", "", ""),
    ("begin_group", "vitals", "Measurements"),
    ("integer", "muac_mm", "MUAC (mm)"),
    ("decimal", "weight_kg", "Weight (kg)"),
    ("end_group", "", ""),
    ("select_one yes_no", "oedema", "Oedema?"),
    ("begin_repeat", "siblings", "Siblings"),
    ("text", "name", "Name"),
    ("integer", "age", "Age"),
    ("end_repeat", "", ""),
]
CHOICES = [("list_name", "name", "label"), ("sex", "female", "Female"), ("sex", "male", "Male"),
           ("yes_no", "yes", "Yes"), ("yes_no", "no", "No")]
MAPPING = """\
mapping: screening
version: 1.0.0
match: "_xform_id_string = 'aNutr1tion'"
record_id: _uuid
provenance: {recorded: "{{ _submission_time | datetime }}"}
rules:
  - name: child
    kind: resource
    resourceType: Patient
    id: "`child/child_id`"
    template:
      gender: "{{ `child/sex` | code('administrative-gender') }}"
      birthDate: "{{ `child/dob` | date }}"
  - name: muac
    kind: observation
    code: "{{ 'muac' | concept('chw-observations') }}"
    value: "{{ `vitals/muac_mm` | decimal }}"
    unit: mm
    subject: "{{ %child }}"
  - name: oedema
    kind: observation
    when: "oedema = 'yes'"
    code: "{{ 'oedema' | concept('chw-observations') }}"
    value: true
    subject: "{{ %child }}"
  - name: sibling_age
    kind: observation
    for_each: siblings
    code: {text: Age in years}
    value: "{{ %item.`siblings/age` | integer }}"
    unit: a
"""
#: a golden input without MUAC, weight or siblings: the fields the checks know come from the form
GOLDEN = {"_uuid": "u-1", "_xform_id_string": "aNutr1tion", "_submission_time": "2025-06-01T08:00:00",
          "child/child_id": "C-1", "child/sex": "female", "oedema": "no"}


Rows = list[tuple[str, str, str]]


def _xlsx(path: Path, survey: Rows = SURVEY, choices: Rows = CHOICES) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "survey"
    for row in survey:
        sheet.append(row)
    sheet = book.create_sheet("choices")
    for row in choices:
        sheet.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def _set(mappings_dir, mapping: str = MAPPING, set_yaml: str = SET) -> Path:
    root: Path = mappings_dir({
        "screening/set.yaml": set_yaml, "screening/m.yaml": mapping,
        "screening/tests/case.input.json": json.dumps(GOLDEN),
    })
    _xlsx(root / "screening" / "forms" / "nutrition.xlsx")
    return root


def _line(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


def test_fields_only_the_form_has_are_known_and_a_typo_in_one_gets_file_line_and_did_you_mean(
    mappings_dir, monkeypatch, tmp_path: Path
) -> None:
    assert load_mappings(_set(mappings_dir)).issues == []
    # without the form, the same mapping is refused: no golden input has vitals/muac_mm
    no_form = load_mappings(_set(mappings_dir, set_yaml="name: screening\nsystem: urn:example\n")).issues
    assert {"child/dob", "vitals/muac_mm", "siblings"} <= {issue.message.split(":")[0] for issue in no_form}
    typo = MAPPING.replace("`vitals/muac_mm` | decimal", "`vitals/muac_m` | decimal")
    root = _set(mappings_dir, typo)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["mappings", "validate", "--dir", str(root)])
    assert result.exit_code == 1
    expected = (f"{root / 'screening' / 'm.yaml'}:{_line(typo, 'muac_m`')}: rules[1] (muac).value: "
                "vitals/muac_m: no field 'vitals/muac_m' under the record in the golden inputs or "
                "forms/nutrition.xlsx; did you mean 'vitals/muac_mm'?")
    assert expected in result.output


def test_a_typo_under_a_repeat_of_the_form_is_found_through_the_rules_for_each(mappings_dir) -> None:
    typo = MAPPING.replace("%item.`siblings/age`", "%item.`siblings/ag`")
    (issue,) = load_mappings(_set(mappings_dir, typo)).issues
    assert issue.line == _line(typo, "siblings/ag`")
    assert "no field 'siblings/ag' under %item" in issue.message
    assert "did you mean 'siblings/age'?" in issue.message


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("`child/dob` | date", "`vitals/muac_mm` | date",
         "converter date does not fit `vitals/muac_mm`: forms/nutrition.xlsx declares it an integer question"),
        ("`vitals/muac_mm` | decimal", "`child/child_id` | decimal",
         "converter decimal does not fit `child/child_id`: forms/nutrition.xlsx declares it a text question"),
        ("oedema = 'yes'", "oedema = 'yse'",
         "oedema: 'yse' is not a choice of that question in forms/nutrition.xlsx (yes, no); did you mean 'yes'?"),
    ],
    ids=["date on an integer", "number on text", "a choice that does not exist"],
)
def test_a_converter_or_comparison_that_does_not_fit_the_declared_type_is_refused(
    mappings_dir, old: str, new: str, message: str
) -> None:
    mapping = MAPPING.replace(old, new)
    (issue,) = load_mappings(_set(mappings_dir, mapping)).issues
    assert issue.line == _line(mapping, new)
    assert issue.message.startswith(message), issue.message


def test_every_choice_of_a_select_must_go_through_the_converters(mappings_dir, tmp_path: Path) -> None:
    """A form answer option no ConceptMap entry covers would refuse records at run time."""
    root = _set(mappings_dir)
    _xlsx(root / "screening" / "forms" / "nutrition.xlsx", choices=[*CHOICES, ("sex", "intersex", "Intersex")])
    (issue,) = load_mappings(root).issues
    assert issue.line == _line(MAPPING, "`child/sex`")
    assert issue.message.startswith(
        "`child/sex`: the choice 'intersex' in forms/nutrition.xlsx does not go through code"
    )


@pytest.mark.parametrize(
    ("set_yaml", "where", "message"),
    [
        ("  - {file: forms/none.xlsx, layout: kobo, mapping: m.yaml}\n", "forms[0].file", "none.xlsx: no such file"),
        ("  - {file: forms/nutrition.xlsx, layout: kobo, mapping: other.yaml}\n", "forms[0].mapping",
         "'other.yaml' is not a mapping file of this set"),
        ("  - {file: forms/nutrition.xlsx, mapping: m.yaml}\n", "forms[0].file",
         "say how the source lays out forms/nutrition.xlsx: layout: odk | kobo | cht | commcare"),
        ("  - {file: tests/case.input.json, mapping: m.yaml}\n", "forms[0].file",
         "case.input.json: no modules[].forms[]"),
    ],
    ids=["missing file", "unknown mapping", "no layout", "not an app"],
)
def test_a_bad_forms_entry_is_named_with_set_yaml_line(mappings_dir, set_yaml: str, where: str, message: str) -> None:
    text = "name: screening\nsystem: urn:example\nforms:\n" + set_yaml
    issues = [issue for issue in load_mappings(_set(mappings_dir, set_yaml=text)).issues
              if issue.file.endswith("set.yaml")]
    assert [(issue.line, issue.where) for issue in issues] == [(4, where)]
    assert issues[0].message.startswith(message), issues[0].message


# --------------------------------------------------------------------------- the three formats


def _tree(node, depth: int = 0) -> list[str]:
    lines = ["  " * depth + f"{node.name} {node.kind}" + (f" {node.choices}" if node.choices else "")]
    for child in node.children:
        lines.extend(_tree(child, depth + 1))
    return lines


def test_an_xlsform_in_xlsx_and_in_csv_gives_the_same_question_tree(tmp_path: Path) -> None:
    _xlsx(tmp_path / "form.xlsx")
    csv_rows = [f"survey,{','.join(SURVEY[0])}", *[f",{','.join(row)}" for row in SURVEY[1:]],
                f"choices,{','.join(CHOICES[0])}", *[f",{','.join(row)}" for row in CHOICES[1:]]]
    (tmp_path / "form.csv").write_text("\n".join(csv_rows) + "\n", encoding="utf-8")
    tree = _tree(read_form(tmp_path / "form.xlsx"))
    assert tree == _tree(read_form(tmp_path / "form.csv"))
    assert "  child group" in tree and "    sex select_one ['female', 'male']" in tree
    assert "    muac_mm integer" in tree and "    weight_kg decimal" in tree
    assert "  siblings repeat" in tree and "    age integer" in tree
    assert "    instanceID any" in tree  # the meta group pyxform adds, as ODK tools do


def test_an_xform_gives_groups_repeats_bind_types_and_choices_of_selects() -> None:
    tree = _tree(read_form(MAPPINGS / "odk" / "forms" / "chw_household_visit.xml"))
    assert "    gps geopoint" in tree and "    members_count integer" in tree
    assert "    member repeat" in tree  # one node, though the instance holds a template and a row
    assert "      danger_signs select_multiple" in next(line for line in tree if "danger_signs" in line)
    assert "      rdt_result select_one ['positive', 'negative', 'invalid']" in tree
    assert "  instance_name any" in tree  # a calculate: its bind type says nothing


HAND_WRITTEN_XFORM = """<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml"
  xmlns:jr="http://openrosa.org/javarosa">
 <h:head><model>
  <instance><visit id="visit"><chw_id/><hh_size/><water/><note_text/><meta><instanceID/></meta></visit></instance>
  <bind nodeset="/visit/chw_id" type="string"/>
  <bind nodeset="/visit/hh_size" type="xsd:int"/>
  <bind nodeset="/visit/water" type="xsd:string"/>
  <bind nodeset="/visit/note_text" type="string"/>
  <bind nodeset="/visit/meta/instanceID" type="string" jr:preload="uid"/>
 </model></h:head>
 <h:body>
  <input ref="/visit/hh_size"><label>People</label></input>
  <select1 ref="/visit/water"><label>Water</label>
   <item><label>Tap</label><value>tap</value></item><item><label>Well</label><value>well</value></item>
  </select1>
  <input ref="/visit/note_text"><label>Note</label></input>
 </h:body>
</h:html>
"""


def test_a_hand_written_xform_types_hidden_values_as_any_and_lists_inline_choices(tmp_path: Path) -> None:
    (tmp_path / "visit.xml").write_text(HAND_WRITTEN_XFORM, encoding="utf-8")
    assert _tree(read_form(tmp_path / "visit.xml")) == [
        "visit group", "  chw_id any", "  hh_size integer", "  water select_one ['tap', 'well']",
        "  note_text text", "  meta group", "    instanceID text",
    ]


def test_a_commcare_app_gives_each_forms_questions_by_value_path() -> None:
    app_json = MAPPINGS / "commcare" / "forms" / "app.json"
    with pytest.raises(FormError, match="several forms: say which with form"):
        read_form(app_json)
    tree = _tree(read_form(app_json, "Household Registration"))
    assert tree[:4] == ["data group", "  household_name text", "  village text", "  household_size integer"]
    assert "    member repeat" in tree
    assert "      member_pregnant select_one ['yes', 'no', 'dont_know']" in tree
    assert "      member_case_id any" in tree  # a hidden value


@pytest.mark.parametrize(
    ("layout", "paths"),
    [
        ("odk", [("household", "member", "__id"), ("household", "member", "muac_mm"), ("__system",)]),
        ("kobo", [("household/members_count",), ("household/member", "household/member/muac_mm"), ("_uuid",)]),
        ("cht", [("doc", "fields", "household", "member", "muac_mm"), ("doc", "reported_date")]),
        ("commcare", [("form", "household", "member", "muac_mm"), ("form", "@xmlns"), ("received_on",)]),
    ],
)
def test_each_source_lays_the_same_form_out_its_own_way(layout: str, paths: list[tuple[str, ...]]) -> None:
    form = read_form(MAPPINGS / "odk" / "forms" / "chw_household_visit.xml")
    schema = record_schema(form, layout, "forms/f.xml")
    for keys in paths:
        node, problem = schema.find(keys)
        assert problem is None and node is not None, (layout, keys)
    muac = next(schema.find(keys)[0] for keys in paths if keys[-1].endswith("muac_mm"))
    assert muac is not None and (muac.kind, muac.form) == ("integer", "forms/f.xml")


@pytest.mark.parametrize(
    ("set_name", "file", "old", "new", "fragment"),
    [
        ("kobo", "hypertension-visit.yaml", "`vitals/weight_kg` | decimal", "`vitals/weight_kgs` | decimal",
         "did you mean 'vitals/weight_kg'?"),
        ("odk", "chw-household-visit.yaml", "%item.muac_mm | decimal", "%item.muac_mm | date",
         "forms/chw_household_visit.xml declares it an integer question"),
        ("cht", "assessment.yaml", "group_fever.patient_temperature | decimal",
         "group_fever.patient_temprature | decimal", "did you mean 'patient_temperature'?"),
        ("commcare", "household-registration.yaml", "%item.member_pregnant | concept",
         "%item.member_pregnat | concept", "did you mean 'member_pregnant'?"),
    ],
)
def test_the_shipped_forms_catch_mistakes_without_any_golden_input(
    tmp_path: Path, set_name: str, file: str, old: str, new: str, fragment: str
) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    shutil.rmtree(root / set_name / "tests")
    assert [issue for issue in load_mappings(root).issues if f"/{set_name}/" in issue.file] == []
    path = root / set_name / file
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    issues = [issue for issue in load_mappings(root).issues if f"/{set_name}/" in issue.file]
    assert [(issue.file, issue.line) for issue in issues] == [(str(path), _line(text.replace(old, new), new))]
    assert fragment in issues[0].message
    assert re.search(r"forms/\S+", issues[0].message)


def test_unreadable_form_definitions_say_why(tmp_path: Path) -> None:
    (tmp_path / "broken.xml").write_text("<h:html xmlns:h='http://www.w3.org/1999/xhtml'><h:head>", encoding="utf-8")
    with pytest.raises(FormError, match="broken.xml: not well-formed XML"):
        read_form(tmp_path / "broken.xml")
    (tmp_path / "bomb.xml").write_text(
        '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>', encoding="utf-8"
    )
    with pytest.raises(FormError, match="bomb.xml: not well-formed XML"):  # entities refused (defusedxml)
        read_form(tmp_path / "bomb.xml")
    _xlsx(tmp_path / "bad.xlsx", survey=[("type", "name", "label"), ("integr", "age", "Age")])
    with pytest.raises(FormError, match="bad.xlsx: .*integr"):
        read_form(tmp_path / "bad.xlsx")
    with pytest.raises(FormError, match="no form 'Nutrition' \\(xmlns: "):
        read_form(MAPPINGS / "commcare" / "forms" / "app.json", "Nutrition")
    with pytest.raises(FormError, match="form.yaml: not a form definition"):
        (tmp_path / "form.yaml").write_text("a: 1\n", encoding="utf-8")
        read_form(tmp_path / "form.yaml")
