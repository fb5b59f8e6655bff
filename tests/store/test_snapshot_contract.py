"""``ResourceStore.snapshot``: a read-only transaction whose reads all see one state of the store
and which takes no write lock (a transaction Bundle of reads only runs in one), on both backends."""

from __future__ import annotations

import threading

from gateway.store import ResourceStore
from tests.store.helpers import PARSER, patient
from tests.support.write_lock import write_lock_held


def test_a_snapshot_sees_the_store_as_at_its_first_read(store: ResourceStore) -> None:
    with store.transaction() as tx:
        kept = tx.update({**patient("Snap"), "id": "kept"})
        tx.update({**patient("Snap"), "id": "gone"})
    with store.snapshot() as reads:
        first = reads.search(PARSER.parse("Patient", [("family", "Snap")]))
        assert sorted(r.id for r in first.resources) == ["gone", "kept"]
        # Another transaction commits meanwhile: an update, a delete and a create.
        with store.transaction() as tx:
            tx.update({**patient("Snap", gender="male"), "id": "kept"})
            tx.delete("Patient", "gone")
            tx.update({**patient("Snap"), "id": "new"})
        again = reads.search(PARSER.parse("Patient", [("family", "Snap"), ("_total", "accurate")]))
        assert sorted(r.id for r in again.resources) == ["gone", "kept"] and again.total == 2
        read = reads.read("Patient", "kept")
        assert read is not None and read.version == kept.resource.version and b"gender" not in read.content
        gone = reads.read("Patient", "gone")
        assert gone is not None and not gone.deleted
        assert reads.read("Patient", "new") is None
        assert reads.visible(None, "Patient", ["kept", "gone", "new"]) == {"kept", "gone"}
    # After it, the store's state now.
    with store.snapshot() as reads:
        now = reads.search(PARSER.parse("Patient", [("family", "Snap")]))
        assert sorted(r.id for r in now.resources) == ["kept", "new"]
        deleted = reads.read("Patient", "gone")
        assert deleted is not None and deleted.deleted


def test_a_snapshot_does_not_wait_for_a_write_in_progress(store: ResourceStore) -> None:
    with store.transaction() as tx:
        tx.update({**patient("Busy"), "id": "b1"})
    with write_lock_held(store, {**patient("Busy"), "id": "b2"}):
        done = threading.Event()
        found: list[str] = []

        def read() -> None:
            with store.snapshot() as reads:
                found.extend(r.id for r in reads.search(PARSER.parse("Patient", [("family", "Busy")])).resources)
            done.set()

        reader = threading.Thread(target=read)
        reader.start()
        assert done.wait(10), "the snapshot waited for the write transaction"
        reader.join(10)
        assert found == ["b1"]  # not the uncommitted one
