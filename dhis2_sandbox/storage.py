"""What the sandbox accepted, persisted in SQLite so tests and integrators can inspect it.

One table per tracker object type plus aggregate data values and completions. Each row
keeps the object as DHIS2 would export it (``doc``), with the keys validation needs as
columns. Deletions are soft (``deleted = 1``) because DHIS2 never reuses a deleted UID.
``revision`` only moves when the stored content changes, so a replay that DHIS2 reports as
"updated" is visibly a no-op here.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DataValueKey", "SandboxStore", "StoredObject", "open_store"]

JsonObject = dict[str, Any]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tracked_entity (
    uid TEXT PRIMARY KEY, tracked_entity_type TEXT NOT NULL, org_unit TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, revision INTEGER NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, doc BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS te_attribute (
    attribute TEXT NOT NULL, value TEXT NOT NULL, tracked_entity TEXT NOT NULL,
    PRIMARY KEY (attribute, tracked_entity));
CREATE INDEX IF NOT EXISTS te_attribute_value ON te_attribute (attribute, value);
CREATE TABLE IF NOT EXISTS enrollment (
    uid TEXT PRIMARY KEY, tracked_entity TEXT NOT NULL, program TEXT NOT NULL, org_unit TEXT NOT NULL,
    status TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, revision INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS enrollment_te ON enrollment (tracked_entity, program);
CREATE TABLE IF NOT EXISTS event (
    uid TEXT PRIMARY KEY, enrollment TEXT, program TEXT NOT NULL, program_stage TEXT NOT NULL,
    org_unit TEXT NOT NULL, status TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,
    revision INTEGER NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, doc BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS event_enrollment ON event (enrollment, program_stage);
CREATE TABLE IF NOT EXISTS data_value (
    data_element TEXT NOT NULL, period TEXT NOT NULL, org_unit TEXT NOT NULL,
    category_option_combo TEXT NOT NULL, attribute_option_combo TEXT NOT NULL,
    value TEXT, comment TEXT, followup INTEGER NOT NULL DEFAULT 0, stored_by TEXT,
    deleted INTEGER NOT NULL DEFAULT 0, revision INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (data_element, period, org_unit, category_option_combo, attribute_option_combo));
CREATE TABLE IF NOT EXISTS complete_registration (
    data_set TEXT NOT NULL, period TEXT NOT NULL, org_unit TEXT NOT NULL,
    attribute_option_combo TEXT NOT NULL, completed_at TEXT NOT NULL,
    PRIMARY KEY (data_set, period, org_unit, attribute_option_combo));
"""

