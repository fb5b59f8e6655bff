"""Sorting by a date: the bounded index walk and its fallback (the few matches, sorted) give the
same pages as a plain oracle, on both backends, whichever path a query takes (``SORT_WALK_MIN``
is both the walk's least cap and the match count below which the walk is skipped)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import Store
from gateway.store.sql import SqlStore

PARSER = QueryParser(default_registry(), 20, 1000)
CODES = ["a", "b", "c", "rare"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def _load(store: Store, rng: random.Random) -> list[dict[str, Any]]:
    """120 Observations, one transaction each (row ids in creation order); distinct instants."""
    minutes = rng.sample(range(0, 500_000), 120)
    made: list[dict[str, Any]] = []
    for n in range(120):
        code = "rare" if n % 40 == 0 else rng.choice(CODES[:3])
        body: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:t", "code": code}]},
            "category": [{"coding": [{"system": "urn:cat", "code": rng.choice(["x", "y"])}]}],
        }  # fmt: skip
        when = START + timedelta(minutes=minutes[n])
        if n % 9 == 4:
            pass  # no date at all: sorts last
        elif n % 7 == 3:
            body["effectivePeriod"] = {"start": when.strftime("%Y-%m-%dT%H:%M:00Z"),
                                       "end": (when + timedelta(hours=5)).strftime("%Y-%m-%dT%H:%M:00Z")}
        else:
            body["effectiveDateTime"] = when.strftime("%Y-%m-%dT%H:%M:00Z")
        with store.transaction() as tx:
            stored = tx.create(body).resource
        made.append({**body, "id": stored.id, "order": n})
    return made


def _key(resource: dict[str, Any], descending: bool) -> str | None:
    if "effectiveDateTime" in resource:
        return str(resource["effectiveDateTime"])
    if "effectivePeriod" in resource:
        return str(resource["effectivePeriod"]["end" if descending else "start"])
    return None


def _oracle(made: list[dict[str, Any]], code: str | None, cat: str | None, descending: bool) -> list[str]:
    chosen = [
        r for r in made
        if (code is None or r["code"]["coding"][0]["code"] == code)
        and (cat is None or r["category"][0]["coding"][0]["code"] == cat)
    ]  # fmt: skip
    dated = sorted((r for r in chosen if _key(r, descending)), key=lambda r: (_key(r, descending), r["order"]),
                   reverse=descending)  # fmt: skip
    undated = sorted((r for r in chosen if not _key(r, descending)), key=lambda r: r["order"], reverse=descending)
    return [r["id"] for r in dated + undated]


@pytest.mark.parametrize(
    "walk", [(10, 50), (4, 1), (2000, 50)], ids=["walk-fills", "walk-falls-back", "few-matches-sorted"]
)
def test_pages_sorted_by_date_match_the_oracle(
    store: Store, walk: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "SORT_WALK_MIN", walk[0])
    monkeypatch.setattr(SqlStore, "SORT_WALK_PER_ROW", walk[1])
    rng = random.Random(5)
    made = _load(store, rng)
    for code in (None, "a", "rare", "nothing"):
        for cat in (None, "x"):
            for descending in (True, False):
                expected = _oracle(made, code, cat, descending)
                for count, offset in ((5, 0), (5, 5), (20, 10), (7, 100)):
                    items = [("_sort", "-date" if descending else "date"), ("_count", str(count)),
                             ("_offset", str(offset)), ("_total", "none")]  # fmt: skip
                    if code:
                        items.append(("code", code))
                    if cat:
                        items.append(("category", cat))
                    got = [r.id for r in store.search(PARSER.parse("Observation", items)).resources]
                    assert got == expected[offset : offset + count], (code, cat, descending, count, offset)
