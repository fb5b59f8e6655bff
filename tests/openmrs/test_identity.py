"""OpenMRS with identity matching on: the gateway's person links and golden records are its own.

Patient.link of the matcher (``seealso`` between records of one person, ``refer`` to the golden
record, ``replaces``/``replaced-by`` of a merge) names other Patients; the profile rewrote them
to OpenMRS ids and waited for them, but a record and its golden record name each other, so
neither was ever sent, and the person's Encounters and referral Tasks (same ordering key)
waited behind them: the referral never reached the clinic.
"""

from __future__ import annotations

from typing import Any

import pytest

from gateway.settings import Settings, SourceConfig
from tests.conftest import ApiHarness
from tests.delivery.helpers import eventually
from tests.dhis2 import cht_records as cht
from tests.dhis2.test_end_to_end import ingest
from tests.openmrs.conftest import MAPPINGS, Emr, destination
from tests.openmrs.test_end_to_end import drained
from tests.support.gateway_app import MACHINE_SPEED_LIMITS


@pytest.fixture
def settings(store_url: str) -> Settings:
    """The gateway on each store backend, ingesting CHT pushes, with identity matching on."""
    return Settings(
        store_url=store_url,
        allowed_hosts=["gateway.test"],
        rate_limit=MACHINE_SPEED_LIMITS,
        sources=[SourceConfig(name="cht", kind="cht", mapping="cht")],
        mappings_dir=MAPPINGS,
        identity={"enabled": True},
    )


async def test_a_linked_person_and_their_referral_reach_openmrs_once(
    api: ApiHarness, service_for: Any, emr: Emr
) -> None:
    again = {**cht.person(1), "_id": "pp-0001-0000-4000-8000-0000000000aa", "patient_id": "P00901"}
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), again, cht.assessment(1)])
    patients = (await api.client.get("/fhir/Patient")).json()["entry"]
    golden = [e["resource"] for e in patients if "golden" in str(e["resource"]["meta"].get("tag"))]
    assert len(patients) == 3 and len(golden) == 1  # two records of one person, and its golden record
    service = service_for(destination(emr, upsert=["Task"]))
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api), timeout=20)
    assert (await service.queue.stats("openmrs")).dead == 0
    sent = {rtype: emr.state.live(rtype) for rtype in ("Patient", "Encounter", "Task")}
    # The two source records (OpenMRS holds each source's record); not the golden record, a third
    # copy of the person whose identifiers are the records' own.
    assert len(sent["Patient"]) == 2 and len(sent["Encounter"]) == 1 and len(sent["Task"]) == 1
    assert all("link" not in patient for patient in sent["Patient"])
    assert {i["value"] for p in sent["Patient"] for i in p["identifier"]} == {"P00001", "P00901"}


async def test_an_identity_review_task_is_not_sent_to_openmrs(api: ApiHarness, service_for: Any, emr: Emr) -> None:
    """Twins make a review Task (the gateway's worklist: "Same person?", intent proposal, its focus a
    Patient). It was sent as a Task: OpenMRS refused it (intent must be order), a dead letter per pair."""
    twin = {**cht.person(1), "_id": "pp-0001-0000-4000-8000-0000000000bb", "patient_id": "P00902",
            "name": "Other Number1"}
    await ingest(api, [cht.area(), cht.household(1), cht.person(1), twin])
    reviews = (await api.client.get("/fhir/Task", params={"code": "urn:chw-gateway:task|identity-review"})).json()
    assert reviews.get("total") == 1
    service = service_for(destination(emr, upsert=["Task"]))
    await service.start()
    service.notify()
    await eventually(lambda: drained(service, api), timeout=20)
    assert (await service.queue.stats("openmrs")).dead == 0
    assert emr.state.live("Task") == [] and len(emr.state.live("Patient")) == 2
