"""The ingest writer: batches queued together are committed together, in order."""

from __future__ import annotations

import copy
import json
import threading
import time
from typing import Any, cast

import orjson

from gateway.ingest import IngestService, MappingRegistry, ReceivedRecord
from gateway.ingest.retractions import OutputChange
from gateway.ingest.service import IngestReport
from gateway.ingest.writer import IngestWriter, PendingRecord
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store.sql import SqlStore
from tests.ingest.conftest import MAPPINGS, SOURCES, sample


def _person(n: int, name: str | None = None) -> list[ReceivedRecord]:
    record = copy.deepcopy(json.loads(sample("cht", "person-patient")))
    record["doc"]["_id"] = f"person-{n}"
    record["doc"]["patient_id"] = str(20_000 + n)
    record["doc"]["name"] = name or f"Person {n}"
    return [ReceivedRecord(0, record, orjson.dumps(record), "application/json")]


def _concurrently(service: IngestService, requests: list[list[ReceivedRecord]]) -> list[IngestReport]:
    """Send the requests from one thread each while the writer is held, then let it go."""
    release = threading.Event()
    writer = service._writer_thread()
    hold = writer.request()
    # The writer is busy until release: what comes meanwhile queues up.
    hold.run(lambda: None if release.wait() else None)
    reports: list[IngestReport | None] = [None] * len(requests)
    queued = threading.Semaphore(0)

    def send(index: int) -> None:
        queued.release()
        reports[index] = service.ingest("cht", requests[index])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
        queued.acquire()
        thread.join(timeout=0.05)  # the request is mapped and queued by now (or soon)
    before = writer.transactions
    release.set()
    for thread in threads:
        thread.join()
    hold.wait()
    done = [report for report in reports if report is not None]
    assert len(done) == len(requests)
    service.last_group_transactions = writer.transactions - before  # type: ignore[attr-defined]
    return done


def test_concurrent_single_record_requests_share_a_commit(store: SqlStore) -> None:
    service = IngestService(store, QueryParser(default_registry(), 20, 100), MappingRegistry(MAPPINGS, SOURCES))
    try:
        reports = _concurrently(service, [_person(n) for n in range(12)])
        assert all(report.results[0].status == "stored" for report in reports)
        assert service.last_group_transactions < 12  # type: ignore[attr-defined]
        patients = {w.id for report in reports for w in report.results[0].resources if w.type == "Patient"}
        assert len(patients) == 12 and all(store.read("Patient", pid) is not None for pid in patients)
    finally:
        service.close()


def test_requests_that_disagree_are_not_grouped_and_the_later_wins(store: SqlStore) -> None:
    service = IngestService(store, QueryParser(default_registry(), 20, 100), MappingRegistry(MAPPINGS, SOURCES))
    try:
        names = [f"Version {v}" for v in range(5)]
        reports = _concurrently(service, [_person(7, name) for name in names])
        written = [(int(w.version), w.id, name) for report, name in zip(reports, names, strict=True)
                   for w in report.results[0].resources if w.type == "Patient"]
        assert sorted(version for version, _, _ in written) == list(range(1, len(names) + 1))
        # each request is its own version; the last one committed is what is stored
        version, patient_id, last_name = max(written)
        stored = store.read("Patient", patient_id)
        assert stored is not None and stored.version == version == len(names)
        body: dict[str, Any] = orjson.loads(stored.content)
        assert body["name"][0]["text"] == last_name
        assert service.last_group_transactions == len(names)  # type: ignore[attr-defined]
    finally:
        service.close()


# -- commit delay: the writer waits a moment for requests still preparing ---------------------


def _pending(position: int) -> PendingRecord:
    received = ReceivedRecord(position, {}, b"{}", "application/json")
    change = OutputChange("test", "urn:test", f"record-{position}", [])
    return PendingRecord(position, received, None, {"entry": []}, cast(Any, None), "test", [], change)


def _recording_writer(commit_delay: float) -> tuple[IngestWriter, list[list[int]]]:
    groups: list[list[int]] = []
    return IngestWriter(lambda records: groups.append([r.position for r in records]), commit_delay=commit_delay), groups


def test_the_writer_waits_for_a_request_still_preparing_and_commits_both_together() -> None:
    writer, groups = _recording_writer(commit_delay=30.0)
    try:
        first, second = writer.request(), writer.request()
        first.store([_pending(1)])
        time.sleep(0.2)  # the writer has the first batch and waits: the second request is active
        second.store([_pending(2)])
        first.wait()
        second.wait()
        assert groups == [[1, 2]]
    finally:
        writer.close()


def test_the_writer_does_not_wait_for_finished_requests_or_for_the_only_one() -> None:
    writer, groups = _recording_writer(commit_delay=30.0)
    try:
        done = writer.request()
        done.store([_pending(1)])
        done.wait()  # returns long before the delay: no other request was active
        alone = writer.request()
        alone.store([_pending(2)])
        started = time.monotonic()
        alone.wait()
        assert time.monotonic() - started < 10.0
        assert groups == [[1], [2]]
    finally:
        writer.close()


def test_the_wait_ends_after_the_delay_when_the_other_request_queues_nothing() -> None:
    writer, groups = _recording_writer(commit_delay=0.2)
    try:
        idle = writer.request()  # active, but queues nothing before the delay runs out
        busy = writer.request()
        busy.store([_pending(1)])
        started = time.monotonic()
        busy.wait()
        assert 0.15 <= time.monotonic() - started < 10.0
        assert groups == [[1]]
        idle.wait()
    finally:
        writer.close()
