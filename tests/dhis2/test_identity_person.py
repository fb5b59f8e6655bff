"""One person, one tracked entity: CommCare and CHT records of one person → one golden record → one TE
in the DHIS2 sandbox (``tracked_entity_per: person``); a merge after delivery names the hand merge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import SandboxServer
from gateway.connectors.dhis2.uids import derive_uid
from gateway.delivery.config import DestinationConfig
from gateway.delivery.queue import DeadLetterFilter
from gateway.settings import Settings, SourceConfig
from gateway.store import is_golden, linked_ids
from tests.conftest import ApiHarness
from tests.delivery.helpers import eventually
from tests.dhis2 import cht_records as cht
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.test_end_to_end import AUTH, destination, drained, ingest, sandbox_state, service_for
from tests.ingest.conftest import sample

__all__ = ["service_for"]  # the fixture, shared with the end-to-end tests

# The CommCare TB patient (a located case: its owning location maps to an org unit), registered
# again by a CHT user in household 1.
WILFRID = {"name": "Wilfrid Menard", "sex": "male", "date_of_birth": "1979-08-21", "phone": "+254700000001"}


@pytest.fixture
def settings(store_url: str) -> Settings:
    """CHT and CommCare ingest, identity matching on, on each store backend."""
    return Settings(
        store_url=store_url,
        sources=[SourceConfig(name="cht", kind="cht", mapping="cht"),
                 SourceConfig(name="commcare", kind="commcare", mapping="commcare")],
        mappings_dir=MAPPINGS,
        identity={"enabled": True},
    )


def per_person(server: SandboxServer, cache: Path) -> DestinationConfig:
    dest = destination(server, cache)
    return dest.model_copy(update={"options": {**dest.options, "tracked_entity_per": "person"}})


def _patient(api: ApiHarness, system: str, value: str) -> dict[str, Any]:
    from gateway.connectors.dhis2.sources import StoreResourceSource

    found = StoreResourceSource(api.store).find("Patient", "identifier", f"{system}|{value}")
    (record,) = [p for p in found if not is_golden(p)]  # the golden record has every member's identifiers
    return record


async def test_commcare_and_cht_records_of_one_person_are_one_tracked_entity(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    await ingest(api, [cht.area(), cht.household(1), {**cht.person(1), **WILFRID}, cht.assessment(1)])
    sender = api.with_scopes("ingest:commcare")
    located = await sender.post("/ingest/commcare", content=sample("commcare", "tb-patient-case-located"),
                                headers={"Content-Type": "application/json"})
    assert located.status_code == 200, located.text
    on_cht = _patient(api, "urn:chw-gateway:cht:demo:patient_id", "P00001")
    on_commcare = _patient(api, "urn:chw-gateway:commcare:pih-chw-demo:external_id", "DEMO-TB-0001")
    (golden,) = linked_ids(on_cht, "refer")
    assert linked_ids(on_commcare, "refer") == [golden]

    service = service_for(per_person(sandbox, tmp_path / "meta.json"))
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    assert (await service.queue.stats("dhis2")).dead == 0
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        (person,) = (await dhis2.get("/api/tracker/trackedEntities")).json()["trackedEntities"]
        (event,) = (await dhis2.get("/api/tracker/events")).json()["events"]
    assert person["trackedEntity"] == derive_uid("e2e", "TRACKED_ENTITY", f"Patient/{golden}")
    assert event["trackedEntity"] == person["trackedEntity"]

    # Another person, delivered with their own tracked entity, then merged into Wilfrid by an
    # administrator: DHIS2 cannot move their enrollment and events, so a dead letter names both.
    await ingest(api, [cht.household(2), cht.person(2), cht.assessment(2, day=3)])
    service.notify()
    await eventually(lambda: drained(service, api))
    assert (await sandbox_state(sandbox))["stored"]["tracked_entity"] == 2
    other = _patient(api, "urn:chw-gateway:cht:demo:patient_id", "P00002")
    (other_golden,) = linked_ids(other, "refer")
    merged = await api.with_scopes("admin").post(
        "/admin/identity/merge", json={"survivor": on_cht["id"], "loser": other["id"]})
    assert merged.status_code == 200, merged.text
    service.notify()
    await eventually(lambda: drained(service, api))
    (letter,) = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
    gone = derive_uid("e2e", "TRACKED_ENTITY", f"Patient/{other_golden}")
    kept = person["trackedEntity"]
    assert letter.reason == "dhis2_merge" and letter.detail is not None
    assert f"merge {gone} into {kept} by hand" in letter.detail
    assert (await sandbox_state(sandbox))["stored"]["tracked_entity"] == 2  # nothing deleted behind anyone's back
    assert json.loads(json.dumps(letter.resources)) == [f"Patient/{other_golden}"]


async def test_per_record_the_same_two_records_are_two_tracked_entities(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    await ingest(api, [cht.area(), cht.household(1), {**cht.person(1), **WILFRID}])
    located = await api.with_scopes("ingest:commcare").post(
        "/ingest/commcare", content=sample("commcare", "tb-patient-case-located"),
        headers={"Content-Type": "application/json"})
    assert located.status_code == 200, located.text
    service = service_for(destination(sandbox, tmp_path / "meta.json"))  # tracked_entity_per: record
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    assert (await sandbox_state(sandbox))["stored"]["tracked_entity"] == 2
