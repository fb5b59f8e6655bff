"""2,000 records through the delivery engine into a DHIS2 that fails 30 % of requests and
goes down once: every record ends up in DHIS2 exactly once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import (
    DEFAULT_TOKEN,
    FaultConfig,
    SandboxServer,
    SandboxSettings,
    create_sandbox_app,
)
from gateway.connectors.dhis2 import dhis2_factory
from gateway.connectors.dhis2.uids import derive_uid
from gateway.delivery.config import DestinationConfig
from gateway.delivery.factory import FACTORIES
from gateway.delivery.service import DeliveryService
from gateway.store import open_store
from tests.delivery.helpers import eventually
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.records import places, visit
from tests.dhis2.test_end_to_end import FAST
from tests.sandbox.conftest import Demo

RECORDS = 2000
AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


def records() -> list[dict[str, Any]]:
    """Per record a Patient, a home visit at the CHW area and its MUAC Observation."""
    out: list[dict[str, Any]] = places()
    for n in range(RECORDS):
        out.append(
            {
                "resourceType": "Patient",
                "id": f"p{n}",
                "gender": "female",
                "birthDate": "2021-01-01",
                "identifier": [{"use": "official", "system": "urn:test:client", "value": f"CL{n:05d}"}],
            }
        )
        out.extend(
            visit(
                f"e{n}",
                f"p{n}",
                "area-kisiwa",
                muac=10 + (n % 50) / 10,
                rdt=None,
                fever=None,
                referral=False,
                act_doses=None,
            )
        )
    return out


@pytest.mark.slow
async def test_every_record_arrives_exactly_once_despite_faults(tmp_path: Path, demo: Demo) -> None:
    faults = FaultConfig(
        error_rate=0.1, proxy_error_rate=0.1, reset_rate=0.1, after_commit_share=0.5, seed=11
    )
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    with store.transaction() as tx:
        for resource in records():
            tx.update(resource)
    destination = DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": "http://placeholder",
            "timeout": 10,
            "batch_size": 250,
            "concurrency": 2,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {"resource_types": ["Encounter"]},
            "options": {
                "mapping": str(MAPPINGS / "dhis2" / "chw-household-visit.yaml"),
                "uid_namespace": "faults",
                "metadata_cache": str(tmp_path / "meta.json"),
            },
        }
    )
    app = create_sandbox_app(None, faults, SandboxSettings())
    with SandboxServer(app) as server:
        destination = destination.model_copy(update={"base_url": server.base_url})
        service = DeliveryService.create(
            store=store,
            queue_url=f"sqlite:///{tmp_path}/queue.db",
            destinations=[destination],
            settings=FAST,
            environ={"DHIS2_PAT": DEFAULT_TOKEN},
            factories={**FACTORIES, "dhis2": dhis2_factory(store)},
        )
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30) as dhis2:
            await service.start()
            service.notify()
            try:
                await eventually(lambda: _stored_events(dhis2, 250), timeout=60)
                # One outage: the proxy answers 502 for a second, whatever is in flight.
                await dhis2.post("/sandbox/outages", json={"seconds": 1.0, "mode": "502"})
                await eventually(lambda: _drained(service, store), timeout=120, every=0.1)
                dead = (await service.queue.stats("dhis2")).dead
            finally:
                await service.stop()
            stats = (await dhis2.get("/sandbox/stats")).json()
            await dhis2.put("/sandbox/faults", json={})  # read back without faults
            events = (await dhis2.get("/api/tracker/events", params={"paging": "false"})).json()["events"]
    store.close()
    assert dead == 0
    faults_seen = {k: v for k, v in stats["faults"].items() if k.startswith("fault_")}
    assert sum(faults_seen.values()) >= 0.2 * stats["faults"]["requests"], faults_seen
    assert stats["faults"].get("outage_502", 0) > 0  # the outage struck
    assert any(k.endswith("_after") for k in faults_seen)  # some answers were lost after commit
    assert (stats["stored"]["tracked_entity"], stats["stored"]["enrollment"], stats["stored"]["event"]) == (
        RECORDS,
        RECORDS,
        RECORDS,
    )
    expected = {derive_uid("faults", "EVENT", f"Encounter/e{n}"): n for n in range(RECORDS)}
    assert {e["event"] for e in events} == set(expected)
    muac = demo.de("CHW_MUAC_CM")
    for event in events:
        n = expected[event["event"]]
        values = {v["dataElement"]: v["value"] for v in event["dataValues"]}
        assert values[muac] == format(10 + (n % 50) / 10, "g")


async def _stored_events(dhis2: httpx.AsyncClient, count: int) -> bool:
    stats = (await dhis2.get("/sandbox/stats")).json()
    return bool(stats["stored"]["event"] >= count)


async def _drained(service: DeliveryService, store: Any) -> bool:
    stats = await service.queue.stats("dhis2")
    return stats.depth == 0 and stats.cursor == store.last_change_seq()
