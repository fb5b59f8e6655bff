"""Date sorts walked within the window their criteria allow (``gateway.search.date_window``): on
both backends, pages of ``_sort=-date`` beside date criteria equal an oracle computed here, with
points, days, periods, open ends, several values a resource (Timing events), updates that narrow
a spread, deletions, and the walk's cap small enough to make it give up."""

from __future__ import annotations

import calendar
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.search.query import QueryParser, SearchLimits
from gateway.search.registry import default_registry
from gateway.store import Store
from gateway.store.sql import SqlStore

PARSER = QueryParser(default_registry(), 20, 1000)
START = datetime(2024, 1, 1, tzinfo=UTC)
FAR = 1e12
WALKS = [(10, 8), (4, 1), (2000, 50)]
WALK_IDS = ["walk-fills", "walk-falls-back", "walk-reads-all"]
PAGES = ((5, 0), (5, 5), (20, 10), (7, 100), (200, 0))
Row = tuple[float, float]


def _epoch(when: datetime) -> float:
    return float(calendar.timegm(when.utctimetuple()))


def _minute(when: datetime) -> tuple[str, Row]:
    return when.strftime("%Y-%m-%dT%H:%M:00Z"), (_epoch(when), _epoch(when) + 60)


def _day(when: datetime) -> tuple[str, Row]:
    day = when.replace(hour=0, minute=0)
    return day.strftime("%Y-%m-%d"), (_epoch(day), _epoch(day) + 86400)


def _effective(rng: random.Random, n: int, open_start: bool) -> tuple[dict[str, Any], list[Row]]:
    """One Observation's date in one of several shapes, and its ``(lo, hi)`` rows as FHIR reads them."""
    when = START + timedelta(days=rng.randrange(120), minutes=rng.randrange(1440))
    shape = n % 9
    if shape == 1:
        text, row = _day(when)
        return {"effectiveDateTime": text}, [row]
    if shape == 2:  # a period of up to 40 days
        start, (lo, _) = _minute(when)
        end, (_, hi) = _minute(when + timedelta(days=rng.randrange(1, 40)))
        return {"effectivePeriod": {"start": start, "end": end}}, [(lo, hi)]
    if shape == 3:  # still going: an open end
        start, (lo, _) = _minute(when)
        return {"effectivePeriod": {"start": start}}, [(lo, FAR)]
    if shape == 4 and open_start:
        end, (_, hi) = _minute(when)
        return {"effectivePeriod": {"end": end}}, [(-FAR, hi)]
    if shape == 5:  # several values, up to 60 days apart
        events = [_minute(when + timedelta(days=rng.randrange(60))) for _ in range(rng.randrange(2, 4))]
        return {"effectiveTiming": {"event": [text for text, _ in events]}}, [row for _, row in events]
    if shape == 6:
        return {}, []
    text, row = _minute(when)
    return {"effectiveDateTime": text}, [row]


def _load(store: Store, rng: random.Random, open_start: bool) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    for n in range(160):
        effective, rows = _effective(rng, n, open_start)
        body: dict[str, Any] = {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:t", "code": rng.choice("ab")}]}, **effective,
        }  # fmt: skip
        with store.transaction() as tx:
            stored = tx.create(body).resource
        made.append({"id": stored.id, "body": body, "rows": rows, "order": n})
    with store.transaction() as tx:
        for r in made[::17]:  # a spread recorded by a value that is gone narrows nothing
            tx.delete("Observation", r["id"])
        for r in made[5::23]:  # an update narrows a period to a point
            if r in made[::17]:
                continue
            point, row = _minute(START + timedelta(days=rng.randrange(120)))
            body = {k: v for k, v in r["body"].items() if not k.startswith("effective")}
            tx.update({**body, "id": r["id"], "effectiveDateTime": point})
            r["rows"] = [row]
    gone = {r["id"] for r in made[::17]}
    return [r for r in made if r["id"] not in gone]


def _value_row(prefix: str, a: float, b: float, lo: float, hi: float) -> bool:
    """R4 search.html#prefix for a search range ``[a, b)`` against a stored range ``[lo, hi)``."""
    return {
        "eq": lo >= a and hi <= b,
        "ne": not (lo >= a and hi <= b),
        "gt": hi > b,
        "lt": lo < a,
        "ge": hi > b or lo >= a,
        "le": lo < a or hi <= b,
        "sa": lo >= b,
        "eb": hi <= a,
    }[prefix]


