"""A small, fast HTTP/1.1 load generator for loopback benchmarks.

httpx spends more CPU per request than the servers being measured, so it would
measure itself. This sends pre-built GET requests on keep-alive connections with
asyncio streams and reads responses by Content-Length: a few microseconds a request.
Request count and time are bounded; only loopback addresses are used.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass
class LoadResult:
    """Throughput and latency of one run."""

    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else float("nan")


async def _worker(host: str, port: int, request: bytes, deadline: float, budget: list[int],
                  latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            start = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:].strip())
            if length:
                await reader.readexactly(length)
            latencies.append((time.perf_counter() - start) * 1000)
            if not status_line.startswith(b"HTTP/1.1 200"):
                errors[0] += 1
    finally:
        writer.close()


def run_load(host: str, port: int, path: str, headers: dict[str, str], *, total: int, concurrency: int,
             max_seconds: float = 30.0) -> LoadResult:
    """Send ``total`` GETs over ``concurrency`` connections; return throughput and latencies."""
    assert host in ("127.0.0.1", "localhost", "::1"), "loopback only"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode()
    latencies: list[float] = []
    errors = [0]
    budget = [total]

    async def main() -> float:
        deadline = time.perf_counter() + max_seconds
        start = time.perf_counter()
        await asyncio.gather(*(_worker(host, port, request, deadline, budget, latencies, errors)
                               for _ in range(concurrency)))
        return time.perf_counter() - start

    seconds = asyncio.run(main())
    return LoadResult(len(latencies), seconds, latencies, errors[0])
