"""A queue that lost its cursors (Redis restarted without its append-only file, or restored from an
old copy) has the outbox read the change feed again from the start: a destination that skips
superseded versions must not get a version older than one it already had, which would stand at the
destination over the newer one until the newer one's job came round (hours, on a large store)."""

from __future__ import annotations

from typing import Any

from gateway.clock import ManualClock
from gateway.delivery.config import DestinationConfig
from gateway.delivery.outbox import Outbox
from gateway.delivery.queue import Ack, DeliveryQueue
from gateway.store import Store

SHR = DestinationConfig(name="shr", kind="fhir", base_url="http://127.0.0.1:9/fhir",
                        filter={"resource_types": ["Patient"]})  # fmt: skip
HOOK = DestinationConfig(name="hook", kind="webhook", base_url="http://127.0.0.1:9/hook",
                         filter={"resource_types": ["Patient"]})  # fmt: skip
ACTIVE_ONLY = DestinationConfig(name="active", kind="fhir", base_url="http://127.0.0.1:9/fhir",
                                filter={"resource_types": ["Patient"], "criteria": "Patient.active = true"})


def _patient(rid: str, family: str, active: bool = True) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": rid, "active": active, "name": [{"family": family}]}


async def _delivered(queue: DeliveryQueue, outbox: Outbox, destination: DestinationConfig) -> list[tuple[str, int]]:
    """Run the outbox one change at a time, claiming and acknowledging after each as a fast worker does."""
    sent: list[tuple[str, int]] = []
    while await outbox.run_once():
        for job in await queue.claim(destination.name, worker="w", limit=10, coalesce=destination.coalesces):
            sent.append((job.resource_id, job.version))
            await queue.settle([Ack(job)])
    return sent


async def test_a_replayed_feed_sends_no_version_the_store_has_superseded(
    store: Store, queue: DeliveryQueue, clock: ManualClock
) -> None:
    with store.transaction() as tx:
        tx.update(_patient("a", "Achieng"))
    with store.transaction() as tx:
        tx.update(_patient("b", "Otieno"))
    with store.transaction() as tx:
        tx.update(_patient("a", "Achieng-Odhiambo"))  # corrected: version 2
    # The queue is empty and has no cursor: every change is read again, one batch at a time.
    outbox = Outbox(store, queue, [SHR, HOOK], clock, batch=1)
    assert await _delivered(queue, outbox, SHR) == [("b", 1), ("a", 2)]
    # A destination that takes every version still gets every version, in order.
    hook = await queue.claim("hook", worker="w", limit=10, coalesce=False)
    assert [(job.resource_id, job.version) for job in hook] == [("a", 1), ("b", 1)]


async def test_a_version_whose_successor_the_destination_does_not_take_is_still_sent(
    store: Store, queue: DeliveryQueue, clock: ManualClock
) -> None:
    with store.transaction() as tx:
        tx.update(_patient("a", "Achieng"))
    with store.transaction() as tx:
        tx.update(_patient("a", "Achieng", active=False))  # the filter no longer takes it
    outbox = Outbox(store, queue, [ACTIVE_ONLY], clock, batch=1)
    assert await _delivered(queue, outbox, ACTIVE_ONLY) == [("a", 1)]
