"""History's ``_at`` in the store (both backends): the versions current at some point of a period."""

from __future__ import annotations

from datetime import datetime

import pytest

from gateway.search import date_range, from_epoch
from gateway.store import ResourceStore
from tests.store.helpers import patient
from tests.support.write_clock import WriteClock

T1, T2, T3 = "2024-02-01T00:00:00Z", "2024-03-15T10:00:00.500Z", "2024-05-01T00:00:00Z"


def period(value: str) -> tuple[datetime, datetime]:
    """The ``[lo, hi)`` a FHIR date, dateTime or instant denotes."""
    lo, hi = date_range(value)
    return from_epoch(lo), from_epoch(hi)


def versions_at(store: ResourceStore, rtype: str | None, rid: str | None, *values: str,
                since: datetime | None = None, until: datetime | None = None) -> list[tuple[str, int]]:
    """(id, version) of the versions ``history`` gives for these ``_at`` values, newest first;
    the total must agree."""
    found, total = store.history(rtype, rid, at=[period(v) for v in values], since=since, until=until)
    assert total == len(found)
    return [(v.id, v.version) for v in found]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> WriteClock:
    """The instant the store stamps on what it writes."""
    return WriteClock(monkeypatch)


def _three_versions(store: ResourceStore, clock: WriteClock, rid: str = "p1") -> None:
    for n, when in enumerate((T1, T2, T3)):
        clock.set(when)
        with store.transaction() as tx:
            tx.update(patient(f"V{n + 1}", id=rid))


def test_at_gives_the_versions_current_at_some_point_of_the_period(store: ResourceStore, clock: WriteClock) -> None:
    _three_versions(store, clock)
    assert versions_at(store, "Patient", "p1", "2024-03-01") == [("p1", 1)]  # between t1 and t2
    assert versions_at(store, "Patient", "p1", "2024-03") == [("p1", 2), ("p1", 1)]  # a month covering t2
    assert versions_at(store, "Patient", "p1", "2024-06-01") == [("p1", 3)]  # after t3
    assert versions_at(store, "Patient", "p1", "2031") == [("p1", 3)]  # the latest is current from t3 on
    assert versions_at(store, "Patient", "p1", "2024-01") == []  # before the first version
    assert versions_at(store, "Patient", "p1", "2024") == [("p1", 3), ("p1", 2), ("p1", 1)]
    # An instant is the span its precision gives: the second of t2 holds both; a millisecond one.
    assert versions_at(store, "Patient", "p1", "2024-03-15T10:00:00Z") == [("p1", 2), ("p1", 1)]
    assert versions_at(store, "Patient", "p1", "2024-03-15T10:00:00.500Z") == [("p1", 2)]
    assert versions_at(store, "Patient", "p1", "2024-03-15T10:00:00.499Z") == [("p1", 1)]
    assert versions_at(store, "Patient", "p1", "2024-03-15T11:00:00+01:00") == [("p1", 2), ("p1", 1)]
    # A version is current from its own lastUpdated on (v1 from t1), up to the next one's.
    assert versions_at(store, "Patient", "p1", "2024-02-01T00:00:00.000Z") == [("p1", 1)]
    assert versions_at(store, "Patient", "p1", "2024-01-31T23:59:59.999Z") == []
    # Several values: the versions current in any of them.
    assert versions_at(store, "Patient", "p1", "2024-02-10", "2024-06-01") == [("p1", 3), ("p1", 1)]
    assert versions_at(store, "Patient", "p1", "2024-03", "2024-03-01") == [("p1", 2), ("p1", 1)]


def test_at_over_types_and_the_system_with_since_and_paging(store: ResourceStore, clock: WriteClock) -> None:
    _three_versions(store, clock, "p1")
    clock.set("2024-03-02T00:00:00Z")
    with store.transaction() as tx:
        tx.update({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "t"}})
        tx.update(patient("Q", id="q1"))
    clock.set("2024-04-20T00:00:00Z")
    with store.transaction() as tx:
        tx.update(patient("Q2", id="q1"))
    assert versions_at(store, "Patient", None, "2024-03-10") == [("q1", 1), ("p1", 1)]
    assert versions_at(store, None, None, "2024-03-10") == [("o1", 1), ("q1", 1), ("p1", 1)]
    assert versions_at(store, "Patient", None, "2024-04-25") == [("q1", 2), ("p1", 2)]
    assert versions_at(store, "Observation", None, "2024-02") == []
    # With _since: only the versions last updated since then, of those.
    assert versions_at(store, "Patient", None, "2024-03", since=period("2024-03-02")[0]) == [("p1", 2), ("q1", 1)]
    assert versions_at(store, "Patient", "p1", "2024-03", since=period("2024-03-15")[0]) == [("p1", 2)]
    # Pages: count and offset over the same ordered set, the total the whole of it.
    page, total = store.history("Patient", None, at=[period("2024-03")], count=2, offset=1)
    assert total == 3 and [(v.id, v.version) for v in page] == [("q1", 1), ("p1", 1)]


def test_at_after_a_delete_gives_the_tombstone(store: ResourceStore, clock: WriteClock) -> None:
    # History lists a delete as a version (its entry: request DELETE, no resource); so does _at,
    # while the resource stays deleted: the client learns it did not exist then.
    clock.set(T1)
    with store.transaction() as tx:
        tx.update(patient("A", id="d1"))
    clock.set("2024-03-01T00:00:00Z")
    with store.transaction() as tx:
        tx.delete("Patient", "d1")
    assert versions_at(store, "Patient", "d1", "2024-04") == [("d1", 2)]
    (tombstone,), _ = store.history("Patient", "d1", at=[period("2024-04")])
    assert tombstone.deleted
    clock.set("2024-04-01T00:00:00Z")
    with store.transaction() as tx:
        tx.update(patient("B", id="d1"))
    assert versions_at(store, "Patient", "d1", "2024-02") == [("d1", 1)]
    assert versions_at(store, "Patient", "d1", "2024-03") == [("d1", 2)]  # re-created when April starts
    assert versions_at(store, "Patient", "d1", "2024-03-10") == [("d1", 2)]
    assert versions_at(store, "Patient", "d1", "2024-04-15") == [("d1", 3)]
    assert versions_at(store, "Patient", None, "2024-02-20", "2024-04-15") == [("d1", 3), ("d1", 1)]


def test_at_pinned_to_a_snapshot_ignores_later_versions(store: ResourceStore, clock: WriteClock) -> None:
    # A history's later pages show the store as of its first page (``until``): a version written
    # since neither shows nor ends its predecessor's lifetime, so no entry moves between pages.
    clock.set(T1)
    with store.transaction() as tx:
        tx.update(patient("A", id="s1"))
    clock.set(T2)
    with store.transaction() as tx:
        tx.update(patient("B", id="s1"))
    snapshot = period(T2)[0]
    assert versions_at(store, "Patient", None, "2024-06", until=snapshot) == [("s1", 2)]
    clock.set(T3)
    with store.transaction() as tx:
        tx.update(patient("C", id="s1"))
    assert versions_at(store, "Patient", None, "2024-06", until=snapshot) == [("s1", 2)]
    assert versions_at(store, "Patient", None, "2024-03", until=snapshot) == [("s1", 2), ("s1", 1)]
    assert versions_at(store, "Patient", None, "2024-06") == [("s1", 3)]
