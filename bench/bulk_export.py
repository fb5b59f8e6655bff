"""Bulk Data export throughput against a plain SELECT of the same rows (issue 16; goal: at least 50%).

One store per backend seeded with N resources (a tenth Patients, the rest Observations
about them). For each backend, in the same run:

* ``SELECT content FROM resources WHERE rtype = ? ORDER BY rid`` over the exported types,
  fetched in batches of 1000 on a connection of its own (the ceiling: reading the rows and
  doing nothing with them);
* ``$export?_type=Patient,Observation`` over HTTP (in-process ASGI app): kick-off, polling,
  until the manifest says done; the NDJSON files written are counted;
* the same export with ``_deidentify=research`` (every resource parsed, rewritten, dumped).

Resources/s and NDJSON MB/s (kick-off to the last file written), the ratio to the SELECT,
and the RSS growth of this process while the export ran (sampled every 5 ms after the first
tenth; PostgreSQL's rows live in the server, so its RSS is the export's own; SQLite's page cache,
64 MB a connection, adds to it).

Each read runs ``--repeat`` times (default 3), interleaved; the table shows the run of median
duration of each, and the largest RSS growth.

Run: ``python -m bench.bulk_export [--resources N] [--repeat R]`` (default 100,000, 3).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg

from gateway.api.app import create_app
from gateway.settings import Settings
from gateway.store import Store, open_store
from tests.conftest import make_token
from tests.support.gateway_app import MACHINE_SPEED_LIMITS

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TYPES = ("Observation", "Patient")
Run = TypeVar("Run", bound=tuple[Any, ...])


def seed(store: Store, total: int) -> None:
    """A tenth Patients, the rest Observations about them."""
    patients = max(1, total // 10)
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with store.transaction() as tx:
            for resource in batch:
                tx.update(resource)
        batch.clear()

    for i in range(patients):
        batch.append({"resourceType": "Patient", "id": f"p{i}", "name": [{"family": f"F{i}", "given": ["G"]}],
                      "identifier": [{"system": "urn:nid", "value": f"N{i:08d}"}], "gender": "female",
                      "birthDate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 9}",
                      "telecom": [{"system": "phone", "value": f"+2507{i:08d}"}]})
        if len(batch) >= 1000:
            flush()
    for i in range(total - patients):
        batch.append({"resourceType": "Observation", "id": f"o{i}", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
                      "subject": {"reference": f"Patient/p{i % patients}"},
                      "effectiveDateTime": f"2024-0{1 + i % 9}-1{i % 9}T10:00:00Z",
                      "valueQuantity": {"value": 40 + i % 50, "unit": "kg", "system": "http://unitsofmeasure.org",
                                        "code": "kg"}})
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()


def analyze(store: Store, url: str) -> None:
    """Statistics, as autovacuum would gather them after a load this size (the planner needs them)."""
    if url.startswith("postgresql"):
        base, _, schema = url.partition("?schema=")
        with psycopg.connect(base, options=f"-c search_path={schema}", autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")


def plain_select(url: str) -> tuple[float, int, int]:
    """Seconds, rows and bytes of reading the exported types' content with plain SELECTs."""
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
        mark = "?"
    else:
        base, _, schema = url.partition("?schema=")
        conn = psycopg.connect(base, options=f"-c search_path={schema}")
        mark = "%s"
    rows = size = 0
    start = time.perf_counter()
    for rtype in TYPES:
        cur = conn.cursor()
        cur.execute(f"SELECT content FROM resources WHERE rtype = {mark} AND deleted = 0 ORDER BY rid", (rtype,))
        while True:
            batch = cur.fetchmany(1000)
            if not batch:
                break
            rows += len(batch)
            size += sum(len(row[0]) for row in batch)
        cur.close()
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed, rows, size


