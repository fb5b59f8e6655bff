"""One measured delivery run for ``dhis2_bench --cpu`` (run as a script, so an older tree can run it).

    python bench/_dhis2_cpu_child.py BASE_URL RECORDS WORKDIR [STORE_URL QUEUE_URL QUEUE_PREFIX]

Ingests the CHW area, ``RECORDS`` households and children in-process and delivers them
(not measured), then ingests one CHT assessment per child with the delivery engine
stopped and measures the CPU-seconds of this process while the engine drains them to the
DHIS2 sandbox at ``BASE_URL``. Prints one JSON line. Uses only what every tree since the
DHIS2 connector has (``create_app``, ``DeliveryService.create``), so ``--compare`` can run
it against an older checkout put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


async def _drained(service: Any, store: Any) -> None:
    while True:
        stats = await service.queue.stats("dhis2")
        if stats.depth == 0 and stats.cursor == store.last_change_seq():
            return
        await asyncio.sleep(0.01)


async def _run(base_url: str, records: int, workdir: Path, urls: list[str]) -> dict[str, Any]:
    from dhis2_sandbox import DEFAULT_TOKEN
    from gateway.api import create_app
    from gateway.delivery.breaker import BreakerPolicy
    from gateway.delivery.config import DeliverySettings, DestinationConfig
    from gateway.delivery.policy import RetryPolicy
    from gateway.delivery.service import DeliveryService
    from gateway.settings import Settings, SourceConfig
    from gateway.store import open_store
    from tests.conftest import make_token
    from tests.dhis2 import cht_records as cht

    mappings = ROOT / "mappings"
    settings = Settings(
        store_url=urls[0] if urls else f"sqlite:///{workdir}/store.db",
        sources=[SourceConfig(name="cht", kind="cht", mapping="cht")],
        mappings_dir=mappings,
    )
    delivery = DeliverySettings(
        retry=RetryPolicy(initial_delay=0.05, multiplier=2, max_delay=1, jitter=0.1, max_age=3600),
        breaker=BreakerPolicy(min_calls=10000, probe_interval=0.05),
        poll_interval=0.02,
        lease=60,
        drain_timeout=5,
    )
    destination = DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": base_url,
            "timeout": 30,
            "batch_size": 50,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {
                "resource_types": ["Patient", "Encounter", "Observation", "MedicationDispense", "ServiceRequest"]
            },
            "options": {
                "mapping": str(mappings / "dhis2" / "chw-household-visit.yaml"),
                "uid_namespace": "cpu",
                "metadata_cache": str(workdir / "meta.json"),
            },
        }
    )
    store = open_store(settings.store_url)
    app = create_app(settings, store=store)

    def service() -> Any:
        return DeliveryService.create(
            store=store,
            queue_url=urls[1] if urls else f"sqlite:///{workdir}/queue.db",
            queue_prefix=urls[2] if urls else "gw:dq",
            destinations=[destination],
            settings=delivery,
            environ={"DHIS2_PAT": DEFAULT_TOKEN},
        )

    async with app.router.lifespan_context(app):
        token = make_token(store, ("ingest:cht",))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as sender:

            async def ingest(docs: list[dict[str, Any]]) -> None:
                for doc in docs:
                    response = await sender.post("/ingest/cht", json={"doc": doc})
                    if response.status_code != 200 or response.json()["quarantined"]:
                        raise SystemExit(f"ingest failed: {response.text}")

            await ingest([cht.area(), *(d for n in range(records) for d in (cht.household(n), cht.person(n)))])
            first = service()
            await first.start()
            first.notify()
            await _drained(first, store)
            await first.stop()
            await ingest([cht.assessment(n, refer="no", day=1) for n in range(records)])
            measured = service()
            cpu, wall = time.process_time(), time.perf_counter()
            await measured.start()
            measured.notify()
            await _drained(measured, store)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            dead = (await measured.queue.stats("dhis2")).dead
            await measured.stop()
    store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"records": records, "cpu": cpu, "wall": wall, "dead": dead, "max_rss_mb": rss_mb}


def main() -> None:
    """Run once and print the figures as JSON."""
    args = sys.argv[1:]
    base_url, records, workdir = args[0], int(args[1]), Path(args[2])
    print(json.dumps(asyncio.run(_run(base_url, records, workdir, args[3:6]))))


if __name__ == "__main__":
    main()
