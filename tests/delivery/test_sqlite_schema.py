"""The SQLite queue's versioned schema: fresh files, files from before versioning, newer files."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from gateway.clock import ManualClock
from gateway.delivery.queue import Ack, DeadLetterFilter, QueueError
from gateway.delivery.sqlite_queue import SQLiteQueue
from gateway.delivery.sqlite_schema import LATEST, MIGRATIONS, Migration, migrate, schema_version
from tests.delivery.test_queue_contract import make_job

# The DDL every queue file got before the schema was versioned (user_version stayed 0),
# copied verbatim from gateway/delivery/sqlite_queue.py as it was then. Never edit it:
# it stands for files already on disk.
UNVERSIONED_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    key TEXT NOT NULL,
    ref TEXT NOT NULL,
    state TEXT NOT NULL,
    head INTEGER NOT NULL,
    due REAL NOT NULL,
    lease_until REAL,
    claims INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL,
    job BLOB NOT NULL,
    payload BLOB NOT NULL,
    last_error TEXT,
    reason TEXT,
    detail BLOB,
    died_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (destination, due) WHERE head = 1 AND state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_retrying ON jobs (destination, due) WHERE head = 1 AND state = 'retrying';
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (destination, lease_until) WHERE state = 'in_flight';
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (destination, key, pos) WHERE state != 'dead';
CREATE INDEX IF NOT EXISTS jobs_ref ON jobs (destination, ref, seq) WHERE state != 'dead';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (destination, state, enqueued_at);
CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (destination, died_at) WHERE state = 'dead';
CREATE TABLE IF NOT EXISTS cursors (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS destinations (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    circuit TEXT NOT NULL DEFAULT 'closed',
    circuit_until REAL
);
CREATE TABLE IF NOT EXISTS delivered (
    destination TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (destination, bucket)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

T0 = 1_700_000_000.0


def unversioned_job(seq: int, key: str, state: str, head: int, **extra: object) -> dict[str, object]:
    """A jobs row as the unversioned code wrote it (job blob and payload spelled out)."""
    rid = f"o{seq}"
    row: dict[str, object] = {
        "id": f"shr:{seq}",
        "destination": "shr",
        "seq": seq,
        "pos": seq,
        "key": key,
        "ref": f"Observation/{rid}",
        "state": state,
        "head": head,
        "due": T0 + seq,
        "enqueued_at": T0 + seq,
        "job": orjson.dumps(["shr", seq, "Observation", rid, 1, "create", key, "commcare"]),
        "payload": orjson.dumps({"resourceType": "Observation", "id": rid, "status": "final"}),
    }
    row.update(extra)
    return row


def write_unversioned_queue(path: Path) -> None:
    """A queue file as the gateway wrote it before versioning: pending, retrying and dead jobs."""
    rows = [
        unversioned_job(1, "Patient/a", "pending", 1),
        unversioned_job(2, "Patient/a", "pending", 0),
        unversioned_job(
            3,
            "Patient/b",
            "dead",
            0,
            attempts=3,
            reason="http_422",
            died_at=T0 + 100,
            detail=orjson.dumps(
                {
                    "detail": "refused",
                    "request": {"method": "PUT", "url": "https://shr/Observation/o3", "headers": {}, "body": "{}"},
                    "response": {"status": 422, "headers": {}, "body": "no"},
                }
            ),
        ),
        unversioned_job(4, "Patient/c", "retrying", 1, due=T0 + 3600, attempts=1, last_error="http_503"),
    ]
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(UNVERSIONED_SCHEMA)
        for row in rows:
            columns = ", ".join(row)
            conn.execute(f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' for _ in row)})", tuple(row.values()))
        conn.execute("INSERT INTO cursors (destination, seq) VALUES ('shr', 4)")
        conn.execute("INSERT INTO destinations (name, circuit) VALUES ('shr', 'closed')")
        conn.execute("INSERT INTO counters (name, value) VALUES ('pos', 4)")
        conn.execute("INSERT INTO delivered (destination, bucket, n) VALUES ('shr', ?, 2)", (int(T0 // 10),))
        conn.commit()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return schema_version(conn)


def schema_sql(path: Path) -> list[tuple[str, str, str | None]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    finally:
        conn.close()


async def test_a_new_file_gets_the_latest_schema(tmp_path: Path, clock: ManualClock) -> None:
    queue = SQLiteQueue(tmp_path / "new.db", clock=clock)
    try:
        assert await queue.cursor("shr") is None
    finally:
        await queue.close()
    assert user_version(tmp_path / "new.db") == LATEST
    assert {name for kind, name, _ in schema_sql(tmp_path / "new.db") if kind == "table"} == {
        "jobs",
        "cursors",
        "destinations",
        "delivered",
        "counters",
        "digests",
        "workers",
    }


def test_version_1_is_the_unversioned_schema(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "v1.db", isolation_level=None)
    try:
        migrate(conn, MIGRATIONS[:1])
    finally:
        conn.close()
    old = sqlite3.connect(tmp_path / "old.db")
    try:
        old.executescript(UNVERSIONED_SCHEMA)
    finally:
        old.close()
    assert schema_sql(tmp_path / "v1.db") == schema_sql(tmp_path / "old.db")


async def test_an_unversioned_file_is_upgraded_with_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    write_unversioned_queue(path)
    assert user_version(path) == 0
    clock = ManualClock(start=T0 + 200)
    queue = SQLiteQueue(path, clock=clock)
    try:
        assert await queue.cursor("shr") == 4
        assert user_version(path) == LATEST
        stats = await queue.stats("shr")
        assert (stats.depth, stats.retrying, stats.dead, stats.cursor) == (3, 1, 1, 4)

        [dead] = await queue.dead_letters(DeadLetterFilter(destination="shr"))
        assert (dead.job.id, dead.reason, dead.attempts, dead.died_at) == ("shr:3", "http_422", 3, T0 + 100)
        assert dead.detail == "refused" and dead.request is not None and dead.response is not None
        assert (dead.request.url, dead.response.status) == ("https://shr/Observation/o3", 422)
        assert dead.job.resource() == {"resourceType": "Observation", "id": "o3", "status": "final"}

        # Per-key order survives: job 2 waits behind job 1, the retrying job 4 is not due yet.
        [first] = await queue.claim("shr", worker="w", limit=10, coalesce=False)
        assert (first.id, first.key, first.source) == ("shr:1", "Patient/a", "commcare")
        await queue.settle([Ack(first)])
        [second] = await queue.claim("shr", worker="w", limit=10, coalesce=False)
        assert second.id == "shr:2"
        await queue.settle([Ack(second)])

        # A new job queues behind the old ones: the position counter carried over.
        assert await queue.enqueue("shr", [make_job(5, key="Patient/c")], after=4, cursor=5)
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT pos, head FROM jobs WHERE id = 'shr:5'").fetchone() == (5, 0)
        await clock.advance(3600)
        [retried] = await queue.claim("shr", worker="w", limit=10, coalesce=False)
        assert (retried.id, retried.attempts) == ("shr:4", 1)
        await queue.settle([Ack(retried)])
        assert [job.id for job in await queue.claim("shr", worker="w", limit=10, coalesce=False)] == ["shr:5"]
        assert await queue.replay(["shr:3"]) == 1
        assert (await queue.stats("shr")).dead == 0
    finally:
        await queue.close()
    assert schema_sql(path) == schema_sql(await _fresh(tmp_path))


async def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "fresh.db"
    queue = SQLiteQueue(path, clock=ManualClock())
    try:
        await queue.cursor("shr")
    finally:
        await queue.close()
    return path


async def test_a_file_from_a_newer_gateway_is_refused_untouched(tmp_path: Path, clock: ManualClock) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE jobs_v99 (id TEXT)")
        conn.execute(f"PRAGMA user_version = {LATEST + 1}")
        conn.commit()
    finally:
        conn.close()
    queue = SQLiteQueue(path, clock=clock)
    try:
        with pytest.raises(QueueError, match=rf"schema version {LATEST + 1}, newer than the {LATEST}") as caught:
            await queue.cursor("shr")
        assert str(path) in str(caught.value)
        with pytest.raises(QueueError, match="newer"):  # every later call too, never a half-open queue
            await queue.stats("shr")
    finally:
        await queue.close()
    assert user_version(path) == LATEST + 1
    assert [name for _, name, _ in schema_sql(path)] == ["jobs_v99"]


def test_an_up_to_date_file_opens_without_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
    writer = sqlite3.connect(path, isolation_level=None)
    reader = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    try:
        writer.execute("BEGIN IMMEDIATE")
        assert migrate(reader) == LATEST
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        reader.close()


def test_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    # A second version that fails when applied twice: each opener must re-read the
    # version once it holds the write lock, not trust what it read before waiting.
    migrations = (*MIGRATIONS, Migration(LATEST + 1, "test", ("ALTER TABLE counters ADD COLUMN note TEXT",)))
    path = tmp_path / "race.db"
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("PRAGMA journal_mode=WAL")
    blocker.execute("BEGIN IMMEDIATE")  # every opener reads version 0, then queues for the lock
    results: list[int | BaseException] = []

    def open_queue_file() -> None:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30.0)
        try:
            results.append(migrate(conn, migrations))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=open_queue_file) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    blocker.execute("ROLLBACK")
    blocker.close()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [LATEST + 1] * 4
    with sqlite3.connect(path) as conn:
        assert schema_version(conn) == LATEST + 1
        assert [row[1] for row in conn.execute("PRAGMA table_info(counters)")] == ["name", "value", "note"]
