"""SQLite store URL options."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store import open_store
from gateway.store.sqlite import SQLiteStore


def test_synchronous_defaults_to_full_and_can_be_relaxed(tmp_path: Path) -> None:
    for url, expected in ((f"sqlite:///{tmp_path}/a.db", 2), (f"sqlite:///{tmp_path}/b.db?synchronous=normal", 1)):
        store = open_store(url)
        try:
            assert isinstance(store, SQLiteStore)
            with store._read_cursor() as cur:
                cur.execute("PRAGMA synchronous")
                assert cur.fetchone()[0] == expected  # 2 = FULL, 1 = NORMAL
        finally:
            store.close()


@pytest.mark.parametrize("query", ["synchronous=off", "journal=delete"])
def test_unknown_options_are_refused(tmp_path: Path, query: str) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        open_store(f"sqlite:///{tmp_path}/c.db?{query}")
