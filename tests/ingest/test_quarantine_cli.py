"""``gateway quarantine list|replay|discard`` against a real store and mapping files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli.quarantine import quarantine_app
from gateway.ingest import IngestService, MappingRegistry, split_body
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import open_store
from tests.ingest.conftest import MAPPINGS, SOURCES, sample

runner = CliRunner()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GATEWAY_CONFIG", "GATEWAY_STORE_URL", "GATEWAY_MAPPINGS_DIR"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"store_url: sqlite:///{tmp_path}/cli.db\nmappings_dir: {root}\n"
        "sources:\n  - {name: kobo, kind: kobo, mapping: kobo}\n"
    )
    return path


def _quarantine_one(config: Path, record: dict[str, object] | None = None) -> int:
    root = config.parent / "mappings"
    store = open_store(f"sqlite:///{config.parent}/cli.db")
    try:
        service = IngestService(
            store, QueryParser(default_registry(), 20, 100), MappingRegistry(root, SOURCES)
        )
        record = record or json.loads(sample("kobo", "hypertension-visit"))
        record["symptoms/danger_signs"] = "severe_headache fainting"
        (result,) = service.ingest("kobo", split_body(json.dumps(record).encode(), None)).results
        assert result.quarantine_id is not None
        return result.quarantine_id
    finally:
        store.close()


def test_list_replay_discard(config: Path) -> None:
    qid = _quarantine_one(config)
    listed = runner.invoke(quarantine_app, ["list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert f"#{qid} " in listed.output and "kobo 9e3b1c7a-2f4d-4a6e-8b0c-5d1e7f3a9b2c" in listed.output
    assert "code 'fainting' is not in ConceptMap 'danger-signs'" in listed.output
    as_json = runner.invoke(quarantine_app, ["list", "--json", "--config", str(config)])
    assert json.loads(as_json.stdout.splitlines()[0])["id"] == qid

    still = runner.invoke(quarantine_app, ["replay", "--all", "--config", str(config)])
    assert still.exit_code == 1 and "0 replayed, 1 still held" in still.output

    table = config.parent / "mappings" / "conceptmaps" / "danger-signs.yaml"
    table.write_text(
        table.read_text().replace(
            "  - target: urn:chw-gateway:CodeSystem:chw-findings\n    element:\n",
            "  - target: urn:chw-gateway:CodeSystem:chw-findings\n    element:\n"
            "      - {code: fainting, target: [{code: fainting, display: Fainting, equivalence: equal}]}\n",
        )
    )
    fixed = runner.invoke(quarantine_app, ["replay", str(qid), "--config", str(config)])
    assert fixed.exit_code == 0, fixed.output
    assert "1 replayed, 0 still held" in fixed.output
    assert (
        runner.invoke(quarantine_app, ["list", "--config", str(config)])
        .output.strip()
        .endswith("0 record(s)")
    )

    table.write_text((MAPPINGS / "conceptmaps" / "danger-signs.yaml").read_text())
    record = json.loads(sample("kobo", "hypertension-visit"))
    record["meta/rootUuid"] = "uuid:another"
    other = _quarantine_one(config, record)
    discarded = runner.invoke(quarantine_app, ["discard", str(other), "--config", str(config)])
    assert discarded.exit_code == 0 and "1 record(s) discarded" in discarded.output
    assert runner.invoke(quarantine_app, ["discard", str(other), "--config", str(config)]).exit_code == 1


def test_replay_needs_ids_or_all(config: Path) -> None:
    assert runner.invoke(quarantine_app, ["replay", "--config", str(config)]).exit_code == 2


def test_broken_mappings_are_reported(config: Path) -> None:
    (config.parent / "mappings" / "kobo" / "hypertension-visit.yaml").write_text("mapping: [")
    result = runner.invoke(quarantine_app, ["list", "--config", str(config)])
    assert result.exit_code == 2
    assert "hypertension-visit.yaml:1" in result.output


def test_replay_of_an_id_that_is_not_held_says_so(config: Path) -> None:
    """An unknown or discarded id is not reported as a record "still held" (it is not one)."""
    qid = _quarantine_one(config)
    assert runner.invoke(quarantine_app, ["discard", str(qid), "--config", str(config)]).exit_code == 0
    for missing, reason in ((999, "no quarantined record 999"), (qid, f"record {qid} is discarded, not held")):
        result = runner.invoke(quarantine_app, ["replay", str(missing), "--config", str(config)])
        assert result.exit_code == 1
        assert "still held:" not in result.output
        assert f"gateway: #{missing}: " in result.stderr and reason in result.stderr
        assert "0 replayed, 0 still held, 1 not replayable" in result.stdout
        # An id the store does not hold says where the command looked (a wrong --config is the usual cause).
        assert (f"configuration {config}" in result.stderr) == (missing == 999)


def test_discard_reports_each_id_and_goes_on_past_an_unknown_one(config: Path) -> None:
    qid = _quarantine_one(config)
    result = runner.invoke(quarantine_app, ["discard", "999", str(qid), "--config", str(config)])
    assert result.exit_code == 1
    assert "gateway: #999: " in result.stderr and f"configuration {config}" in result.stderr
    assert f"1 record(s) discarded: #{qid}" in result.stdout  # the known one is done, and says so
    listed = runner.invoke(quarantine_app, ["list", "--config", str(config)]).output
    assert listed.strip().endswith("0 record(s)")


def test_a_replay_that_still_fails_prints_its_answer_once(config: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The command prints why a record is still held; the ingest service's WARNING about the same
    replay reached the terminal too, bare ("replay failed source=kobo qid=1 code=value at=…"),
    through Python's last-resort handler (the CLI configures no logging). The operator who asked
    for the replay gets the answer: the log line is INFO, as for a replay that succeeds."""
    import logging

    qid = _quarantine_one(config)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        still = runner.invoke(quarantine_app, ["replay", str(qid), "--config", str(config)])
    assert still.exit_code == 1 and f"#{qid}: still held" in still.output
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any(r.getMessage().startswith("replay failed source=kobo") for r in caplog.records)


def test_discard_of_an_unknown_id_alone_prints_no_empty_list(config: Path) -> None:
    """It printed "0 record(s) discarded: " (a colon and nothing after it)."""
    refused = runner.invoke(quarantine_app, ["discard", "999", "--config", str(config)])
    assert refused.exit_code != 0
    assert refused.stdout == "0 record(s) discarded\n", refused.stdout
    assert "no quarantined record 999" in refused.stderr
