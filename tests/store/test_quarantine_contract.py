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
    # another version of the record, or another source: an entry of its own
    edited = store.quarantine_add("odk", b'{"__id": "s1", "x": 1}', "application/json", first, record_key="s1")
    other = store.quarantine_add("kobo", b'{"__id": "s1"}', "application/json", first, record_key="s1")
    assert len({kept.qid, edited.qid, other.qid}) == 3
    # once it is no longer held (discarded, replayed), the record sent again is held anew
    store.quarantine_update(kept.qid, status="discarded")
    anew = store.quarantine_add("odk", b'{"__id": "s1"}', "application/json", first, record_key="s1")
    assert anew.qid not in (kept.qid, edited.qid) and anew.attempts == 1


def test_a_record_without_a_key_sent_again_while_held_keeps_one_entry(store: QuarantineStore) -> None:
    """A record the gateway could not find an id in fails the same way each time it comes: a sender
    that retries what was refused (CHT and CommCare do, for ever) must not pile up copies. The same
    bytes from the same source are the same record; other bytes, another source, or a copy sent
    after the first was settled make an entry of their own."""
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "required"}]}
    body = b'{"form": {"name": "Achieng"}}'
    kept = store.quarantine_add("cht", body, "application/json", outcome)
    again = [store.quarantine_add("cht", body, "application/json", outcome) for _ in range(3)]
    assert {q.qid for q in again} == {kept.qid} and again[-1].attempts == 4
    assert [q.qid for q in store.quarantine_list(source="cht")] == [kept.qid]
    other_body = store.quarantine_add("cht", body + b" ", "application/json", outcome)
    other_source = store.quarantine_add("odk", body, "application/json", outcome)
    keyed = store.quarantine_add("cht", body, "application/json", outcome, record_key="r1")
    assert len({kept.qid, other_body.qid, other_source.qid, keyed.qid}) == 4
    store.quarantine_update(kept.qid, status="discarded")
    anew = store.quarantine_add("cht", body, "application/json", outcome)
    assert anew.qid != kept.qid and anew.attempts == 1
