"""What each source record produced (``record_outputs``), and moving lists from one key to another."""

from __future__ import annotations

from gateway.store import RecordOutput, Store

_OBS = RecordOutput("Observation", "o1", "temperature", "status")
_ENC = RecordOutput("Encounter", "e1", "visit", "status")
_SR = RecordOutput("ServiceRequest", "s1", "referral", "keep")


def test_moving_lists_joins_them_with_what_the_new_key_has(store: Store) -> None:
    with store.transaction() as tx:
        tx.set_records_outputs("cht", [("rec-1", [_OBS, _ENC]), ("rec-2", [_SR])])
        tx.set_records_outputs("urn:system", [("rec-1", [_ENC]), ("rec-3", [_OBS])])
        tx.set_records_outputs("other", [("rec-1", [_SR])])
    with store.transaction() as tx:
        tx.move_record_outputs("cht", "urn:system")
        tx.move_record_outputs("nothing-there", "urn:system")  # a no-op, not an error
    with store.transaction() as tx:
        found = tx.records_outputs("urn:system", ["rec-1", "rec-2", "rec-3"])
        assert {k: set(v) for k, v in found.items()} == {"rec-1": {_OBS, _ENC}, "rec-2": {_SR}, "rec-3": {_OBS}}
        assert len(found["rec-1"]) == 2
        assert tx.records_outputs("cht", ["rec-1", "rec-2"]) == {"rec-1": [], "rec-2": []}
        assert tx.record_outputs("other", "rec-1") == [_SR]  # another key's lists stay where they are


def test_a_move_undone_with_its_transaction_leaves_the_lists(store: Store) -> None:
    with store.transaction() as tx:
        tx.set_records_outputs("cht", [("rec-1", [_OBS])])
    try:
        with store.transaction() as tx:
            tx.move_record_outputs("cht", "urn:system")
            raise RuntimeError("the batch's writes failed")
    except RuntimeError:
        pass
    with store.transaction() as tx:
        assert tx.record_outputs("cht", "rec-1") == [_OBS]
        assert tx.record_outputs("urn:system", "rec-1") == []
