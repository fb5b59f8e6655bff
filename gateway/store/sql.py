"""``SqlStore``: the resource store logic shared by the SQLite and PostgreSQL backends.

Subclasses provide connections, the dialect name, placeholder style, the few
statements that differ and what their database allows (``inline_reads``, ``row_locks``);
everything else (versioning, change feed, index maintenance, search, history, clients,
quarantine) is written once here against DB-API cursors.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway import jsonio
from gateway.errors import StoreError
from gateway.ids import uuid4_text
from gateway.search import (
    FAR_FUTURE,
    FAR_PAST,
    DateSortPlan,
    ExtractionPlan,
    Include,
    IndexRows,
    RowFilter,
    SearchError,
    SearchQuery,
    SearchRegistry,
    anchor_sql,
    capped_count_sql,
    closed_window,
    code_system_sql,
    count_sql,
    date_sort_plan,
    date_sort_walk,
    default_registry,
    from_epoch,
    index_rows,
    page_sql,
    param_rows,
    pin_system,
    rid_walk_sql,
    selective_counts,
    subtree_sql,
    type_walk_sql,
    visible_probe,
    visible_rows,
    window_count_sql,
)
from gateway.store.base import (
    AccessToken,
    ApiClient,
    Change,
    ChangeOp,
    LoggedMessage,
    MessageEntry,
    MessageFilter,
    PreparedWrite,
    QuarantinedRecord,
    SearchResult,
    StoredResource,
    StoreReads,
    WriteBatch,
)
from gateway.store.exports import ExportJobs
from gateway.store.history_at import at_conditions
from gateway.store.migrations import LATEST, MIGRATIONS, statements_for
from gateway.store.rows import COLUMNS, INDEX_TABLES, Cursor, to_resource
from gateway.store.sqlops import SPREAD_SQL, WriteStep, insert_sql
from gateway.store.subscriptions import SubscriptionRows
from gateway.store.writes import SqlTransaction, prepare_write

#: Organizations a data policy's subtree may list as parameters (see ``resolve_policy``).
_MAX_SUBTREE = 2000
#: A looked-up subtree serves this long: moving a facility under another district shows in
#: every process within this bound (as revoking a client does).
_SUBTREE_SECONDS = 1.0
#: Row ids a writer transaction reserves at a time (the unused ones are gaps, as a rollback leaves).
ROW_ID_BLOCK = 32
#: The one resource type the audit trail holds (``AuditTrail``).
AUDIT_TYPE = "AuditEvent"
#: Ids a query lists at most (SQLite binds at most 32,766 parameters a statement).
_IDS_PER_QUERY = 500
#: Rounds of ``_include:iterate`` / ``_revinclude:iterate`` after the first (each follows one more
#: reference from what the round before added).
ITERATE_ROUNDS = 4



class SchemaTooNew(StoreError):
    """The store's schema is newer than this gateway's migrations: it was written by a newer one."""


class SqlStore(ExportJobs, SubscriptionRows):
    """Shared implementation of ``Store`` (all the store protocols) over a DB-API database.

    It is also the ``SqlBackend`` its transactions write through.
    """

    dialect = "sqlite"
    #: ``Store.inline_reads``: off unless a backend knows its reads are that cheap (a worker
    #: thread is always safe).
    inline_reads = False
    #: ``SqlBackend.row_locks``: off unless the backend's SQL has ``FOR UPDATE``.
    row_locks = False
    #: ``ChangeFeed.feed_lane``: the lane of the changes this store object writes.
    feed_lane = "live"

    def __init__(self, registry: SearchRegistry | None = None) -> None:
        self.registry = registry or default_registry()
        self._indexed: dict[str, ExtractionPlan] = {}  # rtype -> params extracted on write
        self._subtrees: dict[tuple[str, ...], tuple[float, tuple[str, ...]]] = {}  # roots -> (until, subtree)
        self.spread_floor: dict[tuple[str, str], float] = {}

    # -- to be provided by the backends ---------------------------------------------------
    def _read_cursor(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _write_cursor(self) -> AbstractContextManager[Cursor]:
        """A cursor inside an open write transaction (committed on exit)."""
        raise NotImplementedError

    def write_batch(self) -> AbstractContextManager[WriteBatch]:
        """This thread's transactions until the block ends, committed together at its end."""
        raise NotImplementedError

    def q(self, sql: str) -> str:
        """Adapt ``?`` placeholders to the driver's style."""
        return sql

    def _insert_returning(self, cur: Cursor, sql: str, params: Sequence[Any], key: str = "rid") -> int:
        cur.execute(self.q(f"{sql} RETURNING {key}"), params)
        return int(cur.fetchone()[0])

    def write_rows(self, cur: Cursor, steps: list[WriteStep]) -> None:
        """Run a transaction's buffered writes in order: ``("sql", statement, rows)`` or
        ``("insert", table, rows)`` (columns from ``INSERT_COLUMNS``)."""
        for kind, what, rows in steps:
            if kind == "insert":
                cur.executemany(self.q(insert_sql(what)), rows)
            else:
                cur.executemany(self.q(what), rows)

    def rows_by_id(
        self, cur: Cursor, columns: str, rtype: str, ids: Sequence[str], *, where: str = "", lock: bool = False
    ) -> list[Any]:
        """``columns`` of the ``resources r`` rows of one type whose ids are in ``ids``
        (``lock``: locked for update, where the database locks rows; SQLite locks the file)."""
        rows: list[Any] = []
        for start in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[start : start + _IDS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            cur.execute(self.q(f"SELECT {columns} FROM resources r WHERE r.rtype = ?{where} AND r.id IN ({marks})"),
                        (rtype, *chunk))
            rows.extend(cur.fetchall())
        return rows

    def rows_by_refs(self, cur: Cursor, columns: str, refs: Mapping[str, Sequence[str]], *, lock: bool = False) -> (
            list[Any]):
        """``columns`` of the ``resources r`` rows whose ids are in ``refs`` (type to ids): ``rows_by_id``
        per type (one statement each; a store whose statements cost a round trip asks once)."""
        rows: list[Any] = []
        for rtype, ids in refs.items():
            rows.extend(self.rows_by_id(cur, columns, rtype, ids, lock=lock))
        return rows

    def reserve_row_ids(self, cur: Cursor, count: int, after: int) -> list[int]:
        """``count`` unused ``resources.rid`` values, ascending, all above ``after``.

        Called inside a write transaction, which serialises writers, so reserved ids grow
        in commit order (search paging pins a snapshot on the largest row id).
        """
        raise NotImplementedError

    def take_row_ids(self, cur: Cursor, count: int, after: int) -> list[int]:
        """``count`` unused row ids above ``after``, from those the writer's transaction reserved
        ahead (``ROW_ID_BLOCK`` at a time) when it has them: one query serves many writes."""
        spare = self._spare_ids()
        if spare is None:
            return self.reserve_row_ids(cur, count, after)
        if len(spare) < count:
            spare.extend(self.reserve_row_ids(cur, max(count - len(spare), ROW_ID_BLOCK), max([after, *spare[-1:]])))
        taken = spare[:count]
        del spare[:count]
        return taken

    def _spare_ids(self) -> list[int] | None:
        """The writer transaction's reserved, unused row ids (None: each transaction reserves its own)."""
        return None

    def search_cursor(self, cur: Cursor) -> Cursor:
        """The cursor a search inside a write transaction runs on: the transaction's own."""
        return cur

    def refresh_statistics(self) -> None:
        """Nothing by default: SQLite's search plans are steered (``INDEXED BY``, ``+ 0``), not costed."""

    def close(self) -> None:
        """Release connections."""

    # -- schema ------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        with self._write_cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied "
                        + ("REAL" if self.dialect == "sqlite" else "DOUBLE PRECISION") + " NOT NULL)")
            self._lock_migrations(cur)
            cur.execute("SELECT version FROM schema_migrations")
            applied = {int(row[0]) for row in cur.fetchall()}
            current = max(applied, default=0)
            if current > LATEST:
                # Written by a newer gateway: this code would not keep up what its migrations added
                # (tables and rows every write maintains), and searches of the newer code would miss
                # what it wrote. Going back means restoring the backup taken before the upgrade.
                raise SchemaTooNew(
                    f"the store has schema version {current}, newer than the {LATEST} this gateway knows:"
                    " it was written by a newer gateway; upgrade this one, or restore the backup taken"
                    " before the upgrade"
                )
            for migration in MIGRATIONS:
                # Every missing version, not only those above the newest: branches merged out of
                # order (a database at 12 that never had 10) still get what they lack.
                if migration.version in applied:
                    continue
                for statement in statements_for(self.dialect, migration):
                    cur.execute(statement)
                cur.execute(self.q("INSERT INTO schema_migrations (version, applied) VALUES (?, ?)"),
                            (migration.version, time.time()))
                current = max(current, migration.version)
        return current

    def _lock_migrations(self, cur: Cursor) -> None:
        """Serialise concurrent start-ups (PostgreSQL); SQLite's write lock already does."""

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._read_cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
            return int(cur.fetchone()[0])

    # -- reads -------------------------------------------------------------------------------
    def read(self, rtype: str, rid: str, *, policy: RowFilter | None = None) -> StoredResource | None:
        """Current version of a resource (a tombstone if deleted), or None; with ``policy``, None
        unless it is live and the policy shows it."""
        with self._read_cursor() as cur:
            probe = visible_probe(self.resolve_policy(cur, policy), rtype, "r") if policy is not None else None
            only, only_params = ("", []) if probe is None else (f" AND r.deleted = 0 AND {probe[0]}", probe[1])
            cur.execute(self.q(f"SELECT {COLUMNS} FROM resources r WHERE r.rtype = ? AND r.id = ?{only}"),
                        (rtype, rid, *only_params))
            row = cur.fetchone()
        return to_resource(row) if row else None

    def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None:
        """One stored version of a resource, or None (the current one, or one in ``history``)."""
        where = "WHERE r.rtype = ? AND r.id = ? AND r.version = ?"
        with self._read_cursor() as cur:
            cur.execute(
                self.q(f"SELECT {COLUMNS} FROM resources r {where} UNION ALL SELECT {COLUMNS} FROM history r {where}"),
                (rtype, rid, version, rtype, rid, version),
            )
            row = cur.fetchone()
        return to_resource(row) if row else None

    def read_many(self, refs: Sequence[tuple[str, str]]) -> list[StoredResource]:
        """Current live versions of the given (type, id) pairs."""
        with self._read_cursor() as cur:
            return self._read_many_cur(cur, refs)

    def history(
        self,
        rtype: str | None,
        rid: str | None,
        *,
        since: datetime | None = None,
        count: int = 50,
        offset: int = 0,
        policy: RowFilter | None = None,
        until: datetime | None = None,
        at: Sequence[tuple[datetime, datetime]] = (),
    ) -> tuple[list[StoredResource], int]:
        """Versions, newest first, and their total (of resources ``policy`` lets the client see now)."""
        conds: list[str] = []
        params: list[Any] = []
        if policy is not None and policy.policy.limits_rows:
            with self._read_cursor() as cur:
                policy = self.resolve_policy(cur, policy)
        visible = visible_rows(policy, "r")
        if visible is not None:
            conds.append(visible[0])
            params.extend(visible[1])
        if rtype is not None:
            conds.append("r.rtype = ?")
            params.append(rtype)
        if rid is not None:
            conds.append("r.id = ?")
            params.append(rid)
        if rtype is None:
            # The audit trail is not part of the record's history; admins search it as AuditEvent.
            conds.append(f"r.rtype <> '{AUDIT_TYPE}'")
        if since is not None:
            conds.append("r.lu >= ?")
            # lu is stored to the millisecond, as lastUpdated shows it; the margin absorbs float
            # rounding, so `_since=<a version's lastUpdated>` includes that version.
            params.append(since.timestamp() - 0.0001)
        if until is not None:
            conds.append("r.lu <= ?")
            params.append(until.timestamp() + 0.0001)
        # The current versions are in ``resources``, the superseded ones in ``history``.
        (latest, latest_params), (older, older_params) = at_conditions(at, until) if at else (("", []), ("", []))
        current = _where([*conds, latest] if latest else conds)
        superseded = _where([*conds, older] if older else conds)
        current_params, superseded_params = (*params, *latest_params), (*params, *older_params)
        with self._read_cursor() as cur:
            cur.execute(
                self.q(f"SELECT (SELECT COUNT(*) FROM resources r{current})"
                       f" + (SELECT COUNT(*) FROM history r{superseded})"),
                (*current_params, *superseded_params),
            )
            total = int(cur.fetchone()[0])
            # With each version the method that made it, and whether it made the resource anew (a first
            # version, or the one after a deletion): what its history entry's request and status say.
            made = (", r.method, (CASE WHEN r.version = 1 OR EXISTS (SELECT 1 FROM history p WHERE p.rtype = r.rtype"
                    " AND p.id = r.id AND p.version = r.version - 1 AND p.deleted = 1) THEN 1 ELSE 0 END)")
            cur.execute(
                self.q(f"SELECT {COLUMNS}{made} FROM resources r{current} UNION ALL SELECT {COLUMNS}{made}"
                       f" FROM history r{superseded}"
                       # Type and id last: versions of one millisecond (a Bundle's) keep one order across pages.
                       " ORDER BY 4 DESC, 3 DESC, 1, 2 LIMIT ? OFFSET ?"),
                (*current_params, *superseded_params, count, offset),
            )
            rows = [_made(row) for row in cur.fetchall()]
        return self.visible_versions(policy, rows), total

    def visible_versions(self, policy: RowFilter | None, versions: Sequence[StoredResource]) -> list[StoredResource]:
        """Of ``versions`` (of resources ``policy`` shows as they are now), those it shows by their own
        content too: a version of a type the policy restricts, but Patient, must refer to a Patient it
        shows. An Observation moved from a hidden Patient to a visible one keeps its old version hidden
        (the rule on current rows alone would show it: index rows exist for current versions only)."""
        if policy is None or not policy.policy.limits_rows:
            return list(versions)
        patients: dict[tuple[str, str, int], set[str]] = {}
        for version in versions:
            if version.deleted or version.type == "Patient" or not policy.applies_to(version.type):
                continue
            rows = index_rows(jsonio.loads(version.content), self.indexed_params(version.type))
            patients[(version.type, version.id, version.version)] = {
                tid for _, ttype, tid, _ in rows.reference if ttype == "Patient" and tid
            }
        named = sorted(set().union(*patients.values())) if patients else []
        shown = self.visible(policy, "Patient", named) if named else set()
        return [
            v for v in versions
            if (v.type, v.id, v.version) not in patients or patients[v.type, v.id, v.version] & shown
        ]  # fmt: skip

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a parsed search query."""
        with self._read_cursor() as cur:
            return self.search_in(cur, query)

    def search_in(self, cur: Cursor, query: SearchQuery) -> SearchResult:
        """Run a parsed search query on an open cursor (in a transaction: seeing its writes)."""
        if query.snapshot is None:
            cur.execute("SELECT COALESCE(MAX(rid), 0) FROM resources")
            query.snapshot = int(cur.fetchone()[0])
        query.policy = self.resolve_policy(cur, query.policy)
        spreads: dict[str, float] = {}  # date spreads this search read (see ``_spread``)
        total: int | None = None
        if query.total != "none" or query.count == 0 or query.summary == "count":
            # An estimate is exact up to the cap and absent above it (FHIR lets a server leave
            # Bundle.total out); a count asked for by name is exact, whatever it costs.
            if query.total == "accurate" or query.count == 0 or query.summary == "count":
                count, count_params = self._count(cur, query, None, spreads)
                cur.execute(self.q(count), count_params)
                total = int(cur.fetchone()[-1])
            else:
                count, count_params = self._count(cur, query, query.total_cap, spreads)
                cur.execute(self.q(count), count_params)
                read, matches = cur.fetchone()
                total = int(matches) if int(read) <= query.total_cap else None
        if query.count == 0 or query.summary == "count":
            return SearchResult([], total, snapshot=query.snapshot)
        if query.after is not None:
            return self._cursor_page(cur, query, total)
        keys: dict[int, Any] = {}
        rows = self._page_rows(cur, query, total, spreads, keys)
        page = [to_resource(row) for row in rows]
        included = self._includes(cur, query, [row[6] for row in rows], page) if page else []
        return SearchResult(page, total, included, snapshot=query.snapshot,
                            after=self._anchor(cur, query, rows, keys) if len(rows) >= query.count else None)

    def _cursor_page(self, cur: Cursor, query: SearchQuery, total: int | None) -> SearchResult:
        """The page after a ``_cursor``'s resource (keyset paging): read one match more than the page
        to know whether another page follows, which its position no longer tells (matches before
        the cursor may have been deleted since)."""
        # The plans of a first page, each starting after the cursor: the row-id walks and the plain SQL
        # after its row id, the sorted index walks and sorted matches after its key and row id.
        probe = replace(query, offset=0, count=query.count + 1)
        keys: dict[int, Any] = {}
        rows = self._page_rows(cur, probe, total, {}, keys)
        more = len(rows) > query.count
        rows = rows[: query.count]
        page = [to_resource(row) for row in rows]
        included = self._includes(cur, query, [row[6] for row in rows], page) if page else []
        return SearchResult(page, total, included, snapshot=query.snapshot, more=more,
                            after=self._anchor(cur, query, rows, keys) if more else None)

    def _anchor(
        self, cur: Cursor, query: SearchQuery, rows: list[Any], keys: dict[int, Any]
    ) -> tuple[int, tuple[Any, ...]] | None:
        """The cursor of the page after ``rows``: their last match's row id and sort key values, as
        the page was read (an index walk's ``keys``, or ``anchor_columns`` after the row id), else
        read by one more query."""
        if not rows:
            return None
        last = rows[-1]
        rid = int(last[6])
        if not query.sort:
            return rid, ()
        if len(last) == 7 + len(query.sort):
            found = tuple(last[7:])
        elif len(query.sort) == 1 and rid in keys:
            found = (keys[rid],)
        else:
            sql, params = anchor_sql(query, rid)
            cur.execute(self.q(sql), params)
            found = tuple(cur.fetchone())
        return rid, tuple(None if v is None else (v if isinstance(v, str) else float(v)) for v in found)

    def _page_rows(
        self, cur: Cursor, query: SearchQuery, total: int | None, spreads: dict[str, float], keys: dict[int, Any]
    ) -> list[Any]:
        """One page's rows (resource columns and row id), by the cheapest plan for the query's shape;
        a walk sorted by one key notes in ``keys`` the key of each resource it read (its cursor's)."""
        need = query.offset + query.count
        plan = (
            date_sort_plan(query, max(self.SORT_WALK_MIN, need * self.SORT_WALK_PER_ROW))
            if self.bounded_sort
            else None
        )
        walk = date_sort_walk(query, steer=self.dialect == "sqlite") if plan is None else None
        by_rid = rid_walk_sql(query, steer=self.dialect == "sqlite") if plan is None and walk is None else None
        by_type = self._type_walk(cur, query) if by_rid is None else None
        rows: list[Any] | None = None
        if by_rid is not None and total is None and self._many_matches(cur, query):
            rows = self._rid_walk_page(cur, query, *self._pin_rid_walk(cur, query, by_rid))  # None: sort
        elif by_type is not None:
            rows = self._type_walk_page(cur, query, *by_type)
        if rows is not None:
            pass
        elif plan is not None:
            rows = self._bounded_walk_page(cur, query, plan, spreads, keys)
        elif walk is not None:
            rows = self._walk_page(cur, query, *walk, keys=keys)
        else:
            few = total is not None and total <= query.total_cap
            page_query, page_params = page_sql(query, f"{COLUMNS}, r.rid", few=few, anchor=True)
            cur.execute(self.q(page_query), page_params)
            rows = cur.fetchall()
        return rows

    #: date-index rows a sorted search walks at most (per row of the page, and at least)
    SORT_WALK_PER_ROW = 50
    SORT_WALK_MIN = 2000
    #: False: the unbounded walk of earlier releases (the sort benchmark's baseline)
    bounded_sort = True

    def _bounded_walk_page(
        self, cur: Cursor, query: SearchQuery, plan: DateSortPlan, spreads: dict[str, float], keys: dict[int, Any]
    ) -> list[Any]:
        """One page ordered by a date parameter: the few matches sorted, or a bounded walk
        (see ``date_sort_plan``)."""
        need = query.offset + query.count
        if plan.window is not None:  # the window bounds the walk: no counting first
            page = self._window_walk_page(cur, query, plan, spreads, keys)
            if page is not None:
                return page
        driver = 0
        if plan.counts:
            sizes = []
            for sql, params in plan.counts:
                cur.execute(self.q(sql), (*params, self.SORT_WALK_MIN))
                sizes.append(int(cur.fetchone()[0]))
            driver = sizes.index(min(sizes))
            if sizes[driver] < self.SORT_WALK_MIN or plan.window is not None:
                # Few matches: sorting them beats any walk (and the window's walk gave up).
                return self._rows_in_order(cur, self._by_match(cur, query, plan.by_match[driver], keys))
        found = None
        if plan.counts:  # without criteria every row walked is kept: the walk reads only the page
            cur.execute(self.q(plan.bound), plan.bound_params)
            found = cur.fetchone()
        # Fewer rows than the cap: the walk may read them all.
        bound = found[0] if found is not None else plan.unbounded
        # A resource with several dates has several index rows: ask for enough rows to see ``need`` resources.
        ordered, _ = self._walk_rids(cur, plan.walk, [*plan.walk_params, bound], need, need, keys=keys)
        if len(ordered) >= need:
            return self._rows_in_order(cur, ordered[query.offset : need])
        return self._rows_in_order(cur, self._by_match(cur, query, plan.by_match[driver], keys))

    def _count(
        self, cur: Cursor, query: SearchQuery, cap: int | None, spreads: dict[str, float]
    ) -> tuple[str, list[Any]]:
        """SQL counting the matches (the count last), up to ``cap`` index rows when there is one:
        from a closed date window's rows when the criteria make one (see ``window_count_sql``),
        else from the criteria's index rows."""
        window = closed_window(query)
        if window is None:
            return count_sql(query) if cap is None else capped_count_sql(query, cap)
        param, lower, upper = window
        spread = self._spread(cur, query.rtype, param, spreads)
        return window_count_sql(query, param, lower - spread, upper + spread, cap)

    def _spread(self, cur: Cursor, rtype: str, param: str, known: dict[str, float]) -> float:
        """The widest spread of one resource's values of date ``param`` (0 when none is closed),
        read once a search (``known``: what this search read already; the count and the page
        of one search bound the same window)."""
        if param not in known:
            cur.execute(self.q(SPREAD_SQL), (rtype, param))
            found = cur.fetchone()
            known[param] = max(float(found[0]), 0.0) if found is not None else 0.0
        return known[param]

    def _window_walk_page(
        self, cur: Cursor, query: SearchQuery, plan: DateSortPlan, spreads: dict[str, float], keys: dict[int, Any]
    ) -> list[Any] | None:
        """One page newest first by a date the criteria bound: resources with an open end
        first, then a walk from the window's top, complete once it passes the window's bottom
        (see ``gateway.search.date_window``); bounded by ``cap`` rows like the plain walk, after
        which it gives up (None): the matches are then sorted."""
        assert plan.window is not None
        lower, upper = plan.window
        spread = self._spread(cur, query.rtype, plan.bound_params[1], spreads)  # [1]: the sorted parameter
        start = FAR_FUTURE if upper is None else min(upper + spread, FAR_FUTURE)
        floor = FAR_PAST if lower is None else lower - spread
        need = query.offset + query.count
        cap = int(plan.bound_params[-1]) + 1
        # Resources with an open end sort first (by row id, their key being one); the walk
        # reads at most ``cap`` of their rows, and gives up if that does not fill the page.
        cur.execute(self.q(plan.open_bound), [*plan.bound_params[:-1], FAR_FUTURE, cap - 1])
        row = cur.fetchone()
        open_params = [*plan.walk_params, FAR_FUTURE, row[0] if row else 0]
        ordered, _ = self._walk_rids(cur, plan.open_walk, open_params, need, need, keys=keys)
        if len(ordered) < need and row is not None:
            return None
        if len(ordered) < need:
            cur.execute(self.q(plan.bound_below), [*plan.bound_params[:-1], start, cap - 1])
            row = cur.fetchone()
            # Past the window's bottom every match has been seen; the cap-th row above it stops
            # the walk sooner, and then a short page needs the matches sorted.
            complete = row is None or float(row[0]) <= floor
            bound = floor if complete else float(row[0])
            below, _ = self._walk_rids(cur, plan.walk_below, [*plan.walk_params, start, bound], need, need,
                                       keys=keys)
            seen = set(ordered)
            ordered.extend(rid for rid in below if rid not in seen)
            if len(ordered) < need and not complete:
                return None
        return self._rows_in_order(cur, ordered[query.offset : need])

    def _walk_rids(
        self, cur: Cursor, sql: str, params: list[Any], need: int, limit: int, grow: int = 2,
        keys: dict[int, Any] | None = None,
    ) -> tuple[list[int], bool]:
        """The first ``need`` distinct row ids a walk yields (a resource has a row per value: the
        first sighting is its place), asking for ``limit`` rows and ``grow`` times more until it
        has them; and whether the walk ran out (its own bound ended it) before ``limit`` rows.
        ``keys``: the walk's rows hold the sort key after the row id; a resource's first is its key."""
        while True:
            cur.execute(self.q(sql), (*params, limit))
            fetched = cur.fetchall()
            walked = [row[0] for row in fetched]
            ordered = list(dict.fromkeys(walked))
            if len(ordered) >= need or len(walked) < limit:
                if keys is not None:
                    for row in reversed(fetched):  # the first sighting's value stays
                        keys[row[0]] = row[1]
                return ordered, len(walked) < limit
            limit *= grow

    def _many_matches(self, cur: Cursor, query: SearchQuery) -> bool:
        """More than ``total_cap`` matches? (Known already when an estimated total was left out.)"""
        if query.total != "none":
            return True
        count, count_params = capped_count_sql(query, query.total_cap)
        cur.execute(self.q(count), count_params)
        return int(cur.fetchone()[0]) > query.total_cap

    def _pin_rid_walk(
        self, cur: Cursor, query: SearchQuery, plain: tuple[str, list[Any]]
    ) -> tuple[str, list[Any]]:
        """The row-id walk ``plain``; on PostgreSQL, for a code alone, the walk naming its one
        system (or no system) when its rows have just one: the value index then lists them in
        row-id order.

        SQLite is told to walk the row-id index (``INDEXED BY``); PostgreSQL's planner read
        every row of a code through ``(rtype, param, code, system, rid)`` to sort them by row id
        unless the system is named (``Patient?gender``: 7.5 ms at 1M resources).
        """
        found = code_system_sql(query) if self.dialect != "sqlite" else None
        if found is None:
            return plain
        n, sql, params = found
        cur.execute(self.q(sql), params)
        low, high, bare = cur.fetchone()
        pinned = None
        if low is None and int(bare):
            pinned = rid_walk_sql(pin_system(query, n, ""))  # no row has a system: IS NULL
        elif low is not None and low == high and not int(bare):
            pinned = rid_walk_sql(pin_system(query, n, low))
        return plain if pinned is None else pinned

    #: row ids the first, bounded try of a row-id walk covers (see ``_rid_walk_page``)
    RID_WALK_FIRST = 4000

    def _rid_walk_page(self, cur: Cursor, query: SearchQuery, sql: str, params: list[Any]) -> list[Any] | None:
        """One page in row-id order by walking the criterion's row-id index (see ``rid_walk_sql``),
        or None when sorting the matches costs less.

        Only for more than ``total_cap`` matches: the walk then reads about the page over their
        share of the index's rows, small for a broad criterion (a category, a gender) at any
        store size, but not for a narrow one (one day of a 2-year store: 0.1% of the rows). So
        the walk first covers the first ``RID_WALK_FIRST`` row ids; if that does not fill the
        page, the matches it found tell which costs less, walking on or sorting them all; if it
        found none, the matches are counted up to ``sqrt(page x store)``, the size at which
        sorting them and walking cost about the same, and sorted when fewer.
        """
        need = query.offset + query.count
        snapshot, floor = int(params[0]), int(params[1])  # the walk's row ids: (floor, snapshot]
        first = min(snapshot, floor + self.RID_WALK_FIRST)
        limit = need * 2 + 16  # a resource may have several rows (two names both matching)
        found, _ = self._walk_rids(cur, sql, [first, *params[1:]], need, limit, grow=4)
        if len(found) >= need or first == snapshot:
            return self._rows_in_order(cur, found[query.offset : need])
        if found:
            # The first stretch tells the matches' density: walking on reads about
            # (need - found) / density row ids, sorting about density x store matches.
            rest = (need - len(found)) * (first - floor) / len(found)
            matches = len(found) * (snapshot - floor) / (first - floor)
            if rest <= 2 * matches:
                found, _ = self._walk_rids(cur, sql, params, need, limit, grow=4)
                return self._rows_in_order(cur, found[query.offset : need])
            return None
        even = max(query.total_cap, math.isqrt(need * max(snapshot - floor, 0)))
        count, count_params = capped_count_sql(query, even)
        cur.execute(self.q(count), count_params)
        if int(cur.fetchone()[0]) <= even:
            return None
        found, _ = self._walk_rids(cur, sql, params, need, limit, grow=4)
        return self._rows_in_order(cur, found[query.offset : need])

    def _type_walk(self, cur: Cursor, query: SearchQuery) -> tuple[str, list[Any], str, list[Any]] | None:
        """``type_walk_sql`` for the query (driven by its code's rows when the code has one system),
        or None when a criterion of the plain plan has few index rows."""
        steer = self.dialect == "sqlite"
        plain = type_walk_sql(query, steer=steer)
        if plain is None:
            return None
        for sql, params in selective_counts(query):
            cur.execute(self.q(sql), (*params, self.SORT_WALK_MIN))
            if int(cur.fetchone()[0]) < self.SORT_WALK_MIN:
                return None  # the plain plan reads fewer rows than a walk would
        found = code_system_sql(query)
        if found is None:
            return plain
        n, sql, params = found
        cur.execute(self.q(sql), params)
        low, high, bare = cur.fetchone()
        if low is None or low != high or int(bare):
            return plain
        return type_walk_sql(pin_system(query, n, low), steer=steer)

    def _type_walk_page(
        self, cur: Cursor, query: SearchQuery, bound: str, bound_params: list[Any], walk: str, walk_params: list[Any]
    ) -> list[Any] | None:
        """One page in row-id order by walking the type's rows, each tested against every criterion
        (see ``type_walk_sql``), no further than ``SORT_WALK_MIN`` (or ``SORT_WALK_PER_ROW`` per row
        of the page) rows; None when that does not fill the page (the matches are few: the plain
        plan then reads only them)."""
        need = query.offset + query.count
        cap = max(self.SORT_WALK_MIN, need * self.SORT_WALK_PER_ROW)
        cur.execute(self.q(bound), (*bound_params, cap - 1))
        found = cur.fetchone()
        upto = int(found[0]) if found is not None else int(bound_params[-1])
        # A code twice in one resource gives it two rows.
        ordered, _ = self._walk_rids(cur, walk, [*walk_params, upto], need, need + 4)
        if len(ordered) < need and found is not None:
            return None
        return self._rows_in_order(cur, ordered[query.offset : need])

    def _by_match(
        self, cur: Cursor, query: SearchQuery, sql_params: tuple[str, list[Any]], keys: dict[int, Any]
    ) -> list[Any]:
        """A page of the sorted matches (``DateSortPlan.by_match``), noting each one's key in ``keys``."""
        sql, params = sql_params
        cur.execute(self.q(sql), (*params, query.count, query.offset))
        rows = cur.fetchall()
        keys.update((row[0], row[1]) for row in rows)
        return [row[0] for row in rows]

    def _rows_in_order(self, cur: Cursor, page_ids: list[Any]) -> list[Any]:
        if not page_ids:
            return []
        marks = ", ".join("?" for _ in page_ids)
        cur.execute(self.q(f"SELECT {COLUMNS}, r.rid FROM resources r WHERE r.rid IN ({marks})"), page_ids)
        by_rid = {row[6]: row for row in cur.fetchall()}
        return [by_rid[rid] for rid in page_ids if rid in by_rid]

    def _walk_page(
        self, cur: Cursor, query: SearchQuery, walk: str, walk_params: list[Any], missing: str,
        missing_params: list[Any], *, keys: dict[int, Any],
    ) -> list[Any]:
        """One page ordered by a date or string parameter, by walking its index (see ``date_sort_walk``);
        each resource's key noted in ``keys`` (None for those without one)."""
        need = query.offset + query.count
        ordered, ran_out = self._walk_rids(cur, walk, walk_params, need, need * 2 + 16, grow=4, keys=keys)
        page_ids = ordered[query.offset : need]
        if len(page_ids) < query.count and ran_out:
            skip = max(0, query.offset - len(ordered))
            cur.execute(self.q(missing), (*missing_params, query.count - len(page_ids), skip))
            without = [row[0] for row in cur.fetchall()]
            keys.update((rid, None) for rid in without)
            page_ids += without
        return self._rows_in_order(cur, page_ids)

    def _include_rows(self, source: str, code: str) -> tuple[str, list[Any]]:
        """The condition on ``idx_ref x`` selecting the references of ``source``'s parameter ``code``
        (``*``: of every parameter)."""
        if code == "*":
            return "x.rtype = ?", [source]
        param = self.registry.get(source, code)
        return param_rows(param, "x") if param is not None else ("x.param = ?", [code])

    def _includes(
        self, cur: Cursor, query: SearchQuery, rids: list[int], page: list[StoredResource]
    ) -> list[StoredResource]:
        seen = {(r.type, r.id) for r in page}
        found = self._include_round(cur, query, query.includes, query.revincludes, page, rids, seen)
        included = list(found)
        # ``:iterate`` values apply again to what the last round added, until nothing new comes
        # (a bounded number of rounds: a chain of references could otherwise be walked to its end).
        forward = [inc for inc in query.includes if inc.iterate]
        backward = [inc for inc in query.revincludes if inc.iterate]
        for _ in range(ITERATE_ROUNDS):
            if not found or not (forward or backward):
                break
            found = self._include_round(cur, query, forward, backward, found, None, seen)
            included.extend(found)
            if len(included) > query.max_included:
                raise _too_many_included(query, "_include" if forward else "_revinclude")
        return included

    def _include_round(
        self,
        cur: Cursor,
        query: SearchQuery,
        includes: Sequence[Include],
        revincludes: Sequence[Include],
        sources: list[StoredResource],
        rids: list[int] | None,
        seen: set[tuple[str, str]],
    ) -> list[StoredResource]:
        """What ``includes`` and ``revincludes`` add to ``sources`` (row ids ``rids``, when known), not in
        ``seen`` (which grows by them)."""
        refs: list[tuple[str, str]] = []
        by_type: dict[str, list[str]] = {}
        for res in sources:
            by_type.setdefault(res.type, []).append(res.id)
        for inc in includes:
            refs_of, params = self._include_rows(inc.source, inc.param)
            source_params: list[Any]
            if rids is not None:
                of_sources, source_params = f"x.rid IN ({', '.join('?' for _ in rids)})", list(rids)
            elif inc.source in by_type:
                ids = by_type[inc.source]
                of_sources = (f"x.rid IN (SELECT s.rid FROM resources s WHERE s.rtype = ?"
                              f" AND s.id IN ({', '.join('?' for _ in ids)}))")  # fmt: skip
                source_params = [inc.source, *ids]
            else:
                continue
            sql = f"SELECT DISTINCT x.ttype, x.tid FROM idx_ref x WHERE {refs_of} AND {of_sources}"
            params.extend(source_params)
            if inc.target:
                sql += " AND x.ttype = ?"
                params.append(inc.target)
            elif inc.exclude:
                sql += f" AND x.ttype NOT IN ({', '.join('?' for _ in inc.exclude)})"
                params.extend(inc.exclude)
            cur.execute(self.q(sql), params)
            refs.extend((t, i) for t, i in cur.fetchall() if t and i and (t, i) not in seen)
        if query.policy is not None and refs:
            refs = self._visible_refs(cur, query.policy, refs)
        out: list[StoredResource] = []
        if len(set(refs)) > query.max_included:
            raise _too_many_included(query, "_include")
        if refs:
            with_types = list(dict.fromkeys(refs))
            out.extend(self._read_many_cur(cur, with_types))
        # This many rows of one _revinclude (distinct resources, at most a page of them on the
        # page already) include too much on their own, so no query fetches more.
        limit = query.max_included + len(sources) + 1
        for inc in revincludes:
            visible = visible_probe(query.policy, inc.source, "r")
            only, only_params = ("", []) if visible is None else (f" AND {visible[0]}", visible[1])
            refs_of, refs_params = self._include_rows(inc.source, inc.param)
            for target, ids in by_type.items():
                if inc.target is not None and inc.target != target:
                    continue  # Observation:subject:Group adds what refers to the Groups alone
                id_marks = ", ".join("?" for _ in ids)
                cur.execute(
                    self.q(f"SELECT {COLUMNS} FROM resources r WHERE r.rtype = ? AND r.deleted = 0 AND r.rid IN"
                           f" (SELECT x.rid FROM idx_ref x WHERE x.rtype = ? AND {refs_of} AND x.ttype = ?"
                           f" AND x.tid IN ({id_marks})){only} LIMIT ?"),
                    (inc.source, inc.source, *refs_params, target, *ids, *only_params, limit),
                )
                rows = cur.fetchall()
                if len(rows) >= limit:
                    raise _too_many_included(query, "_revinclude")
                out.extend(to_resource(row) for row in rows)
        unique: dict[tuple[str, str], StoredResource] = {}
        for res in out:
            if (res.type, res.id) not in seen:
                unique.setdefault((res.type, res.id), res)
        if len(unique) > query.max_included:
            raise _too_many_included(query, "_revinclude" if revincludes else "_include")
        seen.update(unique)
        return list(unique.values())

    def _visible_refs(self, cur: Cursor, policy: RowFilter, refs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        by_type: dict[str, list[str]] = {}
        for rtype, rid in refs:
            by_type.setdefault(rtype, []).append(rid)
        allowed = {(rtype, rid) for rtype, ids in by_type.items() for rid in self.visible_in(cur, policy, rtype, ids)}
        return [ref for ref in refs if ref in allowed]

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` lets the client see."""
        with self._read_cursor() as cur:
            return self.visible_in(cur, policy, rtype, ids)

    def visible_in(self, cur: Cursor, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """``visible`` on an open cursor (in a transaction: seeing its flushed writes)."""
        unique = sorted(set(ids))
        if not unique:
            return set()
        rule = visible_probe(self.resolve_policy(cur, policy) if policy is not None else None, rtype, "r")
        only, only_params = ("", []) if rule is None else (f" AND {rule[0]}", rule[1])
        found: set[str] = set()
        for start in range(0, len(unique), _IDS_PER_QUERY):
            chunk = unique[start : start + _IDS_PER_QUERY]
            cur.execute(
                self.q(f"SELECT r.id FROM resources r WHERE r.rtype = ? AND r.deleted = 0"
                       f" AND r.id IN ({', '.join('?' for _ in chunk)}){only}"),
                (rtype, *chunk, *only_params),
            )
            found.update(row[0] for row in cur.fetchall())
        return found

    def resolve_policy(self, cur: Cursor, policy: RowFilter | None) -> RowFilter | None:
        """``policy`` with its Organization subtree looked up (once per request), when it has one."""
        if policy is None or not policy.policy.organizations or policy.subtree is not None:
            return policy
        key = policy.policy.organizations
        now = time.monotonic()
        cached = self._subtrees.get(key)
        if cached is not None and cached[0] > now:
            subtree = cached[1]
        else:
            sql, params = subtree_sql(policy.policy)
            cur.execute(self.q(f"{sql} LIMIT ?"), [*params, _MAX_SUBTREE + 1])
            subtree = tuple(sorted({row[0] for row in cur.fetchall()}))
            if len(self._subtrees) > 1000:
                self._subtrees.clear()
            self._subtrees[key] = (now + _SUBTREE_SECONDS, subtree)
        # A tree this large stays a subquery: its ids as parameters would pass SQLite's bind limit.
        return policy if len(subtree) > _MAX_SUBTREE else policy.resolved(subtree)

    def _read_many_cur(self, cur: Cursor, refs: Sequence[tuple[str, str]]) -> list[StoredResource]:
        by_type: dict[str, set[str]] = {}
        for rtype, rid in refs:
            by_type.setdefault(rtype, set()).add(rid)
        out: list[StoredResource] = []
        for rtype, ids in by_type.items():
            rows = self.rows_by_id(cur, COLUMNS, rtype, sorted(ids), where=" AND r.deleted = 0")
            out.extend(to_resource(row) for row in rows)
        return out

    def compartment(
        self, rtype: str, rid: str, count: int, offset: int, types: Sequence[str] | None = None,
        also: Sequence[str] = (), since: datetime | None = None, hidden: Sequence[str] = (),
        after: tuple[str, str] | None = None,
    ) -> tuple[list[StoredResource], int]:
        """Live resources of ``types`` (None: any) that refer to ``rtype/rid`` (its compartment, e.g. for
        $everything), and their total; ``also`` adds the compartments of more ``rtype`` ids (a golden
        Patient's linked records); ``since``: only those changed at or after it; ``hidden``: ``rtype``
        ids left out (those a data policy does not show)."""
        ids = [rid, *(other for other in also if other != rid)]
        left_out = [rid, *(other for other in hidden if other != rid)]
        where = ("r.deleted = 0 AND r.rid IN (SELECT x.rid FROM idx_ref x WHERE x.ttype = ?"
                 f" AND x.tid IN ({', '.join('?' for _ in ids)}))"
                 f" AND NOT (r.rtype = ? AND r.id IN ({', '.join('?' for _ in left_out)}))")
        params: tuple[Any, ...] = (rtype, *ids, rtype, *left_out)
        if since is not None:
            where += " AND r.lu >= ?"
            params += (since.timestamp(),)
        if types is not None:
            # An empty list must match nothing, and "IN ()" is not SQL.
            where += f" AND r.rtype IN ({', '.join('?' for _ in types) or 'NULL'})"
            params += tuple(types)
        with self._read_cursor() as cur:
            cur.execute(self.q(f"SELECT COUNT(*) FROM resources r WHERE {where}"), params)
            total = int(cur.fetchone()[0])
            page, page_params = where, params
            if after is not None:
                # A deleted resource keeps its row (a tombstone), so its place is still known; a row
                # gone altogether (never, for these types) restarts the walk rather than end it.
                page += " AND r.rid > COALESCE((SELECT c.rid FROM resources c WHERE c.rtype = ? AND c.id = ?), 0)"
                page_params, offset = (*params, *after), 0
            cur.execute(self.q(f"SELECT {COLUMNS} FROM resources r WHERE {page} ORDER BY r.rid LIMIT ? OFFSET ?"),
                        (*page_params, count, offset))
            return [to_resource(row) for row in cur.fetchall()], total

    # -- change feed -------------------------------------------------------------------------
    def changes(self, after: int, limit: int = 1000) -> list[Change]:
        """Change-feed entries with ``seq > after``, oldest first."""
        with self._read_cursor() as cur:
            cur.execute(
                self.q("SELECT seq, rtype, id, version, op, at, lane FROM changes WHERE seq > ? ORDER BY seq LIMIT ?"),
                (after, limit),
            )
            return [
                Change(seq=s, type=t, id=i, version=v, op=ChangeOp(op), at=from_epoch(at), backfill=lane == 1)
                for s, t, i, v, op, at, lane in cur.fetchall()
            ]

    def iter_changes(self, after: int, batch: int = 1000) -> Iterator[Change]:
        """All change-feed entries after ``after``, fetched in batches."""
        while True:
            page = self.changes(after, batch)
            yield from page
            if len(page) < batch:
                return
            after = page[-1].seq

    def last_change_seq(self) -> int:
        """The newest change-feed sequence number (0 when empty)."""
        with self._read_cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM changes")
            return int(cur.fetchone()[0])

    # -- read-only transactions --------------------------------------------------------------
    #: Opens a read-only transaction on a read connection: SQLite's deferred BEGIN keeps the WAL
    #: snapshot of its first read; PostgreSQL's isolation level keeps one snapshot for all.
    snapshot_begin = "BEGIN"

    @contextmanager
    def snapshot(self) -> Iterator[StoreReads]:
        """A read-only transaction (``ResourceStore.snapshot``); it writes nothing, so it ends in a rollback."""
        with self._read_cursor() as cur:
            cur.execute(self.snapshot_begin)
            try:
                yield _Snapshot(self, cur)
            except BaseException:
                with suppress(Exception):  # a dead connection: the error that killed it is the one to see
                    cur.execute("ROLLBACK")
                raise
            cur.execute("ROLLBACK")

    # -- writes ------------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """A write transaction, committed on normal exit and rolled back on error."""
        with self._write_cursor() as cur:
            tx = SqlTransaction(self, cur)
            yield tx
            tx.flush()

    def prepare(self, resource: dict[str, Any], rid: str | None = None) -> PreparedWrite:
        """The CPU part of writing ``resource`` (body, hash, index rows), for ``tx.update(prepared=)``."""
        rid = rid if rid is not None else resource["id"]
        return prepare_write(resource, rid, self.indexed_params(resource["resourceType"]))

    def indexed_params(self, rtype: str) -> ExtractionPlan:
        """The extraction plan of the parameters indexed on write for a type (cached)."""
        plan = self._indexed.get(rtype)
        if plan is None:
            plan = self._indexed[rtype] = ExtractionPlan(self.registry.indexed(rtype))
        return plan

    # -- audit trail -------------------------------------------------------------------------
    def audit_append(self, resources: Sequence[dict[str, Any]], rows: Sequence[IndexRows] | None = None) -> int:
        """Store AuditEvents in one transaction, indexed for search, without change-feed entries."""
        if any(resource.get("resourceType") != AUDIT_TYPE for resource in resources):
            raise ValueError("the audit trail holds AuditEvents only")
        if not resources:
            return 0
        plan = self.indexed_params(AUDIT_TYPE)
        with self._write_cursor() as cur:
            tx = SqlTransaction(self, cur, feed=False)
            tx.reserve(len(resources))
            for n, resource in enumerate(resources):
                rid = uuid4_text()
                # An AuditEvent is never updated: no content hash, and no meta but the version stamp.
                body = {"resourceType": AUDIT_TYPE, "id": rid,
                        **{k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")}}
                index = rows[n] if rows is not None else index_rows(body, plan)
                tx.append(PreparedWrite(AUDIT_TYPE, rid, body, "", index))
            tx.flush()
        return len(resources)

    def audit_purge(self, before: datetime) -> int:
        """Delete AuditEvents stored before ``before``, with their index rows; return how many."""
        old = "SELECT rid FROM resources WHERE rtype = ? AND lu < ?"
        params = (AUDIT_TYPE, before.timestamp())
        with self._write_cursor() as cur:
            for table in INDEX_TABLES:
                cur.execute(self.q(f"DELETE FROM {table} WHERE rid IN ({old})"), params)
            cur.execute(self.q("DELETE FROM history WHERE rtype = ? AND lu < ?"), params)
            cur.execute(self.q("DELETE FROM resources WHERE rtype = ? AND lu < ?"), params)
            return int(cur.rowcount)

    # -- scheduled runs ----------------------------------------------------------------------
    #: claims kept per task (older ones are pruned as new ones are made)
    KEPT_CLAIMS = 1000

    def claim_run(self, task: str, slot: int, holder: str) -> bool:
        """Claim run ``slot`` of ``task``: the primary key lets exactly one process insert it."""
        with self._write_cursor() as cur:
            cur.execute(
                self.q("INSERT INTO scheduled_runs (task, slot, holder, claimed) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (task, slot) DO NOTHING"),
                (task, slot, holder, time.time()),
            )  # fmt: skip
            won = cur.rowcount == 1
            if won:
                cur.execute(
                    self.q("DELETE FROM scheduled_runs WHERE task = ? AND slot < ?"), (task, slot - self.KEPT_CLAIMS)
                )
            return won

    # -- pull cursors ------------------------------------------------------------------------
    def pull_cursor(self, source: str) -> str | None:
        """The saved cursor of a pulled source."""
        with self._read_cursor() as cur:
            cur.execute(self.q("SELECT cursor FROM pull_cursors WHERE source = ?"), (source,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def set_pull_cursor(self, source: str, cursor: str | None) -> None:
        """Save (or, with None, forget) a pulled source's cursor."""
        with self._write_cursor() as cur:
            if cursor is None:
                cur.execute(self.q("DELETE FROM pull_cursors WHERE source = ?"), (source,))
                return
            cur.execute(
                self.q("INSERT INTO pull_cursors (source, cursor, updated) VALUES (?, ?, ?)"
                       " ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor, updated = excluded.updated"),
                (source, cursor, time.time()),
            )  # fmt: skip

    # -- destination ids ---------------------------------------------------------------------
    def destination_ids(self, destination: str, refs: Sequence[str]) -> dict[str, str | None]:
        """The ids ``destination`` assigned to ``refs`` (None: a create sent, not confirmed)."""
        found: dict[str, str | None] = {}
        wanted = [ref.split("/", 1) for ref in dict.fromkeys(refs) if "/" in ref]
        with self._read_cursor() as cur:
            for start in range(0, len(wanted), 200):
                chunk = wanted[start : start + 200]
                pairs = " OR ".join("(rtype = ? AND id = ?)" for _ in chunk)
                cur.execute(
                    self.q(f"SELECT rtype, id, remote_id FROM destination_ids WHERE destination = ? AND ({pairs})"),
                    (destination, *(part for pair in chunk for part in pair)),
                )
                for rtype, rid, remote in cur.fetchall():
                    found[f"{rtype}/{rid}"] = None if remote is None else str(remote)
        return found

    def set_destination_id(self, destination: str, ref: str, remote_id: str | None) -> None:
        """Record the id ``destination`` assigned to ``ref`` (None marks a create about to be sent)."""
        rtype, rid = ref.split("/", 1)
        with self._write_cursor() as cur:
            cur.execute(
                self.q("INSERT INTO destination_ids (destination, rtype, id, remote_id, updated) VALUES (?, ?, ?, ?, ?)"
                       " ON CONFLICT (destination, rtype, id) DO UPDATE SET remote_id = excluded.remote_id,"
                       " updated = excluded.updated"),
                (destination, rtype, rid, remote_id, time.time()),
            )  # fmt: skip

    def forget_destination_id(self, destination: str, ref: str) -> None:
        """Forget the id ``destination`` assigned to ``ref``."""
        rtype, rid = ref.split("/", 1)
        with self._write_cursor() as cur:
            cur.execute(
                self.q("DELETE FROM destination_ids WHERE destination = ? AND rtype = ? AND id = ?"),
                (destination, rtype, rid),
            )

    # -- message log -------------------------------------------------------------------------
    _MESSAGE_COLUMNS = "at, kind, channel, status, patient, subject, ref, detail"

    def message_append(self, entries: Sequence[MessageEntry]) -> int:
        """Store message log lines in one transaction."""
        if not entries:
            return 0
        with self._write_cursor() as cur:
            cur.executemany(
                self.q(f"INSERT INTO message_log ({self._MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"),
                [(e.at, e.kind, e.channel, e.status, e.patient, e.subject, e.ref, e.detail) for e in entries],
            )
        return len(entries)

    def message_search(self, where: MessageFilter, *, limit: int = 100) -> list[LoggedMessage]:
        """Message log lines matching ``where``, newest first."""
        conds: list[str] = []
        params: list[Any] = []
        for column, value in (("channel", where.channel), ("kind", where.kind), ("status", where.status),
                              ("patient", where.patient)):
            if value is not None:
                conds.append(f"{column} = ?")
                params.append(value)
        for cond, bound in (("at >= ?", where.since), ("at < ?", where.until), ("mid < ?", where.before_mid)):
            if bound is not None:
                conds.append(cond)
                params.append(bound)
        clause = f" WHERE {' AND '.join(conds)}" if conds else ""
        with self._read_cursor() as cur:
            cur.execute(
                self.q(f"SELECT mid, {self._MESSAGE_COLUMNS} FROM message_log{clause} ORDER BY mid DESC LIMIT ?"),
                (*params, limit),
            )
            rows = cur.fetchall()
        return [LoggedMessage(int(row[0]), MessageEntry(float(row[1]), *row[2:])) for row in rows]

    def message_counts(self, since: float) -> list[tuple[str, str, str, int]]:
        """Message log lines at or after ``since``, counted per (kind, channel, status)."""
        with self._read_cursor() as cur:
            cur.execute(self.q("SELECT kind, channel, status, COUNT(*) FROM message_log WHERE at >= ?"
                               " GROUP BY kind, channel, status ORDER BY kind, channel, status"), (since,))
            return [(row[0], row[1], row[2], int(row[3])) for row in cur.fetchall()]

    def message_purge(self, before: datetime) -> int:
        """Delete message log lines logged before ``before``."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM message_log WHERE at < ?"), (before.timestamp(),))
            return int(cur.rowcount)

    # -- API clients -------------------------------------------------------------------------
    _CLIENT_COLUMNS = "name, scopes, created, disabled, expires, revoked, last_used, policy, jwks"

    def save_client(self, client: ApiClient, token_hash: str) -> None:
        """Create or replace an API client."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM api_clients WHERE name = ?"), (client.name,))
            cur.execute(
                self.q(f"INSERT INTO api_clients (token_hash, {self._CLIENT_COLUMNS})"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                (token_hash, client.name, " ".join(client.scopes), client.created.timestamp(),
                 int(client.disabled), _epoch(client.expires), _epoch(client.revoked), _epoch(client.last_used),
                 _json(client.policy), _json(client.jwks)),
            )

    def client_by_token_hash(self, token_hash: str) -> ApiClient | None:
        """Look up an API client by the hash of its bearer token."""
        with self._read_cursor() as cur:
            cur.execute(
                self.q(f"SELECT {self._CLIENT_COLUMNS} FROM api_clients WHERE token_hash = ?"), (token_hash,),
            )
            row = cur.fetchone()
        return None if row is None else _client(row)

    def client_by_name(self, name: str) -> ApiClient | None:
        """One API client by name, live or not."""
        with self._read_cursor() as cur:
            cur.execute(self.q(f"SELECT {self._CLIENT_COLUMNS} FROM api_clients WHERE name = ?"), (name,))
            row = cur.fetchone()
        return None if row is None else _client(row)

    def set_client_policy(self, name: str, policy: Mapping[str, Any] | None) -> bool:
        """Replace a client's data policy (None removes it); False if there is no such client."""
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE api_clients SET policy = ? WHERE name = ?"), (_json(policy), name))
            return cur.rowcount > 0

    def set_client_keys(self, name: str, jwks: Mapping[str, Any] | None) -> bool:
        """Replace a client's public keys (None removes them); False if there is no such client."""
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE api_clients SET jwks = ? WHERE name = ?"), (_json(jwks), name))
            return cur.rowcount > 0

    def list_clients(self) -> list[ApiClient]:
        """All API clients."""
        with self._read_cursor() as cur:
            cur.execute(f"SELECT {self._CLIENT_COLUMNS} FROM api_clients ORDER BY name")
            return [_client(row) for row in cur.fetchall()]

    def revoke_client(self, name: str) -> bool:
        """Revoke a client for good, and the access tokens issued to it; False if there is no such client."""
        with self._write_cursor() as cur:
            # COALESCE keeps the first revocation time when a client is revoked twice.
            cur.execute(self.q("UPDATE api_clients SET revoked = COALESCE(revoked, ?) WHERE name = ?"),
                        (time.time(), name))
            found = cur.rowcount > 0
            # The join on the client would refuse them anyway; deleting them says so in the data too.
            cur.execute(self.q("DELETE FROM access_tokens WHERE client = ?"), (name,))
            return found

    def rekey_client(self, name: str, token_hash: str) -> bool:
        """Replace a live client's token hash, keeping its other fields; False if none."""
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE api_clients SET token_hash = ? WHERE name = ? AND revoked IS NULL"),
                        (token_hash, name))
            return cur.rowcount > 0

    def touch_client(self, name: str, when: datetime) -> None:
        """Record a client's last successful authentication."""
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE api_clients SET last_used = ? WHERE name = ?"), (when.timestamp(), name))

    def save_access_token(self, token_hash: str, client: str, scopes: Sequence[str], expires: datetime) -> None:
        """Keep an issued access token's hash; expired tokens are purged in the same transaction."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM access_tokens WHERE expires < ?"), (time.time(),))
            cur.execute(self.q("INSERT INTO access_tokens (token_hash, client, scopes, expires) VALUES (?, ?, ?, ?)"),
                        (token_hash, client, " ".join(scopes), expires.timestamp()))

    def access_token_by_hash(self, token_hash: str) -> AccessToken | None:
        """An issued access token with its client's current row (None when either is gone)."""
        columns = ", ".join(f"c.{column.strip()}" for column in self._CLIENT_COLUMNS.split(","))
        with self._read_cursor() as cur:
            cur.execute(
                self.q(f"SELECT t.scopes, t.expires, {columns} FROM access_tokens t"
                       " JOIN api_clients c ON c.name = t.client WHERE t.token_hash = ?"),
                (token_hash,),
            )
            row = cur.fetchone()
        if row is None:
            return None
        return AccessToken(_client(row[2:]), tuple(row[0].split()), from_epoch(row[1]))

    def remember_jti(self, client: str, jti: str, expires: datetime) -> bool:
        """Record an assertion id until ``expires``; False if it is recorded already (in any process)."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM assertion_ids WHERE expires < ?"), (time.time(),))
            # ON CONFLICT DO NOTHING (SQLite 3.24+, PostgreSQL): a duplicate is a row count of
            # 0, not an error that would abort a PostgreSQL transaction.
            cur.execute(self.q("INSERT INTO assertion_ids (client, jti, expires) VALUES (?, ?, ?)"
                               " ON CONFLICT (client, jti) DO NOTHING"),
                        (client, jti, expires.timestamp()))
            return cur.rowcount == 1

    # -- quarantine --------------------------------------------------------------------------
    def quarantine_add(
        self,
        source: str,
        body: bytes,
        content_type: str,
        outcome: dict[str, Any],
        record_key: str | None = None,
    ) -> QuarantinedRecord:
        """Keep a record that failed, with its OperationOutcome (the same record sent again while
        held: its entry, with the new outcome and one more attempt)."""
        now = time.time()
        outcome_text = jsonio.dumps(outcome).decode()
        body_hash = hashlib.sha256(body).hexdigest()
        with self._write_cursor() as cur:
            # A pull re-reading its last page, or a sender trying again, must not pile up copies;
            # a record without a key is known by its bytes alone.
            if record_key is not None:
                cur.execute(
                    self.q("SELECT qid, received, attempts FROM quarantine WHERE source = ? AND record_key = ?"
                           " AND status = 'held' AND body = ? ORDER BY qid LIMIT 1"),
                    (source, record_key, body),
                )
            else:
                cur.execute(
                    self.q("SELECT qid, received, attempts FROM quarantine WHERE source = ? AND body_hash = ?"
                           " AND record_key IS NULL AND status = 'held' AND body = ? ORDER BY qid LIMIT 1"),
                    (source, body_hash, body),
                )
            row = cur.fetchone()
            if row is not None:
                qid, received, attempts = int(row[0]), float(row[1]), int(row[2]) + 1
                cur.execute(
                    self.q("UPDATE quarantine SET outcome = ?, content_type = ?, attempts = ?, updated = ?"
                           " WHERE qid = ?"),
                    (outcome_text, content_type, attempts, now, qid),
                )
                return QuarantinedRecord(qid, source, from_epoch(received), content_type, body, record_key,
                                         outcome, "held", attempts, from_epoch(now))  # fmt: skip
            qid = self._insert_returning(
                cur,
                "INSERT INTO quarantine (source, received, content_type, body, record_key, outcome, status,"
                " attempts, updated, body_hash) VALUES (?, ?, ?, ?, ?, ?, 'held', 1, ?, ?)",
                (source, now, content_type, body, record_key, outcome_text, now, body_hash),
                key="qid",
            )
        return QuarantinedRecord(qid, source, from_epoch(now), content_type, body, record_key, outcome,
                                 "held", 1, from_epoch(now))

    def quarantine_list(
        self,
        *,
        source: str | None = None,
        status: str | None = "held",
        limit: int = 100,
        after: int = 0,
    ) -> list[QuarantinedRecord]:
        """Quarantined records, oldest first."""
        conds = ["qid > ?"]
        params: list[Any] = [after]
        if source is not None:
            conds.append("source = ?")
            params.append(source)
        if status is not None:
            conds.append("status = ?")
            params.append(status)
        with self._read_cursor() as cur:
            cur.execute(
                self.q("SELECT qid, source, received, content_type, body, record_key, outcome, status, attempts,"
                       f" updated FROM quarantine WHERE {' AND '.join(conds)} ORDER BY qid LIMIT ?"),
                (*params, limit),
            )
            return [self._quarantined(row) for row in cur.fetchall()]

    def quarantine_get(self, qid: int) -> QuarantinedRecord | None:
        """One quarantined record."""
        with self._read_cursor() as cur:
            cur.execute(
                self.q("SELECT qid, source, received, content_type, body, record_key, outcome, status, attempts,"
                       " updated FROM quarantine WHERE qid = ?"),
                (qid,),
            )
            row = cur.fetchone()
        return self._quarantined(row) if row else None

    def quarantine_update(self, qid: int, *, status: str, outcome: dict[str, Any] | None = None) -> None:
        """Record a replay result or a discard."""
        with self._write_cursor() as cur:
            if outcome is None:
                cur.execute(self.q("UPDATE quarantine SET status = ?, attempts = attempts + 1, updated = ?"
                                   " WHERE qid = ?"), (status, time.time(), qid))
            else:
                cur.execute(
                    self.q("UPDATE quarantine SET status = ?, outcome = ?, attempts = attempts + 1, updated = ?"
                           " WHERE qid = ?"),
                    (status, jsonio.dumps(outcome).decode(), time.time(), qid),
                )

    @staticmethod
    def _quarantined(row: Sequence[Any]) -> QuarantinedRecord:
        return QuarantinedRecord(
            qid=int(row[0]), source=row[1], received=from_epoch(row[2]), content_type=row[3],
            body=bytes(row[4]), record_key=row[5], outcome=jsonio.loads(row[6]), status=row[7],
            attempts=int(row[8]), updated=from_epoch(row[9]),
        )  # fmt: skip

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self._read_cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()


def _where(conds: Sequence[str]) -> str:
    """`` WHERE`` and ``conds`` ANDed, or nothing when there are none."""
    return " WHERE " + " AND ".join(conds) if conds else ""


def _made(row: Sequence[Any]) -> StoredResource:
    """A history row (``COLUMNS``, the method, whether it created the resource) as a version with the
    ``method`` history shows: the one recorded, else as versions of older releases were shown (POST
    for a first version, PUT after)."""
    version = to_resource(row)
    method = row[6] or ("DELETE" if version.deleted else "POST" if version.version == 1 else "PUT")
    return replace(version, method=method, created=bool(int(row[7])) and not version.deleted)


def _too_many_included(query: SearchQuery, param: str) -> SearchError:
    return SearchError(
        f"the page would include more than {query.max_included} resources; ask for a smaller _count or fewer"
        " _include/_revinclude values",
        param, code="too-costly",
    )


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _client(row: Sequence[Any]) -> ApiClient:
    def optional(value: float | None) -> datetime | None:
        return None if value is None else from_epoch(value)

    return ApiClient(row[0], tuple(row[1].split()), from_epoch(row[2]), bool(row[3]),
                     optional(row[4]), optional(row[5]), optional(row[6]),
                     None if row[7] is None else jsonio.loads(row[7]), None if row[8] is None else jsonio.loads(row[8]))


def _json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else jsonio.dumps(dict(value)).decode()


class _Snapshot:
    """``StoreReads`` on the cursor of one read-only transaction (``SqlStore.snapshot``)."""

    def __init__(self, store: SqlStore, cur: Cursor) -> None:
        self._store = store
        self._cur = cur

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """Current version (a tombstone if deleted), or None if the id was never used."""
        rows = self._store.rows_by_id(self._cur, COLUMNS, rtype, [rid])
        return to_resource(rows[0]) if rows else None

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a parsed search in the snapshot."""
        return self._store.search_in(self._cur, query)

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` lets the client see."""
        return self._store.visible_in(self._cur, policy, rtype, ids)
