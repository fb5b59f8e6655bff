"""DHIS2 UIDs written back as FHIR identifiers: what is written, and why it never loops.

Against both store backends (the ``store`` fixture: SQLite and PostgreSQL) and, for the
connector, the sandbox over HTTP. The end-to-end version through ``/ingest`` and the
delivery engine is ``test_end_to_end.test_dhis2_uids_come_back_as_fhir_identifiers…``.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from dhis2_sandbox import SandboxServer
from gateway.clock import SystemClock
from gateway.connectors.base import Job, Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import StoreResourceSource
from gateway.connectors.dhis2.uids import derive_uid
from gateway.connectors.dhis2.writeback import Held, WriteBack, WriteBackTarget, identifier_systems, provenance_id
from gateway.fhir.validate import validate_resource
from gateway.store.rows import KEPT_IDENTIFIER_TYPE
from gateway.store.sql import SqlStore
from tests.dhis2.conftest import MAPPINGS, pat_auth
from tests.dhis2.records import chw_record, places

UID_TYPE = {"coding": [{"system": KEPT_IDENTIFIER_TYPE, "code": "dhis2-uid", "display": "DHIS2 UID"}]}

SYSTEMS = identifier_systems("https://dhis2.example.org/api/tracker")
TE_SYSTEM = "https://dhis2.example.org/api/tracker/trackedEntities"


def put(store: SqlStore, resource: dict[str, Any]) -> int:
    """Store ``resource`` (skipping unchanged content, as ingest does); its current version."""
    with store.transaction() as tx:
        return tx.update(resource, skip_unchanged=True).resource.version


def job_for(store: SqlStore, rtype: str, rid: str, version: int | None = None) -> Job:
    """The job the outbox would queue for one stored version."""
    current = store.read(rtype, rid)
    assert current is not None
    found = store.vread(rtype, rid, version or current.version)
    assert found is not None
    return Job(
        id=f"dhis2:{found.version}",
        destination="dhis2",
        seq=found.version,
        resource_type=rtype,
        resource_id=rid,
        version=found.version,
        op="create" if found.version == 1 else "update",
        key=f"Patient/{rid}",
        payload=found.content,
    )


def current(store: SqlStore, rtype: str, rid: str) -> dict[str, Any]:
    found = store.read(rtype, rid)
    assert found is not None
    return dict(orjson.loads(found.content))


def te_identifier(uid: str) -> dict[str, Any]:
    """A tracked entity's UID as the write-back sets it."""
    return {"use": "secondary", "type": UID_TYPE, "system": TE_SYSTEM, "value": uid}


def legacy_identifier(uid: str) -> dict[str, Any]:
    """A UID identifier without the kept-identifier type (as written before the type existed)."""
    return {"use": "secondary", "system": TE_SYSTEM, "value": uid}


def test_a_write_back_adds_the_identifier_and_a_provenance_naming_both_versions(store: SqlStore) -> None:
    patient = places() + chw_record(1)
    assert put(store, patient[2]) == 1
    writeback = WriteBack(store, "dhis2", SYSTEMS)
    uid = derive_uid("t", "TRACKED_ENTITY", "Patient/pt-1")
    assert writeback.apply([WriteBackTarget("Patient", "pt-1", 1, (te_identifier(uid),))], now=1_700_000_000) == 1
    written = current(store, "Patient", "pt-1")
    assert written["meta"]["versionId"] == "2"
    assert written["identifier"][-1] == te_identifier(uid)
    assert written["identifier"][0]["value"] == "CL-00001"  # the record's own identifiers stay first
    validate_resource(written)
    provenance = current(store, "Provenance", provenance_id("dhis2", "Patient/pt-1", 2))
    validate_resource(provenance)
    assert provenance["target"] == [{"reference": "Patient/pt-1/_history/2"}]
    assert provenance["entity"][0]["what"] == {"reference": "Patient/pt-1/_history/1"}
    assert provenance["recorded"] == "2023-11-14T22:13:20.000Z"
    # Same identifiers again: nothing to write. A version that moved on: not touched.
    assert writeback.apply([WriteBackTarget("Patient", "pt-1", 2, (te_identifier(uid),))], now=0) == 0
    assert writeback.apply([WriteBackTarget("Patient", "pt-1", 1, (te_identifier("Xxxxxxxxxx1"),))], now=0) == 0
    assert current(store, "Patient", "pt-1")["meta"]["versionId"] == "2"