def _search_range(value: str) -> tuple[str, float, float]:
    prefix, date = value[:2], value[2:]
    if len(date) == 7:
        first = datetime.strptime(date, "%Y-%m").replace(tzinfo=UTC)
        days = calendar.monthrange(first.year, first.month)[1]
        return prefix, _epoch(first), _epoch(first) + days * 86400
    day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    return prefix, _epoch(day), _epoch(day) + 86400


QUERIES: list[list[str]] = [
    ["ge2024-02-01", "lt2024-02-15"],
    ["ge2024-03-10", "le2024-03-10"],
    ["eq2024-02-03"],
    ["eq2024-03"],
    ["le2024-01-20"],
    ["lt2024-02-01"],
    ["eb2024-01-10"],
    ["gt2024-04-20"],
    ["ge2024-04-01"],
    ["sa2024-03-01"],
    ["lt2024-01-15,ge2024-04-15"],  # values ORed: the window is their hull
    ["ne2024-02", "lt2024-03-01"],
    ["ge2025-01-01"],
    ["lt2023-01-01"],
]


@pytest.mark.parametrize("open_start", [False, True], ids=["closed-starts", "an-open-start"])
@pytest.mark.parametrize("walk", WALKS, ids=WALK_IDS)
def test_newest_first_within_date_criteria_matches_the_oracle(
    store: Store, walk: tuple[int, int], open_start: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "SORT_WALK_MIN", walk[0])
    monkeypatch.setattr(SqlStore, "SORT_WALK_PER_ROW", walk[1])
    made = _load(store, random.Random(21 if open_start else 13), open_start)
    for criteria in QUERIES:
        for code in (None, "a"):
            tests = [[_search_range(v) for v in c.split(",")] for c in criteria]
            chosen = [
                r for r in made
                if (code is None or r["body"]["code"]["coding"][0]["code"] == code)
                and all(any(_value_row(p, a, b, lo, hi) for p, a, b in ors for lo, hi in r["rows"]) for ors in tests)
            ]  # fmt: skip
            # Newest first by each resource's latest end; ties by row id, newest first.
            expected = [r["id"] for r in sorted(chosen, key=lambda r: (max(h for _, h in r["rows"]), r["order"]),
                                                reverse=True)]  # fmt: skip
            for count, offset in PAGES:
                items = [("date", c) for c in criteria] + [("_sort", "-date"), ("_count", str(count)),
                                                           ("_offset", str(offset)), ("_total", "none")]  # fmt: skip
                if code is not None:
                    items.append(("code", code))
                got = [r.id for r in store.search(PARSER.parse("Observation", items)).resources]
                assert got == expected[offset : offset + count], (criteria, code, count, offset)


