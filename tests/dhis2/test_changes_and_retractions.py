"""Issue 12 over HTTP: CHT records → store (SQLite, PostgreSQL) → delivery (SQLite, Redis queue) → DHIS2 sandbox.

* Objects DHIS2 already holds as planned are not sent again: one request per changed
  visit, none for an unchanged one (requests counted at the sandbox).
* A refused DHIS2 object is one dead letter naming every job it stands for, with the
  request sent and DHIS2's full import report (no credentials); replaying it replays all.
* Retractions: a voided or deleted Observation clears its data value; a voided Encounter
  deletes its event; a deleted person goes once nothing of theirs remains.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.dhis2 import Dhis2Connector
from gateway.connectors.dhis2.sources import StoreResourceSource
from gateway.connectors.dhis2.uids import derive_uid
from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from gateway.settings import Settings, SourceConfig
from tests.conftest import ApiHarness
from tests.delivery.conftest import REDIS_URL
from tests.delivery.helpers import eventually
from tests.dhis2 import cht_records as cht
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.test_end_to_end import (
    AUTH,
    FAST,
    FHIR,
    _patient_id,
    destination,
    drained,
    ingest,
    sandbox_state,
)
from tests.sandbox.conftest import Demo


@pytest.fixture
def settings(store_url: str) -> Settings:
    """CHT ingest with the shipped mappings, on each store backend (SQLite, PostgreSQL)."""
    return Settings(
        store_url=store_url,
        sources=[SourceConfig(name="cht", kind="cht", mapping="cht")],
        mappings_dir=MAPPINGS,
    )


async def clear_redis_prefix(prefix: str) -> None:
    """Delete a test's delivery-queue keys from Redis."""
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        found = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if found:
            await client.delete(*found)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def service_for(request: Any, api: ApiHarness, tmp_path: Path) -> AsyncIterator[Any]:
    """Delivery services with the default factories: the dhis2 connector keeps its digests in the queue."""
    services: list[DeliveryService] = []
    prefix = f"test:dq:{uuid.uuid4().hex[:12]}"
    url = f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL

    def make(dest: Any) -> DeliveryService:
        service = DeliveryService.create(
            store=api.store,
            queue_url=url,
            destinations=[dest],
            settings=FAST,
            environ={"DHIS2_PAT": DEFAULT_TOKEN},
            queue_prefix=prefix,
        )
        services.append(service)
        return service

    yield make
    for service in services:
        if service._running:
            await service.stop()
    if request.param == "redis":
        await clear_redis_prefix(prefix)


async def requests_received(sandbox: SandboxServer) -> int:
    return int((await sandbox_state(sandbox))["faults"]["requests"])


async def received(sandbox: SandboxServer) -> dict[str, dict[str, int]]:
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        return dict((await client.get("/sandbox/received")).json())


async def settle(service: DeliveryService, api: ApiHarness) -> None:
    service.notify()
    await eventually(lambda: drained(service, api))


async def started(service_for: Any, sandbox: SandboxServer, api: ApiHarness, tmp_path: Path) -> DeliveryService:
    service: DeliveryService = service_for(destination(sandbox, tmp_path / "meta.json"))
    await service.start()
    await settle(service, api)
    return service


def _visit(api: ApiHarness, n: int) -> dict[str, Any]:
    (visit,) = StoreResourceSource(api.store).find("Encounter", "patient", f"Patient/{_patient_id(api, n)}")
    return visit


def _observation_with(api: ApiHarness, visit: dict[str, Any], value: float) -> dict[str, Any]:
    found = StoreResourceSource(api.store).find("Observation", "encounter", f"Encounter/{visit['id']}")
    return next(o for o in found if (o.get("valueQuantity") or {}).get("value") == value)


