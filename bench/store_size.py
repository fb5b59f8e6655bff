"""Where a record's bytes go in the store (issue 14): a per-table and per-index breakdown of the
growth caused by CHT assessments ingested and delivered to DHIS2, on SQLite and PostgreSQL.

    python -m bench.store_size [--backend sqlite --backend postgresql] [--persons 100] [--records 300]

The path is the national load test's (``bench/national_load.py``) on one ``gateway serve`` with its
in-process worker (SQLite allows one process): the DHIS2 sandbox in its own process (the national
test's 10% failures unless ``--no-faults``; no added latency), the CHW area, ``--persons``
households and children ingested and delivered first, then ``--records`` assessments POSTed one
per request to ``/ingest/cht`` and delivered to DHIS2 with the UIDs written back. The audit trail
is off (``--audit`` to keep it), as in the national test's per-record figure, which leaves it out.

Per table and index: rows added and bytes added per record between the end of the preload and
the end of the load (PostgreSQL: ``pg_relation_size`` of the heap, its TOAST and free-space/
visibility maps, each index; SQLite: ``dbstat`` pages of each table and index). Then PostgreSQL's
dead tuples (``pg_stat_user_tables``), and the sizes again after ``VACUUM`` and ``VACUUM FULL``
(SQLite: after ``VACUUM``), to tell bytes that stay from space the database has not reclaimed yet.
Then what a record caused: resources and versions by type, change-feed rows, message log lines,
Provenance resources by writer. The figures are bytes, not times: the machine's load does not
change them.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from bench.backfill_bench import PG_URL, fresh_store_url
from bench.national_load import (
    Plan,
    Sandbox,
    _accepted,
    _config,
    _event_uid,
    _post,
    _preload,
    _settled,
    _tokens,
    pg_schema,
)
from dhis2_sandbox import DEFAULT_TOKEN
from tests.dhis2 import cht_records as cht
from tests.support.processes import GatewayProcess

Sizes = dict[str, tuple[int, int]]  # relation -> (rows or -1 for an index, bytes)


class _One:
    """One API process standing in for the national test's two (its helpers take turns over ``apis``)."""

    def __init__(self, api: GatewayProcess) -> None:
        self.apis = [api, api]


def pg_sizes(url: str) -> Sizes:
    """Each table's rows, heap, TOAST+maps and each index's bytes, in one schema."""
    schema = pg_schema(url)
    out: Sizes = {}
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT c.oid, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname",
            (schema,),
        ).fetchall()
        for oid, name in tables:
            rows, heap, table = conn.execute(
                f'SELECT (SELECT count(*) FROM "{schema}"."{name}"), pg_relation_size(%s), pg_table_size(%s)',
                (oid, oid),
            ).fetchone() or (0, 0, 0)
            out[name] = (int(rows), int(heap))
            out[f"{name} (toast+maps)"] = (-1, int(table) - int(heap))
            for index, size in conn.execute(
                "SELECT i.relname, pg_relation_size(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
                " WHERE x.indrelid = %s ORDER BY i.relname",
                (oid,),
            ).fetchall():
                out[f"  {index}"] = (-1, int(size))
    return out


def sqlite_sizes(path: Path) -> Sizes:
    """Each table's rows and each table's and index's bytes (``dbstat``), in one SQLite file."""
    out: Sizes = {}
    with sqlite3.connect(path) as conn:
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'index')"))
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"))
        sizes = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        for name in sorted(n for n, k in kinds.items() if k == "table"):
            rows = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            out[name] = (int(rows), int(sizes.get(name, 0)))
            for index in sorted(i for i, t in owner.items() if t == name):
                out[f"  {index}"] = (-1, int(sizes.get(index, 0)))
        free = conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        out["(free pages)"] = (-1, int(free))
    return out


def print_growth(title: str, before: Sizes, after: Sizes, records: int) -> None:
    """Rows and bytes added per relation, per record; relations that did not grow are left out."""
    print(f"\n{title}")
    print(f"{'relation':<40}{'rows added':>11}{'rows/rec':>9}{'KB added':>11}{'bytes/rec':>11}{'share':>7}")
    total = sum(b for _, b in after.values()) - sum(b for _, b in before.values())
    for name, (rows, size) in after.items():
        rows0, size0 = before.get(name, (0, 0))
        grown = size - size0
        if grown == 0 and rows == rows0:
            continue
        added = f"{rows - rows0:>11,}{(rows - rows0) / records:>9.2f}" if rows >= 0 else f"{'':>20}"
        print(f"{name:<40}{added}{grown / 1024:>11,.0f}{grown / records:>11,.0f}{grown / max(1, total):>7.0%}")
    print(f"{'total':<40}{'':>20}{total / 1024:>11,.0f}{total / records:>11,.0f}")


