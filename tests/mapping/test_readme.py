"""The "write your first mapping" walkthrough in mappings/README.md works as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.mapping import load_concept_tables, load_mapping_sets

README = Path(__file__).resolve().parents[2] / "mappings" / "README.md"


def test_walkthrough_mapping_runs(mappings_dir) -> None:
    text = README.read_text(encoding="utf-8")
    record = json.loads(re.search(r"```json\n(.*?)```", text, re.DOTALL).group(1))  # type: ignore[union-attr]
    heading = r"\*\*2\. Create `mappings/kobo/nutrition-screening.yaml`:\*\*\n\n"
    mapping = re.search(heading + r"```yaml\n(.*?)```", text, re.DOTALL)
    assert mapping is not None
    root = mappings_dir({"kobo/nutrition-screening.yaml": mapping.group(1)}, with_shipped_sets=True)
    bundle = load_mapping_sets(root)["kobo"].map_record(record)
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds == ["Patient", "Observation", "Observation", "Provenance"]
    muac = bundle["entry"][1]["resource"]
    assert muac["valueQuantity"]["value"] == 118
    assert muac["subject"] == {"reference": f"Patient/{bundle['entry'][0]['resource']['id']}"}


def _blocks(text: str, marker: str, language: str) -> list[str]:
    return re.findall(rf"<!-- {marker} -->\n```{language}\n(.*?)```", text, re.DOTALL)


def _table(text: str, marker: str) -> list[list[str]]:
    body = text.split(f"<!-- {marker} -->\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in body.splitlines()[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append([cell.replace("\\|", "|") for cell in cells])
    return rows


def _code(cell: str) -> str:
    """The text inside one ``code`` span (single or double backticks)."""
    match = re.fullmatch(r"``\s?(.*?)\s?``|`(.*?)`", cell)
    assert match is not None, cell
    return match.group(1) if match.group(1) is not None else match.group(2)


def _run_table(marker: str, shipped) -> int:
    from gateway.mapping import CompileContext, MappingError, Scope, compile_expression

    rows = _table(README.read_text(encoding="utf-8"), marker)
    for _, expression, value, result in rows:
        ctx = CompileContext(system="urn:example", tables=shipped.tables, constants={"system": ["urn:example"]})
        compiled = compile_expression(_code(expression), ctx, Scope(frozenset()))
        record = {"v": json.loads(_code(value))}
        if result.startswith("error:"):
            with pytest.raises(MappingError) as caught:
                compiled.run(record, {})
            assert _code(result.removeprefix("error:").strip()) in caught.value.message, expression
        else:
            assert compiled.run(record, {}) == json.loads(_code(result)), expression
    return len(rows)


def test_every_converter_example_gives_what_the_table_says(shipped) -> None:
    from gateway.mapping.converters import CONVERTERS

    assert _run_table("converter-examples", shipped) >= len(CONVERTERS)
    text = README.read_text(encoding="utf-8")
    documented = {re.match(r"`([a-z_]+)", row[0]).group(1) for row in _table(text, "converter-examples")}  # type: ignore[union-attr]
    assert documented == set(CONVERTERS)


def test_every_fhirpath_example_gives_what_the_table_says(shipped) -> None:
    assert _run_table("function-examples", shipped) >= 10


def test_every_mapping_example_loads_and_maps_the_example_record(mappings_dir) -> None:
    from gateway.mapping import fhir_problems

    text = README.read_text(encoding="utf-8")
    (record_text,) = _blocks(text, "example-record", "json")
    record = json.loads(record_text)
    examples = _blocks(text, "example", "yaml")
    assert len(examples) >= 5
    kinds_seen: set[str] = set()
    for example in examples:
        expected = [kind.strip() for kind in example.splitlines()[0].removeprefix("# makes:").split(",")]
        root = mappings_dir({"example/set.yaml": "name: example\nsystem: urn:example\n", "example/m.yaml": example})
        bundle = load_mapping_sets(root)["example"].map_record(record)
        made = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
        assert made == [*expected, "Provenance"], example
        assert fhir_problems(bundle) == [], example
        kinds_seen |= set(re.findall(r"kind: (\w+)", example))
    assert kinds_seen == {"resource", "observation", "referral"}


def test_the_per_item_reference_example_links_each_age_to_its_contact(mappings_dir) -> None:
    text = README.read_text(encoding="utf-8")
    (record_text,) = _blocks(text, "example-record", "json")
    (example,) = [block for block in _blocks(text, "example", "yaml") if "mapping: contacts" in block]
    root = mappings_dir({"example/set.yaml": "name: example\nsystem: urn:example\n", "example/m.yaml": example})
    bundle = load_mapping_sets(root)["example"].map_record(json.loads(record_text))
    first, second, age = (entry["resource"] for entry in bundle["entry"][:3])
    assert age["subject"] == {"reference": f"Patient/{first['id']}"}
    assert first["name"][0]["given"] == ["Ti Jozèf"]
    assert second["name"][0] == {"text": "Marie Paul", "family": "Paul", "given": ["Marie"]}


def test_the_dhis2_tracker_example_is_a_valid_tracker_mapping(shipped) -> None:
    import yaml

    from gateway.connectors.dhis2.mapping_spec import TrackerMapping
    from gateway.mapping import CompileContext, Scope, compile_expression

    text = README.read_text(encoding="utf-8")
    (example,) = _blocks(text, "example-dhis2", "yaml")
    spec = TrackerMapping.model_validate(yaml.safe_load(example))
    dhis2_tables = load_concept_tables(README.parent / "dhis2" / "conceptmaps", [])
    ctx = CompileContext(system="dhis2", tables={**shipped.tables, **dhis2_tables})
    expressions = [attribute.value for attribute in spec.tracked_entity.attributes]
    expressions += [stage.when for stage in spec.stages]
    expressions += [value.value for stage in spec.stages for value in stage.data_values if value.value]
    for expression in expressions:
        compile_expression(expression, ctx, Scope(frozenset()))
    assert spec.stages[0].status["finished"] == "COMPLETED"
    assert spec.enrollment.enrolled_at == "period.start"


def test_the_troubleshooting_table_names_every_static_check_message() -> None:
    text = README.read_text(encoding="utf-8").split("## Troubleshooting", 1)[1]
    for fragment in ("did you mean", "does not fit", "required value set", "may refer to", "UCUM",
                     "is not one of its elements", "takes one", "unknown ConceptMap", "FHIRPath syntax error"):
        assert fragment in text, fragment


def test_walkthrough_step_3_error_is_what_validate_prints(mappings_dir, monkeypatch) -> None:
    """Step 3 quotes the error `gateway mappings validate` gives for a misspelt converter: the
    file as the command names it (under `mappings/`, run from the project's root) and its line."""
    from typer.testing import CliRunner

    from gateway.cli import app

    text = README.read_text(encoding="utf-8")
    heading = r"\*\*2\. Create `mappings/kobo/nutrition-screening.yaml`:\*\*\n\n"
    mapping = re.search(heading + r"```yaml\n(.*?)```", text, re.DOTALL)
    quoted = re.search(r"\*\*3\. Check it:\*\*.*?Mistakes come back as\n`(.*?)`", text, re.DOTALL)
    assert mapping is not None and quoted is not None
    typo = mapping.group(1).replace("| decimal", "| decmal")
    root = mappings_dir({"kobo/nutrition-screening.yaml": typo}, with_shipped_sets=True)
    (root.parent / "mappings").symlink_to(root)
    monkeypatch.chdir(root.parent)
    result = CliRunner().invoke(app, ["mappings", "validate"])
    assert result.exit_code == 1
    assert quoted.group(1) in result.output.splitlines()[0], (quoted.group(1), result.output)
