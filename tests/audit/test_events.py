"""AuditEvents as built from access records: their index rows equal the store's generic extraction."""

from __future__ import annotations

import time

import pytest

from gateway.audit import AccessRecord, audit_event, audit_index
from gateway.search import IndexRows, default_registry, index_rows

PARAMS = default_registry().indexed("AuditEvent")


def sorted_rows(rows: IndexRows) -> tuple[list[tuple[object, ...]], ...]:
    return tuple(sorted(rows_of, key=repr) for rows_of in (rows.token, rows.string, rows.date, rows.reference,
                                                           rows.number))  # fmt: skip


def records() -> list[AccessRecord]:
    read = AccessRecord(time.time(), "read", "R", client="Clinic App", address="10.0.0.7", status=200)
    read.touched("Patient", "p1", 3)
    search = AccessRecord(time.time(), "search-type", "E", client="x", address="::1", status=200,
                          query="subject=Patient%2Fp1&_count=5")
    search.touched("Observation", "o1", 1, b'{"subject":{"reference":"Patient/p1"},"performer":[{"reference":'
                                           b'"http://x/fhir/Patient/p2/_history/4"}]}')
    refused = AccessRecord(time.time(), "read", "R", status=401)
    refused.touched("Patient", "p9")
    ingest = AccessRecord(time.time(), "ingest", "C", rest=False, client="cht", status=202)
    ingest.objects.append(("source", "cht"))
    crashed = AccessRecord(time.time(), "dead-letter-replay", "E", rest=False, client="ops")
    crashed.objects.append(("dead-letter", "job-1"))
    many = AccessRecord(time.time(), "transaction", "E", client="bulk", status=200)
    for n in range(80):
        many.touched("Observation", f"o{n}", 1, b'{"subject":{"reference":"Patient/p%d"}}' % n)
    return [read, search, refused, ingest, crashed, many]


@pytest.mark.parametrize("record", records(), ids=lambda r: r.interaction)
def test_built_index_rows_equal_the_generic_extraction(record: AccessRecord) -> None:
    event = audit_event(record, max_entities=50)
    assert sorted_rows(audit_index(event)) == sorted_rows(index_rows(event, PARAMS))


def test_an_event_lists_at_most_max_entities_and_counts_the_rest() -> None:
    many = records()[-1]
    entities = audit_event(many, max_entities=50)["entity"]
    assert len(entities) == 50 and entities[-1]["description"] == "111 more entities not listed"
    # Patients first: who was concerned matters more than which of their resources.
    assert entities[0]["what"]["reference"] == "Patient/p0"


def test_outcomes_follow_the_status() -> None:
    outcomes = [AccessRecord(0.0, "read", "R", status=status).outcome for status in (200, 304, 403, 404, 503, None)]
    assert outcomes == ["0", "0", "4", "4", "8", "8"]
