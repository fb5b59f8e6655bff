"""Delivery queue throughput and backlog memory, next to arq on the same Redis.

    .venv/bin/python -m bench.queue_bench [--jobs 50000] [--backlog 1000000]

1. Throughput: ``--jobs`` jobs go through enqueue → claim → ack with a no-op destination
   (the delivery ``Worker`` with a connector that accepts everything), on Redis and on
   SQLite, with one ordering key per job and with 10 jobs per key (per-patient order
   enforced). The baseline is arq on the same Redis: the same jobs enqueued with
   ``enqueue_job`` and run by an arq worker in burst mode (``max_jobs`` = our concurrency,
   ``poll_delay`` 0, results not kept). Each job carries a ~300-byte FHIR Observation.
2. Backlog: ``--backlog`` jobs are queued while a worker *process* delivers to a slow
   destination (so the backlog builds up); the table shows the worker's RSS and the queue's
   storage (Redis ``used_memory`` / SQLite file size) as it grows.

Redis runs use DB 7 (refused unless empty) and are flushed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import redis.asyncio as aioredis

from gateway.clock import SystemClock
from gateway.connectors.base import DeliveryOutcome, Job, Success
from gateway.delivery.breaker import BreakerPolicy, CircuitBreaker
from gateway.delivery.config import DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.queue import DeliveryQueue
from gateway.delivery.queue_factory import open_queue
from gateway.delivery.worker import DestinationRuntime, Worker

REDIS_DB = 7
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
CONCURRENCY = 64
ENQUEUE_BATCH = 500
PAYLOAD = orjson.dumps(
    {
        "resourceType": "Observation",
        "id": "obs-000000",
        "meta": {"source": "urn:commcare:chw-main", "versionId": "1", "lastUpdated": "2024-05-01T10:00:00Z"},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": "Patient/p-000000"},
        "effectiveDateTime": "2024-05-01T09:30:00Z",
        "valueQuantity": {"value": 61.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }
)


class NoOpConnector:
    """A destination that accepts everything at once (optionally after a fixed delay)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.delivered = 0

    async def deliver(self, jobs: Sequence[Job]) -> list[DeliveryOutcome]:
        """Accept every job."""
        if self.delay:
            await asyncio.sleep(self.delay)
        self.delivered += len(jobs)
        return [Success()] * len(jobs)

    async def aclose(self) -> None:
        """Nothing to close."""


def make_jobs(start: int, count: int, per_key: int, now: float) -> list[Job]:
    """Jobs ``start+1 .. start+count``; ``per_key`` consecutive jobs share an ordering key."""
    return [
        Job(
            id=f"bench:{seq}",
            destination="bench",
            seq=seq,
            resource_type="Observation",
            resource_id=f"o{seq}",
            version=1,
            op="create",
            key=f"Patient/p{(seq - 1) // per_key}",
            payload=PAYLOAD,
            source="urn:commcare:chw-main",
            enqueued_at=now,
        )
        for seq in range(start + 1, start + count + 1)
    ]


async def enqueue_all(queue: DeliveryQueue, total: int, per_key: int, start: int = 0) -> None:
    """Queue ``total`` jobs the way the outbox does: batches moving the cursor."""
    cursor = await queue.cursor("bench")
    now = time.time()
    for first in range(start, start + total, ENQUEUE_BATCH):
        count = min(ENQUEUE_BATCH, start + total - first)
        jobs = make_jobs(first, count, per_key, now)
        assert await queue.enqueue("bench", jobs, after=cursor, cursor=first + count)
        cursor = first + count


def runtime(connector: NoOpConnector, concurrency: int) -> DestinationRuntime:
    """The bench destination as the worker runs it."""
    config = DestinationConfig(
        name="bench", kind="webhook", base_url="http://127.0.0.1:9/", concurrency=concurrency
    )
    return DestinationRuntime(config, connector, RetryPolicy(), CircuitBreaker(BreakerPolicy()))


async def ours(url: str, jobs: int, per_key: int) -> tuple[float, float]:
    """(enqueue seconds, total seconds) for ``jobs`` through our queue and worker."""
    queue = open_queue(url, clock=SystemClock(), prefix="bench:dq")
    connector = NoOpConnector()
    worker = Worker(queue, [runtime(connector, CONCURRENCY)], SystemClock(), poll_interval=0.01)
    started = time.perf_counter()
    await enqueue_all(queue, jobs, per_key)
    enqueued = time.perf_counter() - started
    await worker.start()
    while connector.delivered < jobs:
        await asyncio.sleep(0.005)
    await worker.stop()  # flushes the last acknowledgements
    total = time.perf_counter() - started
    stats = await queue.stats("bench")
    assert stats.depth == 0, stats
    await queue.close()
    return enqueued, total


async def noop(ctx: dict[str, object], payload: bytes) -> None:
    """The arq job: does nothing."""


