"""The resource store contract (``ResourceStore``, ``StoreTransaction``): every backend (SQLite,
PostgreSQL) must pass all of this."""

from __future__ import annotations

import time

import orjson
import pytest

from gateway.store import KEPT_IDENTIFIER_TYPE, ChangeOp, ResourceStore, Store, VersionConflict
from tests.store.helpers import PARSER, patient, search_ids


def test_create_sets_id_version_and_meta(store: ResourceStore) -> None:
    with store.transaction() as tx:
        written = tx.create(patient(meta={"tag": [{"code": "x"}]}))
    assert written.created
    res = store.read("Patient", written.resource.id)
    assert res is not None and res.version == 1 and not res.deleted
    body = orjson.loads(res.content)
    assert body["id"] == res.id
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert body["meta"]["tag"] == [{"code": "x"}]
    assert list(body)[:3] == ["resourceType", "id", "meta"]


def test_update_creates_versions_and_keeps_history(store: ResourceStore) -> None:
    with store.transaction() as tx:
        rid = tx.create(patient()).resource.id
    for family in ("Jones", "Brown"):
        with store.transaction() as tx:
            result = tx.update(patient(family, id=rid))
            assert not result.created
    current = store.read("Patient", rid)
    assert current is not None and current.version == 3
    v1 = store.vread("Patient", rid, 1)
    assert v1 is not None and orjson.loads(v1.content)["name"][0]["family"] == "Smith"
    versions, total = store.history("Patient", rid)
    assert total == 3 and [v.version for v in versions] == [3, 2, 1]


def test_update_as_create_and_if_match(store: ResourceStore) -> None:
    with store.transaction() as tx:
        result = tx.update(patient(id="chosen-id"))
    assert result.created and result.resource.version == 1
    with pytest.raises(VersionConflict):
        with store.transaction() as tx:
            tx.update(patient("Other", id="chosen-id"), if_match=7)
    with store.transaction() as tx:
        assert tx.update(patient("Other", id="chosen-id"), if_match=1).resource.version == 2
    stored = store.read("Patient", "chosen-id")
    assert stored is not None and orjson.loads(stored.content)["name"][0]["family"] == "Other"


def test_delete_writes_a_tombstone_and_recreate_continues_versions(store: ResourceStore) -> None:
    with store.transaction() as tx:
        rid = tx.create(patient()).resource.id
    with store.transaction() as tx:
        tomb = tx.delete("Patient", rid)
        assert tomb is not None and tomb.deleted and tomb.version == 2
        assert tx.delete("Patient", rid) is None
    current = store.read("Patient", rid)
    assert current is not None and current.deleted
    assert search_ids(store, "Patient", ("family", "smith")) == []
    with store.transaction() as tx:
        again = tx.update(patient(id=rid))
    assert again.created and again.resource.version == 3
    assert search_ids(store, "Patient", ("family", "smith")) == [rid]


def test_rolled_back_transaction_leaves_nothing(store: Store) -> None:
    start = store.last_change_seq()
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.create(patient(id="x"), rid="rolled-back")
            raise RuntimeError("boom")
    assert store.read("Patient", "rolled-back") is None
    assert store.changes(start) == []
    assert search_ids(store, "Patient", ("family", "smith")) == []


def test_index_follows_the_current_version(store: ResourceStore) -> None:
    with store.transaction() as tx:
        rid = tx.create(patient("Alpha")).resource.id
    with store.transaction() as tx:
        tx.update(patient("Beta", id=rid))
    assert search_ids(store, "Patient", ("family", "alpha")) == []
    assert search_ids(store, "Patient", ("family", "beta")) == [rid]


def test_skip_unchanged_writes_nothing(store: Store) -> None:
    with store.transaction() as tx:
        rid = tx.create(patient()).resource.id
    start = store.last_change_seq()
    with store.transaction() as tx:
        again = tx.update(patient(id=rid, meta={"versionId": "9"}), skip_unchanged=True)
    assert again.resource.version == 1 and not again.created
    assert store.changes(start) == []
    with store.transaction() as tx:
        assert tx.update(patient("New", id=rid), skip_unchanged=True).resource.version == 2


