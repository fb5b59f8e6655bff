"""Outbound mappings: golden cases of the shipped sets, load errors with file and line, outcome ids, XForm XML."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.connectors.referral import to_xform
from gateway.mapping import find_cases, load_mapping_sets, load_mappings, outcome_id, render_outcome, run_case

MAPPINGS = Path(__file__).resolve().parents[2] / "mappings"


@pytest.mark.parametrize("set_name", ["cht", "commcare"])
def test_the_shipped_outbound_golden_cases_pass(set_name: str) -> None:
    mapping_set = load_mapping_sets(MAPPINGS)[set_name]
    cases = [case for case in find_cases(mapping_set) if case.outbound]
    assert {case.name for case in cases} >= {"outbound/completed", "outbound/overdue", "outbound/waiting"}
    for case in cases:
        result = run_case(mapping_set, case)
        assert result.status == "pass", result.lines


def test_mappings_test_reports_an_outbound_difference(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    expected = root / "cht" / "outbound" / "tests" / "completed.expected.json"
    payload = json.loads(expected.read_text())
    payload["fields"]["outcome"] = "accepted"
    expected.write_text(json.dumps(payload))
    result = CliRunner().invoke(app, ["mappings", "test", "cht", "--dir", str(root)])
    assert result.exit_code == 1
    assert "FAIL    cht/outbound/completed" in result.output
    assert "fields.outcome" in result.output and "accepted" in result.output


def test_a_broken_outbound_file_is_named_with_its_line(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    path = root / "cht" / "outbound" / "referral-outcome.yaml"
    lines = path.read_text().splitlines()
    index = next(i for i, line in enumerate(lines) if "referral_task_id" in line)
    lines[index] = '    referral_task_id: "{{ task.id | no_such_converter }}"'
    path.write_text("\n".join(lines) + "\n")
    issues = [str(issue) for issue in load_mappings(root).issues]
    assert any(f"referral-outcome.yaml:{index + 1}:" in issue and "no_such_converter" in issue for issue in issues)


def test_each_outcome_has_its_own_stable_id() -> None:
    mapping_set = load_mapping_sets(MAPPINGS)["cht"]
    context = json.loads((MAPPINGS / "cht" / "outbound" / "tests" / "completed.input.json").read_text())
    first = render_outcome(mapping_set.outbound, context)
    again = render_outcome(mapping_set.outbound, copy.deepcopy(context))
    assert first is not None and again is not None and first["_id"] == again["_id"]
    rejected = copy.deepcopy(context)
    rejected["task"]["status"] = "rejected"
    other = render_outcome(mapping_set.outbound, rejected)
    assert other is not None and other["_id"] != first["_id"]
    assert other["_id"] == outcome_id(mapping_set.system, rejected)
    waiting = copy.deepcopy(context)
    waiting["task"]["status"] = "requested"
    assert render_outcome(mapping_set.outbound, waiting) is None


def test_a_commcare_payload_becomes_a_form_with_a_case_block() -> None:
    mapping_set = load_mapping_sets(MAPPINGS)["commcare"]
    context = json.loads((MAPPINGS / "commcare" / "outbound" / "tests" / "completed.input.json").read_text())
    payload = render_outcome(mapping_set.outbound, context)
    assert payload is not None
    root = ET.fromstring(to_xform({**payload, "meta": {**payload["meta"], "userID": "u-1", "deviceID": "gw"}}))
    form = "{http://commcarehq.org/chw-gateway/referral-outcome}"
    assert root.tag == f"{form}data" and root.findtext(f"{form}outcome") == "completed"
    case = root.find("{http://commcarehq.org/case/transaction/v2}case")
    assert case is not None and case.get("case_id") == "a7e3c9d1-2b4f-4e6a-8c0d-1f2e3d4c5b6a"
    assert case.get("user_id") == "u-1"
    assert case.findtext("{http://commcarehq.org/case/transaction/v2}update/"
                         "{http://commcarehq.org/case/transaction/v2}referral_status") == "completed"  # fmt: skip
    assert root.findtext("{http://openrosa.org/jr/xforms}meta/{http://openrosa.org/jr/xforms}instanceID") == \
        payload["meta"]["instanceID"]  # fmt: skip
    with pytest.raises(ValueError, match="instanceID"):
        to_xform({"xmlns": "x", "meta": {}})
    with pytest.raises(ValueError, match="XML element name"):
        to_xform({"xmlns": "x", "fields": {"1bad": "v"}, "meta": {"instanceID": "i"}})