def median_run(runs: list[Run]) -> Run:
    """The run of median duration (its first field) of several."""
    return sorted(runs, key=lambda run: run[0])[len(runs) // 2]


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


async def run_export(app: Any, token: str, folder: Path, **params: str) -> tuple[float, int, int, float]:
    """Seconds from kick-off to the last file written, resources and NDJSON bytes of one export over
    HTTP, and its RSS growth (MB). Polling every 50 ms (clients wait Retry-After, 2 s) would blur a
    sub-second run, so the time ends at the last file's modification time."""
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss())
            time.sleep(0.005)

    headers = {"Authorization": f"Bearer {token}", "Prefer": "respond-async"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost",
                                 headers=headers) as client:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.time()
        kick = await client.get("/fhir/$export", params={"_type": ",".join(TYPES), **params})
        assert kick.status_code == 202, kick.text
        while True:
            answer = await client.get(kick.headers["Content-Location"])
            if answer.status_code == 200:
                break
            assert answer.status_code == 202, answer.text
            await asyncio.sleep(0.05)
        stop.set()
        sampler.join()
    manifest = answer.json()
    job = kick.headers["Content-Location"].rsplit("/", 1)[1]
    files = [p.stat() for p in (folder / job).glob("*.ndjson")]
    size = sum(f.st_size for f in files)
    elapsed = max(f.st_mtime for f in files) - start
    settled = samples[len(samples) // 10] if samples else 0
    return elapsed, sum(o["count"] for o in manifest["output"]), size, (max(samples, default=0) - settled) / 1e6


async def bench_backend(name: str, url: str, total: int, workdir: Path, repeat: int = 3) -> list[tuple[str, ...]]:
    store = open_store(url)
    try:
        began = time.perf_counter()
        seed(store, total)
        print(f"{name}: seeded {total:,} resources in {time.perf_counter() - began:.1f} s", flush=True)
        analyze(store, url)
        token = make_token(store, ("system/*.rs",))
        folder = workdir / f"exports-{name}"
        settings = Settings(store_url=url, rate_limit=MACHINE_SPEED_LIMITS, audit={"enabled": False},
                            bulk_export={"directory": folder, "deidentify_key": "bench-" + "k" * 40})
        app = create_app(settings, store=store)
        rows_out: list[tuple[str, ...]] = []
        async with app.router.lifespan_context(app):
            await run_export(app, token, folder)  # warm: imports, the parser, the page cache
            selects, exports, deids = [], [], []
            for _ in range(repeat):  # interleaved, so a burst of load on the machine hits all three
                selects.append(plain_select(url))
                exports.append(await run_export(app, token, folder))
                deids.append(await run_export(app, token, folder, _deidentify="research"))
        select_s, select_rows, select_bytes = median_run(selects)
        export_s, exported, size, _ = median_run(exports)
        deid_s, deid_count, deid_size, _ = median_run(deids)
        growth = max(run[3] for run in exports)
        deid_growth = max(run[3] for run in deids)
        assert exported == select_rows == total, (exported, select_rows, total)
        base = select_rows / select_s
        rows_out.append((name, "plain SELECT (baseline)", f"{base:,.0f}", f"{select_bytes / 1e6 / select_s:.1f}",
                         "1.00", "-"))
        for label, secs, count, nbytes, grew in (("$export", export_s, exported, size, growth),
                                                 ("$export _deidentify=research", deid_s, deid_count, deid_size,
                                                  deid_growth)):
            rate = count / secs
            rows_out.append((name, label, f"{rate:,.0f}", f"{nbytes / 1e6 / secs:.1f}", f"{rate / base:.2f}",
                             f"{grew:+.1f}"))
        return rows_out
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each read, interleaved; the median is shown")
    args = parser.parse_args()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rows += asyncio.run(bench_backend("sqlite", f"sqlite:///{workdir}/bench.db", args.resources, workdir,
                                         args.repeat))
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        try:
            rows += asyncio.run(bench_backend("postgresql", f"{PG_URL}?schema={schema}", args.resources,
                                             workdir, args.repeat))
        finally:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    header = ("store", "read", "resources/s", "MB/s", "vs SELECT", "RSS growth MB")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n$export of {args.resources:,} resources (Patient, Observation) vs plain SELECT, same run"
          f" (median of {args.repeat})")
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
