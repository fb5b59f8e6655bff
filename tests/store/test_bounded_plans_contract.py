"""Bounded search plans (issue 14): the walk of a type's rows for several criteria, and the bounded
walk of a string index beside a criterion, give the pages the plain plans give, on both backends,
whether the walk fills the page or falls back (``SORT_WALK_MIN`` and ``SORT_WALK_PER_ROW`` set the
walk's cap), with paging."""

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
START = datetime(2024, 1, 1, tzinfo=UTC)
WALKS = [(10, 8), (4, 1), (2000, 50)]
WALK_IDS = ["walk-fills", "walk-falls-back", "walk-reads-all"]
PAGES = ((5, 0), (5, 5), (20, 10), (7, 100))


def _observations(store: Store, rng: random.Random) -> list[dict[str, Any]]:
    """90 Observations of 3 codes over 90 days, some with a period, some without a date, some deleted."""
    made: list[dict[str, Any]] = []
    for n in range(90):
        when = START + timedelta(days=rng.randrange(90), minutes=rng.randrange(1440))
        code = rng.choice("abc")
        body: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            # Code "c" in two systems: a search naming the code alone cannot walk one system's rows.
            "code": {"coding": [{"system": "urn:u" if code == "c" and n % 3 else "urn:t", "code": code}]},
        }  # fmt: skip
        if n % 11 == 5:
            pass
        elif n % 7 == 3:
            body["effectivePeriod"] = {"start": when.strftime("%Y-%m-%dT%H:%M:00Z"),
                                       "end": (when + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:00Z")}
        else:
            body["effectiveDateTime"] = when.strftime("%Y-%m-%dT%H:%M:00Z")
        with store.transaction() as tx:
            stored = tx.create(body).resource
        made.append({**body, "id": stored.id})
    with store.transaction() as tx:
        for gone in made[::13]:
            tx.delete("Observation", gone["id"])
    return [r for i, r in enumerate(made) if i % 13]


def _in_month(r: dict[str, Any], lo: str, hi: str) -> bool:
    """``date=ge{lo}&date=lt{hi}`` for these resources (minutes and day-long bounds: string order)."""
    if "effectiveDateTime" in r:
        return bool(lo <= r["effectiveDateTime"][:10] < hi)
    if "effectivePeriod" in r:
        start, end = r["effectivePeriod"]["start"][:10], r["effectivePeriod"]["end"][:10]
        return bool(end >= lo and start < hi)
    return False


@pytest.mark.parametrize("walk", WALKS, ids=WALK_IDS)
def test_code_and_date_range_pages_match_the_oracle(
    store: Store, walk: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "SORT_WALK_MIN", walk[0])
    monkeypatch.setattr(SqlStore, "SORT_WALK_PER_ROW", walk[1])
    made = _observations(store, random.Random(3))
    for code, system in (("a", "urn:t"), ("a", None), ("c", None), ("c", "urn:u"), ("none", None)):
        for lo, hi in (("2024-01-10", "2024-02-20"), ("2024-03-01", "2024-03-05"), ("2025-01-01", "2025-02-01")):
            expected = [r["id"] for r in made if r["code"]["coding"][0]["code"] == code and _in_month(r, lo, hi)
                        and system in (None, r["code"]["coding"][0]["system"])]  # fmt: skip
            for total in ("none", "accurate", "estimate"):
                for count, offset in PAGES:
                    token = code if system is None else f"{system}|{code}"
                    items = [("code", token), ("date", f"ge{lo}"), ("date", f"lt{hi}"),
                             ("_count", str(count)), ("_offset", str(offset)), ("_total", total)]  # fmt: skip
                    result = store.search(PARSER.parse("Observation", items))
                    assert [r.id for r in result.resources] == expected[offset : offset + count], (code, lo, total)
                    if total == "accurate":
                        assert result.total == len(expected)


def _patients(store: Store, rng: random.Random) -> list[dict[str, Any]]:
    families = ["Okoth", "Adongo", "Wafula", "Mutua", "Baraka", "Zuma", "Chege", "Njeri", "Achieng"]
    made: list[dict[str, Any]] = []
    for n in range(80):
        names = [{"family": f} for f in rng.sample(families, rng.choice((0, 1, 1, 1, 2)))]
        body: dict[str, Any] = {"resourceType": "Patient", "gender": rng.choice(["male", "female", "female"])}
        if names:
            body["name"] = names
        with store.transaction() as tx:
            stored = tx.create(body).resource
        made.append({**body, "id": stored.id, "order": n})
    return made


@pytest.mark.parametrize("walk", WALKS, ids=WALK_IDS)
def test_string_sort_beside_a_criterion_matches_the_oracle(
    store: Store, walk: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "SORT_WALK_MIN", walk[0])
    monkeypatch.setattr(SqlStore, "SORT_WALK_PER_ROW", walk[1])
    made = _patients(store, random.Random(8))
    for gender in ("male", "female", "other", None):
        chosen = [r for r in made if gender is None or r["gender"] == gender]
        named = [r for r in chosen if "name" in r]
        unnamed = [r["id"] for r in chosen if "name" not in r]
        for descending in (False, True):
            # Ties (the same family) in row-id order in the sort's direction; the unnamed last, oldest first.
            if descending:
                keyed = sorted(named, key=lambda r: (max(n["family"].lower() for n in r["name"]), r["order"]),
                               reverse=True)  # fmt: skip
            else:
                keyed = sorted(named, key=lambda r: (min(n["family"].lower() for n in r["name"]), r["order"]))
            expected = [r["id"] for r in keyed] + unnamed
            for count, offset in PAGES:
                items = [("_sort", "-family" if descending else "family"), ("_count", str(count)),
                         ("_offset", str(offset)), ("_total", "none")]  # fmt: skip
                if gender:
                    items.append(("gender", gender))
                got = [r.id for r in store.search(PARSER.parse("Patient", items)).resources]
                assert got == expected[offset : offset + count], (gender, descending, count, offset)
