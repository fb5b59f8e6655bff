"""``gateway mappings validate|run|test|coverage`` as an integrator uses them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gateway.cli.mappings import mappings_app

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"
runner = CliRunner()


def test_validate_ok() -> None:
    result = runner.invoke(mappings_app, ["validate", "--dir", str(MAPPINGS)])
    assert result.exit_code == 0, result.output
    assert "ok: 5 set(s), 10 mapping(s)" in result.output


def test_validate_lists_problems_with_file_and_line(mappings_dir) -> None:
    root = mappings_dir({"commcare/tb-dot-visit.yaml": ""}, with_shipped_sets=True)
    path = root / "commcare" / "tb-dot-visit.yaml"
    path.write_text(
        (MAPPINGS / "commcare" / "tb-dot-visit.yaml").read_text().replace("| decimal }}", "| decimall }}", 1)
    )
    result = runner.invoke(mappings_app, ["validate", "--dir", str(root)])
    assert result.exit_code == 1
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "decimall" in text)
    assert f"tb-dot-visit.yaml:{line}: rules[4] (weight).value: unknown converter 'decimall'" in result.output


def test_run_prints_the_bundle() -> None:
    record = MAPPINGS / "kobo" / "tests" / "hypertension-visit.input.json"
    result = runner.invoke(mappings_app, ["run", "kobo", str(record), "--dir", str(MAPPINGS)])
    assert result.exit_code == 0, result.output
    bundle = json.loads(result.stdout)
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["resource"]["resourceType"] == "Patient"


def test_run_csv_prints_one_bundle_per_row() -> None:
    rows = MAPPINGS / "csv" / "tests" / "malaria-line-list.input.csv"
    result = runner.invoke(mappings_app, ["run", "csv", str(rows), "--dir", str(MAPPINGS)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 4


def test_run_of_a_deleted_record_says_it_retracts(tmp_path: Path) -> None:
    record = tmp_path / "deleted.json"
    record.write_text(json.dumps({"doc": {"_id": "doc-1", "_rev": "3-a", "_deleted": True}}))
    result = runner.invoke(mappings_app, ["run", "cht", str(record), "--dir", str(MAPPINGS)])
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["issue"][0]["severity"] == "information"
    assert "'doc-1'" in outcome["issue"][0]["diagnostics"] and "retracts" in outcome["issue"][0]["diagnostics"]


def test_run_refused_record_exits_1_with_the_outcome(tmp_path: Path) -> None:
    record = tmp_path / "bad.json"
    record.write_text(json.dumps({"doc": {"type": "person", "_id": "x", "reported_date": "soon"}}))
    result = runner.invoke(mappings_app, ["run", "cht", str(record), "--dir", str(MAPPINGS)])
    assert result.exit_code == 1
    outcome = json.loads(result.stdout)
    assert outcome["issue"][0]["expression"] == ["doc.reported_date"]


def test_run_unknown_set() -> None:
    result = runner.invoke(mappings_app, ["run", "nope", "x.json", "--dir", str(MAPPINGS)])
    assert result.exit_code == 2
    assert "unknown mapping set 'nope'" in result.output


def test_test_passes_on_shipped_mappings() -> None:
    result = runner.invoke(mappings_app, ["test", "--dir", str(MAPPINGS)])
    assert result.exit_code == 0, result.output
    assert "26 passed, 0 failed" in result.output  # 18 inbound, 8 outbound cases


def test_failing_golden_test_prints_a_readable_diff(mappings_dir) -> None:
    root = mappings_dir({}, with_shipped_sets=True)
    expected = root / "kobo" / "tests" / "hypertension-visit.expected.json"
    bundle = json.loads(expected.read_text())
    weight = next(e for e in bundle["entry"] if e["resource"].get("code", {}).get("text") == "Body weight")
    weight["resource"]["valueQuantity"]["value"] = 70
    expected.write_text(json.dumps(bundle))
    result = runner.invoke(mappings_app, ["test", "kobo", "--dir", str(root)])
    assert result.exit_code == 1
    assert "FAIL    kobo/hypertension-visit" in result.output
    assert "(Body weight) .resource.valueQuantity.value: expected 70, got 71.2" in result.output
    assert "0 passed, 1 failed" in result.output


def test_update_rewrites_expected_files(mappings_dir) -> None:
    root = mappings_dir({}, with_shipped_sets=True)
    expected = root / "csv" / "tests" / "malaria-line-list.expected.json"
    expected.unlink()
    result = runner.invoke(mappings_app, ["test", "csv", "--dir", str(root)])
    assert result.exit_code == 1 and "is missing (run with --update" in result.output
    result = runner.invoke(mappings_app, ["test", "csv", "--update", "--dir", str(root)])
    assert result.exit_code == 0, result.output
    assert json.loads(expected.read_text()) == json.loads(
        (MAPPINGS / "csv" / "tests" / "malaria-line-list.expected.json").read_text()
    )


def test_update_writes_a_new_deliberately_bad_case_and_it_passes_from_any_directory(mappings_dir, monkeypatch) -> None:
    # A new golden input whose record must be refused: before --update writes its expected
    # OperationOutcome, the static checks try the mapping's converters on it and stop the set.
    root = mappings_dir({}, with_shipped_sets=True)
    tests = root / "kobo" / "tests"
    record = json.loads((tests / "hypertension-visit.input.json").read_text())
    (tests / "heavy.input.json").write_text(json.dumps({**record, "_id": "bad-1", "vitals/weight_kg": "heavy"}))
    result = runner.invoke(mappings_app, ["validate", "--dir", str(root)])
    assert result.exit_code == 1 and "does not fit" in result.output, result.output
    result = runner.invoke(mappings_app, ["test", "kobo", "--update", "--dir", str(root)])
    assert result.exit_code == 0, result.output
    refusal = json.loads((tests / "heavy.expected.json").read_text())
    (diagnostics,) = [issue["diagnostics"] for issue in refusal["issue"]]
    # The rule's file by its name in the set's folder, not by the --dir it was run with.
    assert "at kobo: hypertension-visit.yaml:" in diagnostics and str(root) not in diagnostics, diagnostics
    assert "'heavy' is not a number" in diagnostics
    assert runner.invoke(mappings_app, ["validate", "--dir", str(root)]).exit_code == 0
    monkeypatch.chdir(root.parent)
    result = runner.invoke(mappings_app, ["test", "kobo", "--dir", root.name])
    assert result.exit_code == 0 and "PASS    kobo/heavy" in result.output, result.output


def test_run_names_the_rule_that_made_a_resource_fhir_refuses(mappings_dir, tmp_path: Path) -> None:
    # A raw value into a typed element: the record maps, FHIR refuses the Patient it made.
    root = mappings_dir({}, with_shipped_sets=True)
    mapping = root / "kobo" / "hypertension-visit.yaml"
    mapping.write_text(mapping.read_text().replace("`patient/dob` | date }}", "`patient/dob` }}"))
    record = json.loads((MAPPINGS / "kobo" / "tests" / "hypertension-visit.input.json").read_text())
    sent = tmp_path / "visit.json"
    sent.write_text(json.dumps({**record, "patient/dob": "12/11/2019"}))
    result = runner.invoke(mappings_app, ["run", "kobo", str(sent), "--dir", str(root)])
    assert result.exit_code == 1
    line = next(n for n, text in enumerate(mapping.read_text().splitlines(), 1) if "- name: patient" in text)
    assert f"invalid FHIR: [kobo-hypertension-visit rule patient at kobo: hypertension-visit.yaml:{line}] Patient/" \
        in result.stderr, result.stderr
    assert "birthDate" in result.stderr


def test_coverage_reports_unread_fields_and_silent_rules() -> None:
    result = runner.invoke(mappings_app, ["coverage", "commcare", "csv", "--dir", str(MAPPINGS)])
    assert result.exit_code == 0, result.output
    assert "commcare/commcare-tb-dot-visit@1.0.0: 2 record(s)" in result.output
    assert "unread field: form.adherence.side_effects" in result.output
    assert "rule never fired: muac" in result.output
    assert "unread field: age_years" not in result.output  # read since csv-malaria-line-list 1.1.0 (birth date)
    assert "unread field: form.vitals.weight_kg" not in result.output
    # %item paths inside repeats count as reads of the repeat's fields
    assert "unread field: form.household_contacts.contact.contact_name" not in result.output


def test_run_refuses_a_csv_line_of_the_wrong_width_alone(tmp_path: Path) -> None:
    lines = (MAPPINGS / "csv" / "tests" / "malaria-line-list.input.csv").read_text().splitlines()
    lines.insert(2, "LL-2025-05-0099,2025-05-05,short")
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(lines) + "\n")
    result = runner.invoke(mappings_app, ["run", "csv", str(rows), "--dir", str(MAPPINGS)])
    assert result.exit_code == 1  # one record refused, as the server would quarantine it
    outputs = json.loads(result.stdout)
    assert [output["resourceType"] for output in outputs] == ["Bundle", "OperationOutcome"] + ["Bundle"] * 3
    assert outputs[1]["issue"][0]["diagnostics"] == "CSV line 3 has 3 cells, the header 13"
    assert "1 of 5 record(s) refused" in result.output


def test_run_names_the_file_and_line_of_each_refused_record(tmp_path: Path) -> None:
    lines = (MAPPINGS / "csv" / "tests" / "malaria-line-list.input.csv").read_text().splitlines()
    lines.insert(3, lines[2].replace("LL-2025-05-0002", "LL-2025-05-0098").replace(",29,yes,", ",29,maybe,"))
    lines.insert(4, "")  # a blank line: line numbers stay those of the file
    lines.insert(5, "LL-2025-05-0099,2025-05-05,short")
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(lines) + "\n")
    result = runner.invoke(mappings_app, ["run", "csv", str(rows), "--dir", str(MAPPINGS)])
    assert result.exit_code == 1
    assert f"{rows}:4: " in result.stderr and "fever: 'maybe' is not yes/no" in result.stderr
    assert f"{rows}:6: CSV line 6 has 3 cells, the header 13" in result.stderr
    records = [json.loads((MAPPINGS / "kobo" / "tests" / "hypertension-visit.input.json").read_text())] * 2
    records[1] = {**records[1], "vitals/weight_kg": "heavy"}
    array = tmp_path / "records.json"
    array.write_text(json.dumps(records))
    result = runner.invoke(mappings_app, ["run", "kobo", str(array), "--dir", str(MAPPINGS)])
    assert result.exit_code == 1
    assert f"{array}[1]: " in result.stderr and "`vitals/weight_kg`: 'heavy' is not a number" in result.stderr


def test_run_of_a_file_it_cannot_read_says_so_in_one_line_naming_the_file_once(tmp_path: Path) -> None:
    """It said "cannot read x.json: x.json: invalid JSON: …" and, for a missing file,
    "cannot read x.json: [Errno 2] No such file or directory: 'x.json'"."""
    broken = tmp_path / "broken.json"
    broken.write_text("{bad")
    result = runner.invoke(mappings_app, ["run", "cht", str(broken), "--dir", str(MAPPINGS)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"gateway: {broken}: invalid JSON") and result.stderr.count(str(broken)) == 1
    missing = tmp_path / "missing.json"
    result = runner.invoke(mappings_app, ["run", "cht", str(missing), "--dir", str(MAPPINGS)])
    assert result.exit_code == 2
    assert result.stderr == f"gateway: cannot read {missing}: No such file or directory\n", result.stderr
