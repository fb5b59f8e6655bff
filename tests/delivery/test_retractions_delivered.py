"""Retractions reach a FHIR destination: records in over HTTP, both store backends, both queues."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.delivery.config import DestinationConfig
from gateway.delivery.service import DeliveryService
from gateway.store import Store
from tests.delivery.conftest import REDIS_URL
from tests.delivery.destination import LoopbackFhirServer
from tests.delivery.helpers import eventually
from tests.delivery.test_service import FAST
from tests.ingest.conftest import MAPPINGS, Harness, make_app, sample

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def server() -> Iterator[LoopbackFhirServer]:
    server = LoopbackFhirServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/queue.db" if request.param == "sqlite" else REDIS_URL


@pytest.fixture
async def wired(
    store: Store, server: LoopbackFhirServer, queue_url: str, redis_prefix: str
) -> AsyncIterator[tuple[Harness, DeliveryService]]:
    app = make_app(store, MAPPINGS)
    destination = DestinationConfig.model_validate(
        {"name": "shr", "kind": "fhir", "base_url": server.url, "timeout": 2}
    )
    service = DeliveryService.create(
        store=store, queue_url=queue_url, destinations=[destination], settings=FAST, environ={},
        queue_prefix=redis_prefix,
    )  # fmt: skip
    async with app.router.lifespan_context(app):
        harness = Harness(app, store, MAPPINGS)
        await service.start()
        try:
            yield harness, service
        finally:
            await service.stop()
            await harness.aclose()


async def _post(gw: Harness, source: str, record: dict[str, Any]) -> dict[str, Any]:
    response = await gw.sender.post(f"/ingest/{source}", content=json.dumps(record).encode(), headers=JSON)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_edit_and_a_deletion_reach_the_destination(
    wired: tuple[Harness, DeliveryService], server: LoopbackFhirServer
) -> None:
    gw, service = wired
    person: dict[str, Any] = json.loads(sample("cht", "person-patient"))
    record: dict[str, Any] = json.loads(sample("cht", "report-data-record-assessment"))
    registered = await _post(gw, "cht", person)
    first = await _post(gw, "cht", record)
    made = {f"{r['type']}/{r['id']}" for r in first["results"][0]["resources"] + registered["results"][0]["resources"]}
    service.notify()
    await eventually(lambda: made <= set(server.snapshot()))
    referral = next(ref for ref in made if ref.startswith("ServiceRequest/"))
    assert server.snapshot()[referral]["status"] == "active"

    edited = copy.deepcopy(record)
    edited["doc"]["fields"]["group_referral"]["refer_to_facility"] = "no"
    await _post(gw, "cht", edited)
    service.notify()
    await eventually(lambda: server.snapshot()[referral]["status"] == "revoked")

    deleted = [{"doc": {"_id": doc["doc"]["_id"], "_rev": "9-x", "_deleted": True}} for doc in (record, person)]
    response = await gw.sender.post("/ingest/cht", content=json.dumps(deleted).encode(), headers=JSON)
    taken = [r for result in response.json()["results"] for r in result["resources"]]
    gone = {f"{r['type']}/{r['id']}" for r in taken if r["change"] == "deleted"}
    voided = {f"{r['type']}/{r['id']}" for r in taken if r["change"] == "retracted"}
    assert any(ref.startswith("Patient/") for ref in gone) and voided
    service.notify()

    def arrived() -> bool:
        snapshot = server.snapshot()
        return not (gone & set(snapshot)) and all(
            snapshot[ref].get("status") == "entered-in-error"
            or snapshot[ref].get("verificationStatus", {}).get("coding", [{}])[0].get("code") == "entered-in-error"
            for ref in voided if not ref.startswith(("ServiceRequest/", "Task/"))
        )  # fmt: skip

    await eventually(arrived)
    assert (await service.queue.stats("shr")).dead == 0
