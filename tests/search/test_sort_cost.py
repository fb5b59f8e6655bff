"""Sorting by a reference parameter costs one index probe per match, on the parameters R4 defines
as others put together too (``patient`` is ``subject`` restricted to Patients, read from
``subject``'s rows, see ``param_rows``).

SQLite answered ``Observation?_sort=patient`` by scanning every reference to a Patient for each
Observation (its planner took the target index for ``ttype = ?``): 10 s for 6,000 Observations.
The cost is counted in SQLite virtual-machine steps (deterministic), not in seconds.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import Store
from gateway.store.sqlite import SQLiteStore

PARSER = QueryParser(default_registry(), 20, 1000)
N = 300


def _load(store: Store) -> list[dict[str, Any]]:
    """N Observations, each of its own Patient (ids out of order), every 10th of a Group instead."""
    made: list[dict[str, Any]] = []
    with store.transaction() as tx:
        for n in range(N):
            target = f"Group/g{n:04d}" if n % 10 == 0 else f"Patient/p{(n * 7919) % N:04d}"
            body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "subject": {"reference": target}}  # fmt: skip
            stored = tx.create(body).resource
            made.append({**body, "id": stored.id, "order": n})
    return made


def _oracle(made: list[dict[str, Any]], descending: bool) -> list[str]:
    patients = [r for r in made if r["subject"]["reference"].startswith("Patient/")]
    others = [r for r in made if not r["subject"]["reference"].startswith("Patient/")]
    ordered = sorted(patients, key=lambda r: r["subject"]["reference"], reverse=descending)
    return [r["id"] for r in ordered + others]  # those without the key last, in row-id order either way


def _steps(store: SQLiteStore, items: list[tuple[str, str]]) -> int:
    """SQLite virtual-machine steps (in thousands) of one search on this thread's connection."""
    counted = [0]

    def tick() -> int:
        counted[0] += 1
        return 0

    conn: sqlite3.Connection = store._connection()
    conn.set_progress_handler(tick, 1000)
    try:
        store.search(PARSER.parse("Observation", items))
    finally:
        conn.set_progress_handler(None, 1000)
    return counted[0]


@pytest.mark.parametrize("descending", [False, True])
def test_sort_by_an_alias_reference_parameter_orders_by_its_target(store: Store, descending: bool) -> None:
    made = _load(store)
    expected = _oracle(made, descending)
    sort = "-patient" if descending else "patient"
    for offset in (0, 20, 260, 280):
        result = store.search(PARSER.parse("Observation", [("_sort", sort), ("_count", "20"),
                                                           ("_offset", str(offset))]))  # fmt: skip
        assert [r.id for r in result.resources] == expected[offset : offset + 20]


def test_sort_by_an_alias_reference_parameter_costs_what_sort_by_its_parameter_costs(
    sqlite_store: Store,
) -> None:
    assert isinstance(sqlite_store, SQLiteStore)
    _load(sqlite_store)
    for sort in ("patient", "-patient"):
        plain = _steps(sqlite_store, [("_sort", sort.replace("patient", "subject"))])
        alias = _steps(sqlite_store, [("_sort", sort)])
        assert alias <= 2 * plain + 5, (sort, alias, plain)
