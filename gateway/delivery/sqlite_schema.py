"""The SQLite queue's schema, versioned with ``PRAGMA user_version``.

Opening a queue file applies the migrations it lacks, in order, in one ``BEGIN IMMEDIATE``
transaction. The version is read again once the write lock is held, so when two processes
open a new file at once, one migrates and the other finds it done. A file whose version
is newer than this code knows is refused: its schema may mean something this code would
get wrong.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.delivery.queue import QueueError


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs, outbox cursors, destination state, delivered counts, counters",
        # IF NOT EXISTS: files written before the schema was versioned have exactly these
        # tables at user_version 0, and this migration must leave them (and their rows) as is.
        # The text is the old DDL byte for byte, so sqlite_master reads the same in old files.
        (
            """CREATE TABLE IF NOT EXISTS jobs (
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
)""",
            "CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (destination, due) WHERE head = 1 AND state = 'pending'",
            "CREATE INDEX IF NOT EXISTS jobs_retrying ON jobs (destination, due) WHERE head = 1 AND state = 'retrying'",
            "CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (destination, lease_until) WHERE state = 'in_flight'",
            "CREATE INDEX IF NOT EXISTS jobs_key ON jobs (destination, key, pos) WHERE state != 'dead'",
            "CREATE INDEX IF NOT EXISTS jobs_ref ON jobs (destination, ref, seq) WHERE state != 'dead'",
            "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (destination, state, enqueued_at)",
            "CREATE INDEX IF NOT EXISTS jobs_dead ON jobs (destination, died_at) WHERE state = 'dead'",
            "CREATE TABLE IF NOT EXISTS cursors (destination TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
            """CREATE TABLE IF NOT EXISTS destinations (
    name TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0,
    circuit TEXT NOT NULL DEFAULT 'closed',
    circuit_until REAL
)""",
            """CREATE TABLE IF NOT EXISTS delivered (
    destination TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (destination, bucket)
)""",
            "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
        ),
    ),
    Migration(
        2,
        "dead-letter groups (one letter per refused destination object), accepted-object digests",
        (
            "ALTER TABLE jobs ADD COLUMN dead_group TEXT",
            "CREATE INDEX jobs_dead_group ON jobs (destination, dead_group) WHERE state = 'dead'",
            """CREATE TABLE digests (
    destination TEXT NOT NULL,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (destination, name)
)""",
        ),
    ),
    Migration(
        3,
        "worker heartbeats",
        (
            """CREATE TABLE IF NOT EXISTS workers (
    name TEXT PRIMARY KEY,
    destinations TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    in_flight INTEGER NOT NULL DEFAULT 0
)""",
        ),
    ),
    Migration(
        5,
        "lanes: jobs of backfilled changes (lane 1) are claimed after live ones (lane 0)",
        (
            "ALTER TABLE jobs ADD COLUMN lane INTEGER NOT NULL DEFAULT 0",
            "DROP INDEX IF EXISTS jobs_pending",
            "CREATE INDEX jobs_pending ON jobs (destination, lane, due) WHERE head = 1 AND state = 'pending'",
        ),
    ),
)

LATEST = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the queue file (0: never migrated)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the migrations the file lacks and return its version; ``QueueError`` if it is newer.

    ``conn`` must be in autocommit mode (``isolation_level=None``): the migrations run in
    a transaction of their own.
    """
    latest = migrations[-1].version
    version = schema_version(conn)
    if version == latest:  # the common case: no write lock taken
        return version
    _refuse_newer(conn, version, latest)
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)  # another process may have migrated meanwhile
        _refuse_newer(conn, version, latest)
        for migration in migrations:
            if migration.version > version:
                for statement in migration.statements:
                    conn.execute(statement)
                version = migration.version
        conn.execute(f"PRAGMA user_version = {int(version)}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return version


def _refuse_newer(conn: sqlite3.Connection, version: int, latest: int) -> None:
    if version > latest:
        path = conn.execute("PRAGMA database_list").fetchone()[2] or "(memory)"
        raise QueueError(
            f"sqlite queue {path} has schema version {version}, newer than the {latest} this gateway "
            "knows: it was written by a newer gateway; upgrade this one or use another queue file"
        )
