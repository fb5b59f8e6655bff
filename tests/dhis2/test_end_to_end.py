"""End to end over HTTP: CHT records → ``POST /ingest/cht`` → store → delivery engine → DHIS2 sandbox.

Issue 5's acceptance: a CHW record ingested at ``/ingest/…`` appears in the DHIS2 sandbox as a
tracked entity, an enrollment and an event with the right data values, and replaying
everything twice changes nothing there. Records sent out of order (a person before their
household) wait for the place; a place that no org-unit identifier maps is a dead letter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.dhis2 import Dhis2Connector, dhis2_factory
from gateway.connectors.dhis2.mapping_load import load_aggregate, load_tables
from gateway.connectors.dhis2.measure import compute_measure_report, load_measure
from gateway.connectors.dhis2.metadata import MetadataSnapshot
from gateway.connectors.dhis2.orgunits import OrgUnitResolver
from gateway.connectors.dhis2.periods import parse_period
from gateway.connectors.dhis2.sources import StoreResourceSource
from gateway.connectors.dhis2.writeback import provenance_id
from gateway.delivery.breaker import BreakerPolicy
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.factory import FACTORIES
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from gateway.settings import Settings, SourceConfig
from gateway.store.rows import KEPT_IDENTIFIER_TYPE
from tests.conftest import ApiHarness
from tests.delivery.helpers import eventually
from tests.dhis2 import cht_records as cht
from tests.dhis2.conftest import MAPPINGS
from tests.sandbox.conftest import Demo

UID_TYPE = {"coding": [{"system": KEPT_IDENTIFIER_TYPE, "code": "dhis2-uid", "display": "DHIS2 UID"}]}

FHIR = {"Content-Type": "application/fhir+json"}
AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
FAST = DeliverySettings(
    retry=RetryPolicy(initial_delay=0.01, multiplier=2, max_delay=0.1, jitter=0.1, max_age=3600),
    breaker=BreakerPolicy(min_calls=1000, probe_interval=0.05),
    poll_interval=0.02,
    lease=30,
    drain_timeout=2,
)


def destination(server: SandboxServer, cache: Path, **fields: Any) -> DestinationConfig:
    return DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": server.base_url,
            "timeout": 10,
            "batch_size": 50,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {
                "resource_types": [
                    "Patient",
                    "Encounter",
                    "Observation",
                    "MedicationDispense",
                    "ServiceRequest",
                    "MeasureReport",
                ]
            },
            "options": {
                "mapping": str(MAPPINGS / "dhis2" / "chw-household-visit.yaml"),
                "aggregate_mapping": str(MAPPINGS / "dhis2" / "chw-monthly-report.yaml"),
                "uid_namespace": "e2e",
                "metadata_cache": str(cache),
            },
            **fields,
        }
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The app of these tests ingests CHT outbound pushes with the shipped mappings."""
    return Settings(
        store_url=f"sqlite:///{tmp_path}/api.db",
        sources=[SourceConfig(name="cht", kind="cht", mapping="cht")],
        mappings_dir=MAPPINGS,
    )


@pytest.fixture
async def service_for(api: ApiHarness, tmp_path: Path) -> AsyncIterator[Any]:
    services: list[DeliveryService] = []

    def make(dest: DestinationConfig) -> DeliveryService:
        service = DeliveryService.create(
            store=api.store,
            queue_url=f"sqlite:///{tmp_path}/queue.db",
            destinations=[dest],
            settings=FAST,
            environ={"DHIS2_PAT": DEFAULT_TOKEN},
            factories={**FACTORIES, "dhis2": dhis2_factory(api.store)},
        )
        services.append(service)
        return service

    yield make
    for service in services:
        if service._running:
            await service.stop()


async def ingest(api: ApiHarness, docs: list[dict[str, Any]]) -> None:
    """POST each document to ``/ingest/cht`` as CHT outbound push sends it (one per request)."""
    sender = api.with_scopes("ingest:cht")
    for doc in docs:
        response = await sender.post("/ingest/cht", json={"doc": doc})
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["quarantined"] == 0 and report["stored"] + report["unchanged"] + report["deleted"] == 1, report


async def sandbox_state(server: SandboxServer) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return dict((await client.get("/sandbox/stats")).json())


async def drained(service: DeliveryService, api: ApiHarness) -> bool:
    stats = await service.queue.stats("dhis2")
    return stats.depth == 0 and stats.cursor == api.store.last_change_seq()


