"""Paging by ``next`` links while matches already read are deleted or edited away (search.html#paging):
each page starts after the last match of the page before (its ``_cursor``), not at a position, so
the pages still give every match once and in the order of one unpaged search, on both backends,
whichever plan reads the pages (row-id and type walks, the sorted index walks, the sorted matches,
the plain SQL), for sorts with ties and resources that lack the key.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway import jsonio
from gateway.fhir import bundles
from gateway.search.query import QueryParser, SearchError, SearchLimits, encode_cursor
from gateway.search.registry import default_registry
from gateway.store import ResourceStore
from gateway.store.sql import SqlStore

PAGE = 4
COUNT = 30
# A small cap makes the searches "broad": the row-id walk reads their pages.
PARSER = QueryParser(default_registry(), PAGE, 1000, SearchLimits(total_cap=3))
ORACLE = QueryParser(default_registry(), 1000, 1000)
SORTS = [None, "birthdate", "-birthdate", "family", "-family", "gender", "-gender", "_lastUpdated",
         "-_lastUpdated", "-_id", "family,-birthdate", "-gender,birthdate"]
SHAPES = {
    "one-criterion": [],
    "two-criteria": [("gender", "male,female")],
    "negation": [("gender:not", "other")],
    "date-window": [("birthdate", "ge1960"), ("birthdate", "lt1963")],  # the window walk, newest first
}


def _load(store: ResourceStore, system: str) -> None:
    """COUNT Patients: many ties on each key, some without a birth date or a family name, some with two."""
    with store.transaction() as tx:
        for n in range(COUNT):
            body: dict[str, Any] = {
                "resourceType": "Patient",
                "identifier": [{"system": system, "value": str(n)}],
                "gender": ["male", "female", "other"][n % 3] if n % 5 else "male",
            }
            if n % 4:
                body["birthDate"] = f"19{60 + n % 3}-01-0{1 + n % 2}"
            if n % 6:
                body["name"] = [{"family": f"Fam{n % 4}"}]
            if n % 7 == 1:  # two values: the walk meets the resource at each, its key is the first
                body["name"] = [{"family": f"Fam{n % 4}"}, {"family": f"Fam{(n + 2) % 4}", "use": "old"}]
            tx.create(body)


def _ids(result: Any) -> list[str]:
    return [r.id for r in result.resources]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sort", SORTS, ids=lambda s: s or "default")
def test_pages_read_while_read_matches_go_away_give_every_match_once_in_order(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch, sort: str | None, shape: str
) -> None:
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "SORT_WALK_MIN", 4)  # the sorted and type walks, with few rows
    monkeypatch.setattr(SqlStore, "RID_WALK_FIRST", 5)
    _page_while_removing(store, [*SHAPES[shape], *([("_sort", sort)] if sort else [])])


@pytest.mark.parametrize("sort", ["birthdate", "-birthdate", "family", "-family"])
def test_the_unbounded_index_walk_pages_by_cursor_too(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch, sort: str
) -> None:
    # ``date_sort_walk``: the walk of a query the bounded plan does not take (a chain, ``_has``, a data
    # policy), and the resources without the key after it.
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "bounded_sort", False)
    _page_while_removing(store, [("_sort", sort)])


def _page_while_removing(store: ResourceStore, extra: list[tuple[str, str]]) -> None:
    """Page a search of fresh Patients, one read match deleted or edited away before each next page."""
    system = f"urn:test:keyset:{uuid.uuid4().hex}"
    _load(store, system)
    items = [("identifier", f"{system}|"), *extra]
    expected = _ids(store.search(ORACLE.parse("Patient", items)))
    assert len(expected) > 2 * PAGE

    read: list[str] = []
    query = PARSER.parse("Patient", items)
    for turn in range(COUNT):
        result = store.search(query)
        read += _ids(result)
        links = bundles.page_links(
            "http://x/fhir/Patient", query.used, query.count, query.offset, result.total, len(result.resources),
            result.snapshot, cursor=query.cursor, more=result.more,
            after=None if result.after is None else encode_cursor(*result.after),
        )
        following = next((url for rel, url in links if rel == "next"), None)
        if following is None:
            break
        with store.transaction() as tx:  # one match read already goes away before the next page
            victim = read[turn]
            if turn % 2:
                tx.delete("Patient", victim)
            else:
                current = tx.read("Patient", victim)
                assert current is not None
                moved = {**jsonio.loads(current.content), "identifier": [{"system": "urn:elsewhere"}]}
                tx.update(moved)
        query = PARSER.parse("Patient", parse_qsl(urlsplit(following).query))
    assert read == expected


def test_a_cursor_this_server_did_not_make_is_refused() -> None:
    for raw in ("nonsense!", encode_cursor(5, ["text"]), encode_cursor(5, [])):
        with pytest.raises(SearchError):
            PARSER.parse("Patient", [("_sort", "birthdate"), ("_cursor", raw)])
    with pytest.raises(SearchError):  # a number where the key is text: no SQL comparison of the two
        PARSER.parse("Patient", [("_sort", "family"), ("_cursor", encode_cursor(5, [1.5]))])
    # The cursor may come before the _sort whose keys it holds values of.
    parsed = PARSER.parse("Patient", [("_cursor", encode_cursor(5, [1.0, None])), ("_sort", "birthdate,family")])
    assert parsed.after == (5, (1.0, None))
