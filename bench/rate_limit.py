"""Rate limit and access log benchmark (issue 11): what they cost FHIR read-by-id.

One gateway process per configuration (uvicorn, SQLite store, bearer auth), all over the
same stored Patient, loaded alternately over several rounds with the same load generator;
each row is its median round. Limits are set far above the load (they never trigger), so
the rows measure the cost of checking them, not of refusing:

- no middleware: the app with both middlewares taken out (the code before this change);
- limits off, log off: the request id middleware alone (always on);
- log on: one JSON line a request, written to a file;
- in-process limits / Redis limits: a token bucket in memory, or a Lua script on the local Redis;
- the default: in-process limits and the log on.

Ratios are against the first row. A second table calls the same apps in-process (one ASGI
call per read, no HTTP, no load generator) and gives the median call's microseconds, which a
busy shared machine blurs less than throughput.

Run: ``python -m bench.rate_limit [--reads N --rounds N --calls N --call-rounds N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._http_load import run_load
from bench.read_search import free_port, wait_ready
from gateway.auth import hash_token, new_token
from gateway.store import ApiClient, open_store

REDIS_URL = "redis://127.0.0.1:6379/3"
NEVER = {"requests_per_second": 1_000_000, "burst": 1_000_000}

CONFIGS: dict[str, dict[str, Any]] = {
    "no middleware (before)": {"strip": True, "access_log": False, "rate_limit": {"enabled": False}},
    "limits off, log off": {"access_log": False, "rate_limit": {"enabled": False}},
    "limits off, log on": {"access_log": True, "rate_limit": {"enabled": False}},
    "in-process limits, log off": {"access_log": False, "rate_limit": NEVER},
    "Redis limits, log off": {"access_log": False, "rate_limit": {**NEVER, "redis_url": REDIS_URL}},
    "in-process + log (default)": {"access_log": True, "rate_limit": NEVER},
    "Redis limits + log": {"access_log": True, "rate_limit": {**NEVER, "redis_url": REDIS_URL}},
}


def build(config: dict[str, Any], store_url: str) -> Any:
    """The app of one configuration."""
    from gateway.api import create_app
    from gateway.settings import Settings

    values = {k: v for k, v in config.items() if k != "strip"}
    app = create_app(Settings(store_url=store_url, **values))
    if config.get("strip"):
        app.user_middleware.clear()
    return app


def serve(config: dict[str, Any], store_url: str, log_file: str, port: int) -> None:
    """Run one configuration (in the child process)."""
    import uvicorn

    from gateway.api import configure_access_log

    configure_access_log(open(log_file, "a", encoding="utf-8"))  # noqa: SIM115 (lives as long as the process)
    uvicorn.run(build(config, store_url), host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def asgi_calls(store_url: str, path: str, token: str, log_file: Path, calls: int,
                     rounds: int) -> dict[str, float]:
    """The median in-process read's microseconds, per configuration (rounds in a shuffled order)."""
    from gateway.api import configure_access_log

    configure_access_log(open(log_file, "a", encoding="utf-8"))  # noqa: SIM115 (closed with the process)
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"authorization", f"Bearer {token}".encode()),
                    (b"accept", b"application/fhir+json")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    samples: dict[str, list[float]] = {name: [] for name in CONFIGS}
    async with AsyncExitStack() as stack:
        apps = {}
        for name, config in CONFIGS.items():
            app = build(config, store_url)
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
        order = list(apps.items())
        shuffler = random.Random(11)
        for _ in range(rounds):
            shuffler.shuffle(order)  # no configuration always runs right after another
            for name, app in order:
                statuses.clear()
                timed = samples[name]
                for _ in range(calls):
                    start = time.perf_counter()
                    await app(dict(scope, state={}), receive, send)
                    timed.append(time.perf_counter() - start)
                assert statuses == [200] * calls, f"{name}: {set(statuses)}"
    # The median call, not the mean: on a shared machine a few calls wait for the CPU for
    # milliseconds, and a mean would charge that to whichever configuration was running.
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


def setup(workdir: Path, client: str) -> tuple[str, str, str]:
    """A store with one Patient and a client; its URL, the read path and the token."""
    url = f"sqlite:///{workdir}/read.db"
    store = open_store(url)
    token = new_token()
    store.save_client(ApiClient(client, ("system/*.cruds",), datetime.now(UTC)), hash_token(token))
    with store.transaction() as tx:
        patient = tx.create({"resourceType": "Patient", "name": [{"family": "Achieng", "given": ["Mary"]}],
                             "gender": "female", "birthDate": "1990-04-02"}).resource
    store.close()
    return url, f"/fhir/Patient/{patient.id}", token


def bench(url: str, path: str, token: str, log_file: Path, reads: int, concurrency: int,
          rounds: int) -> list[tuple[str, float, float, float]]:
    """Median (req/s, p50 ms, p99 ms) per configuration over HTTP."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in CONFIGS}
    try:
        for name, config in CONFIGS.items():
            port = free_port()
            args = [json.dumps(config), url, str(log_file), str(port)]
            procs[name] = (subprocess.Popen([sys.executable, "-m", "bench.rate_limit", "--serve", *args]), port)
            wait_ready(port, path)
            run_load("127.0.0.1", port, path, headers, total=2000, concurrency=concurrency)  # warm-up
        for _ in range(rounds):
            for name, (_, port) in procs.items():
                result = run_load("127.0.0.1", port, path, headers, total=reads, concurrency=concurrency)
                assert result.errors == 0, f"{name}: {result.errors} non-200 answers"
                runs[name].append((result.rps, result.p50, result.pct(99)))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(10)
    rows = []
    for name, results in runs.items():
        rps, p50, p99 = sorted(results)[len(results) // 2]
        rows.append((name, rps, p50, p99))
    return rows


def main() -> None:
    """Run the benchmark and print the table (or serve one configuration, as a child)."""
    if sys.argv[1:2] == ["--serve"]:
        serve(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--reads", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--call-rounds", type=int, default=31)
    args = parser.parse_args()
    import redis

    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    client = f"bench-{uuid.uuid4().hex[:8]}"
    url, path, token = setup(workdir, client)
    log_file = workdir / "access.log"
    try:
        print(f"\n== FHIR read by id over HTTP: {args.rounds} alternating rounds of {args.reads} requests, "
              f"{args.concurrency} connections, 1 server process each (median round; limits never reached) ==")
        rows = bench(url, path, token, log_file, args.reads, args.concurrency, args.rounds)
        lines = log_file.read_text(encoding="utf-8").splitlines()
        assert lines and json.loads(lines[-1])["client"] == client  # the log was really written
        base = rows[0][1]
        print(f"{'configuration':28} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs before':>10}")
        for name, rps, p50, p99 in rows:
            print(f"{name:28} {rps:9.0f} {p50:8.2f} {p99:8.2f} {rps / base:9.0%}")

        print(f"\n== The same reads as in-process ASGI calls: {args.call_rounds} rounds of {args.calls} per "
              f"configuration, in a shuffled order each round (median call) ==")
        micros = asyncio.run(asgi_calls(url, path, token, log_file, args.calls, args.call_rounds))
        base_us = micros[next(iter(CONFIGS))]
        print(f"{'configuration':28} {'us/read':>9} {'added us':>9} {'vs before':>10}")
        for name, us in micros.items():
            print(f"{name:28} {us:9.1f} {us - base_us:9.1f} {us / base_us:9.0%}")
    finally:
        redis.Redis.from_url(REDIS_URL).delete(f"gw:rl:{client}")


if __name__ == "__main__":
    main()
