"""Faults over real HTTP: resets, proxy errors, lost responses, latency and outages."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import ValidationError

from dhis2_sandbox import DEFAULT_TOKEN, FaultConfig, SandboxServer
from dhis2_sandbox.faults import FaultSchedule
from tests.sandbox.conftest import Demo

Served = Callable[..., SandboxServer]
AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


def client_for(server: SandboxServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=httpx.Timeout(5.0))


async def test_reset_closes_the_connection_without_a_response(served: Served) -> None:
    server = served(faults=FaultConfig(reset_rate=1.0, after_commit_share=0.0))
    async with client_for(server) as client:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.get("/api/system/info")
        assert (await client.get("/sandbox/stats")).json()["faults"]["fault_reset_before"] == 1


async def test_proxy_errors_look_like_nginx(served: Served) -> None:
    server = served(faults=FaultConfig(proxy_error_rate=1.0, seed=3))
    async with client_for(server) as client:
        statuses: Counter[int] = Counter()
        for _ in range(20):
            response = await client.get("/api/system/info")
            statuses[response.status_code] += 1
            assert response.headers["content-type"] == "text/html" and "nginx" in response.text
        assert set(statuses) == {502, 504}


async def test_lost_responses_still_commit(served: Served, demo: Demo) -> None:
    server = served(faults=FaultConfig(error_rate=1.0, after_commit_share=1.0))
    async with client_for(server) as client:
        response = await client.post("/api/tracker", params={"async": "false"}, json=demo.bundle(1))
        assert response.status_code == 500 and response.json()["httpStatusCode"] == 500
        await client.put("/sandbox/faults", json={})
        event = await client.get("/api/tracker/events/Aev00000000")
        assert event.status_code == 200  # DHIS2 stored it; only the answer was lost


async def test_outage_window_and_latency(served: Served) -> None:
    server = served(faults=FaultConfig(latency_ms=50))
    async with client_for(server) as client:
        started = time.monotonic()
        assert (await client.get("/api/ping")).status_code == 200
        assert time.monotonic() - started >= 0.05
        await client.post("/sandbox/outages", json={"seconds": 30, "mode": "503"})
        assert (await client.get("/api/ping")).status_code == 503
        assert (await client.get("/sandbox/stats")).json()["faults"]["outage_503"] == 1
        assert (await client.get("/sandbox/faults")).status_code == 200  # control stays reachable
        await client.delete("/sandbox/outages")
        assert (await client.get("/api/ping")).status_code == 200


def test_seeded_schedules_repeat() -> None:
    config = FaultConfig(error_rate=0.1, proxy_error_rate=0.1, reset_rate=0.1, seed=42)
    first, second = FaultSchedule(config), FaultSchedule(config)
    draws = [first.draw() for _ in range(200)]
    assert draws == [second.draw() for _ in range(200)]
    failures = sum(1 for mode, _ in draws if mode is not None)
    assert 40 <= failures <= 80  # about 30 %


def test_fault_rates_cannot_exceed_one() -> None:
    with pytest.raises(ValidationError):
        FaultConfig(error_rate=0.6, proxy_error_rate=0.6)


async def test_accepted_times_are_first_acceptance_even_when_the_answer_was_lost(served: Served, demo: Demo) -> None:
    server = served(faults=FaultConfig(error_rate=1.0, after_commit_share=1.0))
    async with client_for(server) as client:
        before = datetime.now(UTC).replace(tzinfo=None)
        assert (await client.post("/api/tracker", params={"async": "false"}, json=demo.bundle(1))).status_code == 500
        after = datetime.now(UTC).replace(tzinfo=None)
        await client.put("/sandbox/faults", json={})
        first = (await client.get("/sandbox/accepted/events")).json()
        assert set(first) == {"Aev00000000"}
        assert before - timedelta(milliseconds=1) <= datetime.fromisoformat(first["Aev00000000"]) <= after
        time.sleep(0.01)
        assert (await client.post("/api/tracker", params={"async": "false"}, json=demo.bundle(1))).status_code == 200
        assert (await client.get("/sandbox/accepted/events")).json() == first  # a repeat is not a new acceptance
        assert len((await client.get("/sandbox/accepted/trackedEntities")).json()) == 1
        assert (await client.get("/sandbox/accepted/dataValues")).status_code == 404