def print_sizes(title: str, sizes: Sizes) -> None:
    """Absolute size per relation (after a vacuum)."""
    print(f"\n{title}")
    for name, (rows, size) in sizes.items():
        if size:
            print(f"{name:<40}{rows if rows >= 0 else '':>11}{size / 1024:>11,.0f} KB")
    print(f"{'total':<40}{'':>11}{sum(s for _, s in sizes.values()) / 1024:>11,.0f} KB")


def _counts(query: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in query(sql)]


def explain_rows(query: Any) -> None:
    """What the records caused, by kind: resources and versions by type, feed rows, log lines, Provenances."""
    print("\nresources (current rows) and superseded versions (history) by type, whole store:")
    current = dict(_counts(query, "SELECT rtype, count(*) FROM resources GROUP BY rtype"))
    history = dict(_counts(query, "SELECT rtype, count(*) FROM history GROUP BY rtype"))
    sizes = dict(_counts(query, "SELECT rtype, avg(length(content)) FROM resources GROUP BY rtype"))
    print(f"{'type':<22}{'resources':>10}{'history':>9}{'versions/res':>13}{'avg JSON B':>11}")
    for rtype in sorted(current):
        n, h = current[rtype], history.get(rtype, 0)
        print(f"{rtype:<22}{n:>10,}{h:>9,}{(n + h) / n:>13.2f}{float(sizes[rtype]):>11,.0f}")
    provenance = _counts(
        query,
        "SELECT CASE WHEN id LIKE 'dhis2-uid-%' THEN 'DHIS2 write-back' ELSE 'mapping (one per record)' END,"
        " count(*) FROM resources WHERE rtype = 'Provenance' GROUP BY 1",
    )
    print("Provenance by writer: " + ", ".join(f"{k} {v:,}" for k, v in provenance))
    print("change feed rows by op: " + ", ".join(f"{k} {v:,}" for k, v in _counts(
        query, "SELECT op, count(*) FROM changes GROUP BY op ORDER BY op")))  # fmt: skip
    print("message log lines by kind/status: " + ", ".join(f"{k}/{s} {v:,}" for k, s, v in _counts(
        query, "SELECT kind, status, count(*) FROM message_log GROUP BY kind, status ORDER BY 1, 2")))  # fmt: skip
    print("index rows per current resource: " + ", ".join(
        f"{t} {_counts(query, f'SELECT count(*) FROM {t}')[0][0] / max(1, sum(current.values())):.1f}"
        for t in ("idx_token", "idx_string", "idx_date", "idx_ref", "idx_number")))  # fmt: skip
    for table in ("idx_token", "idx_ref", "idx_date", "idx_number"):
        rows = _counts(query, f"SELECT rtype, param, count(*) FROM {table} GROUP BY rtype, param ORDER BY 3 DESC")
        print(f"{table} rows by type.param: " + ", ".join(f"{t}.{p} {n:,}" for t, p, n in rows[:14]))


def _settings(config: Path, store_url: str, queue: Path, audit: bool) -> None:
    data = yaml.safe_load(config.read_text())
    data["store_url"] = store_url
    data["queue_url"] = f"sqlite:///{queue}"
    data.pop("queue_prefix", None)
    data["delivery"]["in_process_worker"] = True
    data["audit"] = {"enabled": audit}
    config.write_text(yaml.safe_dump(data))


async def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.5)