async def test_a_chw_visit_and_the_monthly_report_reach_dhis2_once(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    docs = [
        cht.area(),
        *(doc for n in (1, 2) for doc in (cht.household(n), cht.person(n))),
        cht.assessment(1),
        cht.assessment(2, muac="12.4", rdt="negative", refer="no", day=3),
    ]
    await ingest(api, docs)
    service = service_for(destination(sandbox, tmp_path / "meta.json"))
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    assert (await service.queue.stats("dhis2")).dead == 0
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (2, 2, 2)

    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        events = (await dhis2.get("/api/tracker/events")).json()["events"]
        people = (await dhis2.get("/api/tracker/trackedEntities")).json()["trackedEntities"]
    first = next(e for e in events if e["occurredAt"].startswith("2024-05-13"))
    values = {v["dataElement"]: v["value"] for v in first["dataValues"]}
    assert values[demo.de("CHW_MUAC_CM")] == "11.2" and values[demo.de("CHW_RDT_RESULT")] == "POSITIVE"
    assert values[demo.de("CHW_FEVER")] == "true" and values[demo.de("CHW_REFERRED")] == "true"
    assert values[demo.de("CHW_TEMP_C")] == "38.9" and values[demo.de("CHW_RESP_RATE")] == "44"
    assert values[demo.de("CHW_VISIT_TYPE")] == "ROUTINE"
    assert first["orgUnit"] == demo.ou("CU_KISIWA")
    client_ids = sorted(
        a["value"] for p in people for a in p["attributes"] if a["attribute"] == demo.tea("CHW_CLIENT_ID")
    )
    assert client_ids == ["P00001", "P00002"]

    # The monthly report, computed from what is stored, kept as a FHIR MeasureReport.
    snapshot = MetadataSnapshot.load(tmp_path / "meta.json")
    aggregate = load_aggregate(
        MAPPINGS / "dhis2" / "chw-monthly-report.yaml", snapshot, load_tables(MAPPINGS, [])
    )
    source = StoreResourceSource(api.store)
    resources = [
        r
        for kind in ("Encounter", "Observation", "ServiceRequest")
        for r in source.find(kind, "subject", "Patient/" + _patient_id(api, 1))
        + source.find(kind, "subject", "Patient/" + _patient_id(api, 2))
    ]
    area = source.find("Location", "identifier", "urn:chw-gateway:cht:demo:place_id|CHW-AREA-KISIWA")[0]
    report = compute_measure_report(
        load_measure(MAPPINGS / "dhis2" / "chw-monthly-measure.yaml"),
        resources,
        source=source,
        resolver=OrgUnitResolver(aggregate.org_units, source),
        org_unit=demo.ou("CU_KISIWA"),
        reporter=f"Location/{area['id']}",
        period=parse_period("202405"),
    )
    put = await api.client.put(f"/fhir/MeasureReport/{report['id']}", json=report, headers=FHIR)
    assert put.status_code in (200, 201), put.text
    assert (await api.client.get(f"/fhir/MeasureReport/{report['id']}")).json()["period"][
        "start"
    ] == "2024-05-01"
    service.notify()
    await eventually(lambda: drained(service, api))
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        monthly = (
            await dhis2.get(
                "/api/dataValueSets",
                params={"dataSet": demo.data_set, "period": "202405", "orgUnit": demo.ou("CU_KISIWA")},
            )
        ).json()
    by_key = {(v["dataElement"], v["categoryOptionCombo"]): v["value"] for v in monthly["dataValues"]}
    assert by_key[(demo.de("CHW_M_HH_VISITED"), demo.coc("default"))] == "2"
    assert by_key[(demo.de("CHW_M_REFERRALS"), demo.coc("AGE_U5"))] == "1"
    assert by_key[(demo.de("CHW_M_RDT_DONE"), demo.coc("AGE_U5"))] == "2"
    assert by_key[(demo.de("CHW_M_RDT_POS"), demo.coc("AGE_U5"))] == "1"
    assert by_key[(demo.de("CHW_M_MUAC_LT115"), demo.coc("AGE_U5"))] == "1"

    # Replaying everything twice changes nothing in DHIS2.
    before = await sandbox_state(sandbox)
    for _ in range(2):
        await ingest(api, docs)
        await api.client.put(f"/fhir/MeasureReport/{report['id']}", json=report, headers=FHIR)
        assert await service.admin.replay_matching(DeadLetterFilter(destination="dhis2")) == 0
        service.notify()
        await eventually(lambda: drained(service, api))
    after = await sandbox_state(sandbox)
    assert after["stored"] == before["stored"] and after["revisions"] == before["revisions"]
    assert after["faults"]["requests"] > before["faults"]["requests"]  # the replays were really sent


def _patient_id(api: ApiHarness, n: int) -> str:
    source = StoreResourceSource(api.store)
    found = source.find("Patient", "identifier", f"urn:chw-gateway:cht:demo:patient_id|P{n:05d}")
    return str(found[0]["id"])


async def test_an_invalid_option_code_is_a_dead_letter_naming_dhis2s_code(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    service = service_for(destination(sandbox, tmp_path / "meta.json"))
    connector = service.connectors["dhis2"]
    assert isinstance(connector, Dhis2Connector)
    await connector._ensure_ready()  # caches the metadata
    # DHIS2's option set loses POSITIVE after the gateway cached it: the check before
    # sending passes, DHIS2 refuses the value with E1125.
    catalog = sandbox.app.state.sandbox.catalog
    option_set = catalog.by_id[catalog.by_id[demo.de("CHW_RDT_RESULT")]["optionSet"]["id"]]
    option_set["options"] = [
        ref for ref in option_set["options"] if catalog.by_id[ref["id"]]["code"] != "POSITIVE"
    ]
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    letters = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
    assert letters and {letter.reason for letter in letters} == {"dhis2_E1125"}
    detail = letters[0].detail
    assert detail is not None and "Value `POSITIVE` is not a valid option code" in detail
    assert "FHIR Observation/" in detail  # the resource that carries the refused value
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 0)


async def test_a_person_sent_before_their_household_waits_for_it_then_reaches_dhis2(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    # CHT pushes contacts as they sync: here the person and the visit before the household.
    await ingest(api, [cht.area(), cht.person(1), cht.assessment(1)])
    # The destination's own backoff, slow enough to see the jobs wait.
    backoff = {"initial_delay": 0.2, "multiplier": 2, "max_delay": 0.4, "jitter": 0.1, "max_age": 3600}
    # A hair-trigger breaker: jobs that wait for data must not count as DHIS2 failing.
    breaker = {"min_calls": 1, "failure_rate": 0.01, "probe_interval": "30s"}
    dest = destination(sandbox, tmp_path / "meta.json", retry=backoff, breaker=breaker)
    service: DeliveryService = service_for(dest)
    await service.start()
    service.notify()

    async def waiting() -> bool:
        return (await service.queue.stats("dhis2")).retrying >= 1

    await eventually(waiting)
    await asyncio.sleep(0.5)  # a few more rounds of retries
    stats = await service.queue.stats("dhis2")
    assert stats.dead == 0
    assert stats.circuit in (None, "closed"), stats
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (0, 0, 0)

    await ingest(api, [cht.household(1)])
    await eventually(lambda: drained(service, api))
    assert (await service.queue.stats("dhis2")).dead == 0
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        (person,) = (await dhis2.get("/api/tracker/trackedEntities")).json()["trackedEntities"]
    assert person["orgUnit"] == demo.ou("CU_KISIWA")


async def test_a_household_in_an_unmapped_area_is_a_dead_letter_naming_the_location(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    unmapped_area = {**cht.area(), "place_id": "CHW-AREA-NOT-IN-THE-TABLE"}
    await ingest(api, [unmapped_area, cht.household(1), cht.person(1)])
    source = StoreResourceSource(api.store)
    (home,) = source.find("Location", "identifier", "urn:chw-gateway:cht:demo:place_id|HH-00001")
    (area,) = source.find("Location", "identifier", "urn:chw-gateway:cht:demo:place_id|CHW-AREA-NOT-IN-THE-TABLE")
    service = service_for(destination(sandbox, tmp_path / "meta.json"))
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    (letter,) = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
    assert letter.reason == "dhis2_org-unit" and letter.attempts == 1  # no retries: a configuration gap
    assert letter.detail is not None
    assert f"Location/{home['id']} (partOf Location/{area['id']}) maps to no DHIS2 org unit" in letter.detail
    assert f"FHIR Patient/{_patient_id(api, 1)}" in letter.detail
    assert (await sandbox_state(sandbox))["stored"]["tracked_entity"] == 0

    # The integrator fixes the place in CHT (its place_id is in the org-unit table) and replays.
    await ingest(api, [cht.area()])
    assert await service.admin.replay_matching(DeadLetterFilter(destination="dhis2")) == 1
    service.notify()
    await eventually(lambda: drained(service, api))
    assert (await service.queue.stats("dhis2")).dead == 0
    assert (await sandbox_state(sandbox))["stored"]["tracked_entity"] == 1


async def test_dhis2_uids_come_back_as_fhir_identifiers_and_nothing_is_sent_twice(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    docs = [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)]
    await ingest(api, docs)
    service = service_for(destination(sandbox, tmp_path / "meta.json"))
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    pid = _patient_id(api, 1)
    source = StoreResourceSource(api.store)
    (visit,) = source.find("Encounter", "patient", f"Patient/{pid}")
    # Each job reaches DHIS2 once: the Patient's (its tracked entity), the Encounter's and each
    # of the K resources recorded during the visit (tracked entity, enrollment and event).
    k = sum(len(source.find(kind, param, f"Encounter/{visit['id']}"))
            for kind, param in (("Observation", "encounter"), ("ServiceRequest", "encounter"),
                                ("MedicationDispense", "context")))
    assert k > 0
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        received = (await client.get("/sandbox/received")).json()
    ((te, te_count),) = received["trackedEntities"].items()
    ((en, en_count),) = received["enrollments"].items()
    ((ev, ev_count),) = received["events"].items()
    assert (te_count, en_count, ev_count) == (k + 2, k + 1, k + 1)

    # The UIDs are on the FHIR resources, readable through the FHIR API.
    base = f"{sandbox.base_url}/api/tracker"
    patient = (await api.client.get(f"/fhir/Patient/{pid}")).json()
    def uid(kind: str, value: str) -> dict[str, Any]:
        return {"use": "secondary", "type": UID_TYPE, "system": f"{base}/{kind}", "value": value}

    assert uid("trackedEntities", te) in patient["identifier"]
    assert patient["meta"]["versionId"] == "2"
    encounter = (await api.client.get(f"/fhir/Encounter/{visit['id']}")).json()
    assert uid("events", ev) in encounter["identifier"]
    assert uid("enrollments", en) in encounter["identifier"]
    provenance = (await api.client.get(f"/fhir/Provenance/{provenance_id('dhis2', f'Patient/{pid}', 2)}")).json()
    assert provenance["target"] == [{"reference": f"Patient/{pid}/_history/2"}]

    # No loop: the write-back versions were queued and judged, and nothing else happens.
    settled = api.store.last_change_seq()
    service.notify()
    await asyncio.sleep(0.3)  # ~15 outbox and worker polls
    assert api.store.last_change_seq() == settled and await drained(service, api)

    # The CHW app sends the same records again (twice): the mapping does not know the UIDs,
    # but they are identifiers the store keeps, so nothing changes and nothing is sent.
    for _ in (1, 2):
        await ingest(api, docs)
        service.notify()
        await eventually(lambda: drained(service, api))
        patient = (await api.client.get(f"/fhir/Patient/{pid}")).json()
        assert uid("trackedEntities", te) in patient["identifier"]
        assert patient["meta"]["versionId"] == "2"
    assert api.store.last_change_seq() == settled
    async with httpx.AsyncClient(base_url=sandbox.base_url) as client:
        assert (await client.get("/sandbox/received")).json() == received
    assert (await service.queue.stats("dhis2")).dead == 0


@pytest.mark.parametrize("order", ["assessment-first", "together"])
async def test_an_assessment_before_or_with_its_registration_reaches_dhis2_with_uids_written_back(
    api: ApiHarness, service_for: Any, sandbox: SandboxServer, tmp_path: Path, order: str
) -> None:
    # Issue 12: the visit's job then creates the person in the same payload as the enrollment.
    # DHIS2 checks the program's mandatory attributes against the enrollment and the person as
    # stored before the import (E1018), so the enrollment must carry them itself.
    await ingest(api, [cht.area(), cht.household(1), cht.assessment(1)])
    service: DeliveryService = service_for(destination(sandbox, tmp_path / "meta.json"))
    if order == "assessment-first":
        await service.start()
        service.notify()

        async def waiting() -> bool:
            return (await service.queue.stats("dhis2")).retrying >= 1

        await eventually(waiting)  # the visit waits for its person
        await ingest(api, [cht.person(1)])
    else:
        await ingest(api, [cht.person(1)])  # both queued before delivery starts: one batch
        await service.start()
    service.notify()
    await eventually(lambda: drained(service, api))
    assert (await service.queue.stats("dhis2")).dead == 0
    assert await service.admin.dead_letters(DeadLetterFilter(destination="dhis2")) == []
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)

    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        (person,) = (await dhis2.get("/api/tracker/trackedEntities")).json()["trackedEntities"]
        (enrollment,) = (await dhis2.get("/api/tracker/enrollments")).json()["enrollments"]
        (event,) = (await dhis2.get("/api/tracker/events")).json()["events"]
    base = f"{sandbox.base_url}/api/tracker"

    def uid(kind: str, value: str) -> dict[str, Any]:
        return {"use": "secondary", "type": UID_TYPE, "system": f"{base}/{kind}", "value": value}

    pid = _patient_id(api, 1)
    patient = (await api.client.get(f"/fhir/Patient/{pid}")).json()
    assert uid("trackedEntities", person["trackedEntity"]) in patient["identifier"]
    (visit,) = StoreResourceSource(api.store).find("Encounter", "patient", f"Patient/{pid}")
    encounter = (await api.client.get(f"/fhir/Encounter/{visit['id']}")).json()
    assert uid("enrollments", enrollment["enrollment"]) in encounter["identifier"]
    assert uid("events", event["event"]) in encounter["identifier"]
