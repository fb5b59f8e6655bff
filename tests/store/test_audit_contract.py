"""The audit trail contract (``AuditTrail``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.store import Store

from .helpers import PARSER, patient


def audit_event(patient_id: str, client: str = "partner") -> dict[str, Any]:
    """A small AuditEvent naming a patient and a client."""
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "action": "R",
        "recorded": datetime.now(UTC).isoformat(),
        "outcome": "0",
        "agent": [{"name": client, "requestor": True}],
        "source": {"observer": {"display": "gateway"}},
        "entity": [{"what": {"reference": f"Patient/{patient_id}/_history/1"}}],
    }


def found(store: Store, *items: tuple[str, str]) -> list[dict[str, Any]]:
    import orjson

    return [orjson.loads(r.content) for r in store.search(PARSER.parse("AuditEvent", list(items))).resources]


def test_audit_events_are_searchable_and_stay_out_of_the_change_feed(store: Store) -> None:
    with store.transaction() as tx:
        tx.create(patient(), rid="p1")
    seq = store.last_change_seq()
    assert store.audit_append([audit_event("p1"), audit_event("p2", client="other")]) == 2
    assert store.last_change_seq() == seq
    assert [c.type for c in store.changes(0)] == ["Patient"]
    by_entity = found(store, ("entity", "Patient/p1"))
    assert len(by_entity) == 1 and by_entity[0]["meta"]["versionId"] == "1"
    assert len(found(store, ("patient", "Patient/p2"))) == 1
    assert len(found(store, ("agent-name", "other"))) == 1
    # The system history is the record's history; the audit trail is not part of it.
    versions, total = store.history(None, None)
    assert total == 1 and [v.type for v in versions] == ["Patient"]


def test_only_audit_events_go_to_the_audit_trail(store: Store) -> None:
    with pytest.raises(ValueError):
        store.audit_append([patient()])
    assert store.audit_append([]) == 0


def test_purge_deletes_older_events_and_their_index_rows(store: Store) -> None:
    store.audit_append([audit_event("old")])
    time.sleep(0.01)
    cut = datetime.now(UTC)
    time.sleep(0.01)
    store.audit_append([audit_event("new")])
    assert store.audit_purge(cut) == 1
    assert found(store, ("entity", "Patient/old")) == []
    assert len(found(store, ("entity", "Patient/new"))) == 1
    assert store.audit_purge(cut) == 0
    assert store.audit_purge(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert found(store) == []