def test_a_spread_is_recorded_when_written_and_never_narrowed(store: Store) -> None:
    assert isinstance(store, SqlStore)
    with store.transaction() as tx:
        period = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-11T00:00:00Z"}
        wide = tx.create({"resourceType": "Encounter", "status": "finished", "class": {"code": "HH"},
                          "period": period}).resource  # fmt: skip
        tx.create({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "HH"},
                   "period": {"start": "2023-01-01T00:00:00Z"}})  # fmt: skip
    with store._read_cursor() as cur:
        cur.execute(store.q("SELECT spread FROM date_spreads WHERE rtype = ? AND param = ?"), ("Encounter", "date"))
        assert cur.fetchone()[0] == pytest.approx(10 * 86400 + 1)  # the open end is left out
    with store.transaction() as tx:
        tx.update({"resourceType": "Encounter", "id": wide.id, "status": "finished", "class": {"code": "HH"},
                   "period": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:10:00Z"}})  # fmt: skip
    with store._read_cursor() as cur:
        cur.execute(store.q("SELECT spread FROM date_spreads WHERE rtype = ? AND param = ?"), ("Encounter", "date"))
        assert cur.fetchone()[0] == pytest.approx(10 * 86400 + 1)


def test_a_rolled_back_spread_is_not_taken_for_written(store: Store) -> None:
    assert isinstance(store, SqlStore)
    point = {"resourceType": "Encounter", "status": "finished", "class": {"code": "HH"},
             "period": {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T10:00:00Z"}}  # fmt: skip
    with store.transaction() as tx:
        tx.create(point)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.create({**point, "period": {"start": "2024-01-01T00:00:00Z", "end": "2024-03-01T00:00:00Z"}})
        raise RuntimeError("undo")
    # Written again after the rollback, the wide period must widen the spread again.
    with store.transaction() as tx:
        wide = tx.create({**point, "period": {"start": "2024-01-01T00:00:00Z", "end": "2024-03-01T00:00:00Z"}})
    items = [("date", "lt2024-01-02"), ("_sort", "-date"), ("_total", "none")]
    got = [r.id for r in store.search(PARSER.parse("Encounter", items)).resources]
    assert got == [wide.resource.id]


def test_a_store_written_before_spreads_were_kept_gets_them_on_upgrade(store: Store) -> None:
    assert isinstance(store, SqlStore)
    with store.transaction() as tx:
        for start, end in (("2024-01-01", "2024-01-04"), ("2024-02-01", "2024-02-02"), ("2024-03-01", None)):
            period = {"start": start} if end is None else {"start": start, "end": end}
            tx.create({"resourceType": "Encounter", "status": "finished", "class": {"code": "HH"}, "period": period})
    # As a database of schema 18 was: no table of spreads.
    with store._write_cursor() as cur:
        cur.execute("DROP TABLE date_spreads")
        cur.execute("DELETE FROM schema_migrations WHERE version = 19")
    store.spread_floor.clear()
    store.migrate()
    with store._read_cursor() as cur:
        cur.execute(store.q("SELECT spread FROM date_spreads WHERE rtype = ? AND param = ?"), ("Encounter", "date"))
        assert cur.fetchone()[0] == pytest.approx(4 * 86400)  # 1 to 4 January, whole days; the open end left out


@pytest.mark.parametrize("cap", [1000, 12], ids=["window-read-whole", "window-above-the-cap"])
def test_an_estimated_total_in_a_closed_window_is_exact_or_left_out(store: Store, cap: int) -> None:
    assert isinstance(store, SqlStore)
    parser = QueryParser(default_registry(), 20, 1000, SearchLimits(total_cap=cap))
    made = _load(store, random.Random(5), False)
    windows = (["ge2024-02-01", "lt2024-02-15"], ["eq2024-03"], ["eq2024-02-03"], ["ge2024-03-10", "le2024-03-10"])
    for criteria in windows:
        tests = [[_search_range(v) for v in c.split(",")] for c in criteria]
        for code in (None, "a", "b"):
            expected = [
                r for r in made
                if (code is None or r["body"]["code"]["coding"][0]["code"] == code)
                and all(any(_value_row(p, a, b, lo, hi) for p, a, b in ors for lo, hi in r["rows"]) for ors in tests)
            ]  # fmt: skip
            items = [("date", c) for c in criteria] + ([("code", code)] if code else [])
            result = store.search(parser.parse("Observation", items))
            if cap == 1000:
                assert result.total == len(expected), (criteria, code)
            else:
                assert result.total in (len(expected), None), (criteria, code)
                if len(expected) > cap:
                    assert result.total is None
            accurate = store.search(parser.parse("Observation", [*items, ("_total", "accurate")]))
            assert accurate.total == len(expected)


def test_window_criteria_beside_other_date_modifiers_answer(store: Store) -> None:
    assert isinstance(store, SqlStore)
    made = _load(store, random.Random(9), False)
    window = [[_search_range("ge2024-02-01")], [_search_range("lt2024-03-15")]]
    in_window = [r for r in made
                 if all(any(_value_row(p, a, b, lo, hi) for p, a, b in ors for lo, hi in r["rows"]) for ors in window)]
    _, a, b = _search_range("ne2024-02")
    expected = {"missing": len(in_window),
                "ne": sum(1 for r in in_window if any(_value_row("ne", a, b, lo, hi) for lo, hi in r["rows"]))}
    for name, extra in (("missing", ("date:missing", "false")), ("ne", ("date", "ne2024-02")),
                        ("ap", ("date", "ap2024-03-01"))):  # fmt: skip
        items = [("date", "ge2024-02-01"), ("date", "lt2024-03-15"), extra, ("_total", "accurate")]
        for sort in ([], [("_sort", "-date")]):
            result = store.search(PARSER.parse("Observation", items + sort))
            assert result.total is not None
            if name in expected:
                assert result.total == expected[name], (name, sort)
