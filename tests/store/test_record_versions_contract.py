"""``claim_record_versions``: the latest version of each source record, never lowered, on both backends."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gateway.store import Store


def _claim(store: Store, system: str, versions: list[tuple[str, float]]) -> set[str]:
    with store.transaction() as tx:
        return tx.claim_record_versions(system, versions)


def test_a_later_version_is_kept_and_an_earlier_one_is_stale(store: Store) -> None:
    assert _claim(store, "commcare", [("case-1", 100.0), ("case-2", 50.0)]) == set()
    assert _claim(store, "commcare", [("case-1", 200.0)]) == set()
    assert _claim(store, "commcare", [("case-1", 150.0), ("case-2", 50.0)]) == {"case-1"}  # equal: not stale
    assert _claim(store, "commcare", [("case-1", 199.5)]) == {"case-1"}  # 200 is still the latest
    assert _claim(store, "commcare", [("case-1", 200.5)]) == set()
    assert _claim(store, "cht", [("case-1", 1.0)]) == set()  # each source system its own records


def test_a_stale_claim_undone_with_its_transaction_leaves_the_latest(store: Store) -> None:
    _claim(store, "odk", [("sub-1", 10.0)])
    try:
        with store.transaction() as tx:
            assert tx.claim_record_versions("odk", [("sub-1", 20.0)]) == set()
            raise RuntimeError("the record's writes failed")
    except RuntimeError:
        pass
    assert _claim(store, "odk", [("sub-1", 15.0)]) == set()  # 20 was never committed


def test_many_records_in_one_claim(store: Store) -> None:
    first = [(f"r{i}", float(i)) for i in range(700)]  # more than one statement's worth
    assert _claim(store, "csv", first) == set()
    again = [(f"r{i}", float(i) - 0.5 if i % 2 else float(i) + 1) for i in range(700)]
    assert _claim(store, "csv", again) == {f"r{i}" for i in range(700) if i % 2}


def test_a_concurrent_claim_of_the_same_record_waits_for_the_first_commit(store: Store) -> None:
    _claim(store, "cht", [("doc-1", 1.0)])
    claimed = threading.Event()
    release = threading.Event()

    def newer() -> set[str]:
        with store.transaction() as tx:
            result = tx.claim_record_versions("cht", [("doc-1", 3.0)])
            claimed.set()
            release.wait(10)
            return result

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(newer)
        assert claimed.wait(10)
        older = pool.submit(_claim, store, "cht", [("doc-1", 2.0)])
        time.sleep(0.3)
        assert not older.done()  # it waits for the record's row (PostgreSQL) or the write lock (SQLite)
        release.set()
        assert first.result(10) == set()
        # Whichever way the backend queues writers, the older version loses to the committed newer one.
        assert older.result(10) == {"doc-1"}
