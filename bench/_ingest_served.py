"""The ingest benchmark's served rows: ``gateway serve --workers N`` as real processes on
PostgreSQL + Redis, fed ``POST /ingest/{source}`` batches by concurrent senders.

Each row gets a fresh PostgreSQL schema; the Redis queue stays empty (ingest enqueues only
for matching subscriptions, and the bench has none).
The senders' request bodies are built before the clock starts, so the load generator's
own work (a few httpx calls a second) is all that competes with the servers for the cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import yaml

from gateway.auth import hash_token, new_token
from gateway.store import ApiClient, open_store

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
#: Rate limits on, but never reached by the load generator.
UNLIMITED = {"requests_per_second": 1_000_000, "burst": 1_000_000}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(base: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"gateway serve did not start: {log.read_text()[-2000:]}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its children (the supervisor's workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(_cpu_seconds(int(child)) for child in children)


def served_rate(
    store_url: str,
    mappings: Path,
    sources: list[str],
    batches: Iterator[tuple[str, bytes]],
    workers: int,
    senders: int,
    warm: int,
    requests: int,
) -> tuple[float, float]:
    """Records/s through ``gateway serve --workers workers`` (``requests`` JSON-array bodies posted by
    ``senders`` threads, after ``warm`` bodies loaded first), and records per CPU-second of the
    gateway's processes (PostgreSQL's own CPU not counted): what a core free of other load gives."""
    store = open_store(store_url)
    token = new_token()
    try:
        store.save_client(ApiClient("bench", ("ingest:*",), datetime.now(UTC)), hash_token(token))
    finally:
        store.close()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "gateway.yaml"
        config.write_text(yaml.safe_dump({
            "store_url": store_url, "queue_url": REDIS_URL, "mappings_dir": str(mappings),
            "rate_limit": UNLIMITED, "sources": [{"name": n, "kind": "json", "mapping": n} for n in sources],
        }))  # fmt: skip
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_PORT": str(port)}
        env.pop("GATEWAY_CONFIG", None)
        log = Path(folder) / "serve.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--workers", str(workers), "--config", str(config)],
                cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=out,
            )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(base, server, log)
            warm_bodies = [next(batches) for _ in range(warm)]
            bodies = [next(batches) for _ in range(requests)]
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            with httpx.Client(base_url=base, headers=headers, timeout=300,
                              limits=httpx.Limits(max_connections=senders)) as client:  # fmt: skip

                def post(item: tuple[str, bytes]) -> int:
                    answer = client.post(f"/ingest/{item[0]}", content=item[1])
                    if answer.status_code != 200:
                        raise RuntimeError(f"POST /ingest/{item[0]}: {answer.status_code} {answer.text[:500]}")
                    return int(orjson.loads(answer.content)["records"])

                with ThreadPoolExecutor(senders) as pool:
                    list(pool.map(post, warm_bodies))
                    start, cpu = time.perf_counter(), _cpu_seconds(server.pid)
                    done = sum(pool.map(post, bodies))
                    elapsed, used = time.perf_counter() - start, _cpu_seconds(server.pid) - cpu
                    return done / elapsed, done / used if used else 0.0
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
