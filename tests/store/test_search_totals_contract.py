"""Search totals (issue 14): without ``_total``, or with ``_total=estimate``, a search counts at most
``total_cap`` matches, so its cost does not grow with the store; above the cap the total is left
out. ``_total=accurate``, ``_summary=count`` and ``_count=0`` count every match."""

from __future__ import annotations

import random

import pytest

from gateway.search.query import QueryParser, SearchLimits
from gateway.search.registry import default_registry
from gateway.store import ResourceStore
from gateway.store.sql import SqlStore
from tests.store.helpers import patient

CAP = 3
PARSER = QueryParser(default_registry(), 2, 1000, SearchLimits(total_cap=CAP))


def totals(store: ResourceStore, *items: tuple[str, str]) -> tuple[int | None, int]:
    """(Bundle total, resources on the page) of a Patient search."""
    result = store.search(PARSER.parse("Patient", list(items)))
    return result.total, len(result.resources)


def test_estimate_is_exact_up_to_the_cap_and_absent_above(store: ResourceStore) -> None:
    with store.transaction() as tx:
        for i in range(5):
            tx.create(patient("Many", gender="female", birthDate=f"200{i}-01-01"))
        for _ in range(CAP):
            tx.create(patient("Few", gender="male"))
    assert totals(store, ("family", "many")) == (None, 2)  # the default: estimate
    assert totals(store, ("family", "many"), ("_total", "estimate")) == (None, 2)
    assert totals(store, ("family", "few")) == (CAP, 2)
    assert totals(store, ("gender", "male"), ("_total", "estimate")) == (CAP, 2)
    assert totals(store, ("family", "nobody")) == (0, 0)
    # _lastUpdated alone is counted on the resources table: capped the same way.
    assert totals(store, ("_lastUpdated", "gt2000-01-01")) == (None, 2)
    assert totals(store, ("family", "many"), ("birthdate", "lt2003")) == (CAP, 2)


def test_asking_for_the_count_counts_every_match(store: ResourceStore) -> None:
    with store.transaction() as tx:
        for _ in range(5):
            tx.create(patient("Many"))
    assert totals(store, ("family", "many"), ("_total", "accurate")) == (5, 2)
    assert totals(store, ("family", "many"), ("_summary", "count")) == (5, 0)
    assert totals(store, ("family", "many"), ("_count", "0")) == (5, 0)
    assert totals(store, ("family", "many"), ("_total", "none")) == (None, 2)


def test_a_resource_matching_through_several_index_rows_counts_once(store: ResourceStore) -> None:
    with store.transaction() as tx:
        # Two names with the same family: two index rows for one resource.
        tx.create({"resourceType": "Patient", "name": [{"family": "Twice"}, {"family": "Twice", "use": "old"}]})
    assert totals(store, ("family", "twice")) == (1, 1)
    with store.transaction() as tx:
        tx.create({"resourceType": "Patient", "name": [{"family": "Twice"}, {"family": "Twice", "use": "old"}]})
    # Four index rows are more than the cap: whether they hold more than the cap resources is
    # not known without reading them all, so the estimate says nothing rather than a wrong figure.
    assert totals(store, ("family", "twice")) == (None, 2)
    assert totals(store, ("family", "twice"), ("_total", "accurate")) == (2, 2)


def page_ids(store: ResourceStore, *items: tuple[str, str]) -> list[str]:
    return [r.id for r in store.search(PARSER.parse("Patient", list(items))).resources]


def test_pages_of_a_criterion_with_many_matches_are_in_row_id_order(store: ResourceStore) -> None:
    with store.transaction() as tx:
        made = [tx.create(patient("Walk", gender="female" if i % 3 else "male")).resource.id for i in range(30)]
    females = [rid for i, rid in enumerate(made) if i % 3]
    for offset in (0, 2, 18):
        want = females[offset : offset + 2]
        # Default (estimate, above the cap): the row-id walk; accurate: every match sorted.
        assert page_ids(store, ("gender", "female"), ("_offset", str(offset))) == want
        assert page_ids(store, ("gender", "female"), ("_offset", str(offset)), ("_total", "accurate")) == want
    assert page_ids(store, ("gender", "female"), ("_offset", "20")) == []