async def _drive(one: _One, sandbox: Sandbox, tokens: dict[str, str], persons: int, records: int,
                 snapshot: Any) -> tuple[Sizes, Sizes]:  # fmt: skip
    """Preload and deliver, take the ``before`` snapshot, send the assessments, wait until all are at DHIS2;
    the snapshots before the preload and before the assessments."""
    empty: Sizes = snapshot()
    await _preload(one, tokens, persons)  # type: ignore[arg-type]
    await _wait(lambda: _settled(one, tokens["monitor"]), 600, "the preload's delivery")  # type: ignore[arg-type]
    await asyncio.sleep(2.5)  # the message log's buffered lines
    before: Sizes = snapshot()
    expected: set[str] = set()
    gate = asyncio.Semaphore(8)
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {tokens['cht']}"},
                                 limits=limits) as client:  # fmt: skip

        async def send(i: int) -> None:
            async with gate:
                doc = cht.assessment(i % persons, refer="no", day=1 + i // persons)
                answer = await _post(one, client, {"doc": doc}, 0, time.monotonic() + 600)  # type: ignore[arg-type]
                uid = _event_uid(answer)
                if uid is not None:
                    expected.add(uid)

        await asyncio.gather(*(send(i) for i in range(records)))

    async def delivered() -> bool:
        return expected <= set(await _accepted(sandbox))

    await _wait(delivered, 900, "every record at the DHIS2 sandbox")
    await _wait(lambda: _settled(one, tokens["monitor"]), 600, "the queue to settle")  # type: ignore[arg-type]
    await asyncio.sleep(2.5)
    return empty, before


@contextmanager
def _deployment(
    store_url: str, folder: Path, faults: bool, audit: bool
) -> Iterator[tuple[_One, Sandbox, dict[str, str]]]:
    tokens = _tokens(store_url)
    sandbox = Sandbox(folder, 0.0, faults=faults)
    try:
        config = _config(folder, store_url, "unused", sandbox.url, Plan(scale=0.1, minutes=1))
        _settings(config, store_url, folder / "queue.db", audit)
        api = GatewayProcess(config, folder, {"DHIS2_PAT": DEFAULT_TOKEN})
        try:
            sandbox.wait_ready()
            api.wait_ready(120)
            yield _One(api), sandbox, tokens
        finally:
            api.stop()
    finally:
        sandbox.stop()


def measure(backend: str, persons: int, records: int, faults: bool, audit: bool) -> None:
    """One backend: the growth table, dead tuples, sizes after vacuums, and what the records caused."""
    postgres = backend == "postgresql"
    with tempfile.TemporaryDirectory(prefix="store-size-") as tmp, fresh_store_url(Path(tmp), postgres, "size") as url:
        folder = Path(tmp)
        db = Path(url.removeprefix("sqlite:///"))

        def snapshot() -> Sizes:
            return pg_sizes(url) if postgres else sqlite_sizes(db)

        with _deployment(url, folder, faults, audit) as (one, sandbox, tokens):
            empty, before = asyncio.run(_drive(one, sandbox, tokens, persons, records, snapshot))
        after = snapshot()
        print(f"\n======== {backend}: {persons} children preloaded, {records} assessments ingested and delivered")
        preload = 1 + 2 * persons
        grown = sum(b for _, b in before.values()) - sum(b for _, b in empty.values())
        print(f"preload (the area, {persons} households, {persons} children: {preload} records, delivered):"
              f" {grown / 1024:,.0f} KB, {grown / preload:,.0f} bytes per record")  # fmt: skip
        print_growth(f"{backend}: growth during the assessments (as measured, before any vacuum)", before, after,
                     records)  # fmt: skip
        if postgres:
            schema = pg_schema(url)
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                dead = conn.execute(
                    "SELECT relname, n_live_tup, n_dead_tup, autovacuum_count, last_autovacuum IS NOT NULL"
                    " FROM pg_stat_user_tables WHERE schemaname = %s AND n_dead_tup > 0 ORDER BY n_dead_tup DESC",
                    (schema,),
                ).fetchall()
                print("\ndead tuples (pg_stat_user_tables): " + ", ".join(
                    f"{name} {d:,} dead/{live:,} live (autovacuumed {n}x)" for name, live, d, n, _ in dead))  # fmt: skip  # noqa: E501
                conn.execute(f'SET search_path = "{schema}"')
                conn.execute("VACUUM")
                vacuumed = snapshot()
                print_growth(f"{backend}: growth after VACUUM (space kept, dead tuples freed for reuse)", before,
                             vacuumed, records)  # fmt: skip
                conn.execute("VACUUM FULL")
                full = snapshot()
                print_growth(f"{backend}: growth after VACUUM FULL (live data only; before the load not compacted)",
                             before, full, records)  # fmt: skip
                explain_rows(lambda sql: conn.execute(sql).fetchall())
        else:
            with sqlite3.connect(db) as lite:
                lite.execute("VACUUM")
                vacuumed = snapshot()
                print_growth(f"{backend}: growth after VACUUM", before, vacuumed, records)
                explain_rows(lambda sql: lite.execute(sql).fetchall())


def main(argv: list[str] | None = None) -> int:
    """Measure each backend in turn and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--persons", type=int, default=100, help="children preloaded")
    parser.add_argument("--records", type=int, default=300, help="assessments ingested and delivered")
    parser.add_argument("--no-faults", action="store_true", help="a DHIS2 sandbox that never fails")
    parser.add_argument("--audit", action="store_true", help="keep the audit trail on")
    args = parser.parse_args(argv)
    for backend in args.backend or ["sqlite", "postgresql"]:
        measure(backend, args.persons, args.records, not args.no_faults, args.audit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
