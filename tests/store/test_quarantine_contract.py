"""The quarantine contract (``QuarantineStore``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from gateway.store import QuarantineStore


def test_quarantine_keeps_records_for_replay(store: QuarantineStore) -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid"}]}
    kept = store.quarantine_add("cht", b'{"_id": "r1"}', "application/json", outcome, record_key="r1")
    assert store.quarantine_get(kept.qid) == kept
    assert [q.qid for q in store.quarantine_list(source="cht")] == [kept.qid]
    store.quarantine_update(kept.qid, status="replayed")
    assert store.quarantine_list(source="cht") == []
    replayed = store.quarantine_get(kept.qid)
    assert replayed is not None and replayed.status == "replayed" and replayed.attempts == 2
