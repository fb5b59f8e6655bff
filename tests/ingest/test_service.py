"""The ingest service on both store backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.ingest import IngestConfigError, IngestService, MappingRegistry, split_body
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.settings import SourceConfig
from gateway.store.sql import SqlStore
from tests.ingest.conftest import MAPPINGS, SOURCES, sample


@pytest.fixture
def service(store: SqlStore) -> IngestService:
    registry = MappingRegistry(MAPPINGS, SOURCES)
    return IngestService(store, QueryParser(default_registry(), 20, 100), registry)


def test_every_golden_record_stores_or_is_quarantined(service: IngestService, store: SqlStore) -> None:
    for source in ("commcare", "cht", "odk", "kobo"):
        for case in sorted((MAPPINGS / source / "tests").glob("*.input.json")):
            report = service.ingest(source, split_body(case.read_bytes(), "application/json"))
            expected = json.loads(case.with_name(case.name.replace(".input.", ".expected.")).read_text())
            (result,) = report.results
            if expected["resourceType"] == "OperationOutcome":
                assert result.status == "quarantined"
                assert result.outcome == expected
            else:
                assert result.status == "stored", (case.name, result.outcome)
                # two cases may be versions of one record: what the later no longer makes is taken back
                written = [w for w in result.resources if w.change not in ("retracted", "deleted")]
                assert len(written) == len(expected["entry"])
    assert len(store.quarantine_list()) == 1


def test_duplicates_are_no_ops_and_edits_update(service: IngestService, store: SqlStore) -> None:
    body = sample("odk", "household-visit-expanded")
    first = service.ingest("odk", split_body(body, None)).results[0]
    seq = store.last_change_seq()
    second = service.ingest("odk", split_body(body, None)).results[0]
    assert second.status == "unchanged" and store.last_change_seq() == seq
    assert [(w.type, w.id, w.version) for w in second.resources] == [
        (w.type, w.id, w.version) for w in first.resources
    ]
    record = json.loads(body)
    record["household"]["member"][1]["muac_mm"] = 131
    third = service.ingest("odk", split_body(json.dumps(record).encode(), None)).results[0]
    assert third.status == "stored"
    assert [w.type for w in third.resources if w.change == "updated"] == ["Observation"]


def test_replay_after_fix_on_both_backends(service: IngestService, store: SqlStore, tmp_path: Path) -> None:
    record = json.loads(sample("kobo", "hypertension-visit"))
    record["med_refills"][0]["med_refills/drug"] = "losartan_50mg"
    (result,) = service.ingest("kobo", split_body(json.dumps(record).encode(), None)).results
    assert result.status == "quarantined" and result.quarantine_id is not None
    assert result.outcome is not None and result.outcome["issue"][0]["expression"] == [
        "%item.`med_refills/drug`"
    ]
    # the fix: a copy of the mappings whose medicine table knows the drug
    fixed = tmp_path / "fixed"
    shutil.copytree(MAPPINGS, fixed)
    table = fixed / "conceptmaps" / "medications.yaml"
    table.write_text(
        table.read_text()
        + "      - {code: losartan_50mg, target: [{code: losartan-50mg, display: Losartan 50 mg, "
        "equivalence: equivalent}]}\n"
    )
    service.registry = MappingRegistry(fixed, SOURCES)
    replayed = service.replay(result.quarantine_id)
    assert replayed.status == "stored"
    held = store.quarantine_get(result.quarantine_id)
    assert held is not None and held.status == "replayed" and held.attempts == 2


def test_registry_refuses_sources_without_a_mapping_set(tmp_path: Path) -> None:
    with pytest.raises(IngestConfigError, match="nope → missing"):
        MappingRegistry(MAPPINGS, [SourceConfig(name="nope", kind="json", mapping="missing")])
    broken = tmp_path / "m"
    shutil.copytree(MAPPINGS, broken)
    (broken / "csv" / "malaria-line-list.yaml").write_text("mapping: [")
    with pytest.raises(IngestConfigError, match="malaria-line-list.yaml:1"):
        MappingRegistry(broken, SOURCES)
    assert MappingRegistry(tmp_path / "absent", []).sets == {}


def test_a_record_no_rule_applies_to_is_quarantined(service: IngestService, store: SqlStore) -> None:
    record = json.loads(sample("cht", "person-chw"))
    # two roles: the patient rule wants no "chw" among them, the CHW rule exactly "chw"
    record["doc"]["role"] = ["chw", "supervisor"]
    (result,) = service.ingest("cht", split_body(json.dumps(record).encode(), None)).results
    assert result.status == "quarantined" and result.outcome is not None
    issue = result.outcome["issue"][0]
    assert issue["code"] == "not-supported" and "no rule applies" in issue["diagnostics"]
    assert [q.record_key for q in store.quarantine_list()] == [record["doc"]["_id"]]