def test_pages_without_a_total_are_in_row_id_order_for_few_and_many_matches(store: ResourceStore) -> None:
    with store.transaction() as tx:
        made = [tx.create(patient("Sparse", gender=("male", "other", "female", "female", "female")[i % 5])
                          ).resource.id for i in range(25)]
    males = [rid for i, rid in enumerate(made) if i % 5 == 0]  # 5: more than the cap, walked
    others = [rid for i, rid in enumerate(made) if i % 5 == 1]
    assert page_ids(store, ("gender", "male"), ("_total", "none")) == males[:2]
    assert page_ids(store, ("gender", "male"), ("_total", "none"), ("_offset", "4")) == males[4:]
    assert page_ids(store, ("gender", "other"), ("_total", "none"), ("_offset", "1")) == others[1:3]
    assert page_ids(store, ("gender", "unknown"), ("_total", "none")) == []
    with store.transaction() as tx:
        few = [tx.create(patient("Few", gender="unknown")).resource.id for _ in range(CAP - 1)]
    assert page_ids(store, ("gender", "unknown"), ("_total", "none")) == few  # not more than the cap: sorted


def test_sort_by_a_string_walks_its_index_lowest_first_or_highest_first(store: ResourceStore) -> None:
    names = [["Okoth"], ["Adongo", "Wafula"], ["Mutua"], [], ["Baraka", "Zuma"], ["Chege"]]
    with store.transaction() as tx:
        made = [tx.create({"resourceType": "Patient", "gender": "other",
                           "name": [{"family": n} for n in family]}).resource.id for family in names]
    by = dict(zip(made, names, strict=True))
    named = [rid for rid in made if by[rid]]
    ascending = sorted(named, key=lambda rid: min(by[rid])) + [rid for rid in made if not by[rid]]
    descending = sorted(named, key=lambda rid: max(by[rid]), reverse=True) + [rid for rid in made if not by[rid]]
    for sort, want in (("family", ascending), ("-family", descending)):
        got: list[str] = []
        for offset in range(0, 6, 2):
            got += page_ids(store, ("gender", "other"), ("_sort", sort), ("_offset", str(offset)))
        assert got == want, sort


def test_a_sparse_criterion_is_sorted_or_walked_as_the_cheaper_plan(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first walk covers 10 row ids: "early" fills its page there. "late" and "rare" have no
    # match there: "rare" (4 of 60 rows) is then sorted and "late" (over sqrt(page x 60)) walked
    # on. "mid" and "scarce" have one there: by the density it shows, the walk goes on for a
    # short page and the matches are sorted for a far one.
    assert isinstance(store, SqlStore)
    monkeypatch.setattr(SqlStore, "RID_WALK_FIRST", 10)
    later = ["Late"] * 26 + ["Mid"] * 12 + ["Scarce"] * 4 + ["Rare"] * 4 + ["Late"] * 4
    families = ["Early"] * 8 + ["Mid", "Scarce"] + random.Random(2).sample(later, len(later))
    with store.transaction() as tx:
        made = [tx.create(patient(f)).resource.id for f in families]
    for family in ("early", "late", "rare", "mid", "scarce"):
        want = [rid for rid, f in zip(made, families, strict=True) if f.lower() == family]
        assert len(want) > CAP
        for offset in (0, 2, len(want) - 1):
            got = page_ids(store, ("family", family), ("_offset", str(offset)), ("_total", "none"))
            assert got == want[offset : offset + 2], (family, offset)
            assert page_ids(store, ("family", family), ("_offset", str(offset))) == got


def test_a_code_alone_walked_in_row_id_order_whatever_systems_its_rows_have(store: ResourceStore) -> None:
    # PostgreSQL names the code's one system (or none) in the walk; two systems, or a system
    # and none, keep the plain walk. Every case gives the same pages.
    systems: dict[str, list[str | None]] = {"one": ["urn:a"], "none": [None], "two": ["urn:a", "urn:b"],
                                            "mixed": ["urn:a", None]}  # fmt: skip
    made: dict[str, list[str]] = {code: [] for code in systems}
    with store.transaction() as tx:
        for i in range(48):
            code = list(systems)[i % 4]
            system = systems[code][(i // 4) % len(systems[code])]
            coding = {"code": code} if system is None else {"system": system, "code": code}
            body = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "category": [{"coding": [coding]}]}  # fmt: skip
            made[code].append(tx.create(body).resource.id)
    for code, want in made.items():
        for offset in (0, 3, 11):
            items = [("category", code), ("_offset", str(offset)), ("_total", "none")]
            got = [r.id for r in store.search(PARSER.parse("Observation", items)).resources]
            assert got == want[offset : offset + 2], (code, offset)