async def arq_run(jobs: int) -> tuple[float, float]:
    """(enqueue seconds, total seconds) for ``jobs`` no-op arq jobs on the same Redis."""
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker as ArqWorker

    queue_name = "bench:arq"
    pool = await create_pool(RedisSettings(database=REDIS_DB), default_queue_name=queue_name)
    started = time.perf_counter()
    for first in range(0, jobs, ENQUEUE_BATCH):
        count = min(ENQUEUE_BATCH, jobs - first)
        await asyncio.gather(*(pool.enqueue_job("noop", PAYLOAD) for _ in range(count)))
    enqueued = time.perf_counter() - started
    worker = ArqWorker(
        functions=[noop],
        redis_pool=pool,
        queue_name=queue_name,
        burst=True,
        max_jobs=CONCURRENCY,
        poll_delay=0,
        keep_result=0,
        handle_signals=False,
        log_results=False,
    )
    await worker.main()
    total = time.perf_counter() - started
    assert worker.jobs_complete == jobs, worker.jobs_complete
    await worker.close()
    await pool.aclose()
    return enqueued, total


async def flush_bench_db() -> None:
    """Empty the bench Redis DB."""
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()


async def redis_db_is_empty() -> bool:
    """True if nothing else uses the bench Redis DB."""
    client = aioredis.Redis.from_url(REDIS_URL)
    size = await client.dbsize()
    await client.aclose()
    return int(size) == 0


async def redis_used_memory() -> int:
    """Redis used_memory in bytes."""
    client = aioredis.Redis.from_url(REDIS_URL)
    info = await client.info("memory")
    await client.aclose()
    return int(info["used_memory"])


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def child_worker(url: str) -> None:
    """Run a worker against ``url`` with a slow destination until SIGTERM (the RSS subject)."""
    queue = open_queue(url, clock=SystemClock(), prefix="bench:dq")
    worker = Worker(queue, [runtime(NoOpConnector(delay=0.005), 8)], SystemClock(), poll_interval=0.05)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await worker.start()
    await stop.wait()
    await worker.stop()
    await queue.close()


async def backlog(url: str, total: int, storage: str) -> list[tuple[int, int, int, int]]:
    """Queue ``total`` jobs while a worker process drains slowly; (queued, depth, RSS KiB, bytes) rows."""
    queue = open_queue(url, clock=SystemClock(), prefix="bench:dq")
    await enqueue_all(queue, 1, per_key=10)  # creates the destination before the worker starts
    child = subprocess.Popen([sys.executable, "-m", "bench.queue_bench", "--child", url])
    rows: list[tuple[int, int, int, int]] = []
    try:
        await asyncio.sleep(1.5)  # the worker is up and idle
        marks = sorted({0, total // 10, total // 4, total // 2, 3 * total // 4, total})
        queued = 0
        for mark in marks:
            if mark > queued:
                await enqueue_all(queue, mark - queued, per_key=10, start=queued + 1)
                queued = mark
            depth = (await queue.stats("bench")).depth
            used = await redis_used_memory() if storage == "redis" else _sqlite_bytes(url)
            rows.append((queued, depth, rss_kib(child.pid), used))
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
        await queue.close()
    return rows


def _sqlite_bytes(url: str) -> int:
    path = Path(url.removeprefix("sqlite:///"))
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def main_async(args: argparse.Namespace) -> int:
    if not await redis_db_is_empty():
        print(f"redis DB {REDIS_DB} is not empty; refusing to run", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    try:
        results: list[tuple[str, float, float]] = []
        print(f"throughput: {args.jobs} jobs, concurrency {CONCURRENCY}, no-op destination", flush=True)
        arq_enqueue, arq_total = await arq_run(args.jobs)
        await flush_bench_db()
        results.append(("arq (redis, baseline)", arq_enqueue, arq_total))
        for label, url, per_key in (
            ("gateway redis, 1 job/key", REDIS_URL, 1),
            ("gateway redis, 10 jobs/key", REDIS_URL, 10),
            ("gateway sqlite, 1 job/key", f"sqlite:///{tmp}/t1.db", 1),
            ("gateway sqlite, 10 jobs/key", f"sqlite:///{tmp}/t10.db", 10),
        ):
            enqueue, total = await ours(url, args.jobs, per_key)
            await flush_bench_db()
            results.append((label, enqueue, total))
        base = args.jobs / arq_total
        print(f"\n{'queue':<30} {'enqueue/s':>11} {'end-to-end jobs/s':>18} {'ratio vs arq':>13}")
        for label, enqueue, total in results:
            rate = args.jobs / total
            print(f"{label:<30} {args.jobs / enqueue:>11,.0f} {rate:>18,.0f} {rate / base:>12.1f}x")

        for storage, url in (("redis", REDIS_URL), ("sqlite", f"sqlite:///{tmp}/backlog.db")):
            print(
                f"\nbacklog on {storage}: {args.backlog:,} jobs queued while a worker drains at ~1.6k/s",
                flush=True,
            )
            rows = await backlog(url, args.backlog, storage)
            await flush_bench_db()
            first_rss = rows[0][2]
            print(
                f"{'queued':>10} {'depth':>10} {'worker RSS MiB':>15} {'vs start':>9} {storage + ' MiB':>12}"
                f" {'bytes/job':>10}"
            )
            for queued, depth, rss, used in rows:
                per_job = (used - rows[0][3]) / depth if depth > 1 else 0
                print(
                    f"{queued:>10,} {depth:>10,} {rss / 1024:>15.1f} {rss / first_rss:>8.2f}x"
                    f" {used / 2**20:>12.1f} {per_job:>10,.0f}"
                )
        return 0
    finally:
        await flush_bench_db()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    """Run the benchmark (or, with --child, the worker process whose RSS is measured)."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        asyncio.run(child_worker(args.child))
        return 0
    os.environ.setdefault("PYTHONHASHSEED", "0")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