def test_versions_are_judged_written_back_or_news(store: SqlStore) -> None:
    record = places() + chw_record(1)
    original = record[2]
    put(store, original)
    writeback = WriteBack(store, "dhis2", SYSTEMS)
    assert writeback.already_held(job_for(store, "Patient", "pt-1")) is None  # first version: news
    ours = (te_identifier("Aaaaaaaaaa1"),)
    writeback.apply([WriteBackTarget("Patient", "pt-1", 1, ours)], now=0)
    assert writeback.already_held(job_for(store, "Patient", "pt-1")) == Held()  # case 2: its own write
    # Re-ingesting the unchanged record changes nothing: the identifier is one the store keeps.
    assert put(store, original) == 2
    # A real change is news, whether it carries the identifier (a partner's edit) or not (ingest,
    # which keeps it all the same).
    assert put(store, {**original, "gender": "other"}) == 3
    assert current(store, "Patient", "pt-1")["identifier"][-1] == ours[0]
    assert writeback.already_held(job_for(store, "Patient", "pt-1")) is None
    edited = {**current(store, "Patient", "pt-1"), "gender": "male"}
    assert put(store, edited) == 4
    assert writeback.already_held(job_for(store, "Patient", "pt-1")) is None
    # Another destination's write-back is not this destination's.
    other = WriteBack(store, "other-dhis2", SYSTEMS)
    assert other.already_held(job_for(store, "Patient", "pt-1", 2)) is None


def test_untyped_identifiers_of_older_write_backs_are_restored_without_sending(store: SqlStore) -> None:
    record = places() + chw_record(1)
    original = record[2]
    put(store, original)
    writeback = WriteBack(store, "dhis2", SYSTEMS)
    legacy = (legacy_identifier("Aaaaaaaaaa1"),)
    writeback.apply([WriteBackTarget("Patient", "pt-1", 1, legacy)], now=0)
    # Not typed as kept, so the re-ingested record drops it, which is case 3: nothing new, restore.
    assert put(store, original) == 3
    held = writeback.already_held(job_for(store, "Patient", "pt-1"))
    assert held == Held(WriteBackTarget("Patient", "pt-1", 3, legacy))
    assert held.restore is not None and writeback.apply([held.restore], now=0) == 1
    assert current(store, "Patient", "pt-1")["identifier"][-1] == legacy[0]
    assert writeback.already_held(job_for(store, "Patient", "pt-1")) == Held()


def test_plans_are_made_without_the_written_back_identifiers(store: SqlStore) -> None:
    writeback = WriteBack(store, "dhis2", SYSTEMS)
    patient = {**chw_record(1)[1]}
    patient["identifier"] = [te_identifier("Aaaaaaaaaa1")]  # the record had no identifier of its own
    put(store, patient)
    hidden = writeback.hiding(StoreResourceSource(store)).get("Patient", "pt-1")
    assert hidden is not None and "identifier" not in hidden  # a mapping reading identifier.first() sees none
    assert writeback.hide(patient) == {k: v for k, v in patient.items() if k != "identifier"}


def connector_for(server: SandboxServer, store: SqlStore) -> Dhis2Connector:
    options = Dhis2Options(
        mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml",
        aggregate_mapping=MAPPINGS / "dhis2" / "chw-monthly-report.yaml",
        uid_namespace="wb",
    )
    systems = identifier_systems(f"{server.base_url}/api/tracker")
    return Dhis2Connector(
        Dhis2Client(server.base_url, auth=pat_auth()),
        options,
        StoreResourceSource(store),
        SystemClock(),
        mappings_root=MAPPINGS,
        writeback=WriteBack(store, "dhis2", systems),
    )


async def received(server: SandboxServer) -> dict[str, dict[str, int]]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return dict((await client.get("/sandbox/received")).json())


async def test_the_connector_writes_uids_back_and_never_sends_its_own_versions(
    sandbox: SandboxServer, store: SqlStore
) -> None:
    resources = places() + chw_record(1)
    for resource in resources:
        put(store, resource)
    connector = connector_for(sandbox, store)
    te = derive_uid("wb", "TRACKED_ENTITY", "Patient/pt-1")
    event = derive_uid("wb", "EVENT", "Encounter/enc-1")
    try:
        outcomes = await connector.deliver([job_for(store, "Patient", "pt-1")])
        outcomes += await connector.deliver([job_for(store, "Encounter", "enc-1")])
        assert all(isinstance(o, Success) for o in outcomes), outcomes
        first = await received(sandbox)
        patient, encounter = current(store, "Patient", "pt-1"), current(store, "Encounter", "enc-1")
        base = f"{sandbox.base_url}/api/tracker"
        te_system = f"{base}/trackedEntities"
        assert patient["identifier"][-1] == {"use": "secondary", "type": UID_TYPE, "system": te_system, "value": te}
        (enrollment,) = first["enrollments"]
        assert encounter["identifier"][-2:] == [
            {"use": "secondary", "type": UID_TYPE, "system": f"{base}/enrollments", "value": enrollment},
            {"use": "secondary", "type": UID_TYPE, "system": f"{base}/events", "value": event},
        ]
        assert (first["trackedEntities"], first["events"]) == ({te: 2}, {event: 1})
        # The write-back versions reach the connector like any change: nothing is sent.
        again = await connector.deliver([job_for(store, "Patient", "pt-1")])
        again += await connector.deliver([job_for(store, "Encounter", "enc-1")])
        assert all(isinstance(o, Success) and o.detail and "written back" in o.detail for o in again)
        assert await received(sandbox) == first
        assert current(store, "Patient", "pt-1")["meta"]["versionId"] == "2"  # and nothing is written
    finally:
        await connector.aclose()
