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


def test_the_same_record_sent_again_while_held_keeps_one_entry(store: QuarantineStore) -> None:
    first = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "value"}]}
    again = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "required"}]}
    kept = store.quarantine_add("odk", b'{"__id": "s1"}', "application/json", first, record_key="s1")
    same = store.quarantine_add("odk", b'{"__id": "s1"}', "application/json", again, record_key="s1")
    assert same.qid == kept.qid and same.attempts == 2 and same.received == kept.received
    stored = store.quarantine_get(kept.qid)
    assert stored is not None and stored.outcome == again and stored.attempts == 2
    assert [q.qid for q in store.quarantine_list(source="odk")] == [kept.qid]
    # another version of the record, another source, or no key: an entry of its own
    edited = store.quarantine_add("odk", b'{"__id": "s1", "x": 1}', "application/json", first, record_key="s1")
    other = store.quarantine_add("kobo", b'{"__id": "s1"}', "application/json", first, record_key="s1")
    unkeyed = [store.quarantine_add("csv", b"a,b\r\n1\r\n", "text/csv", first) for _ in range(2)]
    assert len({kept.qid, edited.qid, other.qid, *(u.qid for u in unkeyed)}) == 5
    # once it is no longer held (discarded, replayed), the record sent again is held anew
    store.quarantine_update(kept.qid, status="discarded")
    anew = store.quarantine_add("odk", b'{"__id": "s1"}', "application/json", first, record_key="s1")
    assert anew.qid not in (kept.qid, edited.qid) and anew.attempts == 1
