"""The pull cursor contract (``PullCursors``): every backend (SQLite, PostgreSQL) must pass all of this."""

from __future__ import annotations

from gateway.store import PullCursors


def test_a_source_has_no_cursor_until_one_is_saved(store: PullCursors) -> None:
    assert store.pull_cursor("odk") is None


def test_the_last_saved_cursor_wins_per_source(store: PullCursors) -> None:
    store.set_pull_cursor("odk", '{"submitted": "2025-05-12T06:05:31.872Z"}')
    store.set_pull_cursor("cht", "12-abc")
    store.set_pull_cursor("odk", '{"submitted": "2025-05-13T00:00:00.000Z"}')
    assert store.pull_cursor("odk") == '{"submitted": "2025-05-13T00:00:00.000Z"}'
    assert store.pull_cursor("cht") == "12-abc"


def test_forgetting_a_cursor_restarts_that_source_only(store: PullCursors) -> None:
    store.set_pull_cursor("odk", "a")
    store.set_pull_cursor("cht", "b")
    store.set_pull_cursor("odk", None)
    assert store.pull_cursor("odk") is None
    assert store.pull_cursor("cht") == "b"
    store.set_pull_cursor("odk", None)  # forgetting twice is harmless
