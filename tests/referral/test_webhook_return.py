"""Any other source: a referral's outcome reaches a webhook (ODK Central has no API to write back)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI, Request

from gateway.delivery.config import DestinationConfig
from gateway.delivery.service import DeliveryService
from gateway.store import Store
from tests.delivery.helpers import eventually
from tests.delivery.test_service import FAST
from tests.ingest.conftest import Harness, sample
from tests.referral.helpers import complete_task, facility_client
from tests.support.live_server import LiveServer

ODK_SYSTEM = "urn:chw-gateway:odk:central.example.org:4"


@pytest.fixture
def received() -> list[tuple[dict[str, str], dict[str, Any]]]:
    return []


@pytest.fixture
def hook(received: list[tuple[dict[str, str], dict[str, Any]]]) -> Iterator[str]:
    app = FastAPI()

    @app.post("/referrals")
    async def take(request: Request) -> dict[str, bool]:
        received.append((dict(request.headers), json.loads(await request.body())))
        return {"ok": True}

    with LiveServer(app) as server:
        yield f"{server.url}/referrals"


async def test_an_odk_referral_outcome_reaches_a_webhook(
    gw: Harness, store: Store, hook: str, received: list[tuple[dict[str, str], dict[str, Any]]], tmp_path: Path
) -> None:
    answer = await gw.sender.post("/ingest/odk", content=sample("odk", "household-visit-expanded"),
                                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    tasks = [r["id"] for r in answer.json()["results"][0]["resources"] if r["type"] == "Task"]
    task = tasks[0]
    patient = orjson.loads(store.read("Task", task).content)["for"]["reference"].split("/")[1]  # type: ignore[union-attr]
    destination = DestinationConfig.model_validate({
        "name": "odk-outcomes", "kind": "webhook", "base_url": hook, "timeout": 2,
        "filter": {"resource_types": ["Task"], "sources": [ODK_SYSTEM],
                   "criteria": "Task.status != 'requested' or Task.businessStatus.exists()"}})  # fmt: skip
    service = DeliveryService.create(store=store, queue_url=f"sqlite:///{tmp_path}/queue.db",
                                     destinations=[destination], settings=FAST, environ={})  # fmt: skip
    await service.start()
    try:
        facility = facility_client(gw, patient)
        try:
            accepted = await facility.patch(
                f"/fhir/Task/{task}", content=json.dumps([{"op": "replace", "path": "/status", "value": "accepted"}]),
                headers={"Content-Type": "application/json-patch+json"},
            )
            assert accepted.status_code == 200, accepted.text
            await complete_task(facility, task, patient)
        finally:
            await facility.aclose()
        service.notify()
        await eventually(lambda: len(received) >= 2)

        async def settled() -> bool:
            stats = await service.queue.stats("odk-outcomes")
            return stats.depth == 0 and stats.cursor >= store.last_change_seq()

        await eventually(settled)
    finally:
        await service.stop()
    # The waiting Tasks were not sent; the accepted and the completed version once each, in order.
    assert [body["status"] for _, body in received] == ["accepted", "completed"]
    headers, body = received[-1]
    assert body["resourceType"] == "Task" and body["id"] == task and body["meta"]["source"] == ODK_SYSTEM
    assert body["output"][0]["valueReference"]["reference"].startswith("Encounter/")
    assert headers["x-gateway-event"] == "update" and headers["x-gateway-delivery-id"].startswith("odk-outcomes:")
