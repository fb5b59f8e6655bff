"""Row shapes shared by the SQL store's read and write sides."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import orjson

from gateway.search.dates import from_epoch
from gateway.store.base import StoredResource

COLUMNS = "r.rtype, r.id, r.version, r.lu, r.deleted, r.content"
VERSION_META = ("versionId", "lastUpdated")
INDEX_TABLES = ("idx_token", "idx_string", "idx_date", "idx_ref", "idx_number")


class Cursor(Protocol):
    """The DB-API cursor subset the store uses (sqlite3 and psycopg both fit)."""

    def execute(self, sql: Any, params: Any = ..., /) -> Any: ...
    def executemany(self, sql: Any, params: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def to_resource(row: Sequence[Any]) -> StoredResource:
    """A ``COLUMNS`` row as a ``StoredResource``."""
    return StoredResource(
        type=row[0], id=row[1], version=row[2], last_updated=from_epoch(row[3]),
        deleted=bool(row[4]), content=bytes(row[5]),
    )  # fmt: skip


def hash_body(body: dict[str, Any]) -> str:
    """Hash of a resource's content without version metadata (the store sets that)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