_TABLES = ("tracked_entity", "enrollment", "event")


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A tracker object as stored: its export document and bookkeeping."""

    uid: str
    doc: JsonObject
    deleted: bool
    revision: int


@dataclass(frozen=True, slots=True)
class DataValueKey:
    """The identity of an aggregate value in DHIS2."""

    data_element: str
    period: str
    org_unit: str
    category_option_combo: str
    attribute_option_combo: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


class SandboxStore:
    """Thread-safe SQLite persistence of accepted tracker objects and data values."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.RLock()
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run writes atomically; rolled back if the block raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- tracker reads

    def get(self, table: str, uid: str) -> StoredObject | None:
        """A tracker object by UID, deleted ones included."""
        if table not in _TABLES:
            raise ValueError(table)
        with self._lock:
            row = self._db.execute(
                f"SELECT uid, doc, deleted, revision FROM {table} WHERE uid = ?", (uid,)
            ).fetchone()
        if row is None:
            return None
        return StoredObject(row[0], orjson.loads(row[1]), bool(row[2]), row[3])

    def tracked_entities_with_value(self, attribute: str, value: str) -> list[str]:
        """Live tracked entities holding ``value`` for ``attribute`` (unique-attribute check)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.tracked_entity FROM te_attribute a"
                " JOIN tracked_entity t ON t.uid = a.tracked_entity"
                " WHERE a.attribute = ? AND a.value = ? AND t.deleted = 0",
                (attribute, value),
            ).fetchall()
        return [row[0] for row in rows]

    def enrollments_of(self, tracked_entity: str, program: str) -> list[StoredObject]:
        """Live enrollments of a tracked entity in a program."""
        with self._lock:
            rows = self._db.execute(
                "SELECT uid, doc, deleted, revision FROM enrollment"
                " WHERE tracked_entity = ? AND program = ? AND deleted = 0",
                (tracked_entity, program),
            ).fetchall()
        return [StoredObject(r[0], orjson.loads(r[1]), bool(r[2]), r[3]) for r in rows]

    def events_of(self, enrollment: str, program_stage: str) -> list[str]:
        """UIDs of live events of an enrollment in a stage."""
        with self._lock:
            rows = self._db.execute(
                "SELECT uid FROM event WHERE enrollment = ? AND program_stage = ? AND deleted = 0",
                (enrollment, program_stage),
            ).fetchall()
        return [row[0] for row in rows]

    def list_objects(
        self, table: str, *, where: dict[str, str] | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[JsonObject], int]:
        """Export documents of live objects, oldest first, with the total count."""
        if table not in _TABLES:
            raise ValueError(table)
        clauses = ["deleted = 0"]
        params: list[Any] = []
        for column, value in (where or {}).items():
            if not column.isidentifier():
                raise ValueError(column)
            clauses.append(f"{column} = ?")
            params.append(value)
        sql_where = " AND ".join(clauses)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM {table} WHERE {sql_where}", params).fetchone()[0]
            rows = self._db.execute(
                f"SELECT doc FROM {table} WHERE {sql_where} ORDER BY rowid LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows], int(total)

    def accepted_at(self, table: str) -> dict[str, str]:
        """When each live object of ``table`` was first accepted (UTC, ms), by UID."""
        if table not in _TABLES:
            raise ValueError(table)
        with self._lock:
            rows = self._db.execute(f"SELECT uid, created_at FROM {table} WHERE deleted = 0").fetchall()
        return {row[0]: row[1] for row in rows}

    def counts(self) -> dict[str, int]:
        """Number of live rows per table."""
        out: dict[str, int] = {}
        with self._lock:
            for table in (*_TABLES, "data_value"):
                out[table] = self._db.execute(f"SELECT count(*) FROM {table} WHERE deleted = 0").fetchone()[0]
            out["complete_registration"] = self._db.execute(
                "SELECT count(*) FROM complete_registration"
            ).fetchone()[0]
        return out

    # -- tracker writes (call inside ``transaction()``)

    def _write(self, table: str, uid: str, doc: JsonObject, columns: dict[str, Any]) -> bool:
        blob = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        now = _now()
        row = self._db.execute(f"SELECT doc, deleted FROM {table} WHERE uid = ?", (uid,)).fetchone()
        if row is not None and row[0] == blob and not row[1]:
            return False
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        updates = ", ".join(f"{name} = excluded.{name}" for name in columns)
        self._db.execute(
            f"INSERT INTO {table} (uid, {names}, deleted, revision, created_at, updated_at, doc)"
            f" VALUES (?, {marks}, 0, 1, ?, ?, ?)"
            f" ON CONFLICT (uid) DO UPDATE SET {updates}, deleted = 0, revision = revision + 1,"
            " updated_at = excluded.updated_at, doc = excluded.doc",
            (uid, *columns.values(), now, now, blob),
        )
        return True

    def save_tracked_entity(self, doc: JsonObject) -> bool:
        """Insert or replace a tracked entity; True when stored content changed."""
        changed = self._write(
            "tracked_entity",
            doc["trackedEntity"],
            doc,
            {"tracked_entity_type": doc["trackedEntityType"], "org_unit": doc["orgUnit"]},
        )
        if changed:
            self._db.execute("DELETE FROM te_attribute WHERE tracked_entity = ?", (doc["trackedEntity"],))
            self._db.executemany(
                "INSERT INTO te_attribute (attribute, value, tracked_entity) VALUES (?, ?, ?)",
                [
                    (item["attribute"], item["value"], doc["trackedEntity"])
                    for item in doc.get("attributes", [])
                    if item.get("value") is not None
                ],
            )
        return changed

    def save_enrollment(self, doc: JsonObject) -> bool:
        """Insert or replace an enrollment; True when stored content changed."""
        return self._write(
            "enrollment",
            doc["enrollment"],
            doc,
            {
                "tracked_entity": doc["trackedEntity"],
                "program": doc["program"],
                "org_unit": doc["orgUnit"],
                "status": doc.get("status", "ACTIVE"),
            },
        )

    def save_event(self, doc: JsonObject) -> bool:
        """Insert or replace an event; True when stored content changed."""
        return self._write(
            "event",
            doc["event"],
            doc,
            {
                "enrollment": doc.get("enrollment"),
                "program": doc["program"],
                "program_stage": doc["programStage"],
                "org_unit": doc["orgUnit"],
                "status": doc.get("status", "ACTIVE"),
            },
        )

    def mark_deleted(self, table: str, uid: str) -> None:
        """Soft-delete a tracker object (its UID stays burnt)."""
        if table not in _TABLES:
            raise ValueError(table)
        self._db.execute(
            f"UPDATE {table} SET deleted = 1, revision = revision + 1, updated_at = ? WHERE uid = ?",
            (_now(), uid),
        )

    # -- aggregate

    def get_data_value(self, key: DataValueKey) -> JsonObject | None:
        """A live data value by key."""
        with self._lock:
            row = self._db.execute(
                "SELECT value, comment, followup, stored_by, created_at, updated_at FROM data_value"
                " WHERE data_element = ? AND period = ? AND org_unit = ? AND category_option_combo = ?"
                " AND attribute_option_combo = ? AND deleted = 0",
                (
                    key.data_element,
                    key.period,
                    key.org_unit,
                    key.category_option_combo,
                    key.attribute_option_combo,
                ),
            ).fetchone()
        if row is None:
            return None
        return {
            "value": row[0],
            "comment": row[1],
            "followup": bool(row[2]),
            "storedBy": row[3],
            "created": row[4],
            "lastUpdated": row[5],
        }

    def save_data_value(
        self, key: DataValueKey, value: str | None, comment: str | None, followup: bool, stored_by: str
    ) -> None:
        """Create or update an aggregate value (call inside ``transaction()``)."""
        now = _now()
        self._db.execute(
            "INSERT INTO data_value (data_element, period, org_unit, category_option_combo,"
            " attribute_option_combo, value, comment, followup, stored_by, deleted, revision, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1, ?, ?)"
            " ON CONFLICT (data_element, period, org_unit, category_option_combo, attribute_option_combo)"
            " DO UPDATE SET value = excluded.value, comment = excluded.comment, followup = excluded.followup,"
            " stored_by = excluded.stored_by, deleted = 0, revision = revision + 1,"
            " updated_at = excluded.updated_at",
            (
                key.data_element,
                key.period,
                key.org_unit,
                key.category_option_combo,
                key.attribute_option_combo,
                value,
                comment,
                int(followup),
                stored_by,
                now,
                now,
            ),
        )

    def delete_data_value(self, key: DataValueKey) -> bool:
        """Soft-delete a value; True if one was live."""
        cursor = self._db.execute(
            "UPDATE data_value SET deleted = 1, revision = revision + 1, updated_at = ?"
            " WHERE data_element = ? AND period = ? AND org_unit = ? AND category_option_combo = ?"
            " AND attribute_option_combo = ? AND deleted = 0",
            (
                _now(),
                key.data_element,
                key.period,
                key.org_unit,
                key.category_option_combo,
                key.attribute_option_combo,
            ),
        )
        return cursor.rowcount > 0

    def complete(self, data_set: str, period: str, org_unit: str, aoc: str, completed_at: str) -> None:
        """Register a data set as complete for (period, org unit, AOC)."""
        self._db.execute(
            "INSERT INTO complete_registration VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
            " SET completed_at = excluded.completed_at",
            (data_set, period, org_unit, aoc, completed_at),
        )

    def uncomplete(self, data_set: str, period: str, org_unit: str, aoc: str) -> None:
        """Remove a data set's completeness registration (nothing when there is none)."""
        with self._lock:
            self._db.execute(
                "DELETE FROM complete_registration WHERE data_set = ? AND period = ? AND org_unit = ?"
                " AND attribute_option_combo = ?",
                (data_set, period, org_unit, aoc),
            )

    def completed(self, data_set: str, period: str, org_unit: str, aoc: str) -> str | None:
        """The completion date of a data set registration, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT completed_at FROM complete_registration WHERE data_set = ? AND period = ?"
                " AND org_unit = ? AND attribute_option_combo = ?",
                (data_set, period, org_unit, aoc),
            ).fetchone()
        return None if row is None else str(row[0])

    def data_values(
        self, *, period: str | None = None, org_unit: str | None = None, data_elements: set[str] | None = None
    ) -> list[JsonObject]:
        """Live data values, optionally filtered, in the shape ``/api/dataValueSets`` exports."""
        clauses = ["deleted = 0"]
        params: list[Any] = []
        if period is not None:
            clauses.append("period = ?")
            params.append(period)
        if org_unit is not None:
            clauses.append("org_unit = ?")
            params.append(org_unit)
        with self._lock:
            rows = self._db.execute(
                "SELECT data_element, period, org_unit, category_option_combo, attribute_option_combo, value,"
                " comment, followup, stored_by, created_at, updated_at, revision FROM data_value WHERE "
                + " AND ".join(clauses)
                + " ORDER BY rowid",
                params,
            ).fetchall()
        out = []
        for row in rows:
            if data_elements is not None and row[0] not in data_elements:
                continue
            item: JsonObject = {
                "dataElement": row[0],
                "period": row[1],
                "orgUnit": row[2],
                "categoryOptionCombo": row[3],
                "attributeOptionCombo": row[4],
                "value": row[5],
                "storedBy": row[8],
                "created": row[9],
                "lastUpdated": row[10],
                "followup": bool(row[7]),
            }
            if row[6] is not None:
                item["comment"] = row[6]
            out.append(item)
        return out

    def revisions(self) -> dict[str, int]:
        """Sum of revisions per table: unchanged sums mean nothing was rewritten."""
        with self._lock:
            return {
                table: int(self._db.execute(f"SELECT coalesce(sum(revision), 0) FROM {table}").fetchone()[0])
                for table in (*_TABLES, "data_value")
            }

    def reset(self) -> None:
        """Forget everything that was accepted."""
        with self.transaction():
            for table in (*_TABLES, "te_attribute", "data_value", "complete_registration"):
                self._db.execute(f"DELETE FROM {table}")


def open_store(state_dir_or_db: Path | None) -> SandboxStore:
    """Open the store: in memory for None, ``<dir>/dhis2-sandbox.sqlite3`` for a directory, else the file."""
    if state_dir_or_db is None:
        target = ":memory:"
    elif state_dir_or_db.is_dir():
        target = str(state_dir_or_db / "dhis2-sandbox.sqlite3")
    else:
        state_dir_or_db.parent.mkdir(parents=True, exist_ok=True)
        target = str(state_dir_or_db)
    connection = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
    if target != ":memory:":
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
    return SandboxStore(connection)
