"""Aggregate partial success end to end: store → outbox → queue (SQLite and Redis) → sandbox.

DHIS2 refuses some values of a monthly report (409 WARNING): the report's job is delivered,
each refused value is a dead letter of its own naming DHIS2's conflict, and replaying one
of them sends that value and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.connectors.dhis2 import Dhis2Connector, dhis2_factory
from gateway.delivery.config import DestinationConfig
from gateway.delivery.factory import FACTORIES
from gateway.delivery.queue import DeadLetterFilter
from gateway.delivery.service import DeliveryService
from gateway.store import Store, open_store
from tests.delivery.helpers import eventually
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.test_end_to_end import FAST
from tests.sandbox.conftest import Demo

REDIS_URL = "redis://127.0.0.1:6379/1"
AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


def monthly_report() -> dict[str, Any]:
    """May 2024 for CU_KISIWA: household visits (value #0), referrals under 5 (#1) and 5+ (#2)."""
    indicators = "urn:chw-gateway:CodeSystem:chw-indicators"
    age_group = {"coding": [{"system": "urn:chw-gateway:CodeSystem:chw-stratifiers", "code": "age-group"}]}
    return {
        "resourceType": "MeasureReport",
        "id": "may-kisiwa",
        "status": "complete",
        "type": "summary",
        "measure": "urn:chw-gateway:Measure:chw-monthly-report",
        "reporter": {"identifier": {"system": "https://demo.chw.org/fhir/sid/facility-code", "value": "CU-001"}},
        "period": {"start": "2024-05-01", "end": "2024-05-31"},
        "group": [
            {"code": {"coding": [{"system": indicators, "code": "households-visited"}]}, "measureScore": {"value": 14}},
            {
                "code": {"coding": [{"system": indicators, "code": "referrals"}]},
                "stratifier": [
                    {
                        "code": [age_group],
                        "stratum": [
                            {"value": {"coding": [{"code": "under-5"}]}, "measureScore": {"value": 3}},
                            {"value": {"coding": [{"code": "5-plus"}]}, "measureScore": {"value": 1}},
                        ],
                    }
                ],
            },
        ],
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path}/store.db")
    yield opened
    opened.close()


@pytest.fixture(params=["sqlite", "redis"])
async def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(queue URL, key prefix); Redis keys are deleted afterwards."""
    prefix = f"test:dq:{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/queue.db", prefix
        return
    yield REDIS_URL, prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def destination(server: SandboxServer, cache: Path) -> DestinationConfig:
    return DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": server.base_url,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {"resource_types": ["MeasureReport"]},
            "options": {
                "aggregate_mapping": str(MAPPINGS / "dhis2" / "chw-monthly-report.yaml"),
                "metadata_cache": str(cache),
            },
        }
    )


async def stored_values(server: SandboxServer, demo: Demo) -> dict[tuple[str, str], str]:
    params = {"dataSet": demo.data_set, "period": "202405", "orgUnit": demo.ou("CU_KISIWA")}
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        body = (await client.get("/api/dataValueSets", params=params)).json()
    return {(v["dataElement"], v["categoryOptionCombo"]): v["value"] for v in body["dataValues"]}


async def imports(server: SandboxServer) -> int:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return int((await client.get("/sandbox/stats")).json()["faults"]["requests"])


async def test_each_refused_value_is_its_own_dead_letter_and_replays_alone(
    store: Store, queue_url: tuple[str, str], sandbox: SandboxServer, demo: Demo, tmp_path: Path
) -> None:
    url, prefix = queue_url
    service = DeliveryService.create(
        store=store,
        queue_url=url,
        queue_prefix=prefix,
        destinations=[destination(sandbox, tmp_path / "meta.json")],
        settings=FAST,
        environ={"DHIS2_PAT": DEFAULT_TOKEN},
        factories={**FACTORIES, "dhis2": dhis2_factory(store)},
    )
    connector = service.connectors["dhis2"]
    assert isinstance(connector, Dhis2Connector)
    try:
        await connector._ensure_ready()  # binds the mapping to DHIS2's metadata as it is now
        # Then DHIS2's referral element changes type: both referral values are refused.
        element = sandbox.app.state.sandbox.catalog.by_id[demo.de("CHW_M_REFERRALS")]
        value_type = element["valueType"]
        element["valueType"] = "INTEGER_NEGATIVE"
        with store.transaction() as tx:
            seq_before = store.last_change_seq()
            tx.update(monthly_report())
        job_id = f"dhis2:{seq_before + 1}"
        await service.start()
        service.notify()

        async def drained() -> bool:
            stats = await service.queue.stats("dhis2")
            return stats.depth == 0 and stats.cursor == store.last_change_seq()

        await eventually(drained)
        letters = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
        assert sorted(letter.job.id for letter in letters) == [f"{job_id}.v1", f"{job_id}.v2"]
        assert {letter.reason for letter in letters} == {"dhis2_E7619"}
        under5 = next(letter for letter in letters if letter.job.id.endswith(".v1"))
        assert under5.detail is not None and "value_not_negative_integer" in under5.detail
        assert f"dataElement {demo.de('CHW_M_REFERRALS')}, categoryOptionCombo {demo.coc('AGE_U5')}" in under5.detail
        assert f"period 202405, orgUnit {demo.ou('CU_KISIWA')}" in under5.detail
        # The request sent is kept (the whole data value set, no credentials).
        assert under5.request is not None and under5.request.url.startswith(f"{sandbox.base_url}/api/dataValueSets")
        assert demo.de("CHW_M_HH_VISITED") in under5.request.body and DEFAULT_TOKEN not in str(under5.request)
        # The accepted value is stored and the report's job counts as delivered.
        assert await stored_values(sandbox, demo) == {(demo.de("CHW_M_HH_VISITED"), demo.coc("default")): "14"}

        # DHIS2 is fixed; the integrator replays the under-5 value only.
        element["valueType"] = value_type
        before = await imports(sandbox)
        await service.admin.replay(under5.job.id)
        service.notify()
        await eventually(drained)
        assert await imports(sandbox) == before + 1  # one import request: that one value
        assert await stored_values(sandbox, demo) == {
            (demo.de("CHW_M_HH_VISITED"), demo.coc("default")): "14",
            (demo.de("CHW_M_REFERRALS"), demo.coc("AGE_U5")): "3",
        }
        remaining = await service.admin.dead_letters(DeadLetterFilter(destination="dhis2"))
        assert [letter.job.id for letter in remaining] == [f"{job_id}.v2"]
    finally:
        await service.stop()
