"""End to end over HTTP: CHT records → ``/ingest/cht`` → store → delivery → the OpenMRS FHIR2 stand-in.

Issue 16 item 4: a CHT patient, their encounter and the referral Task reach OpenMRS with the
site's identifier type, encounter type and location; OpenMRS assigns the ids and the gateway
remembers them (an update goes to the same OpenMRS object, references point at OpenMRS ids);
a lost answer makes no duplicate; a refusal is a dead letter keeping OpenMRS's OperationOutcome.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson

from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from openmrs_sandbox.site import ENCOUNTER_TYPE_SYSTEM, IDENTIFIER_LOCATION_URL
from tests.conftest import ApiHarness
from tests.delivery.helpers import eventually
from tests.dhis2 import cht_records as cht
from tests.dhis2.test_end_to_end import ingest
from tests.openmrs.conftest import Emr, destination

CHT_ID_TYPE = "a5d38e09-efcb-4d91-a526-50ce1ba5011a"
HOME_VISIT = "d7151f82-c1f3-4152-a605-2f9ea7414a79"
KISIWA = "ba685651-ed3b-4e63-9b35-78893060758a"  # the OpenMRS location of CHW-AREA-KISIWA (ConceptMap)
UNKNOWN_LOCATION = "8d6c993e-c2cc-11de-8d13-0010c6dffd0f"  # the ConceptMap's unmapped default
# CHT's OpenMRS integration payload, as recorded in shared/sources/samples (the golden test keeps a copy).
VITALS = Path(__file__).resolve().parents[2] / "mappings" / "cht" / "tests" / "outbound-openmrs-encounter.input.json"


async def drained(service: DeliveryService, api: ApiHarness) -> bool:
    stats = await service.queue.stats("openmrs")
    return stats.depth == 0 and stats.cursor == api.store.last_change_seq()


async def deliver(service: DeliveryService, api: ApiHarness) -> None:
    service.notify()
    await eventually(lambda: drained(service, api))


def stored(emr: Emr) -> dict[str, list[dict[str, Any]]]:
    return {rtype: emr.state.live(rtype) for rtype in ("Patient", "Encounter", "Observation", "Task")}


async def test_a_patient_their_visit_and_the_referral_reach_openmrs_in_its_terms_once(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    service = service_for(destination(emr, upsert=["Task"]))
    await service.start()
    await deliver(service, api)
    assert (await service.queue.stats("openmrs")).dead == 0

    found = stored(emr)
    [patient], [encounter], [task] = found["Patient"], found["Encounter"], found["Task"]
    [identifier] = patient["identifier"]  # the CHT doc id has no OpenMRS type: not sent
    assert identifier["value"] == "P00001" and identifier["type"]["coding"] == [{"code": CHT_ID_TYPE}]
    assert identifier["use"] == "official"
    # The household is not an OpenMRS location; its CHW area is (ConceptMap, through Location.partOf).
    assert identifier["extension"] == [
        {"url": IDENTIFIER_LOCATION_URL, "valueReference": {"reference": f"Location/{KISIWA}"}}
    ]
    assert encounter["type"][0]["coding"][0]["system"] == ENCOUNTER_TYPE_SYSTEM
    assert encounter["type"][0]["coding"][0]["code"] == HOME_VISIT
    assert encounter["location"][0]["location"]["reference"] == f"Location/{KISIWA}"
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"  # OpenMRS's id, not the gateway's
    assert task["for"] == {"reference": f"Patient/{patient['id']}"}
    assert task["encounter"] == {"reference": f"Encounter/{encounter['id']}"}
    assert task["intent"] == "order" and task["status"] == "requested"
    assert "focus" not in task  # the ServiceRequest is read-only in OpenMRS: the Task's note carries it
    assert "Referral" in task["note"][0]["text"] and "Kisiwa HC" in task["note"][0]["text"]

    # The Task was created with the gateway's id (the site allows Task upsert); the others got OpenMRS ids.
    own_encounter = _only(api, "Encounter")
    assert task["id"] == _only(api, "Task")
    ids = api.store.destination_ids("openmrs", [f"Encounter/{own_encounter}", f"Task/{task['id']}"])
    assert ids == {f"Task/{task['id']}": task["id"], f"Encounter/{own_encounter}": encounter["id"]}
    assert encounter["id"] != own_encounter

    # An update of the person goes to the same OpenMRS patient.
    renamed = {**cht.person(1), "name": "Child Renamed", "reported_date": cht.BASE_MS + 60_000}
    await ingest(api, [renamed])
    await deliver(service, api)
    [patient_after] = stored(emr)["Patient"]
    assert patient_after["id"] == patient["id"]
    assert "Renamed" in orjson.dumps(patient_after["name"]).decode()

    # Replaying everything creates nothing more.
    await ingest(api, [cht.area(), cht.household(1), renamed, cht.assessment(1)])
    await deliver(service, api)
    after = stored(emr)
    assert [len(after[t]) for t in ("Patient", "Encounter", "Task")] == [1, 1, 1]


async def test_a_lost_answer_makes_no_duplicate(api: ApiHarness, service_for: Any, emr: Emr) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    emr.state.lose_next = 3  # the Patient, Encounter and Task creates are carried out, their answers lost
    service = service_for(destination(emr))  # no upsert: the Task is POSTed like the others
    await service.start()
    await deliver(service, api)
    assert emr.state.lose_next == 0
    found = stored(emr)
    assert [len(found[t]) for t in ("Patient", "Encounter", "Task")] == [1, 1, 1]
    posts = [line for line in emr.state.requests if line.startswith("POST")]
    assert len(posts) == 3  # each create was sent once; the retries found it and updated it
    [patient], [encounter] = found["Patient"], found["Encounter"]
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert found["Task"][0]["encounter"] == {"reference": f"Encounter/{encounter['id']}"}


async def test_openmrs_refusals_are_dead_letters_keeping_the_operation_outcome(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    person = {k: v for k, v in cht.person(2).items() if k != "patient_id"}  # no identifier OpenMRS has a type for
    await ingest(api, [cht.area(), cht.household(2), person])
    service = service_for(destination(emr))
    await service.start()
    await deliver(service, api)
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="openmrs"))
    assert letter.reason == "http_422"
    assert letter.response is not None and letter.request is not None
    outcome = orjson.loads(letter.response.body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Patient.identifier"]
    assert letter.request.headers["authorization"] == "[redacted]"
    assert stored(emr)["Patient"] == []


async def test_an_encounter_type_missing_from_the_conceptmap_is_a_dead_letter_naming_the_codes(
    api: ApiHarness, service_for: Any, emr: Emr, tmp_path: Any
) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    source = emr_conceptmaps()
    for name, text in source.items():
        (maps / name).write_text(text.replace('"439708006"', '"000000"') if "encounter" in name else text)
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), cht.assessment(1)])
    dest = destination(emr, conceptmaps=str(maps))
    # Without the Task, which would wait (retrying) for the Encounter it refers to.
    service = service_for(
        dest.model_copy(update={"filter": dest.filter.model_copy(update={"resource_types": ("Patient", "Encounter")})})
    )
    await service.start()
    await deliver(service, api)
    letters = await service.admin.dead_letters(DeadLetterFilter(destination="openmrs"))
    [letter] = letters
    assert letter.job.resource_type == "Encounter" and letter.reason == "unmapped_encounter_type"
    assert "439708006" in (letter.detail or "")
    assert len(stored(emr)["Patient"]) == 1 and stored(emr)["Encounter"] == []


async def test_the_stand_in_wants_basic_auth(emr: Emr) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{emr.fhir_base}/Patient")
    assert response.status_code == 401 and response.json()["resourceType"] == "OperationOutcome"


def emr_conceptmaps() -> dict[str, str]:
    from tests.openmrs.conftest import MAPPINGS

    folder = MAPPINGS / "openmrs" / "conceptmaps"
    return {path.name: path.read_text() for path in folder.glob("*.yaml")}


def _only(api: ApiHarness, rtype: str) -> str:
    ids = {change.id for change in api.store.changes(0, 10_000) if change.type == rtype}
    assert len(ids) == 1, ids
    return ids.pop()


async def test_cht_vitals_reach_openmrs_as_observations_of_the_encounter(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    vitals = orjson.loads(VITALS.read_bytes())  # for a person the gateway knows
    person = {**cht.person(1), "_id": vitals["patient_uuid"]}
    await ingest(api, [cht.area(), cht.household(1), person])
    pushed = await api.with_scopes("ingest:cht").post("/ingest/cht", json=vitals)  # sent as is, not as "doc"
    assert pushed.status_code == 200 and pushed.json()["stored"] == 1, pushed.text
    dest = destination(emr)
    service = service_for(dest.model_copy(update={"filter": dest.filter.model_copy(
        update={"resource_types": ("Patient", "Encounter", "Observation")})}))  # fmt: skip
    emr.state.lose_next = 4  # every create's answer lost: Patient, Encounter, both Observations
    await service.start()
    await deliver(service, api)
    assert (await service.queue.stats("openmrs")).dead == 0
    assert len([line for line in emr.state.requests if line.startswith("POST")]) == 4
    found = stored(emr)
    assert [len(found[t]) for t in ("Patient", "Encounter", "Observation")] == [1, 1, 2]
    [patient], [encounter] = found["Patient"], found["Encounter"]
    # The payload names no place: the locations ConceptMap's default (OpenMRS needs one).
    assert encounter["location"][0]["location"]["reference"] == f"Location/{UNKNOWN_LOCATION}"
    assert sorted(o["code"]["coding"][0]["code"] for o in found["Observation"]) == [
        "5089AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "5090AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ]  # fmt: skip
    for observation in found["Observation"]:
        assert observation["subject"]["reference"] == f"Patient/{patient['id']}"
        assert observation["encounter"] == {"reference": f"Encounter/{encounter['id']}"}


async def test_a_deleted_patient_is_voided_in_openmrs(api: ApiHarness, service_for: Any, emr: Emr) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1)])
    dest = destination(emr)
    service = service_for(dest.model_copy(update={"filter": dest.filter.model_copy(
        update={"resource_types": ("Patient",)})}))  # fmt: skip
    await service.start()
    await deliver(service, api)
    [patient] = stored(emr)["Patient"]
    own = _only(api, "Patient")
    deleted = await api.client.delete(f"/fhir/Patient/{own}")
    assert deleted.status_code in (200, 204), deleted.text
    await deliver(service, api)
    assert stored(emr)["Patient"] == [] and emr.state.objects[("Patient", patient["id"])].voided
    assert api.store.destination_ids("openmrs", [f"Patient/{own}"]) == {}


async def test_an_object_removed_in_openmrs_is_a_dead_letter_whose_replay_creates_it_again(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    await ingest(api, [cht.area(), cht.household(1), cht.person(1)])
    dest = destination(emr)
    service = service_for(dest.model_copy(update={"filter": dest.filter.model_copy(
        update={"resource_types": ("Patient",)})}))  # fmt: skip
    await service.start()
    await deliver(service, api)
    [first] = stored(emr)["Patient"]
    emr.state.objects[("Patient", first["id"])].voided = True  # a clerk deleted the patient in OpenMRS
    await ingest(api, [{**cht.person(1), "name": "Child Renamed", "reported_date": cht.BASE_MS + 60_000}])
    await deliver(service, api)
    [letter] = await service.admin.dead_letters(DeadLetterFilter(destination="openmrs"))
    assert letter.reason == "http_410" and "creates it again" in (letter.detail or "")
    assert await service.admin.replay_matching(DeadLetterFilter(destination="openmrs")) == 1
    await deliver(service, api)
    [second] = stored(emr)["Patient"]
    assert second["id"] != first["id"] and "Renamed" in orjson.dumps(second["name"]).decode()


async def test_a_visit_deleted_at_its_source_is_voided_in_openmrs(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    # OpenMRS keeps no status of an encounter (FHIR2 answers "unknown" whatever was sent): a visit
    # taken back at its source (a deleted CHT report: Encounter and Observations entered-in-error)
    # must be voided there, not left as a live visit with live readings.
    visit = cht.assessment(1)
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), visit])
    dest = destination(emr)
    service = service_for(dest.model_copy(update={"filter": dest.filter.model_copy(
        update={"resource_types": ("Patient", "Encounter", "Observation")})}))  # fmt: skip
    await service.start()
    await deliver(service, api)
    [encounter] = stored(emr)["Encounter"]
    assert stored(emr)["Observation"]
    refused = (await service.queue.stats("openmrs")).dead  # readings of concepts the site does not know
    await ingest(api, [{"_id": visit["_id"], "_rev": "2-deleted", "_deleted": True}])
    await deliver(service, api)
    assert stored(emr)["Encounter"] == [] and emr.state.objects[("Encounter", encounter["id"])].voided
    assert stored(emr)["Observation"] == []
    assert len(stored(emr)["Patient"]) == 1
    assert (await service.queue.stats("openmrs")).dead == refused

    await ingest(api, [{**visit, "_rev": "3-restored"}])  # restored at the source: a new visit in OpenMRS
    await deliver(service, api)
    [again] = stored(emr)["Encounter"]
    assert again["id"] != encounter["id"] and stored(emr)["Observation"]
    assert all(o["encounter"]["reference"] == f"Encounter/{again['id']}" for o in stored(emr)["Observation"])
