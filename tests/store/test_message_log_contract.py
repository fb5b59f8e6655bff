"""The message log contract (``MessageLog``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.store import MessageEntry, MessageFilter, MessageLog


def _entries() -> list[MessageEntry]:
    return [
        MessageEntry(100.0, "received", "cht", "stored", "p1", "r1", None, "Patient created"),
        MessageEntry(200.0, "received", "cht", "quarantined", None, "r2", "7", "invalid at $.sex"),
        MessageEntry(300.0, "delivery", "dhis2", "dead", "p1", "Patient/p1", "job-1", "dhis2_E1018"),
        MessageEntry(400.0, "delivery", "dhis2", "delivered", "p2", "Patient/p2", "job-2", None),
    ]


def test_lines_come_back_newest_first_with_every_field(store: MessageLog) -> None:
    assert store.message_append(_entries()) == 4
    found = store.message_search(MessageFilter())
    assert [line.entry for line in found] == list(reversed(_entries()))
    assert [line.mid for line in found] == sorted((line.mid for line in found), reverse=True)


def test_each_filter_narrows_the_lines(store: MessageLog) -> None:
    store.message_append(_entries())

    def subjects(where: MessageFilter, limit: int = 100) -> list[str | None]:
        return [line.entry.subject for line in store.message_search(where, limit=limit)]

    assert subjects(MessageFilter(channel="cht")) == ["r2", "r1"]
    assert subjects(MessageFilter(kind="delivery")) == ["Patient/p2", "Patient/p1"]
    assert subjects(MessageFilter(status="dead")) == ["Patient/p1"]
    assert subjects(MessageFilter(patient="p1")) == ["Patient/p1", "r1"]
    assert subjects(MessageFilter(since=200.0, until=400.0)) == ["Patient/p1", "r2"]
    assert subjects(MessageFilter(), limit=1) == ["Patient/p2"]
    newest = store.message_search(MessageFilter(), limit=2)
    assert subjects(MessageFilter(before_mid=newest[-1].mid)) == ["r2", "r1"]
    assert subjects(MessageFilter(channel="cht", status="stored", patient="p1")) == ["r1"]
    assert subjects(MessageFilter(channel="nowhere")) == []


def test_purge_deletes_lines_older_than_the_cut(store: MessageLog) -> None:
    store.message_append(_entries())
    assert store.message_purge(datetime.fromtimestamp(250.0, UTC)) == 2
    assert [line.entry.at for line in store.message_search(MessageFilter())] == [400.0, 300.0]
    assert store.message_append([]) == 0


def test_counts_group_lines_by_kind_channel_and_status(store: MessageLog) -> None:
    store.message_append(_entries() + [MessageEntry(500.0, "received", "cht", "stored", "p3", "r3")])
    assert store.message_counts(0.0) == [
        ("delivery", "dhis2", "dead", 1), ("delivery", "dhis2", "delivered", 1),
        ("received", "cht", "quarantined", 1), ("received", "cht", "stored", 2),
    ]
    assert store.message_counts(350.0) == [("delivery", "dhis2", "delivered", 1), ("received", "cht", "stored", 1)]
