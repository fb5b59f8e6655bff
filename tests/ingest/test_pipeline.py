"""Requests of several batches: prepared on the request thread, committed in order on the writer."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.ingest import IngestService, MappingRegistry, ReceivedRecord
from gateway.ingest.writer import BATCH_RECORDS
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import Store, open_store
from tests.ingest.conftest import MAPPINGS, SOURCES, sample


def _service(store: Store) -> IngestService:
    return IngestService(store, QueryParser(default_registry(), 20, 100), MappingRegistry(MAPPINGS, SOURCES))


def _people(count: int) -> list[dict[str, Any]]:
    """CHT person records: ``count`` patients, one of them edited later and one broken."""
    base = json.loads(sample("cht", "person-patient"))
    records = []
    for n in range(count):
        record = copy.deepcopy(base)
        record["doc"]["_id"] = f"person-{n}"
        record["doc"]["patient_id"] = str(10_000 + n)
        record["doc"]["name"] = f"Person {n}"
        records.append(record)
    records[120]["doc"]["date_of_birth"] = "not a date"  # quarantined, the rest goes on
    records[120]["doc"]["ephemeral_dob"]["dob_iso"] = "not a date"
    edited = copy.deepcopy(records[10])
    edited["doc"]["name"] = "Person 10, renamed"
    records.insert(200, edited)  # a later record of the same person: it must win
    return records


def _received(records: list[dict[str, Any]]) -> list[ReceivedRecord]:
    return [ReceivedRecord(i, r, orjson.dumps(r), "application/json") for i, r in enumerate(records)]


def _state(store: Store) -> dict[str, Any]:
    """Every current resource without server metadata, by type/id, plus the quarantine."""
    out: dict[str, Any] = {}
    versions, _ = store.history(None, None, count=10_000)
    for version in versions:
        current = store.read(version.type, version.id)
        assert current is not None
        body = orjson.loads(current.content) if current.content else None
        if body:
            body["meta"] = {k: v for k, v in body["meta"].items() if k not in ("versionId", "lastUpdated")}
        out[f"{version.type}/{version.id}"] = (current.version, body)
    out["quarantine"] = [(q.record_key, q.outcome) for q in store.quarantine_list()]
    return out


def test_a_pipelined_request_stores_what_small_requests_store(store: Store, tmp_path: Path) -> None:
    records = _people(260)
    assert len(records) > 2 * BATCH_RECORDS
    service = _service(store)
    report = service.ingest("cht", _received(records))
    service.close()
    assert [r.index for r in report.results] == list(range(len(records)))
    assert [r.status for r in report.results].count("quarantined") == 1
    assert report.results[120].status == "quarantined" and report.results[120].record_key == "person-120"

    # the same records, a few at a time (no pipeline), into a fresh store
    reference = open_store(f"sqlite:///{tmp_path}/reference.db")
    try:
        small = _service(reference)
        statuses = []
        for start in range(0, len(records), 7):
            chunk = _received(records[start : start + 7])
            statuses += [r.status for r in small.ingest("cht", chunk).results]
        assert statuses == [r.status for r in report.results]
        assert _state(store) == _state(reference)
    finally:
        reference.close()
    renamed = store.read("Patient", next(w.id for w in report.results[200].resources if w.type == "Patient"))
    assert renamed is not None and orjson.loads(renamed.content)["name"][0]["text"] == "Person 10, renamed"


def test_a_database_failure_stops_the_request_and_keeps_earlier_batches(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/failing.db")
    try:
        records = _people(260)
        service = _service(store)
        first = service.ingest("cht", _received(records[:1]))  # learn the id of person 150's Patient
        assert first.results[0].status == "stored"
        mapping_set = service.registry.mapping_set(service.registry.source("cht"))

        def patient_of(n: int) -> str:
            entries = mapping_set.map_record(records[n])["entry"]
            (patient,) = [e["resource"] for e in entries if e["resource"]["resourceType"] == "Patient"]
            return str(patient["id"])

        patient_150 = patient_of(150)
        conn = store._connection()  # type: ignore[attr-defined]
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON resources WHEN NEW.id = ?"
            " BEGIN SELECT RAISE(ABORT, 'disk is full'); END".replace("?", f"'{patient_150}'")
        )
        with pytest.raises(Exception, match="disk is full"):
            service.ingest("cht", _received(records))
        service.close()
        # batch 1 (records 0-99) committed, then record 120 was quarantined while batch 2
        # (100-199) was being prepared; batch 2 failed and nothing after it ran
        assert store.read("Patient", patient_of(99)) is not None
        assert store.read("Patient", patient_150) is None and store.read("Patient", patient_of(101)) is None
        assert store.read("Patient", patient_of(250)) is None
        assert [q.record_key for q in store.quarantine_list()] == ["person-120"]
        assert store.history("Patient", None)[1] == BATCH_RECORDS
    finally:
        store.close()