async def dhis2_event(sandbox: SandboxServer, uid: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        return await dhis2.get(f"/api/tracker/events/{uid}")


def _values(event: dict[str, Any]) -> dict[str, str]:
    return {v["dataElement"]: v["value"] for v in event["dataValues"]}


async def test_unchanged_objects_are_not_sent_and_a_changed_visit_is_one_request(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    docs = [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)]
    await ingest(api, docs)
    service = await started(service_for, sandbox, api, tmp_path)
    assert (await service.queue.stats("dhis2")).dead == 0
    # The person once (their registration), the enrollment and the event once (the visit), though
    # every Observation, ServiceRequest and MedicationDispense of the visit had a job of its own.
    counts = await received(sandbox)
    assert [list(counts[kind].values()) for kind in ("trackedEntities", "enrollments", "events")] == [[1], [1], [1]]

    # The CHW app sends everything again: nothing changed, no request.
    before = await requests_received(sandbox)
    await ingest(api, docs)
    await settle(service, api)
    assert await requests_received(sandbox) == before

    # One value of the visit is corrected: one request, carrying the event alone.
    await ingest(api, [cht.assessment(1, muac="12.3")])
    await settle(service, api)
    assert await requests_received(sandbox) == before + 1
    after = await received(sandbox)
    assert after["trackedEntities"] == counts["trackedEntities"]
    assert after["enrollments"] == counts["enrollments"]
    assert list(after["events"].values()) == [2]
    (uid,) = after["events"]
    assert _values((await dhis2_event(sandbox, uid)).json())[demo.de("CHW_MUAC_CM")] == "12.3"
    assert (await service.queue.stats("dhis2")).dead == 0


async def test_one_refused_event_is_one_dead_letter_with_request_and_report_and_replays_all_its_jobs(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    service: DeliveryService = service_for(destination(sandbox, tmp_path / "meta.json"))
    connector = service.connectors["dhis2"]
    assert isinstance(connector, Dhis2Connector)
    await connector._ensure_ready()  # caches the metadata
    # DHIS2's option set loses POSITIVE after the gateway cached it: DHIS2 refuses the event (E1125)
    # for every job of the visit, each of which plans that event.
    catalog = sandbox.app.state.sandbox.catalog
    option_set = catalog.by_id[catalog.by_id[demo.de("CHW_RDT_RESULT")]["optionSet"]["id"]]
    kept = list(option_set["options"])
    option_set["options"] = [ref for ref in kept if catalog.by_id[ref["id"]]["code"] != "POSITIVE"]
    await service.start()
    await settle(service, api)

    visit = _visit(api, 1)
    source = StoreResourceSource(api.store)
    related = (("Observation", "encounter"), ("ServiceRequest", "encounter"), ("MedicationDispense", "context"))
    of_visit = {
        f"{kind}/{r['id']}" for kind, param in related for r in source.find(kind, param, f"Encounter/{visit['id']}")
    } | {f"Encounter/{visit['id']}"}
    stats = await service.queue.stats("dhis2")
    (letter,) = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
    event_uid = derive_uid("e2e", "EVENT", f"Encounter/{visit['id']}")
    assert letter.reason == "dhis2_E1125" and letter.group == f"EVENT/{event_uid}"
    assert set(letter.resources) == of_visit and stats.dead == len(letter.job_ids) == len(of_visit) > 2
    assert letter.request is not None and letter.response is not None
    assert letter.request.method == "POST" and "/api/tracker" in letter.request.url
    assert event_uid in letter.request.body and "authorization" not in letter.request.headers
    report = orjson.loads(letter.response.body)  # DHIS2's whole ImportReport, not an excerpt
    assert report["status"] == "ERROR" and report["validationReport"]["errorReports"][0]["errorCode"] == "E1125"
    assert "stats" in report and letter.response.status == 409
    kept_text = orjson.dumps([letter.request, letter.response, letter.detail]).decode()
    assert DEFAULT_TOKEN not in kept_text and "ApiToken" not in kept_text

    # The fix in DHIS2, one replay: every job of the letter is sent again and delivered.
    option_set["options"] = kept
    assert await service.admin.replay(letter.job.id) == len(of_visit)
    await settle(service, api)
    assert (await service.queue.stats("dhis2")).dead == 0
    event = (await dhis2_event(sandbox, event_uid)).json()
    assert _values(event)[demo.de("CHW_RDT_RESULT")] == "POSITIVE"


async def _one_visit_delivered(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, tmp_path: Path
) -> tuple[DeliveryService, dict[str, Any], str]:
    """Child 1's registration and visit, through ingest, delivered: the service, the visit, its event's UID."""
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    service = await started(service_for, sandbox, api, tmp_path)
    visit = _visit(api, 1)
    return service, visit, derive_uid("e2e", "EVENT", f"Encounter/{visit['id']}")


async def test_retractions_clear_values_delete_the_event_and_the_person_once_nothing_remains(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    service, visit, event_uid = await _one_visit_delivered(api, service_for, sandbox, tmp_path)
    values = _values((await dhis2_event(sandbox, event_uid)).json())
    assert values[demo.de("CHW_MUAC_CM")] == "11.2" and values[demo.de("CHW_TEMP_C")] == "38.9"

    # The MUAC reading entered in error: DHIS2 clears that value, keeps the others.
    muac = _observation_with(api, visit, 11.2)
    put = await api.client.put(
        f"/fhir/Observation/{muac['id']}", json={**muac, "status": "entered-in-error"}, headers=FHIR
    )
    assert put.status_code == 200, put.text
    await settle(service, api)
    values = _values((await dhis2_event(sandbox, event_uid)).json())
    assert demo.de("CHW_MUAC_CM") not in values and values[demo.de("CHW_TEMP_C")] == "38.9"

    # The temperature deleted: cleared too.
    temperature = _observation_with(api, visit, 38.9)
    assert (await api.client.delete(f"/fhir/Observation/{temperature['id']}")).status_code in (200, 204)
    await settle(service, api)
    values = _values((await dhis2_event(sandbox, event_uid)).json())
    assert demo.de("CHW_TEMP_C") not in values and values[demo.de("CHW_RDT_RESULT")] == "POSITIVE"

    # The person deleted while their visit remains: the tracked entity stays.
    pid = _patient_id(api, 1)
    assert (await api.client.delete(f"/fhir/Patient/{pid}")).status_code in (200, 204)
    await settle(service, api)
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)

    # The visit entered in error: its event is deleted, and with it (nothing of theirs left)
    # the person's enrollment and tracked entity.
    encounter = (await api.client.get(f"/fhir/Encounter/{visit['id']}")).json()
    put = await api.client.put(
        f"/fhir/Encounter/{visit['id']}", json={**encounter, "status": "entered-in-error"}, headers=FHIR
    )
    assert put.status_code == 200, put.text
    await settle(service, api)
    assert (await dhis2_event(sandbox, event_uid)).status_code == 404
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (0, 0, 0)
    assert await service.admin.dead_letters(DeadLetterFilter(destination="dhis2")) == []


async def test_an_edited_and_then_deleted_cht_report_takes_back_what_dhis2_received(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    # The edit and the deletion come from the source through ingest, as CHT sends them.
    service, visit, event_uid = await _one_visit_delivered(api, service_for, sandbox, tmp_path)
    values = _values((await dhis2_event(sandbox, event_uid)).json())
    assert values[demo.de("CHW_MUAC_CM")] == "11.2"

    edited = cht.assessment(1)
    del edited["fields"]["group_nutrition_assessment"]["muac_score"]  # the CHW corrected the form
    await ingest(api, [edited])
    await settle(service, api)
    values = _values((await dhis2_event(sandbox, event_uid)).json())
    assert demo.de("CHW_MUAC_CM") not in values and values[demo.de("CHW_TEMP_C")] == "38.9"

    await ingest(api, [{"_id": edited["_id"], "_rev": "3-x", "_deleted": True}])
    await settle(service, api)
    assert (await dhis2_event(sandbox, event_uid)).status_code == 404
    assert await service.admin.dead_letters(DeadLetterFilter(destination="dhis2")) == []


async def test_a_report_restored_after_its_deletion_reaches_dhis2_again(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    """Deleted at the source (its event deleted in DHIS2), then written again under the same id:
    DHIS2 never reuses a deleted UID, so the visit comes back as an event of a new UID."""
    service, visit, event_uid = await _one_visit_delivered(api, service_for, sandbox, tmp_path)
    report = cht.assessment(1)
    await ingest(api, [{"_id": report["_id"], "_rev": "3-x", "_deleted": True}])
    await settle(service, api)
    assert (await dhis2_event(sandbox, event_uid)).status_code == 404

    await ingest(api, [{**report, "_rev": "4-y"}])  # the document written again (restored)
    await settle(service, api)
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        events = (await dhis2.get("/api/tracker/events")).json()["events"]
    (event,) = events
    assert event["event"] != event_uid and _values(event)[demo.de("CHW_MUAC_CM")] == "11.2"
    assert await service.admin.dead_letters(DeadLetterFilter(destination="dhis2")) == []
    encounter = (await api.client.get(f"/fhir/Encounter/{visit['id']}")).json()
    assert event["event"] in str(encounter.get("identifier"))  # the new UID written back
