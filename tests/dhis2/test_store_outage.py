"""The PostgreSQL store goes away while a worker delivers to DHIS2 (a restart, a failover, a cut
link between the worker and the database): the DHIS2 connector reads the visit's patient and
place from the store to plan what it sends, so the delivery fails, but as a *transient* failure.
The jobs wait and are tried again, and once the store answers again every record reaches DHIS2;
none is buried as a dead letter (``internal_error``) that an operator would have to replay by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, FaultConfig, SandboxServer, SandboxSettings, create_sandbox_app
from gateway.connectors.dhis2 import dhis2_factory
from gateway.delivery.config import DestinationConfig
from gateway.delivery.factory import FACTORIES
from gateway.delivery.service import DeliveryService
from gateway.store import open_store
from tests.delivery.helpers import eventually
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.records import chw_record, places
from tests.dhis2.test_end_to_end import FAST
from tests.support.cuttable_link import CuttableLink, linked_schema_url

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
RECORDS = 5


@pytest.fixture
def linked_store_url() -> Iterator[tuple[str, CuttableLink]]:
    """A PostgreSQL store URL (fresh schema) reached through a ``CuttableLink``."""
    with linked_schema_url() as (url, _, link):
        # A read waits 3 s for a connection, not the default 30 s: the outage is seen sooner.
        yield f"{url}&pool_timeout=3", link


async def test_a_store_outage_during_delivery_is_retried_not_dead_lettered(
    tmp_path: Path, linked_store_url: tuple[str, CuttableLink]
) -> None:
    url, link = linked_store_url
    store = open_store(url)
    with store.transaction() as tx:
        for resource in places():
            tx.update(resource)
        for n in range(RECORDS):
            for resource in chw_record(n):
                tx.update(resource)
    destination = DestinationConfig.model_validate(
        {
            "name": "dhis2",
            "kind": "dhis2",
            "base_url": "http://placeholder",
            "timeout": 10,
            "batch_size": 50,
            "auth": {"type": "api_token", "secret_env": "DHIS2_PAT"},
            "filter": {"resource_types": ["Encounter"]},
            "options": {
                "mapping": str(MAPPINGS / "dhis2" / "chw-household-visit.yaml"),
                "uid_namespace": "outage",
                "metadata_cache": str(tmp_path / "meta.json"),
            },
        }
    )
    with SandboxServer(create_sandbox_app(None, FaultConfig(), SandboxSettings())) as server:
        destination = destination.model_copy(update={"base_url": server.base_url})
        service = DeliveryService.create(
            store=store,
            queue_url=f"sqlite:///{tmp_path}/queue.db",
            destinations=[destination],
            settings=FAST.model_copy(update={"lease": 120}),
            environ={"DHIS2_PAT": DEFAULT_TOKEN},
            factories={**FACTORIES, "dhis2": dhis2_factory(store)},
        )
        assert await service.outbox.drain() == RECORDS  # queued while the store answered
        link.cut()
        await service.start()
        try:
            # The connector's first read fails on its dead connection, or waits out the pool's 3 s.
            await eventually(lambda: _attempted(service), timeout=180, every=0.05)  # a loaded machine: more
            stats = await service.queue.stats("dhis2")
            assert stats.dead == 0, "a store outage buried jobs as dead letters"
            link.mend()
            await eventually(lambda: _drained(service), timeout=60, every=0.1)
            stats = await service.queue.stats("dhis2")
        finally:
            await service.stop()
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH, timeout=30) as dhis2:
            stored = (await dhis2.get("/sandbox/stats")).json()["stored"]
    store.close()
    assert stats.dead == 0
    assert stored["event"] == RECORDS


async def _attempted(service: DeliveryService) -> bool:
    stats = await service.queue.stats("dhis2")
    return stats.retrying > 0 or stats.dead > 0


async def _drained(service: DeliveryService) -> bool:
    stats = await service.queue.stats("dhis2")
    return stats.depth == 0 and stats.in_flight == 0
