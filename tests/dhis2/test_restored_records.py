"""A record restored at its source after its deletion reached DHIS2: DHIS2 keeps deleted UIDs for
ever (E1082/E1113/E1114), so the restored visit or person is sent again under the next
generation of its UIDs; generations are kept in the delivery queue's digest store, so another
process (or this one after a restart) plans with them too. Against the sandbox over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhis2_sandbox import DEFAULT_TOKEN, SandboxServer
from gateway.clock import ManualClock
from gateway.connectors.base import DeliveryOutcome, Retry, Success
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.sources import ResourceBundle
from gateway.delivery.sqlite_queue import SQLiteQueue
from tests.dhis2.conftest import MAPPINGS, make_job, pat_auth
from tests.dhis2.records import chw_record, places

AUTH = {"Authorization": f"ApiToken {DEFAULT_TOKEN}"}


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SQLiteQueue]:
    opened = SQLiteQueue(tmp_path / "queue.db", clock=ManualClock())
    yield opened
    await opened.close()


def connector(base_url: str, source: ResourceBundle, queue: SQLiteQueue) -> Dhis2Connector:
    options = Dhis2Options(mapping=MAPPINGS / "dhis2" / "chw-household-visit.yaml", uid_namespace="restored")
    return Dhis2Connector(Dhis2Client(base_url, auth=pat_auth()), options, source, ManualClock(),
                          mappings_root=MAPPINGS, digests=queue, destination="dhis2")


async def live(server: SandboxServer) -> tuple[int, int, int]:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        stored = (await client.get("/sandbox/stats")).json()["stored"]
    return stored["tracked_entity"], stored["enrollment"], stored["event"]


async def events(server: SandboxServer) -> list[str]:
    async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as client:
        return [e["event"] for e in (await client.get("/api/tracker/events")).json()["events"]]


async def deliver_until_done(conn: Dhis2Connector, resource: dict[str, Any], op: str = "update") -> list[str]:
    """Deliver one job as the queue would: again after each Retry; the reasons met on the way."""
    reasons: list[str] = []
    for _ in range(5):
        (outcome,) = await conn.deliver([make_job(resource, op=op)])  # type: ignore[arg-type]
        if not isinstance(outcome, Retry):
            assert isinstance(outcome, Success), outcome
            return reasons
        reasons.append(outcome.reason)
    raise AssertionError(f"still retrying: {reasons}")


@asynccontextmanager
async def deleted_visit(
    server: SandboxServer, queue: SQLiteQueue, *, with_person: bool = False
) -> AsyncIterator[tuple[Dhis2Connector, ResourceBundle, list[dict[str, Any]], str]]:
    """Record 1's visit delivered, then deleted at the source (its person too, ``with_person``) and
    so in DHIS2: the connector, the source, the record's resources (``[3]`` the visit) and the UID
    of the event DHIS2 deleted."""
    resources = places() + chw_record(1)
    patient, encounter = resources[2], resources[3]
    bundle = ResourceBundle(resources)
    conn = connector(server.base_url, bundle, queue)
    try:
        assert await deliver_until_done(conn, encounter) == []
        (deleted,) = await events(server)
        bundle.remove("Encounter", encounter["id"])
        if with_person:
            bundle.remove("Patient", patient["id"])
        assert await deliver_until_done(conn, encounter, "delete") == []
        yield conn, bundle, resources, deleted
    finally:
        await conn.aclose()


async def test_a_visit_restored_after_its_deletion_is_sent_again_under_a_new_uid(
    sandbox: SandboxServer, queue: SQLiteQueue
) -> None:
    async with deleted_visit(sandbox, queue) as (conn, bundle, resources, first):
        encounter = resources[3]
        assert await live(sandbox) == (1, 1, 0)
        bundle.add(encounter)  # restored at the source (an unarchived form)
        outcome: list[DeliveryOutcome] = await conn.deliver([make_job(encounter)])
        assert isinstance(outcome[0], Retry) and outcome[0].reason == "dhis2_uid_reborn" and outcome[0].link_ok
        assert await deliver_until_done(conn, encounter) == []
        (second,) = await events(sandbox)
        assert second != first and await live(sandbox) == (1, 1, 1)
        assert await deliver_until_done(conn, encounter) == []  # delivered again: nothing changes
        assert await events(sandbox) == [second]

    # Another process (or this one restarted) knows no generation yet: the visit deleted again
    # through it is deleted in DHIS2, not counted done for the old UID.
    bundle.remove("Encounter", encounter["id"])
    other = connector(sandbox.base_url, bundle, queue)
    try:
        reasons = await deliver_until_done(other, encounter, "delete")
    finally:
        await other.aclose()
    assert reasons == ["dhis2_uid_reborn"] and await live(sandbox) == (1, 1, 0)


async def test_a_person_restored_after_their_deletion_is_registered_again(
    sandbox: SandboxServer, queue: SQLiteQueue
) -> None:
    async with deleted_visit(sandbox, queue, with_person=True) as (conn, bundle, resources, _):
        assert await live(sandbox) == (0, 0, 0)
        bundle.add(resources[2])
        bundle.add(resources[3])
        reasons = await deliver_until_done(conn, resources[3])
        assert reasons and set(reasons) == {"dhis2_uid_reborn"}
        assert await live(sandbox) == (1, 1, 1)


class _Unreadable:
    """A digest store that cannot be read just now (the queue is busy or down)."""

    def __init__(self, inner: SQLiteQueue) -> None:
        self.inner = inner

    async def accepted_digests(self, destination: str, names: Any) -> dict[str, str]:
        raise ConnectionError("queue down")

    async def record_digests(self, destination: str, digests: Any) -> None:
        await self.inner.record_digests(destination, digests)


async def test_generations_outlive_a_metadata_refresh_and_an_unreadable_store_holds_a_delete(
    sandbox: SandboxServer, queue: SQLiteQueue
) -> None:
    async with deleted_visit(sandbox, queue) as (conn, bundle, resources, _):
        encounter = resources[3]
        bundle.add(encounter)
        assert await deliver_until_done(conn, encounter) == ["dhis2_uid_reborn"]
        snapshot = conn._snapshot
        assert snapshot is not None and conn.use_metadata(snapshot)  # a metadata refresh rebinds
        assert await deliver_until_done(conn, encounter) == []  # no "already deleted" round again

    # A process that knows no generation and cannot read the store: the old UID's "already
    # deleted" is not taken for done (the live one is the newer generation's); it asks again.
    bundle.remove("Encounter", encounter["id"])
    other = connector(sandbox.base_url, bundle, queue)
    other.digests = _Unreadable(queue)
    try:
        (outcome,) = await other.deliver([make_job(encounter, op="delete")])
        assert isinstance(outcome, Retry), outcome
        assert await live(sandbox) == (1, 1, 1)
        other.digests = queue
        assert await deliver_until_done(other, encounter, "delete") == ["dhis2_uid_reborn"]
    finally:
        await other.aclose()
    assert await live(sandbox) == (1, 1, 0)
