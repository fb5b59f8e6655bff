"""The bulk export contract (``BulkExports``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from gateway.search import QueryParser, default_registry
from gateway.store import ExportJob, ExportScope, Store

PARSER = QueryParser(default_registry(), 20, 1000)


def _job(job_id: str = "j1", status: str = "accepted") -> ExportJob:
    now = datetime(2026, 12, 5, 1, 2, 3, 456000, tzinfo=UTC)
    return ExportJob(job_id=job_id, client="c1", status=status, request="http://x/fhir/$export?_type=Patient",
                     params={"level": "system", "types": ["Patient"]}, created=now, updated=now,
                     transaction_time=now)


def test_jobs_keep_every_field_and_updates_need_the_job_to_exist(store: Store) -> None:
    job = _job()
    store.export_save(job)
    assert store.export_get("j1") == job
    done = replace(job, status="done", progress="done: 3 resources", updated=job.updated + timedelta(seconds=5),
                   output=({"type": "Patient", "file": "Patient-1.ndjson", "count": 3},),
                   expires=job.updated + timedelta(hours=24))
    assert store.export_update(done) is True
    assert store.export_get("j1") == done
    store.export_save(_job("j2", "running"))
    assert [j.job_id for j in store.export_list()] == ["j1", "j2"]
    assert [j.job_id for j in store.export_list(status="running")] == ["j2"]
    assert store.export_delete("j1") is True and store.export_delete("j1") is False
    assert store.export_update(done) is False  # a cancelled (deleted) job is not brought back
    assert store.export_get("j1") is None


def _seed(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(5):
            tx.update({"resourceType": "Patient", "id": f"p{i}"})
            tx.update({"resourceType": "Observation", "id": f"o{i}", "status": "final", "code": {"text": "x"},
                       "subject": {"reference": f"Patient/p{i}"}})
        tx.update({"resourceType": "Group", "id": "g", "type": "person", "actual": True,
                   "member": [{"entity": {"reference": "Patient/p1"}}, {"entity": {"reference": "Patient/p3"}}]})
        tx.update({"resourceType": "Location", "id": "l1"})


def _walk(store: Store, rtype: str, limit: int, scope: ExportScope | None = None, *items: tuple[str, str]) -> list[str]:
    query = PARSER.parse(rtype, list(items))
    query.snapshot = store.export_snapshot()
    after, out = 0, []
    while True:
        page = store.export_page(query, after, limit, scope)
        out += [orjson.loads(content)["id"] for _, content in page]
        if len(page) < limit:
            return out
        assert [rid for rid, _ in page] == sorted(rid for rid, _ in page) and page[0][0] > after
        after = page[-1][0]


def test_pages_walk_every_match_once_in_row_order(store: Store) -> None:
    _seed(store)
    assert _walk(store, "Patient", 2) == [f"p{i}" for i in range(5)]
    assert _walk(store, "Observation", 10, None, ("subject", "Patient/p2")) == ["o2"]
    with store.transaction() as tx:
        tx.delete("Patient", "p0")
    assert _walk(store, "Patient", 3) == ["p1", "p2", "p3", "p4"]


def test_the_snapshot_leaves_out_later_writes(store: Store) -> None:
    _seed(store)
    query = PARSER.parse("Patient", [])
    query.snapshot = store.export_snapshot()
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "late"})
    assert [orjson.loads(c)["id"] for _, c in store.export_page(query, 0, 100)] == [f"p{i}" for i in range(5)]


def test_scopes_keep_patient_compartments(store: Store) -> None:
    _seed(store)
    every = ExportScope()
    assert _walk(store, "Location", 10, every) == []
    assert _walk(store, "Observation", 2, every) == [f"o{i}" for i in range(5)]
    group = ExportScope(group="g")
    assert _walk(store, "Patient", 10, group) == ["p1", "p3"]
    assert _walk(store, "Observation", 10, group) == ["o1", "o3"]
    assert _walk(store, "Patient", 10, ExportScope(group="nope")) == []
