"""``SqlTransaction``: versioned writes, index maintenance and the change feed.

Inside a transaction the rows that nothing reads back before commit (history, index
rows, change-feed entries) are buffered and written with one ``executemany`` per table
when the transaction commits, or earlier when a search inside it needs them. On
PostgreSQL (pipeline mode) that leaves about one round trip per resource.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from gateway.search.dates import format_instant, from_epoch
from gateway.search.extract import extract
from gateway.search.query import SearchQuery
from gateway.store.base import ChangeOp, SearchResult, StoredResource, VersionConflict, WriteResult
from gateway.store.rows import COLUMNS, INDEX_TABLES, VERSION_META, Cursor, content_hash, to_resource

if TYPE_CHECKING:
    from gateway.store.sql import SqlStore

_INSERTS = {
    "history": "INSERT INTO history (rtype, id, version, lu, deleted, content) VALUES (?, ?, ?, ?, ?, ?)",
    "changes": "INSERT INTO changes (rtype, id, version, op, at) VALUES (?, ?, ?, ?, ?)",
    "idx_token": "INSERT INTO idx_token (rid, rtype, param, system, code) VALUES (?, ?, ?, ?, ?)",
    "idx_string": "INSERT INTO idx_string (rid, rtype, param, norm, exact) VALUES (?, ?, ?, ?, ?)",
    "idx_date": "INSERT INTO idx_date (rid, rtype, param, lo, hi) VALUES (?, ?, ?, ?, ?)",
    "idx_ref": "INSERT INTO idx_ref (rid, rtype, param, ttype, tid, url) VALUES (?, ?, ?, ?, ?, ?)",
    "idx_number": "INSERT INTO idx_number (rid, rtype, param, value, system, code) VALUES (?, ?, ?, ?, ?, ?)",
}
_Current = tuple[int, int, bool, str | None]  # row id, version, deleted, content hash


class SqlTransaction:
    """Reads and writes inside one open database transaction."""

    def __init__(self, store: SqlStore, cur: Cursor) -> None:
        self.store = store
        self.cur = cur
        self._pending: dict[str, list[tuple[Any, ...]]] = {table: [] for table in _INSERTS}
        self._reindex: list[int] = []  # row ids whose old index rows must go before new ones land

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """Current version inside this transaction."""
        self.cur.execute(self.store.q(f"SELECT {COLUMNS} FROM resources r WHERE r.rtype = ? AND r.id = ?"),
                         (rtype, rid))
        row = self.cur.fetchone()
        return to_resource(row) if row else None

    def search(self, query: SearchQuery) -> SearchResult:
        """Search inside this transaction (sees its own writes)."""
        self.flush()
        return self.store._search(self.cur, query)

    def create(self, resource: dict[str, Any], *, rid: str | None = None) -> WriteResult:
        """Store a new resource; a server-assigned id when ``rid`` is None."""
        new_id = rid or str(uuid.uuid4())
        current = self._current(resource["resourceType"], new_id) if rid else None
        if current is not None and not current[2]:
            raise VersionConflict(current[1])
        return self._write(resource, new_id, current, ChangeOp.CREATE if current is None else ChangeOp.UPDATE)

    def update(
        self, resource: dict[str, Any], *, if_match: int | None = None, skip_unchanged: bool = False
    ) -> WriteResult:
        """Store a new version (update-as-create when the id is new)."""
        rtype, rid = resource["resourceType"], resource["id"]
        current = self._current(rtype, rid)
        if if_match is not None and (current is None or current[1] != if_match or current[2]):
            raise VersionConflict(None if current is None or current[2] else current[1])
        if skip_unchanged and current is not None and not current[2]:
            if current[3] == content_hash(self._body(resource, rid)):
                existing = self.read(rtype, rid)
                assert existing is not None
                return WriteResult(existing, created=False)
        op = ChangeOp.CREATE if current is None else ChangeOp.UPDATE
        return self._write(resource, rid, current, op)

    def delete(self, rtype: str, rid: str) -> StoredResource | None:
        """Write a tombstone version; None when nothing live was there."""
        current = self._current(rtype, rid)
        if current is None or current[2]:
            return None
        return self._write(None, rid, current, ChangeOp.DELETE, rtype=rtype).resource

    def flush(self) -> None:
        """Write the buffered rows (called before searches and at commit)."""
        q, cur = self.store.q, self.cur
        if self._reindex:
            stale = [(rid,) for rid in self._reindex]
            for table in INDEX_TABLES:
                cur.executemany(q(f"DELETE FROM {table} WHERE rid = ?"), stale)
            self._reindex = []
        for table, rows in self._pending.items():
            if rows:
                cur.executemany(q(_INSERTS[table]), rows)
                self._pending[table] = []

    # -- internals ---------------------------------------------------------------------------
    def _current(self, rtype: str, rid: str) -> _Current | None:
        sql = "SELECT rid, version, deleted, chash FROM resources WHERE rtype = ? AND id = ?"
        if self.store.dialect == "postgresql":
            sql += " FOR UPDATE"
        self.cur.execute(self.store.q(sql), (rtype, rid))
        row = self.cur.fetchone()
        return (int(row[0]), int(row[1]), bool(row[2]), row[3]) if row else None

    @staticmethod
    def _body(resource: dict[str, Any], rid: str, version_meta: dict[str, str] | None = None) -> dict[str, Any]:
        """The stored JSON: resourceType, id and meta first, then the rest as given."""
        meta = resource.get("meta")
        meta = {k: v for k, v in meta.items() if k not in VERSION_META} if isinstance(meta, dict) else {}
        if version_meta:
            meta.update(version_meta)
        body: dict[str, Any] = {"resourceType": resource["resourceType"], "id": rid}
        if meta:
            body["meta"] = meta
        for key, value in resource.items():
            if key not in ("resourceType", "id", "meta"):
                body[key] = value
        return body

    def _write(
        self,
        resource: dict[str, Any] | None,
        rid: str,
        current: _Current | None,
        op: ChangeOp,
        rtype: str | None = None,
    ) -> WriteResult:
        store, cur, q = self.store, self.cur, self.store.q
        rtype = rtype or (resource or {})["resourceType"]
        version = current[1] + 1 if current else 1
        now = time.time()
        body: dict[str, Any] = {}
        chash: str | None = None
        content = b""
        if resource is not None:
            chash = content_hash(self._body(resource, rid))
            body = self._body(resource, rid, {"versionId": str(version), "lastUpdated": format_instant(now)})
            content = orjson.dumps(body)
        deleted = int(resource is None)
        if current is None:
            row_id = store._insert_returning(
                cur,
                "INSERT INTO resources (rtype, id, version, lu, deleted, chash, content) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rtype, rid, version, now, deleted, chash, content),
            )
        else:
            row_id = current[0]
            cur.execute(
                q("UPDATE resources SET version = ?, lu = ?, deleted = ?, chash = ?, content = ? WHERE rid = ?"),
                (version, now, deleted, chash, content, row_id),
            )
            self._forget_index(row_id)
        self._pending["history"].append((rtype, rid, version, now, deleted, content))
        if resource is not None:
            self._index(row_id, rtype, body)
        self._pending["changes"].append((rtype, rid, version, op.value, now))
        created = current is None or current[2]
        return WriteResult(StoredResource(rtype, rid, version, from_epoch(now), bool(deleted), content), created)

    def _forget_index(self, row_id: int) -> None:
        for table in INDEX_TABLES:
            rows = self._pending[table]
            if rows:
                self._pending[table] = [r for r in rows if r[0] != row_id]
        self._reindex.append(row_id)

    def _index(self, row_id: int, rtype: str, body: dict[str, Any]) -> None:
        rows = extract(body, self.store.indexed_params(rtype))
        pending = self._pending
        pending["idx_token"].extend((row_id, rtype, *r) for r in rows.token)
        pending["idx_string"].extend((row_id, rtype, *r) for r in rows.string)
        pending["idx_date"].extend((row_id, rtype, *r) for r in rows.date)
        pending["idx_ref"].extend((row_id, rtype, *r) for r in rows.reference)
        pending["idx_number"].extend((row_id, rtype, *r) for r in rows.number)
