"""EM estimation of m/u: it recovers the generated data's probabilities, the rule file can use
them (``model: estimated``), and ``gateway identity estimate`` reads the store and writes them."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from bench.identity_eval import chw_set, prf, run_matcher, truth_pairs
from gateway.cli import app
from gateway.identity import IdentityRuleError, estimate, estimated_rules, features, load_rules
from gateway.store import open_store
from tests.ingest.conftest import MAPPINGS

SHIPPED = MAPPINGS / "identity" / "rules.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def generated() -> tuple[list[dict[str, object]], dict[str, str]]:
    records, person_of, _ = chw_set(4000, 23)
    return records, person_of


def test_em_recovers_agreement_of_duplicates_and_of_strangers(
    generated: tuple[list[dict[str, object]], dict[str, str]],
) -> None:
    rules = load_rules(SHIPPED)
    records, _ = generated
    found = estimate([features(r, rules) for r in records], rules, random_pairs=30_000)
    assert found.converged and found.blocked_pairs > 0
    # Duplicates mostly agree on names and birth date, strangers almost never do.
    for field in ("given", "family", "birthdate"):
        assert found.m[field]["exact"] > 0.6, field
        assert found.u[field]["exact"] < 0.05, field
        assert found.m[field]["different"] < 0.2 < found.u[field]["different"], field
    assert abs(sum(found.m["given"].values()) - 1) < 1e-9


def test_estimated_weights_link_as_well_as_the_hand_set_ones(
    generated: tuple[list[dict[str, object]], dict[str, str]],
) -> None:
    rules = load_rules(SHIPPED)
    records, person_of = generated
    estimated = estimated_rules(rules, estimate([features(r, rules) for r in records], rules, random_pairs=30_000))
    assert estimated.model == "estimated"
    assert estimated.weight("phone", "same") != rules.weight("phone", "same")
    truth = truth_pairs(records, person_of)
    precision, recall, _ = prf(run_matcher(records, estimated)[0].auto, truth)
    assert precision >= 0.98 and recall >= 0.85


def test_model_estimated_without_the_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(SHIPPED.read_text() + "\nmodel: estimated\n")
    with pytest.raises(IdentityRuleError, match="estimated"):
        load_rules(path)


def test_the_cli_estimates_from_the_store_and_writes_the_rule_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generated: tuple[list[dict[str, object]], dict[str, str]]
) -> None:
    rules_dir = tmp_path / "identity"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(SHIPPED.read_text())
    store_url = f"sqlite:///{tmp_path}/store.db"
    store = open_store(store_url)
    with store.transaction() as tx:
        for record in generated[0][:1500]:
            tx.update(dict(record))
    store.close()
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store_url: {store_url}\nidentity:\n  rules_dir: {rules_dir}\n")
    monkeypatch.chdir(tmp_path)

    for _ in range(2):  # a second run replaces the section rather than adding another
        result = runner.invoke(app, ["identity", "estimate", "-c", str(config), "--write", "--random-pairs", "5000"])
        assert result.exit_code == 0, result.output
    assert "1500 Patients" in result.output
    text = (rules_dir / "rules.yaml").read_text()
    assert text.count("\nestimated:") == 1
    (rules_dir / "rules.yaml").write_text(text + "model: estimated\n")
    used = load_rules(rules_dir / "rules.yaml")
    assert used.model == "estimated" and used.estimated is not None
    assert used.weight("given", "exact") == pytest.approx(used.estimated["given"]["exact"].weight)


def test_the_cli_names_the_line_of_a_bad_patients_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "gateway.yaml"
    config.write_text(f"store_url: sqlite:///{tmp_path}/s.db\nidentity:\n  rules_dir: {SHIPPED.parent}\n")
    bad = tmp_path / "p.ndjson"
    bad.write_bytes(orjson.dumps({"resourceType": "Patient", "id": "a"}) + b"\n{oops\n")
    result = runner.invoke(app, ["identity", "estimate", "-c", str(config), "--patients", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: not JSON" in result.output
