"""Sorted searches as the store grows (issue 14): ``Observation?code=X&_sort=-date&_count=20``.

Loads CHW-like Observations (10 LOINC codes, two years of dates) into SQLite and PostgreSQL
at each size and times, per query, the bounded date-index walk (``date_sort_plan``: at most
``max(2000, 50 x page)`` index rows, else the few matches sorted) against the unbounded walk
of earlier releases (``SqlStore.bounded_sort = False``), in the same run on the same data.
The figure to watch is how each grows from one size to the next.

Run: ``python -m bench.sort_growth [--sizes 20000 200000] [--rounds 40]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from bench.read_search import CODES, PG_URL, load_observations
from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import Store, open_store
from gateway.store.sql import SqlStore

QUERIES = {
    "code, newest 20": [("code", CODES[3]), ("_sort", "-date"), ("_count", "20"), ("_total", "none")],
    "code, page 4": [("code", CODES[3]), ("_sort", "-date"), ("_count", "20"), ("_offset", "60"), ("_total", "none")],
    "code + category": [("code", CODES[5]), ("category", "vital-signs"), ("_sort", "-date"), ("_count", "20"),
                        ("_total", "none")],
    "code, oldest 20": [("code", CODES[1]), ("_sort", "date"), ("_count", "20"), ("_total", "none")],
    "unknown code": [("code", "no-such-code"), ("_sort", "-date"), ("_count", "20"), ("_total", "none")],
}


def timings(store: Store, items: list[tuple[str, str]], rounds: int, bounded: bool) -> tuple[float, float]:
    parser = QueryParser(default_registry(), 20, 1000)
    assert isinstance(store, SqlStore)
    store.bounded_sort = bounded
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        store.search(parser.parse("Observation", items))
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-sort-"))
    schemas: list[str] = []
    rows: list[tuple[str, int, str, float, float, float, float]] = []
    try:
        for label in ("SQLite", "PostgreSQL"):
            for size in args.sizes:
                if label == "SQLite":
                    url = f"sqlite:///{workdir}/sort-{size}.db"
                else:
                    schemas.append(f"bench_sort_{uuid.uuid4().hex[:8]}")
                    url = f"{PG_URL}?schema={schemas[-1]}"
                store = open_store(url)
                start = time.perf_counter()
                load_observations(store, size, 1000)
                print(f"loaded {size} Observations into {label} in {time.perf_counter() - start:.0f}s", flush=True)
                if label == "PostgreSQL":
                    with psycopg.connect(PG_URL, autocommit=True, options=f"-c search_path={schemas[-1]}") as conn:
                        conn.execute("VACUUM ANALYZE")
                else:
                    assert isinstance(store, SqlStore)
                    with store.transaction() as tx:
                        tx.cur.execute("ANALYZE")
                for name, items in QUERIES.items():
                    old = timings(store, items, args.rounds, bounded=False)
                    new = timings(store, items, args.rounds, bounded=True)
                    rows.append((label, size, name, *old, *new))
                store.close()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"\n{'backend':11} {'resources':>9} {'query':17} {'unbounded p50':>13} {'p99':>7} "
          f"{'bounded p50':>11} {'p99':>7} {'speed-up':>8}")
    for label, size, name, old50, old99, new50, new99 in rows:
        print(f"{label:11} {size:9} {name:17} {old50:13.2f} {old99:7.2f} {new50:11.2f} {new99:7.2f} "
              f"{old50 / new50:7.1f}x")
    print("\ngrowth of the bounded p50 from the smallest to the largest size (1.0 = flat):")
    for label in ("SQLite", "PostgreSQL"):
        for name in QUERIES:
            mine = [r for r in rows if r[0] == label and r[2] == name]
            grew, was = mine[-1][5] / mine[0][5], mine[-1][3] / mine[0][3]
            print(f"  {label:11} {name:17} {grew:5.2f}x  (unbounded {was:5.2f}x)")


if __name__ == "__main__":
    main()