def test_search_paging_is_pinned_to_a_snapshot(store: ResourceStore) -> None:
    with store.transaction() as tx:
        for i in range(5):
            tx.create(patient(f"Page{i}"))
    first = store.search(PARSER.parse("Patient", [("family", "page"), ("_count", "2")]))
    assert first.total == 5 and len(first.resources) == 2
    with store.transaction() as tx:
        tx.create(patient("Page-late"))
    seen = [r.id for r in first.resources]
    for offset in (2, 4):
        query = PARSER.parse("Patient", [("family", "page"), ("_count", "2"), ("_offset", str(offset)),
                                         ("_snapshot", str(first.snapshot))])
        seen += [r.id for r in store.search(query).resources]
    assert len(seen) == len(set(seen)) == 5


def test_read_many_and_compartment(store: ResourceStore) -> None:
    with store.transaction() as tx:
        pid = tx.create(patient()).resource.id
        obs = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                         "subject": {"reference": f"Patient/{pid}"}}).resource.id
    found = store.read_many([("Patient", pid), ("Observation", obs), ("Patient", "missing")])
    assert sorted(r.type for r in found) == ["Observation", "Patient"]
    related, total = store.compartment("Patient", pid, 10, 0)
    assert total == 1 and related[0].id == obs


def test_history_says_which_method_made_each_version_and_which_made_the_resource_anew(store: ResourceStore) -> None:
    # A history entry's request and status (http.html#history) come from these, stored with each version.
    with store.transaction() as tx:
        posted = tx.create(patient()).resource.id
        tx.update({"resourceType": "Patient", "id": "m1"})  # update-as-create
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "m1", "active": True}, method="PATCH")
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "m1", "active": False})
    with store.transaction() as tx:
        tx.delete("Patient", "m1")
    with store.transaction() as tx:
        tx.update({"resourceType": "Patient", "id": "m1"})  # made anew after the deletion
    versions, _ = store.history("Patient", "m1")
    assert [(v.version, v.method, v.created) for v in versions] == [
        (5, "PUT", True), (4, "DELETE", False), (3, "PUT", False), (2, "PATCH", False), (1, "PUT", True),
    ]
    (first,), _ = store.history("Patient", posted)
    assert (first.method, first.created) == ("POST", True)


def test_history_of_types_and_system_is_newest_first_across_current_and_superseded(store: ResourceStore) -> None:
    def later() -> None:  # versions one millisecond apart at least: lastUpdated's precision
        time.sleep(0.002)

    with store.transaction() as tx:
        oid = tx.create({"resourceType": "Observation", "status": "final", "code": {"text": "t"}}).resource.id
    later()
    with store.transaction() as tx:
        pid = tx.create(patient("A")).resource.id
    later()
    with store.transaction() as tx:
        tx.update(patient("B", id=pid))
    later()
    with store.transaction() as tx:
        tx.delete("Observation", oid)
    versions, total = store.history(None, None)
    assert total == 4
    assert [(v.type, v.version, v.deleted) for v in versions] == [
        ("Observation", 2, True), ("Patient", 2, False), ("Patient", 1, False), ("Observation", 1, False),
    ]  # fmt: skip
    assert [v.last_updated for v in versions] == sorted((v.last_updated for v in versions), reverse=True)
    page, total = store.history("Patient", None, count=1, offset=1)
    assert total == 2 and [(v.id, v.version) for v in page] == [(pid, 1)]
    stamps = [orjson.loads(v.content)["meta"]["lastUpdated"] for v in versions if not v.deleted]
    assert [v.last_updated.isoformat(timespec="milliseconds")[:23] for v in versions if not v.deleted] == [
        stamp[:23] for stamp in stamps]
    since, total = store.history(None, None, since=versions[1].last_updated)
    assert total == 2 and {v.version for v in since} == {2}
    assert store.vread("Observation", oid, 2) is not None and store.vread("Observation", oid, 3) is None


