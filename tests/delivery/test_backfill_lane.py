"""Deliveries of backfilled records wait behind live ones: the store marks a backfill's changes,
the outbox queues their jobs in the backfill lane, and a claim takes live jobs first (each store
backend, each queue backend)."""

from __future__ import annotations

from pathlib import Path

from gateway.backfill import expand
from gateway.clock import ManualClock
from gateway.delivery.config import DestinationConfig
from gateway.delivery.outbox import Outbox
from gateway.delivery.queue import Ack, DeliveryQueue
from gateway.ingest import ReceivedRecord
from gateway.store import Store
from tests.backfill.conftest import Backfill, line_list, write_jsonl

SHR = DestinationConfig(name="shr", kind="fhir", base_url="http://127.0.0.1:9/fhir",
                        filter={"resource_types": ["Patient"]})  # fmt: skip


async def test_a_live_record_is_delivered_before_a_backlog_of_backfilled_ones(
    store: Store, queue: DeliveryQueue, clock: ManualClock, tmp_path: Path
) -> None:
    harness = Backfill(store)
    try:
        store.feed_lane = "backfill"  # what `gateway backfill` sets on the store it opens
        [item] = expand([str(write_jsonl(tmp_path / "history.jsonl", 60))])
        assert harness.runner.run("csv", item).stored == 60
        store.feed_lane = "live"
        live = line_list(999)
        harness.ingest.ingest("csv", [ReceivedRecord(0, live, b"{}", "application/json")])
    finally:
        harness.ingest.close()
    outbox = Outbox(store, queue, [SHR], clock)
    assert await outbox.drain() == 61
    [first] = await queue.claim("shr", worker="w", limit=1, coalesce=False)
    assert not first.backfill and first.resource()["identifier"][0]["value"] == live["patient_id"]
    await queue.settle([Ack(first)])
    backlog = await queue.claim("shr", worker="w", limit=100, coalesce=False)
    assert len(backlog) == 60 and all(job.backfill for job in backlog)
