"""A CommCare visit form that arrives before its person's case reaches the DHIS2 sandbox, over HTTP.

The shipped CommCare samples (``mappings/commcare/tests``): the TB DOT visit form and the
person case it belongs to, sent to ``/ingest/commcare`` visit first. The visit's jobs wait
for the Patient; once the case arrives, the person, the enrollment (carrying the program's
mandatory attributes, which DHIS2 checks against the enrollment and the person as stored
*before* the import: E1018) and the event reach DHIS2, with no dead letter.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.delivery.config import DestinationConfig
from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from gateway.settings import Settings, SourceConfig
from tests.conftest import ApiHarness
from tests.delivery.conftest import REDIS_URL
from tests.delivery.helpers import eventually
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.test_changes_and_retractions import clear_redis_prefix
from tests.dhis2.test_end_to_end import AUTH, FAST, drained, sandbox_state
from tests.ingest.conftest import sample
from tests.sandbox.conftest import Demo

# The house the visit form records; a deployment maps its CommCare locations to org units.
VISIT_PLACE = {
    "system": "urn:chw-gateway:commcare:pih-chw-demo:record",
    "value": "5f0c2d7e-9a41-4b8e-a3c2-1d6f7e8b9a10",
}


@pytest.fixture
def mappings(tmp_path: Path) -> Path:
    copy = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, copy)
    table = copy / "dhis2" / "org-units.yaml"
    row = f'  - {{system: "{VISIT_PLACE["system"]}", value: "{VISIT_PLACE["value"]}", org_unit: "code:CU_KISIWA"}}\n'
    table.write_text(table.read_text() + row)
    return copy


@pytest.fixture
def settings(store_url: str, mappings: Path) -> Settings:
    return Settings(
        store_url=store_url,
        sources=[SourceConfig(name="commcare", kind="commcare", mapping="commcare")],
        mappings_dir=mappings,
    )


@pytest.fixture(params=["sqlite", "redis"])
async def service(
    request: Any, api: ApiHarness, sandbox: SandboxServer, mappings: Path, tmp_path: Path
) -> AsyncIterator[DeliveryService]:
    prefix = f"test:dq:{uuid.uuid4().hex[:12]}"
    dest = DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": sandbox.base_url,
            "timeout": 10,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {"resource_types": ["Patient", "Encounter", "Observation", "MedicationDispense"]},
            "options": {
                "mapping": str(mappings / "dhis2" / "chw-household-visit.yaml"),
                "uid_namespace": "commcare",
                "metadata_cache": str(tmp_path / "meta.json"),
            },
        }
    )
    created = DeliveryService.create(
        store=api.store,
        queue_url=f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL,
        destinations=[dest],
        settings=FAST,
        environ={"DHIS2_PAT": DEFAULT_TOKEN},
        queue_prefix=prefix,
    )
    yield created
    if created._running:
        await created.stop()
    if request.param == "redis":
        await clear_redis_prefix(prefix)


async def test_a_commcare_visit_before_its_person_reaches_dhis2_without_a_dead_letter(
    api: ApiHarness, service: DeliveryService, sandbox: SandboxServer, demo: Demo
) -> None:
    sender = api.with_scopes("ingest:commcare")
    headers = {"Content-Type": "application/json"}
    visit = await sender.post("/ingest/commcare", content=sample("commcare", "tb-dot-visit"), headers=headers)
    assert visit.status_code == 200 and visit.json()["stored"] >= 1, visit.text
    await service.start()
    service.notify()

    async def waiting() -> bool:
        return (await service.queue.stats("dhis2")).retrying >= 1

    await eventually(waiting)  # the visit waits for its person
    person = await sender.post("/ingest/commcare", content=sample("commcare", "tb-patient-case"), headers=headers)
    assert person.status_code == 200 and person.json()["stored"] >= 1, person.text
    service.notify()
    await eventually(lambda: drained(service, api))

    letters = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
    assert letters == [], [(x.reason, x.detail) for x in letters]
    stored = (await sandbox_state(sandbox))["stored"]
    assert (stored["tracked_entity"], stored["enrollment"], stored["event"]) == (1, 1, 1)
    async with httpx.AsyncClient(base_url=sandbox.base_url, headers=AUTH) as dhis2:
        (te,) = (await dhis2.get("/api/tracker/trackedEntities")).json()["trackedEntities"]
        (event,) = (await dhis2.get("/api/tracker/events")).json()["events"]
    attributes = {a["attribute"]: a["value"] for a in te["attributes"]}
    assert attributes[demo.tea("CHW_CLIENT_ID")] == "HT-CANGE-TB-2025-00117"
    assert event["orgUnit"] == demo.ou("CU_KISIWA") and event["occurredAt"].startswith("2025-05-13")
