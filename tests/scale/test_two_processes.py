"""Two ``gateway serve`` processes sharing PostgreSQL and Redis, as two pods would.

Concurrent conditional creates of one identifier, sent to both, make one resource; every
change reaches the destination once although both run an outbox and a worker; and a process
killed with SIGKILL mid-run loses nothing it acknowledged: the other one delivers it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from gateway.store import open_store
from tests.conftest import make_token
from tests.delivery.destination import LoopbackFhirServer
from tests.support.processes import free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
SYSTEM = "urn:test:two-processes"


class Gateway:
    """One ``gateway serve`` process."""

    def __init__(self, config: Path, cwd: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(self.port)}
        env.pop("GATEWAY_CONFIG", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        wait_healthy(self.url, self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()


@pytest.fixture
def destination() -> Iterator[LoopbackFhirServer]:
    server = LoopbackFhirServer().start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test:tp:{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def pair(
    tmp_path: Path, pg_schema_url: str, destination: LoopbackFhirServer, prefix: str
) -> Iterator[tuple[Gateway, Gateway, str]]:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "store_url": pg_schema_url,
        "queue_url": REDIS_URL,
        "queue_prefix": prefix,
        "destinations": [{"name": "shr", "kind": "fhir", "base_url": destination.url, "timeout": 2}],
        "delivery": {"lease": "3s", "poll_interval": "0.1s"},
    }))  # fmt: skip
    store = open_store(pg_schema_url)  # migrate once before both start, and make a client
    try:
        token = make_token(store, ("system/*.cruds",))
    finally:
        store.close()
    gateways = (Gateway(config, tmp_path), Gateway(config, tmp_path))
    try:
        for gateway in gateways:
            gateway.wait_ready()
        yield gateways[0], gateways[1], token
    finally:
        for gateway in gateways:
            gateway.stop()


def _patient(i: int, family: str = "Two") -> dict[str, object]:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": f"p{i}"}],
            "name": [{"family": family, "given": [f"P{i}"]}]}  # fmt: skip


async def _eventually(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_two_processes_share_the_work_without_duplicates_or_losses(
    pair: tuple[Gateway, Gateway, str], destination: LoopbackFhirServer
) -> None:
    first, second, token = pair
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as client:
        # 1. the same conditional create, 4 times at once on each process
        async def create(gateway: Gateway, i: int) -> int:
            response = await client.post(f"{gateway.url}/fhir/Patient", json=_patient(i),
                                          headers={"If-None-Exist": f"identifier={SYSTEM}|p{i}"})  # fmt: skip
            return response.status_code

        statuses = await asyncio.gather(*(create(g, i) for i in range(12) for g in (first, second) for _ in range(2)))
        assert set(statuses) <= {200, 201}
        assert statuses.count(201) == 12, statuses
        ids: dict[int, str] = {}
        for i in range(12):
            found = (await client.get(f"{second.url}/fhir/Patient", params={"identifier": f"{SYSTEM}|p{i}"})).json()
            assert found["total"] == 1, (i, found)
            ids[i] = found["entry"][0]["resource"]["id"]

        # 2. both outboxes and workers run, yet each version arrives once
        await _eventually(lambda: all(f"Patient/{pid}" in destination.snapshot() for pid in ids.values()))
        counts = destination.applied_counts()
        assert all(counts[(f"Patient/{pid}", 1)] == 1 for pid in ids.values()), counts

        # 3. kill one process mid-run: what either acknowledged is stored and delivered
        acknowledged: dict[str, int] = {}

        async def update(gateway: Gateway, i: int, n: int) -> None:
            body = {**_patient(i, family=f"Round{n}"), "id": ids[i]}
            try:
                response = await client.put(f"{gateway.url}/fhir/Patient/{ids[i]}", json=body)
            except httpx.TransportError:
                return  # the killed process never answered: not acknowledged
            if response.status_code in (200, 201):
                acknowledged[ids[i]] = max(acknowledged.get(ids[i], -1), n)

        async def writes() -> None:
            for n in range(6):
                await asyncio.gather(*(update(first if i % 2 else second, i, n) for i in range(12)))

        writer = asyncio.create_task(writes())
        await asyncio.sleep(0.3)
        first.process.send_signal(signal.SIGKILL)
        await writer
        first.process.wait(10)
        assert acknowledged

        def round_of(resource: dict[str, Any]) -> int:
            family = str(resource.get("name", [{}])[0].get("family", ""))
            return int(family[5:]) if family.startswith("Round") else -1

        for pid, n in acknowledged.items():
            stored = (await client.get(f"{second.url}/fhir/Patient/{pid}")).json()
            assert round_of(stored) >= n

        def delivered() -> bool:
            snapshot = destination.snapshot()
            return all(round_of(snapshot.get(f"Patient/{pid}", {})) >= n for pid, n in acknowledged.items())

        await _eventually(delivered)  # the survivor takes over the killed one's leased jobs