def test_one_transaction_prefetches_writes_and_reads_its_own_writes(store: Store) -> None:
    with store.transaction() as tx:
        tx.create(patient("Existing", id="p0"), rid="p0")
    start = store.last_change_seq()
    with store.transaction() as tx:
        tx.prefetch([("Patient", f"p{i}") for i in range(4)] + [("Patient", "p0")])
        for i in range(4):
            tx.update(patient(f"Batch{i}", id=f"p{i}"))
        seen = tx.read("Patient", "p2")
        assert seen is not None and orjson.loads(seen.content)["name"][0]["family"] == "Batch2"
        # a search inside the transaction sees the writes not yet flushed
        assert sorted(r.id for r in tx.search(PARSER.parse("Patient", [("family", "batch")])).resources) == [
            "p0", "p1", "p2", "p3"]
        tx.update(patient("Twice", id="p3"))
        tx.delete("Patient", "p1")
    assert [(c.id, c.version, c.op) for c in store.changes(start)] == [
        ("p0", 2, ChangeOp.UPDATE), ("p1", 1, ChangeOp.CREATE), ("p2", 1, ChangeOp.CREATE),
        ("p3", 1, ChangeOp.CREATE), ("p3", 2, ChangeOp.UPDATE), ("p1", 2, ChangeOp.DELETE),
    ]  # fmt: skip
    assert search_ids(store, "Patient", ("family", "twice")) == ["p3"]
    assert sorted(search_ids(store, "Patient", ("family", "batch"))) == ["p0", "p2"]
    first = store.vread("Patient", "p3", 1)
    assert first is not None and orjson.loads(first.content)["name"][0]["family"] == "Batch3"
    assert store.history("Patient", "p1")[1] == 2


def test_a_prefetch_of_several_types_finds_each_by_type_and_id(store: Store) -> None:
    with store.transaction() as tx:
        tx.create(patient("Mixed", id="m1"), rid="m1")
        tx.create({"resourceType": "Observation", "id": "m1", "status": "final", "code": {"text": "x"}}, rid="m1")
        tx.create({"resourceType": "Encounter", "id": "e1", "status": "finished",
                   "class": {"code": "HH"}}, rid="e1")  # fmt: skip
    refs = [("Patient", "m1"), ("Observation", "m1"), ("Encounter", "m1"), ("Encounter", "e1"), ("Condition", "e1")]
    with store.transaction() as tx:
        tx.prefetch(refs)
        found = {(rtype, rid): tx.read(rtype, rid) for rtype, rid in refs}
        assert {key for key, row in found.items() if row is not None} == {
            ("Patient", "m1"), ("Observation", "m1"), ("Encounter", "e1")}
        tx.update({"resourceType": "Encounter", "id": "m1", "status": "finished", "class": {"code": "HH"}})
        tx.update({"resourceType": "Observation", "id": "m1", "status": "amended", "code": {"text": "x"}})
    assert [v.version for v in store.history("Observation", "m1")[0]] == [2, 1]
    assert [v.version for v in store.history("Encounter", "m1")[0]] == [1]


def test_new_resources_get_row_ids_in_commit_order(store: ResourceStore) -> None:
    snapshots: list[int] = []
    for n in range(3):
        with store.transaction() as tx:
            tx.prefetch([("Patient", f"order-{n}-{i}") for i in range(3)])
            for i in range(3):
                tx.update(patient(f"Order{n}", id=f"order-{n}-{i}"))
        snapshot = store.search(PARSER.parse("Patient", [("family", "order")])).snapshot
        assert snapshot is not None
        snapshots.append(snapshot)
    assert snapshots == sorted(snapshots) and len(set(snapshots)) == 3


def test_identifiers_the_gateway_keeps_survive_updates_and_are_not_content(store: ResourceStore) -> None:
    kept = {"use": "secondary", "type": {"coding": [{"system": KEPT_IDENTIFIER_TYPE, "code": "dhis2-uid"}]},
            "system": "https://dhis2.example.org/api/tracker/trackedEntities", "value": "Aaaaaaaaaa1"}
    own = {"system": "urn:src", "value": "1"}
    source = patient("Kept", id="k1", identifier=[own])
    with store.transaction() as tx:
        tx.update(source)
    with store.transaction() as tx:  # a delivery writes the UID back
        tx.update({**source, "identifier": [own, kept]})
    with store.transaction() as tx:  # the source sends the same record again: no change
        assert tx.update(source, skip_unchanged=True).resource.version == 2
    with store.transaction() as tx:  # an edit without the UID keeps it
        tx.update({**source, "gender": "female"}, skip_unchanged=True)
    stored = store.read("Patient", "k1")
    assert stored is not None and stored.version == 3
    assert orjson.loads(stored.content)["identifier"] == [{"system": "urn:src", "value": "1"}, kept]
    found = search_ids(store, "Patient", ("identifier", f"{kept['system']}|Aaaaaaaaaa1"))
    assert found == ["k1"]
