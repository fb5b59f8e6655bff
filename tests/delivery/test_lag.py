"""Delivery lag and worker liveness, as the admin API and ``gateway queue status`` show them.

The scenario from the field: the API runs with ``in_process_worker: false`` and nobody
started ``gateway worker``. Writes commit; before lag and heartbeats, the status showed
depth 0, a closed circuit and nothing else, as if all was well.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from typer.testing import CliRunner

from gateway.api import admin_delivery
from gateway.api.app import create_app
from gateway.cli.queue import queue_app
from gateway.delivery import DeliverySections, WorkerBeat
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.sqlite_queue import SQLiteQueue
from gateway.services import ServicePlan, run_worker
from gateway.settings import Settings
from gateway.store import open_store
from tests.conftest import make_token
from tests.delivery.destination import LoopbackFhirServer
from tests.delivery.helpers import eventually
from tests.delivery.workload import Workload

CHANGES = 30


async def test_without_a_worker_lag_grows_and_no_live_worker_shows_then_a_worker_brings_it_to_zero(
    tmp_path: Path,
) -> None:
    server = LoopbackFhirServer().start()
    store_url, queue_url = f"sqlite:///{tmp_path}/store.db", f"sqlite:///{tmp_path}/queue.db"
    sections = DeliverySections(
        destinations=(DestinationConfig(name="shr", kind="fhir", base_url=server.url, timeout=2),),
        delivery=DeliverySettings(in_process_worker=False, poll_interval=0.02, heartbeat_interval=0.2),
    )
    settings = Settings(store_url=store_url, queue_url=queue_url)
    store = open_store(store_url)
    app = create_app(settings, store=store, plan=ServicePlan(delivery=True, sections=sections))
    app.include_router(admin_delivery.router)
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"store_url": store_url, "queue_url": queue_url}))
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(yaml.safe_dump(sections.model_dump(mode="json")))

    def run_cli(*args: str) -> str:
        result = CliRunner().invoke(queue_app, [*args, "--config", str(config), "--destinations", str(destinations)])
        assert result.exit_code == 0, result.output
        return result.output

    async def cli(*args: str) -> str:
        return await asyncio.to_thread(run_cli, *args)  # its own event loop, as from a shell

    stop = asyncio.Event()
    worker: asyncio.Task[None] | None = None
    try:
        async with app.router.lifespan_context(app):
            headers = {"Authorization": f"Bearer {make_token(store, ('admin',))}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw.test", headers=headers) as api:

                async def status() -> dict[str, Any]:
                    response = await api.get("/admin/destinations")
                    assert response.status_code == 200
                    body = response.json()
                    [row] = body["destinations"]
                    return {**row, "workers": body["workers"]}

                await asyncio.to_thread(Workload.generate(patients=5, changes=CHANGES).apply, store)
                await asyncio.sleep(0.3)

                # No worker: what used to look healthy now shows the lag and the missing worker.
                row = await status()
                assert (row["depth"], row["circuit"], row["cursor"]) == (0, "closed", 0)
                assert row["feed_head"] == row["lag_changes"] == CHANGES
                assert row["lag_seconds"] >= 0.3
                assert (row["workers_alive"], row["last_heartbeat"], row["workers"]) == (0, None, [])
                output = await cli("status")
                assert "no live delivery worker" in output and f" {CHANGES} " in output
                [printed] = orjson.loads(await cli("status", "--json"))
                assert printed["lag_changes"] == CHANGES and printed["workers_alive"] == 0

                # `gateway worker` starts: its heartbeat shows and the lag drains to zero.
                worker = asyncio.create_task(
                    run_worker(settings, sections, environ={}, stop=stop, scheduler=False)
                )

                async def caught_up() -> bool:
                    row = await status()
                    return bool(row["lag_changes"] == 0 and row["workers_alive"] == 1)

                await eventually(caught_up)
                row = await status()
                assert row["lag_seconds"] == 0.0
                assert time.time() - row["last_heartbeat"] < 5
                [seen] = row["workers"]
                assert seen["alive"] and seen["destinations"] == ["shr"]
                assert len(server.snapshot()) > 0
                output = await cli("status")
                assert "1 live" in output and "no live delivery worker" not in output
                assert seen["name"] in await cli("workers")

                # A clean stop removes the worker's heartbeat.
                stop.set()
                await worker
                worker = None
                assert (await status())["workers_alive"] == 0
    finally:
        stop.set()
        if worker is not None:
            await asyncio.gather(worker, return_exceptions=True)
        store.close()
        server.stop()


async def test_a_worker_silent_for_three_heartbeat_intervals_is_not_live(tmp_path: Path) -> None:
    queue_url = f"sqlite:///{tmp_path}/queue.db"
    sections = DeliverySections(
        destinations=(DestinationConfig(name="shr", kind="fhir", base_url="http://127.0.0.1:9/fhir"),),
        delivery=DeliverySettings(heartbeat_interval=10),
    )
    from gateway.clock import SystemClock
    from gateway.delivery import open_admin

    queue = SQLiteQueue(tmp_path / "queue.db", clock=SystemClock())
    now = time.time()
    # A worker killed with kill -9 leaves its last heartbeat behind.
    await queue.heartbeat(WorkerBeat("killed", ("shr",), started_at=now - 100, last_seen=now - 31, in_flight=3))
    await queue.heartbeat(WorkerBeat("running", ("shr",), started_at=now - 100, last_seen=now - 5, in_flight=0))
    await queue.close()
    handle = open_admin(queue_url, sections)
    try:
        workers = {w.beat.name: w.alive for w in await handle.admin.workers()}
        assert workers == {"killed": False, "running": True}
        [row] = await handle.admin.status()
        assert row.workers_alive == 1
        assert row.last_heartbeat is not None and abs(row.last_heartbeat - (now - 5)) < 1e-6
        assert (row.lag_changes, row.lag_seconds) == (None, None)  # no store given: unknown, not zero
    finally:
        await handle.queue.close()
