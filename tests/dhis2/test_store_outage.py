"""The PostgreSQL store goes away while a worker delivers to DHIS2 (a restart, a failover, a cut
link between the worker and the database): the DHIS2 connector reads the visit's patient and
place from the store to plan what it sends, so the delivery fails, but as a *transient* failure.
The jobs wait and are tried again, and once the store answers again every record reaches DHIS2;
none is buried as a dead letter (``internal_error``) that an operator would have to replay by hand.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, FaultConfig, SandboxServer, SandboxSettings, create_sandbox_app
from gateway.connectors.dhis2 import dhis2_factory
from gateway.delivery.config import DestinationConfig
from gateway.delivery.factory import FACTORIES
from gateway.delivery.service import DeliveryService
from gateway.store import open_store
from tests.conftest import PG_URL
from tests.delivery.helpers import eventually
from tests.dhis2.conftest import MAPPINGS
from tests.dhis2.records import chw_record, places
from tests.dhis2.test_end_to_end import FAST

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}
RECORDS = 5


class CuttableLink:
    """A TCP forwarder to the PostgreSQL server: ``cut()`` drops every connection through it and
    refuses new ones, as a database restart or a network cut does; ``mend()`` lets them in again."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if not self.open:
                    client.close()
                    continue
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        with self.lock:
            self.open = False
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self.sockets.clear()

    def mend(self) -> None:
        with self.lock:
            self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def linked_store_url() -> Iterator[tuple[str, CuttableLink]]:
    """A PostgreSQL store URL (fresh schema) reached through a ``CuttableLink``."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(PG_URL)
    link = CuttableLink(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = f"{parts.username}@" if parts.username else ""
    yield f"postgresql://{user}127.0.0.1:{link.port}{parts.path}?schema={schema}", link
    link.close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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
            settings=FAST.model_copy(update={"lease": 120}),  # a read waits up to 30 s for the pool
            environ={"DHIS2_PAT": DEFAULT_TOKEN},
            factories={**FACTORIES, "dhis2": dhis2_factory(store)},
        )
        assert await service.outbox.drain() == RECORDS  # queued while the store answered
        link.cut()
        await service.start()
        try:
            # The connector's first read waits out the pool's 30 s timeout, then fails.
            await eventually(lambda: _attempted(service), timeout=90, every=0.05)
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
