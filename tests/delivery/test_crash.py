"""Crashes: worker processes killed (SIGKILL) or stalled (SIGSTOP) mid-run, and Redis restarted mid-run."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml

from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.policy import RetryPolicy
from gateway.delivery.service import DeliveryService
from gateway.store import open_store
from gateway.store.base import ResourceStore
from tests.delivery.destination import LoopbackFhirServer
from tests.delivery.helpers import eventually
from tests.delivery.workload import Workload
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
CHANGES = 2000
CONCURRENCY = 4


def start_worker(config: Path, destinations: Path, log: Path) -> subprocess.Popen[bytes]:
    """``gateway worker`` as its own process, through the standalone entry point."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli.worker",
                "--config",
                str(config),
                "--destinations",
                str(destinations),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def assert_delivered_once(
    server: LoopbackFhirServer, work: Workload, store: ResourceStore, redelivered: int
) -> None:
    """Everything arrived; a version was written twice at most for the jobs in flight at a crash."""
    assert_patient_order(server, work)
    assert server.snapshot() == work.expected(store)
    seqs = [write.seq for write in server.applied]
    assert set(seqs) == set(range(1, CHANGES + 1))  # coalescing is off: every change was sent
    repeats = len(seqs) - len(set(seqs))
    assert repeats <= redelivered, f"{repeats} repeated writes"


def assert_patient_order(server: LoopbackFhirServer, work: Workload) -> None:
    """Each patient's writes landed in change-feed order (a write sent twice must be sent again at once)."""
    per_patient: dict[str, list[int]] = defaultdict(list)
    for write in server.applied:
        per_patient[work.patient_of[write.ref]].append(write.seq)
    for patient, seqs in per_patient.items():
        assert seqs == sorted(seqs), f"{patient} out of order: {seqs}"


