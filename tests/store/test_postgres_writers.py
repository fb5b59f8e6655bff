"""PostgreSQL writers of one process share a transaction (a savepoint each) and its commit;
a failure that cannot be undone alone, or a failed commit, fails every unit of the batch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from gateway.store import StoreUnavailable
from gateway.store.postgres import PostgresStore
from tests.conftest import PG_URL


def _patient(rid: str) -> dict[str, object]:
    return {"resourceType": "Patient", "id": rid, "name": [{"family": "Achieng"}]}


@pytest.fixture
def store(pg_store: PostgresStore) -> PostgresStore:
    return pg_store


def _committed(store: PostgresStore, rid: str) -> bool:
    """Whether a connection of its own sees the patient: what another request would read."""
    with psycopg.connect(PG_URL, options=f"-c search_path={store.schema}") as conn:
        row = conn.execute("SELECT 1 FROM resources WHERE rtype = 'Patient' AND id = %s", (rid,)).fetchone()
    return row is not None


class Gate:
    """Lets a first unit hold the shared transaction until the others queue behind it."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        """Inside the first unit: wait until the test has queued the others."""
        self.holding.set()
        self.release.wait(10)

    def run(self, store: PostgresStore, first: Callable[[], None], *others: Callable[[], None]) -> None:
        """Run ``first`` (which calls ``hold``), then ``others`` queued behind it in one batch."""
        store._writer.max_open = 60.0  # the first unit holds the transaction while the others queue
        a = threading.Thread(target=first)
        a.start()
        assert self.holding.wait(10)
        threads = [threading.Thread(target=other) for other in others]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while store._writer.waiting < len(others) and time.monotonic() < deadline:
            time.sleep(0.005)
        self.release.set()
        for thread in [a, *threads]:
            thread.join(15)


def test_many_concurrent_writers_all_commit_and_read_their_writes(store: PostgresStore) -> None:
    errors: list[BaseException] = []
    unseen: list[str] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                rid = f"p{n}-{i}"
                with store.transaction() as tx:
                    tx.update(_patient(rid))
                if not _committed(store, rid):  # durable and visible once the write returns
                    unseen.append(rid)
        except BaseException as exc:  # noqa: BLE001 - the test reports any error
            errors.append(exc)

    before = store._writer.commits
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and unseen == []
    assert all(store.read("Patient", f"p{n}-{i}") is not None for n in range(16) for i in range(10))
    assert 0 < store._writer.commits - before <= 16 * 10
    changes = store.changes(0, limit=1000)
    assert sorted(c.seq for c in changes) == [c.seq for c in changes]
    assert len(changes) == 160


def test_waiting_writers_share_one_commit_and_a_failed_unit_is_undone_alone(store: PostgresStore) -> None:
    gate = Gate()
    returned: dict[str, bool] = {}
    failures: list[str] = []

    def first() -> None:
        with store.transaction() as tx:
            tx.update(_patient("a"))
            gate.hold()
        returned["a"] = _committed(store, "a")

    def failing() -> None:
        try:
            with store.transaction() as tx:
                tx.update(_patient("b"))
                raise ValueError("refused")
        except ValueError:
            failures.append("b")

    def aborting() -> None:
        # A statement error aborts PostgreSQL's whole transaction; the unit's savepoint rollback restores it.
        try:
            with store._writer.unit() as cur:
                cur.execute("INSERT INTO pull_cursors (source, cursor, updated) VALUES ('x', 'y', 0)")
                cur.execute("SELECT 1 / 0")
        except psycopg.errors.DivisionByZero:
            failures.append("d")

    def last() -> None:
        with store.transaction() as tx:
            tx.update(_patient("c"))
        returned["c"] = _committed(store, "c")

    before = store._writer.commits
    gate.run(store, first, failing, aborting, last)
    assert returned == {"a": True, "c": True}  # each returned only once its write was committed
    assert sorted(failures) == ["b", "d"]
    assert store._writer.commits - before == 1  # four units, one commit
    assert store.read("Patient", "b") is None
    assert store.pull_cursor("x") is None


def test_a_unit_that_leaves_the_transaction_aborted_fails_the_whole_batch(store: PostgresStore) -> None:
    gate = Gate()
    outcome: dict[str, str] = {}

    def first() -> None:
        try:
            with store.transaction() as tx:
                tx.update(_patient("a"))
                gate.hold()
            outcome["a"] = "ok"
        except psycopg.Error:
            outcome["a"] = "failed"

    def wrecking() -> None:
        # Releasing its savepoint first leaves nothing to roll back to: the transaction stays aborted.
        try:
            with store._writer.unit() as cur:
                cur.execute("RELEASE SAVEPOINT unit")
                cur.execute("SELECT 1 / 0")
            outcome["w"] = "ok"
        except psycopg.Error:
            outcome["w"] = "failed"

    gate.run(store, first, wrecking)
    assert outcome == {"a": "failed", "w": "failed"}
    assert store.read("Patient", "a") is None
    with store.transaction() as tx:  # the next batch starts clean
        tx.update(_patient("e"))
    assert _committed(store, "e")


def test_a_failed_commit_fails_every_unit_it_held(store: PostgresStore) -> None:
    with store._writer.unit() as cur:
        cur.execute("CREATE TABLE t (x INTEGER UNIQUE DEFERRABLE INITIALLY DEFERRED)")
    gate = Gate()
    outcome: dict[str, str] = {}

    def unit(name: str, hold: bool) -> Callable[[], None]:
        def run() -> None:
            try:
                with store._writer.unit() as cur:
                    cur.execute("INSERT INTO t VALUES (1)")  # checked only at commit
                    if hold:
                        gate.hold()
                outcome[name] = "ok"
            except psycopg.errors.UniqueViolation:
                outcome[name] = "failed"

        return run

    before = store._writer.commits
    gate.run(store, unit("a", True), unit("c", False))
    assert outcome == {"a": "failed", "c": "failed"}
    assert store._writer.commits == before
    with store._read_cursor() as cur:
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone()[0] == 0


def test_a_lost_writer_connection_is_replaced(store: PostgresStore) -> None:
    with store.transaction() as tx:
        tx.update(_patient("a"))
    conn = store._writer._conn
    assert conn is not None
    with store._read_cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    # Lost while idle (a server restart): replaced before the transaction begins, nothing lost.
    with store.transaction() as tx:
        tx.update(_patient("b"))
    assert _committed(store, "b") and store._writer._conn is not conn
    # Lost inside a transaction: that work is gone, and says so (a 503 for the API, not a 500).
    with pytest.raises(StoreUnavailable) as lost, store.transaction() as tx:
        tx.update(_patient("x"))
        live = store._writer._conn
        assert live is not None
        with store._read_cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (live.info.backend_pid,))
        tx.update(_patient("y"))
        tx.flush()
    assert isinstance(lost.value.__cause__, psycopg.OperationalError)
    with store.transaction() as tx:
        tx.update(_patient("c"))
    assert _committed(store, "c") and store.read("Patient", "x") is None and store.read("Patient", "y") is None


def test_a_unit_ending_past_max_open_commits_without_waiting_for_the_queue(store: PostgresStore) -> None:
    holding, release = threading.Event(), threading.Event()
    returned: dict[str, bool] = {}

    def long_unit() -> None:
        with store.transaction() as tx:
            tx.update(_patient("a"))
            holding.set()
            release.wait(10)
        returned["a"] = _committed(store, "a")

    def short_unit() -> None:
        with store.transaction() as tx:
            tx.update(_patient("c"))

    before = store._writer.commits
    a = threading.Thread(target=long_unit)
    a.start()
    assert holding.wait(10)
    c = threading.Thread(target=short_unit)
    c.start()
    deadline = time.monotonic() + 10
    while store._writer.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(store._writer.max_open)
    release.set()
    a.join(15)
    c.join(15)
    assert returned == {"a": True}
    assert store._writer.commits - before == 2  # the long unit did not hold the queued one's commit


def test_stores_opened_at_once_on_a_new_schema_all_start(pg_schema_url: str) -> None:
    # Backfill workers and pods start together; CREATE SCHEMA IF NOT EXISTS alone races.
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def open_one() -> None:
        barrier.wait()
        try:
            opened = PostgresStore(pg_schema_url, max_connections=1)
            opened.migrate()
            opened.close()
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_reads_are_planned_for_their_values(store: PostgresStore) -> None:
    # A prepared search's generic plan sorted every row of a code for a page of 20 (222 ms at 1M).
    with store._read_cursor() as cur:
        cur.execute("SHOW plan_cache_mode")
        assert cur.fetchone()[0] == "force_custom_plan"
