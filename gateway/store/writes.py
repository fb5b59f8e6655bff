"""``SqlTransaction``: versioned writes, index maintenance and the change feed.

A transaction keeps what it knows of every resource it read or wrote (``_Row``), and
buffers the rows it writes: new and changed resource rows, superseded versions, index rows
and change-feed entries go to the database with one ``executemany`` per table when the
transaction commits, or earlier when a search inside it needs them. ``prefetch`` reads the
current rows of many resources in one query per type. So storing a mapped record's ten
resources costs a handful of statements instead of ~40 (and on PostgreSQL, in pipeline
mode, one round trip for the prefetch and one for the row ids).

Row ids of new resources are reserved up front (``SqlBackend.take_row_ids``) so index
rows can refer to them before the resource rows are written.

``history`` keeps superseded versions only; the current version lives in ``resources``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import jsonio
from gateway.ids import uuid4_text
from gateway.search import (
    DataPolicy,
    ExtractionPlan,
    IndexRows,
    RowFilter,
    SearchQuery,
    format_instant,
    from_epoch,
    index_rows,
    spreads,
    string_key,
    subtree_sql,
    token_key,
)
from gateway.store.base import (
    LANES,
    ChangeOp,
    PreparedWrite,
    RecordOutput,
    SearchResult,
    StoredResource,
    VersionConflict,
    WriteResult,
)
from gateway.store.rows import (
    INDEX_TABLES,
    VERSION_META,
    Cursor,
    has_kept_identifiers,
    hash_body,
    kept_identifiers,
    kept_links,
)
from gateway.store.sqlops import INSERT_COLUMNS, SPREAD_SQL, SqlBackend, WriteStep

#: Record keys per ``records_outputs`` query (SQLite allows 999 parameters a statement by default).
_KEYS_PER_QUERY = 500
#: Records per ``claim_record_versions`` statement (three parameters each).
_VERSIONS_PER_QUERY = 300
_UPDATE_RESOURCE = (
    "UPDATE resources SET version = ?, lu = ?, deleted = ?, chash = ?, content = ?, method = ? WHERE rid = ?"
)
# A spread only grows: a bound on sort keys must cover every resource ever written.
_WIDEN_SPREAD = (
    "INSERT INTO date_spreads (rtype, param, spread) VALUES (?, ?, ?) ON CONFLICT (rtype, param)"
    " DO UPDATE SET spread = excluded.spread WHERE excluded.spread > date_spreads.spread"
)
_ROW_COLUMNS = "r.rid, r.rtype, r.id, r.version, r.lu, r.deleted, r.chash, r.content, r.method"


def prepare_write(resource: dict[str, Any], rid: str, plan: ExtractionPlan) -> PreparedWrite:
    """Stored body, content hash and index rows of ``resource`` under id ``rid``.

    None of it depends on the database, so it can run outside the (serialised) write
    transaction, e.g. while another batch commits.
    """
    body = _body(resource, rid)
    return PreparedWrite(resource["resourceType"], rid, body, hash_body(body), index_rows(body, plan))


@dataclass(slots=True)
class _Row:
    """The current row of one resource, as this transaction knows it."""

    row_id: int
    rtype: str
    id: str
    version: int
    lu: float
    deleted: bool
    chash: str | None
    content: bytes
    method: str | None  # the HTTP method that made this version (None: not recorded)

    def stored(self) -> StoredResource:
        return StoredResource(self.rtype, self.id, self.version, from_epoch(self.lu), self.deleted, self.content)


def _row(values: Any) -> _Row:
    rid, rtype, id_, version, lu, deleted, chash, content, method = values
    return _Row(int(rid), rtype, id_, int(version), float(lu), bool(deleted), chash, bytes(content), method)


class SqlTransaction:
    """Reads and writes inside one open database transaction."""

    def __init__(self, store: SqlBackend, cur: Cursor, *, feed: bool = True) -> None:
        self.store = store
        self.cur = cur
        self.feed = feed  # False: writes leave no change-feed entry (the audit trail)
        self.lane = LANES[store.feed_lane]
        self._pending: dict[str, list[tuple[Any, ...]]] = {table: [] for table in INSERT_COLUMNS}
        self._updates: list[tuple[Any, ...]] = []  # resource rows that exist, new content
        self._reindex: list[int] = []  # row ids whose old index rows must go before new ones land
        self._rows: dict[tuple[str, str], _Row | None] = {}  # None: known not to exist
        self._free_ids: list[int] = []
        self._last_id = 0
        self._spreads: dict[tuple[str, str], float] = {}  # widest date spreads written, not yet flushed

    # -- reads ---------------------------------------------------------------------------------
    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """Current version inside this transaction."""
        row = self._current(rtype, rid)
        return row.stored() if row is not None else None

    def prefetch(self, refs: Iterable[tuple[str, str]]) -> None:
        """Load the current rows of these resources (one query per type) for the writes to come."""
        by_type: dict[str, list[str]] = {}
        for rtype, rid in refs:
            if (rtype, rid) not in self._rows:
                self._rows[(rtype, rid)] = None
                by_type.setdefault(rtype, []).append(rid)
        found = self.store.rows_by_refs(self.cur, _ROW_COLUMNS, by_type, lock=True) if by_type else []
        for values in found:
            row = _row(values)
            self._rows[(row.rtype, row.id)] = row
        missing = sum(len(ids) for ids in by_type.values()) - len(found)
        if missing > len(self._free_ids):
            self._reserve(missing - len(self._free_ids))

    def search(self, query: SearchQuery) -> SearchResult:
        """Search inside this transaction (sees its own writes)."""
        self.flush()
        return self.store.search_in(self.store.search_cursor(self.cur), query)

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` ``policy`` lets the client see, seeing this transaction's writes."""
        self.flush()
        return self.store.visible_in(self.cur, policy, rtype, ids)

    def in_subtree(self, policy: DataPolicy, ids: Sequence[str]) -> set[str]:
        """Which of the Organization ``ids`` are in ``policy``'s subtree now, seeing this transaction's
        writes (the store's per-second subtree cache is for reads, not for judging a write)."""
        unique = sorted(set(ids))
        if not unique or not policy.organizations:
            return set()
        self.flush()
        sql, params = subtree_sql(policy)
        marks = ", ".join("?" for _ in unique)
        self.cur.execute(self.store.q(f"SELECT t.id FROM ({sql}) t WHERE t.id IN ({marks})"), [*params, *unique])
        return {row[0] for row in self.cur.fetchall()}

    def organization_named(self, rid: str) -> bool:
        """Whether a live Patient's ``organization`` or Organization's ``partof`` reference names it."""
        self.flush()
        self.cur.execute(
            self.store.q("SELECT 1 FROM idx_ref WHERE ttype = 'Organization' AND tid = ?"
                         " AND ((rtype = 'Patient' AND param = 'organization')"
                         " OR (rtype = 'Organization' AND param = 'partof')) LIMIT 1"),
            (rid,),
        )
        return self.cur.fetchone() is not None

    # -- writes --------------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], *, rid: str | None = None, method: str = "POST") -> WriteResult:
        """Store a new resource; a server-assigned id when ``rid`` is None; ``method``: the HTTP method
        that made it (a conditional update creates by PUT), which history shows."""
        rtype = resource["resourceType"]
        if rid is None:
            new_id = uuid4_text()
            self._rows[(rtype, new_id)] = None
            current = None
        else:
            new_id = rid
            current = self._current(rtype, new_id)
            if current is not None and not current.deleted:
                raise VersionConflict(current.version)
        return self._write(rtype, new_id, self.store.prepare(resource, new_id), current, method)

    def update(
        self,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        skip_unchanged: bool = False,
        prepared: PreparedWrite | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Store a new version (update-as-create when the id is new).

        ``prepared`` is ``store.prepare(resource)`` computed earlier, outside the transaction;
        ``method``: the HTTP method that made it (PUT, or PATCH), which history shows.
        """
        rtype, rid = resource["resourceType"], resource["id"]
        current = self._current(rtype, rid)
        if if_match is not None and (current is None or current.version != if_match or current.deleted):
            raise VersionConflict(None if current is None or current.deleted else current.version)
        if prepared is None:
            prepared = self.store.prepare(resource, rid)
        unchanged = current is not None and not current.deleted and current.chash == prepared.chash
        if skip_unchanged and unchanged:
            assert current is not None
            return WriteResult(current.stored(), created=False, unchanged=True)
        return self._write(rtype, rid, prepared, current, method)

    def append(self, prepared: PreparedWrite) -> WriteResult:
        """Store the first version of a resource whose id is new for sure (a server-made uuid), unread."""
        self._rows[(prepared.rtype, prepared.id)] = None
        return self._write(prepared.rtype, prepared.id, prepared, None, "POST")

    def delete(self, rtype: str, rid: str) -> StoredResource | None:
        """Write a tombstone version; None when nothing live was there."""
        current = self._current(rtype, rid)
        if current is None or current.deleted:
            return None
        return self._write(rtype, rid, None, current, "DELETE").resource

    # -- what source records produced (retractions) -------------------------------------------
    def record_outputs(self, source: str, record_key: str) -> list[RecordOutput]:
        """What the record produced when last stored."""
        self.cur.execute(
            self.store.q("SELECT rtype, id, rule, on_retract FROM record_outputs WHERE source = ? AND record_key = ?"),
            (source, record_key),
        )
        return [RecordOutput(*row) for row in self.cur.fetchall()]

    def set_record_outputs(self, source: str, record_key: str, outputs: Sequence[RecordOutput]) -> None:
        """Replace what the record produced."""
        self.cur.execute(
            self.store.q("DELETE FROM record_outputs WHERE source = ? AND record_key = ?"), (source, record_key)
        )
        if outputs:
            self.cur.executemany(
                self.store.q(
                    "INSERT INTO record_outputs (source, record_key, rtype, id, rule, on_retract)"
                    " VALUES (?, ?, ?, ?, ?, ?)"
                ),
                [(source, record_key, o.rtype, o.id, o.rule, o.on_retract) for o in outputs],
            )

    def records_outputs(self, source: str, record_keys: Sequence[str]) -> dict[str, list[RecordOutput]]:
        """What each of these records produced when last stored: one query per ``_KEYS_PER_QUERY`` keys."""
        found: dict[str, list[RecordOutput]] = {key: [] for key in record_keys}
        keys = list(found)
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start : start + _KEYS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            self.cur.execute(
                self.store.q(
                    "SELECT record_key, rtype, id, rule, on_retract FROM record_outputs"
                    f" WHERE source = ? AND record_key IN ({marks})"
                ),
                (source, *chunk),
            )
            for key, rtype, rid, rule, on_retract in self.cur.fetchall():
                found[key].append(RecordOutput(rtype, rid, rule, on_retract))
        return found

    def set_records_outputs(self, source: str, outputs: Sequence[tuple[str, Sequence[RecordOutput]]]) -> None:
        """Replace what each of these (distinct) records produced: one DELETE and one INSERT batch."""
        if not outputs:
            return
        stale = [(source, key) for key, _ in outputs]
        rows = [(source, key, o.rtype, o.id, o.rule, o.on_retract) for key, produced in outputs for o in produced]
        steps: list[WriteStep] = [("sql", "DELETE FROM record_outputs WHERE source = ? AND record_key = ?", stale)]
        if rows:
            steps.append(("insert", "record_outputs", rows))
        self.store.write_rows(self.cur, steps)

    def move_record_outputs(self, old: str, new: str) -> None:
        """Keep every list stored under ``old`` under ``new`` (joined with what ``new`` has): two
        indexed statements, which touch nothing when ``old`` has no list."""
        # The WHERE before ON CONFLICT is SQLite's condition for an upsert from a SELECT.
        self.cur.execute(
            self.store.q(
                "INSERT INTO record_outputs (source, record_key, rtype, id, rule, on_retract)"
                " SELECT ?, record_key, rtype, id, rule, on_retract FROM record_outputs WHERE source = ?"
                " ON CONFLICT DO NOTHING"
            ),
            (new, old),
        )
        self.cur.execute(self.store.q("DELETE FROM record_outputs WHERE source = ?"), (old,))

    def claim_record_versions(self, system: str, versions: Sequence[tuple[str, float]]) -> set[str]:
        """Keep each record's latest version (an upsert that never lowers it); the keys whose stored
        version is later than the one given. One statement per ``_VERSIONS_PER_QUERY`` records."""
        stale: set[str] = set()
        for start in range(0, len(versions), _VERSIONS_PER_QUERY):
            chunk = versions[start : start + _VERSIONS_PER_QUERY]
            given = dict(chunk)
            # The upsert always updates (to the larger version) so that RETURNING gives every row
            # and the row stays locked: a concurrent writer of the record waits for this commit.
            self.cur.execute(
                self.store.q(
                    "INSERT INTO record_versions (system, record_key, version) VALUES "
                    + ", ".join("(?, ?, ?)" for _ in chunk)
                    + " ON CONFLICT (system, record_key) DO UPDATE SET version = CASE"
                    " WHEN excluded.version > record_versions.version THEN excluded.version"
                    " ELSE record_versions.version END RETURNING record_key, version"
                ),
                [value for key, version in chunk for value in (system, key, version)],
            )
            stale.update(key for key, stored in self.cur.fetchall() if stored > given[key])
        return stale

    def produced_by_others(self, rtype: str, rid: str, source: str, record_key: str) -> bool:
        """Whether another record still produces the resource."""
        self.cur.execute(
            self.store.q(
                "SELECT 1 FROM record_outputs WHERE rtype = ? AND id = ?"
                " AND NOT (source = ? AND record_key = ?) LIMIT 1"
            ),
            (rtype, rid, source, record_key),
        )
        return self.cur.fetchone() is not None

    def reserve(self, count: int) -> None:
        """Reserve row ids for ``count`` resources about to be created (one query instead of one each)."""
        if count > len(self._free_ids):
            self._reserve(count - len(self._free_ids))

    def flush(self) -> None:
        """Write the buffered rows (called before searches and at commit)."""
        steps: list[WriteStep] = []
        if self._reindex:
            stale = [(row_id,) for row_id in self._reindex]
            steps.extend(("sql", f"DELETE FROM {table} WHERE rid = ?", stale) for table in INDEX_TABLES)
            self._reindex = []
        if self._pending["resources"]:
            steps.append(("insert", "resources", self._pending["resources"]))
            self._pending["resources"] = []
        if self._updates:  # after the inserts: a resource may be created and changed in one transaction
            steps.append(("sql", _UPDATE_RESOURCE, self._updates))
            self._updates = []
        for table, rows in self._pending.items():
            if rows:
                steps.append(("insert", table, rows))
                self._pending[table] = []
        if self._spreads:
            wider = self._wider_spreads()
            if wider:
                steps.append(("sql", _WIDEN_SPREAD, wider))
        if steps:
            self.store.write_rows(self.cur, steps)

    # -- internals -----------------------------------------------------------------------------
    def _current(self, rtype: str, rid: str) -> _Row | None:
        key = (rtype, rid)
        if key in self._rows:
            return self._rows[key]
        sql = f"SELECT {_ROW_COLUMNS} FROM resources r WHERE r.rtype = ? AND r.id = ?"
        if self.store.row_locks:
            sql += " FOR UPDATE"
        self.cur.execute(self.store.q(sql), (rtype, rid))
        values = self.cur.fetchone()
        row = self._rows[key] = _row(values) if values else None
        return row

    def _wider_spreads(self) -> list[tuple[Any, ...]]:
        """The buffered spreads wider than the store holds (per key, the committed spread is read
        once a process: this transaction has not written that key yet)."""
        floor = self.store.spread_floor
        unknown = [key for key in self._spreads if key not in floor]
        for rtype, param in unknown:
            self.cur.execute(self.store.q(SPREAD_SQL), (rtype, param))
            found = self.cur.fetchone()
            floor[(rtype, param)] = float(found[0]) if found is not None else float("-inf")
        wider = [(rtype, param, spread) for (rtype, param), spread in self._spreads.items()
                 if spread > floor[(rtype, param)]]  # fmt: skip
        self._spreads = {}
        return wider

    def _reserve(self, count: int) -> None:
        ids = self.store.take_row_ids(self.cur, count, self._last_id)
        self._last_id = max(self._last_id, ids[-1])
        self._free_ids.extend(reversed(ids))

    def _new_row_id(self) -> int:
        if not self._free_ids:
            self._reserve(1)
        return self._free_ids.pop()

    def _write(
        self, rtype: str, rid: str, prepared: PreparedWrite | None, current: _Row | None, method: str
    ) -> WriteResult:
        pending = self._pending
        version = current.version + 1 if current else 1
        now = round(time.time(), 3)  # milliseconds, as meta.lastUpdated shows it
        content = b""
        chash: str | None = None
        rows = prepared.rows if prepared is not None else None
        if prepared is not None:
            body = prepared.body
            if current is not None and has_kept_identifiers(current.content):
                body = _keep_identifiers(body, current.content)
                if body is not prepared.body:
                    rows = index_rows(body, self.store.indexed_params(rtype))
            meta = body.get("meta")
            stamp = {"versionId": str(version), "lastUpdated": format_instant(now)}
            content = jsonio.dumps({**body, "meta": {**meta, **stamp} if meta else stamp})
            chash = prepared.chash
        deleted = prepared is None
        if current is None:
            row_id = self._new_row_id()
            pending["resources"].append((row_id, rtype, rid, version, now, int(deleted), chash, content, method))
            op = ChangeOp.CREATE
        else:
            row_id = current.row_id
            pending["history"].append(
                (rtype, rid, current.version, current.lu, int(current.deleted), current.content, current.method)
            )
            self._updates.append((version, now, int(deleted), chash, content, method, row_id))
            self._forget_index(row_id)
            op = ChangeOp.DELETE if deleted else ChangeOp.UPDATE
        if rows is not None:
            self._index(row_id, rtype, rows)
        if self.feed:
            pending["changes"].append((rtype, rid, version, op.value, now, self.lane))
        row = _Row(row_id, rtype, rid, version, now, deleted, chash, content, method)
        self._rows[(rtype, rid)] = row
        created = current is None or current.deleted
        return WriteResult(row.stored(), created)

    def _forget_index(self, row_id: int) -> None:
        for table in INDEX_TABLES:
            rows = self._pending[table]
            if rows:
                self._pending[table] = [r for r in rows if r[0] != row_id]
        self._reindex.append(row_id)

    def _index(self, row_id: int, rtype: str, rows: IndexRows) -> None:
        pending = self._pending
        head = (row_id, rtype)
        # Indexed text is bounded (``gateway.search.keys``): PostgreSQL refuses a B-tree entry past ~2.7 KB.
        if rows.token:
            pending["idx_token"].extend([(row_id, rtype, param, token_key(system), token_key(code))
                                         for param, system, code in rows.token])
        if rows.string:
            pending["idx_string"].extend([(row_id, rtype, param, string_key(norm), exact)
                                          for param, norm, exact in rows.string])
        if rows.date:
            pending["idx_date"].extend([head + r for r in rows.date])
            known = self._spreads
            for param, spread in spreads(rows.date).items():
                if spread > known.get((rtype, param), float("-inf")):
                    known[(rtype, param)] = spread
        if rows.reference:
            pending["idx_ref"].extend([(row_id, rtype, param, token_key(ttype), token_key(tid), url)
                                       for param, ttype, tid, url in rows.reference])
        if rows.number:
            pending["idx_number"].extend([head + r for r in rows.number])


def _keep_identifiers(body: dict[str, Any], current: bytes) -> dict[str, Any]:
    """``body`` with the kept identifiers (and Patient links) of the current version, unless it
    brings its own: each kind is managed by its writer (a DHIS2 write-back, the identity matcher)."""
    stored = jsonio.loads(current)
    for element, kept_of in (("identifier", kept_identifiers), ("link", kept_links)):
        if kept_of(body):
            continue
        kept = kept_of(stored)
        if not kept:
            continue
        found = body.get(element)
        if found is not None and not isinstance(found, list):
            continue  # a resource whose element is a single value: nothing to add to
        body = {**body, element: [*(found or []), *kept]}
    return body


def _body(resource: dict[str, Any], rid: str) -> dict[str, Any]:
    """The stored JSON without version metadata: resourceType, id and meta first, then the rest."""
    body: dict[str, Any] = {"resourceType": resource["resourceType"], "id": rid}
    meta = resource.get("meta")
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if k not in VERSION_META}
        if kept:
            body["meta"] = kept
    for key, value in resource.items():
        if key not in ("resourceType", "id", "meta"):
            body[key] = value
    return body