def write_config(tmp_path: Path, server: LoopbackFhirServer) -> tuple[Path, Path]:
    """gateway.yaml and destinations.yaml: SQLite store and queue, a 1 s lease, the default breaker."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "store_url": f"sqlite:///{tmp_path}/store.db",
                "queue_url": f"sqlite:///{tmp_path}/queue.db",
            }
        )
    )
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        yaml.safe_dump(
            {
                "destinations": [
                    {
                        "name": "shr",
                        "kind": "fhir",
                        "base_url": server.url,
                        "concurrency": CONCURRENCY,
                        "timeout": 5,
                        "coalesce": False,
                    }
                ],
                "delivery": {
                    "lease": "1s",
                    "poll_interval": "20ms",
                    "retry": {"initial_delay": "10ms", "max_delay": "100ms", "max_age": "1h"},
                },
            }
        )
    )
    return config, destinations


@pytest.mark.slow
async def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    server = LoopbackFhirServer(latency=0.004).start()
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    work = Workload.generate(patients=200, changes=CHANGES, seed=3)
    work.apply(store)
    config, destinations = write_config(tmp_path, server)
    log = tmp_path / "worker.log"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for kill_at in (400, 1100):
            procs.append(start_worker(config, destinations, log))
            await eventually(functools.partial(_applied_at_least, server, kill_at), timeout=60)
            procs[-1].send_signal(signal.SIGKILL)
            assert procs[-1].wait(timeout=10) == -signal.SIGKILL
            assert len(server.applied) < CHANGES, "the run finished before the kill"
        procs.append(start_worker(config, destinations, log))
        await eventually(lambda: len({w.seq for w in server.applied}) == CHANGES, timeout=60, every=0.05)
        procs[-1].send_signal(signal.SIGTERM)
        assert procs[-1].wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
    # At most the jobs in flight at each kill were sent twice (their answers were lost).
    assert_delivered_once(server, work, store, redelivered=2 * 2 * CONCURRENCY)
    store.close()


@pytest.mark.slow
async def test_patient_order_holds_when_workers_are_killed_or_stalled(tmp_path: Path) -> None:
    # Issue 12, finding 8: two workers share the SQLite queue (as `gateway serve` and
    # `gateway worker` do), with the default breaker. One is killed with SIGKILL twice and
    # restarted; the other is stopped (SIGSTOP) past its lease three times and resumed: slow,
    # not dead, it wakes with claims the other worker has since delivered, followed by
    # the patient's later changes. Each patient's writes must land in change-feed order.
    # A slower destination than the other crash tests keeps the run going through all five
    # kills and stalls on a fast machine (a 2 s stall lets the other worker deliver ~400).
    server = LoopbackFhirServer(latency=0.02).start()
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    work = Workload.generate(patients=100, changes=CHANGES, seed=8)
    work.apply(store)
    config, destinations = write_config(tmp_path, server)
    log = tmp_path / "worker.log"
    slow = start_worker(config, destinations, log)
    procs = [slow, start_worker(config, destinations, log)]
    try:
        for at, kill in ((200, False), (500, True), (800, False), (1100, True), (1300, False)):
            await eventually(functools.partial(_applied_at_least, server, at), timeout=60)
            assert len(server.applied) < CHANGES - 200, "the run is ending before the kills and stalls"
            if kill:
                procs[-1].send_signal(signal.SIGKILL)
                assert procs[-1].wait(timeout=10) == -signal.SIGKILL
                procs.append(start_worker(config, destinations, log))
            else:
                slow.send_signal(signal.SIGSTOP)
                await asyncio.sleep(2.0)  # twice the lease
                slow.send_signal(signal.SIGCONT)
        await eventually(lambda: len({w.seq for w in server.applied}) == CHANGES, timeout=60, every=0.05)
        for proc in (slow, procs[-1]):
            proc.send_signal(signal.SIGTERM)
        for proc in (slow, procs[-1]):
            assert proc.wait(timeout=20) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.kill()
                proc.wait()
        server.stop()
    # Only jobs in flight at a kill or a stall may be written twice, one right after the other.
    assert_delivered_once(server, work, store, redelivered=5 * 2 * CONCURRENCY)
    store.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[dict[str, object]]:
    """A dedicated redis-server with an append-only file, restartable by the test."""
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    state: dict[str, object] = {"port": port}

    def start() -> None:
        proc = subprocess.Popen(
            [
                "/usr/bin/redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--dir",
                str(data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        state["proc"] = proc
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, socket_timeout=1).ping()
                return
            except redis.exceptions.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill() -> None:
        proc = state["proc"]
        assert isinstance(proc, subprocess.Popen)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    state["start"], state["kill"] = start, kill
    start()
    yield state
    proc = state["proc"]
    assert isinstance(proc, subprocess.Popen)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
async def test_restarting_redis_mid_run_loses_nothing(
    tmp_path: Path, redis_server: dict[str, object]
) -> None:
    server = LoopbackFhirServer(latency=0.004).start()
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    work = Workload.generate(patients=200, changes=CHANGES, seed=4)
    work.apply(store, 0, CHANGES // 2)
    settings = DeliverySettings(
        retry=RetryPolicy(initial_delay=0.01, max_delay=0.1, max_age=3600), poll_interval=0.02, lease=1
    )
    service = DeliveryService.create(
        store=store,
        queue_url=f"redis://127.0.0.1:{redis_server['port']}/0",
        destinations=[
            DestinationConfig(
                name="shr",
                kind="fhir",
                base_url=server.url,
                concurrency=CONCURRENCY,
                timeout=5,
                coalesce=False,
            )
        ],
        settings=settings,
        environ={},
    )
    await service.start()
    try:
        await eventually(lambda: len(server.applied) >= 500, timeout=60)
        redis_server["kill"]()  # type: ignore[operator]
        down_at = len(server.applied)
        work.apply(store, CHANGES // 2)  # writes go on while Redis is down
        service.notify()
        await asyncio.sleep(0.5)
        assert len(server.applied) <= down_at + CONCURRENCY  # nothing new can be claimed meanwhile
        await asyncio.to_thread(redis_server["start"])  # type: ignore[arg-type]
        await eventually(lambda: len({w.seq for w in server.applied}) == CHANGES, timeout=60, every=0.05)
        await eventually(lambda: _drained(service), timeout=20)
    finally:
        await service.stop()
        server.stop()
    assert_delivered_once(server, work, store, redelivered=CONCURRENCY)
    store.close()


def _applied_at_least(server: LoopbackFhirServer, count: int) -> bool:
    return len(server.applied) >= count


async def _drained(service: DeliveryService) -> bool:
    stats = await service.queue.stats("shr")
    return stats.depth == 0 and stats.dead == 0
