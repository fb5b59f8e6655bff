"""The ingest service on both store backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.fhir import run_prepared
from gateway.ingest import IngestConfigError, IngestService, MappingRegistry, split_body
from gateway.ingest import service as service_module
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
    assert [(w.type, w.id, w.version) for w in second.resources] == [(w.type, w.id, w.version) for w in first.resources]
    record = json.loads(body)
    record["household"]["member"][1]["muac_mm"] = 131
    third = service.ingest("odk", split_body(json.dumps(record).encode(), None)).results[0]
    assert third.status == "stored"
    assert [w.type for w in third.resources if w.change == "updated"] == ["Observation"]


def test_a_record_another_process_stored_while_this_one_waited_to_write_is_unchanged(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same record sent to two API processes at once: both map it against an empty store, one
    commits first, and the other, writing after it, stores nothing: it is answered unchanged (it was
    answered stored, each resource ``updated`` at version 1, because the other's versions were newer
    than the moment this one began its commit)."""
    registry = MappingRegistry(MAPPINGS, SOURCES)
    other, this = (IngestService(store, QueryParser(default_registry(), 20, 100), registry) for _ in range(2))
    body = sample("odk", "household-visit-expanded")
    real = run_prepared
    first: list[Any] = []

    def other_process_lands_first(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(service_module, "run_prepared", real)
        # while this process waits for the write lock, the other commits the same record
        first.append(other.ingest("odk", split_body(body, None)).results[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(service_module, "run_prepared", other_process_lands_first)
    second = this.ingest("odk", split_body(body, None)).results[0]
    other.close()
    this.close()
    (stored,) = first
    assert stored.status == "stored" and {w.change for w in stored.resources} == {"created"}
    assert second.status == "unchanged", [(w.type, w.version, w.change) for w in second.resources]
    assert {w.change for w in second.resources} == {"unchanged"}
    assert [(w.type, w.id, w.version) for w in second.resources] == [
        (w.type, w.id, w.version) for w in stored.resources
    ]


def test_replay_after_fix_on_both_backends(service: IngestService, store: SqlStore, tmp_path: Path) -> None:
    record = json.loads(sample("kobo", "hypertension-visit"))
    record["med_refills"][0]["med_refills/drug"] = "losartan_50mg"
    (result,) = service.ingest("kobo", split_body(json.dumps(record).encode(), None)).results
    assert result.status == "quarantined" and result.quarantine_id is not None
    assert result.outcome is not None
    assert result.outcome["issue"][0]["expression"] == ["%item.`med_refills/drug`", "med_refills[0].`med_refills/drug`"]
    # the fix: a copy of the mappings whose medicine table knows the drug
    fixed = tmp_path / "fixed"
    shutil.copytree(MAPPINGS, fixed)
    table = fixed / "conceptmaps" / "medications.yaml"
    table.write_text(
        table.read_text() + "      - {code: losartan_50mg, target: [{code: losartan-50mg, display: Losartan 50 mg, "
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


def test_a_record_no_mapping_accepts_is_held_under_its_own_id(service: IngestService, store: SqlStore) -> None:
    # A CHT report of a form no mapping knows: its quarantine entry names doc._id, as the set's
    # mappings read a record id, not "-".
    record = json.loads(sample("cht", "report-data-record-assessment"))
    record["doc"]["form"] = "unknown_form"
    (result,) = service.ingest("cht", split_body(json.dumps(record).encode(), None)).results
    assert result.status == "quarantined" and result.record_key == record["doc"]["_id"]
    assert [q.record_key for q in store.quarantine_list()] == [record["doc"]["_id"]]


class _ReadCounter:
    """The store, counting the reads of single resources and of many (the ingest's round trips)."""

    def __init__(self, inner: SqlStore) -> None:
        self.inner = inner
        self.reads: list[str] = []
        self.read_many_calls = 0

    def read(self, rtype: str, rid: str, **kwargs: Any) -> Any:
        self.reads.append(rtype)
        return self.inner.read(rtype, rid, **kwargs)

    def read_many(self, refs: Any) -> Any:
        self.read_many_calls += 1
        return self.inner.read_many(refs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_referral_progress_survives_a_large_resend_read_in_one_query_a_batch(store: SqlStore) -> None:
    counted = _ReadCounter(store)
    parser = QueryParser(default_registry(), 20, 100)
    service = IngestService(counted, parser, MappingRegistry(MAPPINGS, SOURCES))
    try:
        report = json.loads(sample("cht", "report-data-record-assessment"))
        first = service.ingest("cht", split_body(json.dumps(report).encode(), "application/json")).results[0]
        (task_id,) = [w.id for w in first.resources if w.type == "Task"]
        stored = store.read("Task", task_id)
        assert stored is not None
        with store.transaction() as tx:  # the facility accepted it (as through the FHIR API)
            tx.update({**orjson.loads(stored.content), "status": "accepted", "businessStatus": {"text": "seen"}})
        others = []
        for n in range(150):
            other = copy.deepcopy(report)
            other["doc"]["_id"] = f"0196c7a2-0000-7000-8000-{n:012d}"
            others.append(other)
        unmappable = {"doc": {"_id": "x-unknown", "type": "data_record", "form": "no_such_form"}}
        records = [*others[:120], report, unmappable, *others[120:]]  # the resent report in the second batch
        counted.reads.clear()
        counted.read_many_calls = 0
        results = service.ingest("cht", split_body(json.dumps(records).encode(), "application/json")).results
        assert [r.status for r in results[:120]] == ["stored"] * 120
        assert results[120].status == "unchanged"  # the facility's progress kept: nothing to write
        assert results[121].status == "quarantined" and results[121].quarantine_id is not None
        assert [r.status for r in results[122:]] == ["stored"] * 30
        kept = store.read("Task", task_id)
        assert kept is not None and orjson.loads(kept.content)["status"] == "accepted"
        assert "Task" not in counted.reads and counted.read_many_calls == 2  # a query a batch of 100 records
    finally:
        service.close()


def test_a_bundle_fhir_refuses_names_the_rule_that_made_the_part(service: IngestService, store: SqlStore) -> None:
    # The golden inputs hold "CHW-0083"; an app sending the CHW id as a number makes an
    # Identifier.value FHIR refuses. The quarantine says which rule, file and line made it.
    record = json.loads(sample("kobo", "hypertension-visit"))
    record["chw_id"] = 83
    (result,) = service.ingest("kobo", split_body(orjson.dumps(record), "application/json")).results
    assert result.status == "quarantined"
    (issue,) = result.outcome["issue"]  # type: ignore[index]
    assert issue["expression"][0].startswith("Bundle.entry[")
    file = MAPPINGS / "kobo" / "hypertension-visit.yaml"
    line = next(n for n, text in enumerate(file.read_text().splitlines(), 1) if "name: chw_practitioner" in text)
    where = f"[kobo-hypertension-visit rule chw_practitioner at kobo: {file.name}:{line}] "
    assert issue["diagnostics"].startswith(where), issue
    # replayed (the mapping not yet fixed), it stays held and says the same
    again = service.replay(result.quarantine_id)  # type: ignore[arg-type]
    assert again.status == "quarantined"
    assert again.outcome["issue"][0]["diagnostics"].startswith(where), again.outcome  # type: ignore[index]
