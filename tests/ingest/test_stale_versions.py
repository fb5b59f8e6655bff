"""Out-of-order versions of one source record: a version older than the stored one is not applied,
on both store backends."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.ingest import IngestService, MappingRegistry, split_body
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store.sql import SqlStore
from tests.ingest.conftest import MAPPINGS, SOURCES, sample

CASE = "a7e3c9d1-2b4f-4e6a-8c0d-1f2e3d4c5b6a"


@pytest.fixture
def service(store: SqlStore) -> IngestService:
    return IngestService(store, QueryParser(default_registry(), 20, 100), MappingRegistry(MAPPINGS, SOURCES))


def _case(modified: str | None, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(sample("commcare", "tb-patient-case"))
    if modified is None:
        del record["server_date_modified"]
    else:
        record["server_date_modified"] = modified
    record["properties"]["case_name"] = name
    return record


def _send(service: IngestService, source: str, *records: dict[str, Any]) -> list[Any]:
    return service.ingest(source, split_body(orjson.dumps(list(records)), "application/json")).results


def _family(store: SqlStore, rid: str) -> str:
    stored = store.read("Patient", rid)
    assert stored is not None
    return str(orjson.loads(stored.content)["name"][0]["family"])


def _patient_id(result: Any) -> str:
    return str(next(w.id for w in result.resources if w.type == "Patient"))


def test_an_older_case_state_sent_late_is_not_stored_over_a_newer_one(
    service: IngestService, store: SqlStore
) -> None:
    (newer,) = _send(service, "commcare", _case("2025-05-14T08:00:00Z", "Wilfrid Menard-Pierre"))
    patient = _patient_id(newer)
    seq = store.last_change_seq()
    (late,) = _send(service, "commcare", _case("2025-05-13T09:41:21.004512Z", "Wilfrid Menard"))
    assert late.status == "stale" and late.record_key == CASE and not late.resources
    assert late.outcome["issue"][0]["severity"] == "information"
    assert store.last_change_seq() == seq  # nothing written, nothing to deliver
    assert _family(store, patient) == "Menard-Pierre"
    # the same time with another offset is the same instant: not stale, applied
    (same,) = _send(service, "commcare", _case("2025-05-14T10:00:00+02:00", "Wilfrid Menard-Pierre"))
    assert same.status == "stored"  # (its Provenance's recorded time is written as sent)
    (later,) = _send(service, "commcare", _case("2025-05-15T08:00:00Z", "Wilfrid Jean"))
    assert later.status == "stored" and _family(store, patient) == "Jean"


def test_versions_out_of_order_in_one_request(service: IngestService, store: SqlStore) -> None:
    newer, older = _send(
        service, "commcare", _case("2025-05-14T08:00:00Z", "Ana Newer"), _case("2025-05-13T08:00:00Z", "Ana Older")
    )
    assert (newer.status, older.status) == ("stored", "stale")
    assert _family(store, _patient_id(newer)) == "Newer"


def test_a_stale_record_among_others_leaves_them_stored_together(service: IngestService, store: SqlStore) -> None:
    _send(service, "commcare", _case("2025-05-14T08:00:00Z", "Ana Newer"))
    odk = json.loads(sample("odk", "household-visit-expanded"))
    kept = copy.deepcopy(odk)
    kept["__id"] = "uuid:another-visit"
    results = _send(service, "odk", odk)
    assert results[0].status == "stored"
    # an ODK page read again after the submission was edited: the old state is stale, the
    # other records of the page (one new, one unchanged) are stored
    edited = copy.deepcopy(odk)
    edited["__system"]["updatedAt"] = "2025-05-20T10:00:00.000Z"
    edited["household"]["member"][1]["muac_mm"] = 131
    assert _send(service, "odk", edited)[0].status == "stored"
    page = _send(service, "odk", kept, odk, edited)
    assert [r.status for r in page] == ["stored", "stale", "unchanged"]


def test_a_record_without_a_version_is_always_applied(store: SqlStore, mappings_copy: Path) -> None:
    mapping = mappings_copy / "commcare" / "person-case.yaml"
    stamp = "modified: properties.doses_missed_last_visit"
    mapping.write_text(mapping.read_text().replace("modified: server_date_modified", stamp))
    service = IngestService(store, QueryParser(default_registry(), 20, 100), MappingRegistry(mappings_copy, SOURCES))

    def case(seq: int | None, name: str) -> dict[str, Any]:
        record = _case("2025-05-14T08:00:00Z", name)  # (a field the golden inputs have stands in)
        if seq is None:
            del record["properties"]["doses_missed_last_visit"]
        else:
            record["properties"]["doses_missed_last_visit"] = seq
        return record

    (first,) = _send(service, "commcare", case(5, "Ana Five"))
    (unversioned,) = _send(service, "commcare", case(None, "Ana Unversioned"))
    assert unversioned.status == "stored" and _family(store, _patient_id(first)) == "Unversioned"
    # and it did not lower the stored version: a number compares as a number
    assert _send(service, "commcare", case(4, "Ana Four"))[0].status == "stale"
    assert _send(service, "commcare", case(10, "Ana Ten"))[0].status == "stored"
    # a value that is no version: the record is kept, the field named
    record = case(11, "Ana")
    record["properties"]["doses_missed_last_visit"] = "two"
    (held,) = _send(service, "commcare", record)
    assert held.status == "quarantined" and held.outcome["issue"][0]["code"] == "value"
    assert held.outcome["issue"][0]["expression"] == ["properties.doses_missed_last_visit"]
    assert "version" in held.outcome["issue"][0]["diagnostics"]


def test_cht_deletions_and_edits_follow_the_revision(service: IngestService, store: SqlStore) -> None:
    person: dict[str, Any] = json.loads(sample("cht", "person-patient"))
    doc_id = person["doc"]["_id"]
    assert _send(service, "cht", person)[0].status == "stored"  # revision 1
    old_delete = {"doc": {"_id": doc_id, "_rev": "0-aa", "_deleted": True}}
    assert _send(service, "cht", old_delete)[0].status == "stale"
    patient = next(w.id for w in _send(service, "cht", person)[0].resources if w.type == "Patient")
    assert store.read("Patient", patient) is not None and not store.read("Patient", patient).deleted  # type: ignore[union-attr]
    deletion = {"doc": {"_id": doc_id, "_rev": "3-bb", "_deleted": True}}
    assert _send(service, "cht", deletion)[0].status == "deleted"
    # an edit made before the deletion, delivered after it, does not bring the person back
    edited = copy.deepcopy(person)
    edited["doc"]["_rev"] = "2-cc"
    edited["doc"]["name"] = "Changed Name"
    assert _send(service, "cht", edited)[0].status == "stale"
    gone = store.read("Patient", patient)
    assert gone is None or gone.deleted


def test_sources_sharing_a_mapping_set_share_record_versions(service: IngestService, store: SqlStore) -> None:
    # "cht" and "cht-strict" are two sources of the one CHT set (a live push and, say, a backfill):
    # the same record through either makes the same resources, so their versions are one.
    person: dict[str, Any] = json.loads(sample("cht", "person-patient"))
    person["doc"]["_rev"] = "3-new"
    assert _send(service, "cht", person)[0].status == "stored"
    older = copy.deepcopy(person)
    older["doc"]["_rev"] = "2-old"
    older["doc"]["name"] = "Old Name"
    assert _send(service, "cht-strict", older)[0].status == "stale"
    assert _send(service, "cht", older)[0].status == "stale"


def test_a_quarantined_record_replayed_after_a_newer_version_is_stale(
    service: IngestService, store: SqlStore, tmp_path: Path
) -> None:
    held = _case("2025-05-13T08:00:00Z", "Ana Older")
    held["properties"]["dob"] = "not a date"
    (quarantined,) = _send(service, "commcare", held)
    assert quarantined.status == "quarantined"
    (newer,) = _send(service, "commcare", _case("2025-05-14T08:00:00Z", "Ana Newer"))
    # the sender's bug is fixed in the kept record's mapping... but a newer version is stored
    store.quarantine_update(quarantined.quarantine_id, status="held")
    fixed = _case("2025-05-13T08:00:00Z", "Ana Older")
    kept = store.quarantine_add("commcare", orjson.dumps(fixed), "application/json", {}, CASE)
    result = service.replay(kept.qid)
    assert result.status == "stale" and result.quarantine_id == kept.qid
    assert store.quarantine_get(kept.qid).status == "replayed"  # type: ignore[union-attr]
    assert _family(store, _patient_id(newer)) == "Newer"


def test_the_report_counts_stale_records(service: IngestService) -> None:
    _send(service, "commcare", _case("2025-05-14T08:00:00Z", "Ana Newer"))
    report = service.ingest(
        "commcare", split_body(orjson.dumps([_case("2025-05-13T08:00:00Z", "Ana Older")]), "application/json")
    )
    body = report.to_json()
    assert body["stale"] == 1 and body["stored"] == 0 and body["results"][0]["status"] == "stale"


def test_the_shipped_sets_name_versions_where_their_sources_have_them() -> None:
    config = MappingRegistry(MAPPINGS, SOURCES).config
    versioned = {m.name for s in config.sets.values() for m in s.mappings if m.modified is not None}
    assert {"commcare-person-case", "odk-chw-household-visit"} <= versioned
    assert any(name.startswith("cht-") for name in versioned)
