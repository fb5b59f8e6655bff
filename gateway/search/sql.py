"""SQL for a parsed ``SearchQuery``, shared by the SQLite and PostgreSQL stores.

Queries are written with ``?`` placeholders (the PostgreSQL store rewrites them). Each
criterion becomes ``<alias>.rid IN (SELECT rid FROM idx_… WHERE …)``, so every filter
is answered from an index table and no JSON is scanned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from gateway.search.date_window import Window, bounds_dates, sort_window
from gateway.search.dates import FAR_FUTURE
from gateway.search.policy import RowFilter
from gateway.search.policy_sql import visible_rids
from gateway.search.query import (
    Criterion,
    DateValue,
    NumberValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
)
from gateway.search.registry import SearchParam

Params = list[Any]
TABLES = {
    "token": "idx_token",
    "string": "idx_string",
    "date": "idx_date",
    "reference": "idx_ref",
    "number": "idx_number",
}
_MAX_CHAR = "\U0010ffff"
_FAR = 1e300  # beyond any epoch-seconds date: no bound on a walk


def param_rows(param: SearchParam, alias: str, *, of_one_row: bool = False) -> tuple[str, Params]:
    """The condition on index rows ``alias`` that selects ``param``'s values: its own rows, or for an
    alias (``SearchParam.stored_as``) the rows of the parameters holding its values.

    ``of_one_row``: the condition sits beside ``alias.rid = …`` in an aggregate over one resource's
    rows (a sort key); the target type is then tested on the rows the row-id index finds, not
    offered as an index term (SQLite's MIN/MAX optimisation otherwise walks every reference to
    that type, in ``idx_ref_target``'s order, for each resource sorted).
    """
    codes = param.row_codes
    if len(codes) == 1:
        sql = f"{alias}.param = ?"
    else:
        sql = f"{alias}.param IN ({', '.join('?' for _ in codes)})"
    if param.target_type is None:
        return sql, list(codes)
    ttype = f"COALESCE({alias}.ttype, '')" if of_one_row else f"{alias}.ttype"
    return f"{sql} AND {ttype} = ?", [*codes, param.target_type]


def where_clause(query: SearchQuery, alias: str = "r", *, few: bool = False) -> tuple[str, Params]:
    """The WHERE clause (without the keyword) selecting a query's live matches; ``few``: the
    snapshot bound is written so it does not steer the planner onto the row-id index (the
    matches are few, so another index, e.g. ``_lastUpdated``'s, finds them sooner)."""
    sql = [f"{alias}.rtype = ?", f"{alias}.deleted = 0"]
    params: Params = [query.rtype]
    if query.snapshot is not None:
        sql.append(f"{alias}.rid + 0 <= ?" if few else f"{alias}.rid <= ?")
        params.append(query.snapshot)
    matched, matched_params = match_set(query)
    if matched:
        sql.append(f"{alias}.rid IN ({matched})")
        params.extend(matched_params)
    rest, rest_params = _resource_filters(query, alias)
    sql.extend(rest)
    params.extend(rest_params)
    return " AND ".join(sql), params


def count_sql(query: SearchQuery) -> tuple[str, Params]:
    """SQL counting a query's matches, index-only when the filters allow it."""
    matched, matched_params = match_set(query)
    rest, _ = _resource_filters(query, "r")
    if matched and not rest:
        # Deleting a resource removes its index rows, so the positive index criteria alone
        # say which live resources match; the resources table need not be read.
        if query.snapshot is None:
            return f"SELECT COUNT(*) FROM ({matched}) m", matched_params
        return f"SELECT COUNT(*) FROM ({matched}) m WHERE m.rid <= ?", [*matched_params, query.snapshot]
    where, params = where_clause(query)
    return f"SELECT COUNT(*) FROM resources r WHERE {where}", params


def capped_count_sql(query: SearchQuery, cap: int) -> tuple[str, Params]:
    """SQL answering ``(rows read, distinct matches among them)`` after reading at most ``cap + 1``
    match rows: its cost has a bound whatever the store holds.

    Fewer rows than ``cap + 1`` means every match was read and the second figure is the exact
    count. The index rows are read without ``DISTINCT``: removing repeats over the whole set
    (a hash or a sort) is what made a count cost the number of matches even under a limit.
    """
    matched, matched_params = match_set(query, distinct=False)
    rest, _ = _resource_filters(query, "r")
    if matched and not rest:
        sql, params = f"SELECT m.rid FROM ({matched}) m", matched_params
        if query.snapshot is not None:
            sql, params = f"{sql} WHERE m.rid <= ?", [*params, query.snapshot]
    else:
        where, params = where_clause(query, few=True)
        sql = f"SELECT r.rid FROM resources r WHERE {where}"
    return f"SELECT COUNT(*), COUNT(DISTINCT c.rid) FROM ({sql} LIMIT ?) c", [*params, cap + 1]


def closed_window(query: SearchQuery) -> tuple[str, float, float] | None:
    """A date parameter whose criteria bound a match's key on both sides (``date_window``), with
    the bounds, when the query's matches can be counted from that window's rows alone."""
    if len(query.criteria) < 2:  # one criterion's own index rows are its window already
        return None
    if not _index_only(query):
        return None
    for c in query.criteria:
        if c.param.table == "date":
            window = sort_window(query, c.param.code)
            if window is not None and window[0] is not None and window[1] is not None:
                return c.param.code, window[0], window[1]
    return None


def _index_only(query: SearchQuery) -> bool:
    """Whether every criterion can be probed per index row: no filter on the resources table, no
    data policy, no negation, chain or ``_has`` (the shape bounded walks and window counts take)."""
    rest, _ = _resource_filters(query, "r")
    if rest or visible_rids(query.policy, query.rtype) is not None:
        return False
    return not any(not _is_positive(c) or c.chain is not None or c.has is not None for c in query.criteria)


def window_count_sql(query: SearchQuery, param: str, low: float, high: float, cap: int | None) -> tuple[str, Params]:
    """Like ``capped_count_sql``, read from the rows of date ``param`` whose end lies in
    ``[low, high]`` (the window widened by the spread) or is open: every match has one there.

    The rows are read in the index's order, at most ``cap + 1`` of them (all without a cap),
    each tested against every criterion: fewer means the window was read whole and the count
    is exact. The
    figures are (rows read, distinct matches among them): a bounded cost beside a broad
    criterion (a code over a month) where driving by that criterion reads all its rows.
    """
    tests: list[str] = []
    test_params: Params = []
    for c in query.criteria:
        probe, probe_params = _probe(c, "d", per_row=True)
        if c.param.code == param and bounds_dates(c):
            # Most rows of the window meet the date criteria themselves: test the row first
            # and probe the resource's other values only when it does not.
            own = [_range_date("d.lo", "d.hi", v) for v in c.values if isinstance(v, DateValue)]
            probe = f"({' OR '.join(sql for sql, _ in own)} OR {probe})"
            probe_params = [*(v for _, ps in own for v in ps), *probe_params]
        tests.append(probe)
        test_params.extend(probe_params)
    test = " AND ".join(tests)
    snapshot, snapshot_params = ("", []) if query.snapshot is None else (" AND d.rid <= ?", [query.snapshot])
    head = f"FROM idx_date d WHERE d.rtype = ? AND d.param = ?{snapshot}"
    rows = (
        f"SELECT w.rid, w.ok FROM (SELECT d.rid, CASE WHEN {test} THEN d.rid END AS ok {head}"
        f" AND d.hi >= ? AND d.hi <= ? UNION ALL SELECT d.rid, CASE WHEN {test} THEN d.rid END AS ok {head}"
        f" AND d.hi >= ?) w{'' if cap is None else ' LIMIT ?'}"
    )
    params: Params = [
        *test_params, query.rtype, param, *snapshot_params, low, high,
        *test_params, query.rtype, param, *snapshot_params, FAR_FUTURE, *([] if cap is None else [cap + 1]),
    ]  # fmt: skip
    return f"SELECT COUNT(*), COUNT(DISTINCT c.ok) FROM ({rows}) c", params


def match_set(query: SearchQuery, *, distinct: bool = True) -> tuple[str, Params]:
    """Row ids of the resources the positive index criteria select ("" when there are none);
    ``distinct=False`` may list a row id more than once (cheaper when only some rows are read).

    Selective criteria (tokens, references, string prefixes, number equality, chains)
    are intersected; broad ones (date ranges, ``:contains``, ``:missing=false``, number
    ranges) become per-candidate ``EXISTS`` probes on the row-id index, because computing
    their full sets (most of a table) costs far more than probing the few candidates. A
    reference to one resource (a patient, an encounter) selects a handful of rows at any
    store size, while a code or a category selects a share of the store: beside such a
    reference, the plain token and string criteria are probed too rather than intersected.
    """
    positive = [c for c in query.criteria if _is_positive(c)]
    driving = [c for c in positive if _selective(c)]
    filters = [c for c in positive if not _selective(c)]
    if any(_one_target(c) for c in driving):
        filters += [c for c in driving if not _one_target(c) and c.chain is None and c.has is None]
        driving = [c for c in driving if _one_target(c) or c.chain is not None or c.has is not None]
    if not driving and filters:
        driving, filters = filters[:1], filters[1:]
    parts: list[str] = []
    params: Params = []
    # The policy's visible set is one more set to intersect: it is driven from the policy's
    # Organizations, districts and Patients, so it costs the size of the client's share.
    visible = visible_rids(query.policy, query.rtype)
    # A resource has one index row per matching value and path (name.text and name.given both
    # holding "Thabo"): INTERSECT removes the repeats, a set standing alone needs DISTINCT.
    alone = distinct and len(driving) == 1 and visible is None
    for criterion in driving:
        part, part_params = rid_set(query.rtype, criterion, query.policy, distinct=alone)
        parts.append(part)
        params.extend(part_params)
    if visible is not None:
        parts.append(visible[0])
        params.extend(visible[1])
    if not parts:
        return "", []
    sql = " INTERSECT ".join(parts)
    if not filters:
        return sql, params
    probes: list[str] = []
    for criterion in filters:
        probe, probe_params = _probe(criterion, "m0")
        probes.append(probe)
        params.extend(probe_params)
    return f"SELECT m0.rid FROM ({sql}) m0 WHERE {' AND '.join(probes)}", params


def _one_target(c: Criterion) -> bool:
    """A plain reference criterion naming its targets (``patient=X``, ``subject=Patient/X``)."""
    return (c.param.table == "reference" and c.chain is None and c.has is None and c.modifier is None
            and c.missing is None)


def _selective(c: Criterion) -> bool:
    if c.chain is not None or c.has is not None:
        return True
    if c.missing is not None or c.param.table == "date" or c.modifier == "contains":
        return False
    if c.param.table == "number":
        return all(getattr(v, "prefix", "eq") == "eq" for v in c.values)
    return True


def _probe(c: Criterion, alias: str, *, per_row: bool = False) -> tuple[str, Params]:
    """``EXISTS`` test of one criterion for the candidate row id ``alias.rid``.

    ``per_row``: a test PostgreSQL runs row by row on the row-id index, for a few candidates;
    it turns a plain ``EXISTS`` into a semi-join that reads the whole criterion set first,
    but does not pull up a subquery with an aggregate.
    """
    table = TABLES[c.param.table]
    rows, params = param_rows(c.param, "x")
    if per_row:
        head = f"(SELECT COUNT(*) FROM {table} x WHERE x.rid = {alias}.rid AND {rows}"
        tail = ") > 0"
    else:
        head = f"EXISTS (SELECT 1 FROM {table} x WHERE x.rid = {alias}.rid AND {rows}"
        tail = ")"
    base = head
    if c.missing is not None:
        return base + tail, params
    ors: list[str] = []
    for value in c.values:
        cond, cond_params = _value_sql(c, value)
        ors.append(cond)
        params.extend(cond_params)
    return f"{base} AND ({' OR '.join(ors)}){tail}", params


def page_sql(query: SearchQuery, columns: str, *, few: bool = False, anchor: bool = False) -> tuple[str, Params]:
    """SQL for one page of matches, in the requested order; ``few``: the matches are known to be
    few (sorting them all is cheap; walking the row-id index in order is not); ``anchor``: each
    row of a sorted page ends with its row id and sort key values (``anchor_columns``)."""
    matched, matched_params = match_set(query)
    rest, _ = _resource_filters(query, "r")
    floor = rid_floor(query)
    if matched and not rest and not query.sort:
        # Default order is by row id, which the match set already yields: page the ids
        # first and read only the resources on this page.
        bounds: list[str] = []
        params = list(matched_params)
        if query.snapshot is not None:
            # "+ 0": the snapshot bound must not lure SQLite into walking the whole row-id index.
            bounds.append("p.rid + 0 <= ?")
            params.append(query.snapshot)
        if floor is not None:
            bounds.append("p.rid + 0 > ?")
            params.append(floor)
        snapshot = f" WHERE {' AND '.join(bounds)}" if bounds else ""
        sql = (
            f"SELECT {columns} FROM resources r WHERE r.rid IN (SELECT p.rid FROM ({matched}) p{snapshot}"
            " ORDER BY p.rid LIMIT ? OFFSET ?) ORDER BY r.rid"
        )
        return sql, [*params, query.count, query.offset]
    few = few and not query.sort
    where, params = where_clause(query, few=few)
    if floor is not None:
        where, params = f"{where} AND r.rid > ?", [*params, floor]
    after = keyset_sql(query)
    if after is not None:
        where, params = f"{where} AND {after[0]}", [*params, *after[1]]
    order, order_params = ("r.rid + 0", []) if few else order_by(query)
    extra, extra_params = anchor_columns(query) if anchor else ("", [])
    sql = f"SELECT {columns}{extra} FROM resources r WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"
    return sql, [*extra_params, *params, *order_params, query.count, query.offset]


def _rows_after(query: SearchQuery, table: str, column: str, alias: str) -> tuple[str, Params]:
    """For a page of a ``_cursor`` sorted by one date or string key: the condition (" AND …") keeping
    the index rows ``alias`` of an index walk in that key's order that come after the cursor, of
    resources whose own key (their first row in the walk) comes after it too: a resource with a value
    before the cursor and another after it was read already. "" without a cursor."""
    if query.after is None or len(query.sort) != 1:
        return "", []
    rid, (value,) = query.after
    if value is None:  # the cursor is among the resources without the key: no key comes after it
        return " AND 1 = 0", []
    beyond, before = ("<", ">") if query.sort[0].descending else (">", "<")
    code = query.sort[0].param.code if query.sort[0].param is not None else ""
    sql = (
        f" AND ({alias}.{column} {beyond} ? OR ({alias}.{column} = ? AND {alias}.rid {beyond} ?))"
        f" AND NOT EXISTS (SELECT 1 FROM {table} e0 WHERE e0.rid = {alias}.rid AND e0.param = ?"
        f" AND (e0.{column} {before} ? OR (e0.{column} = ? AND e0.rid {before}= ?)))"
    )
    return sql, [value, value, rid, code, value, value, rid]


def _keys_after(query: SearchQuery, key: str, rid_column: str) -> tuple[str, Params]:
    """For a page of a ``_cursor`` sorted by one key: " WHERE …" keeping the rows (sort key value
    ``key``, row id ``rid_column``) after the cursor in ``date_sort_plan``'s sorted matches' order
    (as ``keyset_sql`` for ``order_by``'s); "" without a cursor."""
    if query.after is None or len(query.sort) != 1:
        return "", []
    rid, (value,) = query.after
    last = query.sort[0]
    if value is None:
        later = "<" if last.descending and not _nulls_ascending(last) else ">"
        return f" WHERE {key} IS NULL AND {rid_column} {later} ?", [rid]
    beyond = "<" if last.descending else ">"
    return (f" WHERE ({key} {beyond} ? OR {key} IS NULL OR ({key} = ? AND {rid_column} {beyond} ?))",
            [value, value, rid])


def _nulls_ascending(key: SortKey) -> bool:
    """Whether resources without sort key ``key`` tie by row id ascending in either direction: all
    but a date's (``date_sort_plan``'s sorted matches put those in the key's direction)."""
    return key.param is not None and key.param.table != "date"


def rid_floor(query: SearchQuery) -> int | None:
    """The row id an unsorted page of a ``_cursor`` starts after (results come in row-id order)."""
    return query.after[0] if query.after is not None and not query.sort else None


def keyset_sql(query: SearchQuery, alias: str = "r") -> tuple[str, Params] | None:
    """For a sorted page of a ``_cursor``: the condition that a resource comes after the cursor's
    resource in ``order_by``'s order (each key in its direction with missing values last, then the
    row id), built from the values the cursor holds rather than the resource, which may be gone."""
    if query.after is None or not query.sort:
        return None
    rid, values = query.after
    last = query.sort[-1]
    # order_by's last tie-break: the row id, descending after a descending key (but among resources
    # without a key other than a date).
    descending = last.descending and not (values[-1] is None and _nulls_ascending(last))
    cond, params = (f"{alias}.rid < ?" if descending else f"{alias}.rid > ?"), [rid]
    for key, value in reversed(list(zip(query.sort, values, strict=True))):
        expr, expr_params = _sort_expr(query.rtype, key, alias)
        if value is None:  # missing values sort last: only other resources without the key follow
            cond, params = f"({expr} IS NULL AND {cond})", [*expr_params, *params]
            continue
        beyond = f"{expr} {'<' if key.descending else '>'} ?"
        if key.param is not None:
            beyond = f"({beyond} OR {expr} IS NULL)"
        cond = f"({beyond} OR ({expr} = ? AND {cond}))"
        params = [*expr_params, value, *(expr_params if key.param is not None else []), *expr_params, value, *params]
    return cond, params


def anchor_columns(query: SearchQuery, alias: str = "r") -> tuple[str, Params]:
    """Columns to add after a sorted page's row columns: each sort key's value (what the page's last
    row gives the next page's ``_cursor``); "" for an unsorted page (its row id suffices)."""
    sql: list[str] = []
    params: Params = []
    for key in query.sort:
        expr, expr_params = _sort_expr(query.rtype, key, alias)
        sql.append(f", {expr}")
        params.extend(expr_params)
    return "".join(sql), params


def anchor_sql(query: SearchQuery, rid: int) -> tuple[str, Params]:
    """SQL reading the sort key values of resource row ``rid`` (a page's last match, for its cursor)."""
    exprs: list[str] = []
    params: Params = []
    for key in query.sort:
        expr, expr_params = _sort_expr(query.rtype, key, "r")
        exprs.append(expr)
        params.extend(expr_params)
    return f"SELECT {', '.join(exprs)} FROM resources r WHERE r.rid = ?", [*params, rid]


def rid_walk_sql(query: SearchQuery, *, steer: bool = False) -> tuple[str, Params] | None:
    """For an unsorted search on one index criterion: SQL reading its index rows in row-id order
    (the default order of results) up to a row limit given last, or None for other searches.

    Sorting every match by row id costs the number of matches; walking the row-id index costs
    the page size over the share of rows that match, small for a broad criterion (a category,
    a gender) at any store size. ``steer`` names the row-id index (``INDEXED BY``, SQLite only):
    SQLite's planner otherwise skip-scans the value index and sorts; PostgreSQL's weighs the
    two by its statistics.
    """
    if query.sort or query.ids or query.last_updated or len(query.criteria) != 1:
        return None
    c = query.criteria[0]
    if not _is_positive(c) or c.chain is not None or c.has is not None or c.missing is not None:
        return None
    if c.param.stored_as:  # its rows are another parameter's, in another order on the index
        return None
    if visible_rids(query.policy, query.rtype) is not None:
        return None
    ors: list[str] = []
    # The walk's row-id range: (floor, snapshot], the floor a ``_cursor``'s (0 without one).
    params: Params = [query.snapshot if query.snapshot is not None else 2**62, rid_floor(query) or 0, query.rtype,
                      c.param.code]
    for value in c.values:
        cond, cond_params = _value_sql(c, value)
        ors.append(cond)
        params.extend(cond_params)
    table = TABLES[c.param.table]
    source = f"{table} x INDEXED BY {table}_rid" if steer else f"{table} x"
    sql = (f"SELECT x.rid FROM {source} WHERE x.rid <= ? AND x.rid > ? AND x.rtype = ? AND x.param = ?"
           f" AND ({' OR '.join(ors)}) ORDER BY x.rid LIMIT ?")
    return sql, params


def _is_positive(c: Criterion) -> bool:
    return c.modifier != "not" and c.missing is not True


def _resource_filters(query: SearchQuery, alias: str) -> tuple[list[str], Params]:
    sql: list[str] = []
    params: Params = []
    for ids in query.ids:
        sql.append(f"{alias}.id IN ({', '.join('?' for _ in ids)})")
        params.extend(ids)
    for value in query.last_updated:
        cond, cond_params = _point_date(f"{alias}.lu", value)
        sql.append(cond)
        params.extend(cond_params)
    for criterion in query.criteria:
        if not _is_positive(criterion):
            part, part_params = rid_set(query.rtype, criterion, query.policy)
            sql.append(f"{alias}.rid NOT IN ({part})")
            params.extend(part_params)
    return sql, params


def rid_set(rtype: str, c: Criterion, policy: RowFilter | None = None, *, distinct: bool = False) -> tuple[str, Params]:
    """``SELECT x.rid FROM idx_… x WHERE …`` for one criterion (``:not``/``:missing=true`` give
    the set to exclude); a chain or ``_has`` only looks at resources ``policy`` lets the client see;
    ``distinct`` lists each row id once."""
    table = TABLES[c.param.table]
    select = "DISTINCT x.rid" if distinct else "x.rid"
    if c.has is not None:
        source, _, inner = c.has  # the criterion's own parameter is the source's reference parameter
        inner_sql, inner_params = _matching(source, inner, policy)
        rows, rows_params = param_rows(c.param, "x")
        sql = (
            "SELECT r2.rid FROM resources r2 WHERE r2.rtype = ? AND r2.deleted = 0 AND r2.id IN"
            f" (SELECT x.tid FROM idx_ref x WHERE x.rtype = ? AND {rows} AND x.ttype = ?"
            f" AND x.rid IN ({inner_sql}))"
        )
        return sql, [rtype, source, *rows_params, rtype, *inner_params]
    if c.chain is not None:
        target, inner = c.chain
        inner_sql, inner_params = _matching(target, inner, policy)
        rows, rows_params = param_rows(c.param, "x")
        sql = (
            f"SELECT {select} FROM idx_ref x WHERE x.rtype = ? AND {rows} AND x.ttype = ?"
            " AND x.tid IN (SELECT c.id FROM resources c WHERE c.rtype = ? AND c.deleted = 0"
            f" AND c.rid IN ({inner_sql}))"
        )
        return sql, [rtype, *rows_params, target, target, *inner_params]
    rows, rows_params = param_rows(c.param, "x")
    base = f"SELECT {select} FROM {table} x WHERE x.rtype = ? AND {rows}"
    params: Params = [rtype, *rows_params]
    if c.missing is not None:
        return base, params  # rids that have the parameter at all
    ors: list[str] = []
    for value in c.values:
        cond, cond_params = _value_sql(c, value)
        ors.append(cond)
        params.extend(cond_params)
    return f"{base} AND ({' OR '.join(ors)})", params


def _matching(rtype: str, c: Criterion, policy: RowFilter | None) -> tuple[str, Params]:
    """Row ids of live ``rtype`` resources matching ``c`` (positive or not) that ``policy`` lets through."""
    sql, params = rid_set(rtype, c, policy)
    if not _is_positive(c):
        sql, params = (f"SELECT n.rid FROM resources n WHERE n.rtype = ? AND n.deleted = 0 AND n.rid NOT IN ({sql})",
                       [rtype, *params])
    visible = visible_rids(policy, rtype)
    if visible is None:
        return sql, params
    return f"{sql} INTERSECT {visible[0]}", [*params, *visible[1]]


def _value_sql(c: Criterion, value: Any) -> tuple[str, Params]:
    if isinstance(value, TokenValue):
        conds: list[str] = []
        params: Params = []
        if value.code is not None:
            conds.append("x.code = ?")
            params.append(value.code)
        if value.system == "":
            conds.append("x.system IS NULL")
        elif value.system is not None:
            conds.append("x.system = ?")
            params.append(value.system)
        return "(" + " AND ".join(conds or ["1 = 1"]) + ")", params
    if isinstance(value, StringValue):
        if c.modifier == "exact":
            return "x.exact = ?", [value.exact]
        if c.modifier == "contains":
            escaped = value.norm.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            return "x.norm LIKE ? ESCAPE '\\'", [f"%{escaped}%"]
        return "(x.norm >= ? AND x.norm < ?)", [value.norm, value.norm + _MAX_CHAR]
    if isinstance(value, DateValue):
        return _range_date("x.lo", "x.hi", value)
    if isinstance(value, ReferenceValue):
        if value.url is not None and value.id is not None:
            return "(x.url = ? OR (x.tid = ? AND x.ttype = ?))", [value.url, value.id, value.type]
        if value.url is not None:
            return "x.url = ?", [value.url]
        if value.type is not None:
            return "(x.tid = ? AND x.ttype = ?)", [value.id, value.type]
        return "x.tid = ?", [value.id]
    assert isinstance(value, NumberValue)
    cond, params = _number(value)
    if value.system is not None:
        cond += " AND x.system = ?"
        params.append(value.system)
    if value.code is not None:
        cond += " AND x.code = ?"
        params.append(value.code)
    return f"({cond})", params


def _range_date(lo: str, hi: str, v: DateValue) -> tuple[str, Params]:
    # Both sides are ranges [low, high); the rules follow R4 search.html#prefix.
    p = v.prefix
    if p == "eq":
        # lo <= hi, so hi <= high bounds lo too: the (lo) index range then ends at high
        # instead of running to the newest date.
        return f"({lo} >= ? AND {lo} <= ? AND {hi} <= ?)", [v.low, v.high, v.high]
    if p == "ne":
        return f"NOT ({lo} >= ? AND {hi} <= ?)", [v.low, v.high]
    if p == "gt":
        return f"{hi} > ?", [v.high]
    if p == "lt":
        return f"{lo} < ?", [v.low]
    if p == "ge":
        return f"({hi} > ? OR {lo} >= ?)", [v.high, v.low]
    if p == "le":
        return f"({lo} < ? OR {hi} <= ?)", [v.low, v.high]
    if p == "sa":
        return f"{lo} >= ?", [v.high]
    if p == "eb":
        return f"{hi} <= ?", [v.low]
    # ap: overlap with the search range widened by 10% of its distance from now.
    width = max(0.1 * abs(time.time() - v.low), 86400.0)
    return f"({lo} < ? AND {hi} > ?)", [v.high + width, v.low - width]


def _point_date(column: str, v: DateValue) -> tuple[str, Params]:
    # meta.lastUpdated is an instant: a point, not a range.
    p = v.prefix
    if p == "eq":
        return f"({column} >= ? AND {column} < ?)", [v.low, v.high]
    if p == "ne":
        return f"NOT ({column} >= ? AND {column} < ?)", [v.low, v.high]
    if p in ("gt", "sa"):
        return f"{column} >= ?", [v.high]
    if p in ("lt", "eb"):
        return f"{column} < ?", [v.low]
    if p == "ge":
        return f"{column} >= ?", [v.low]
    if p == "le":
        return f"{column} < ?", [v.high]
    width = max(0.1 * abs(time.time() - v.low), 86400.0)
    return f"({column} >= ? AND {column} < ?)", [v.low - width, v.high + width]


def _number(v: NumberValue) -> tuple[str, Params]:
    p = v.prefix
    if p == "eq":
        return "x.value >= ? AND x.value < ?", [v.low, v.high]
    if p == "ne":
        return "NOT (x.value >= ? AND x.value < ?)", [v.low, v.high]
    if p in ("gt", "sa"):
        return "x.value > ?", [v.value]
    if p in ("lt", "eb"):
        return "x.value < ?", [v.value]
    if p == "ge":
        return "x.value >= ?", [v.value]
    if p == "le":
        return "x.value <= ?", [v.value]
    width = abs(v.value) * 0.1
    return "x.value >= ? AND x.value <= ?", [v.value - width, v.value + width]


def date_sort_walk(query: SearchQuery, *, steer: bool = False) -> tuple[str, Params, str, Params] | None:
    """For ``_sort`` on one date or string parameter: SQL walking its index in sort order.

    Sorting every match by a correlated MAX/MIN costs one probe per match; walking the
    (rtype, param, hi|lo) index in order and keeping the matching rows stops after one
    page. Returns the walk (limit to be appended as the last parameter) and the SQL for
    matches without the parameter, which sort last (offset and limit appended). None when
    the query does not have this shape. Without criteria the walk filters nothing: a deleted
    resource has no index rows. ``steer`` (SQLite) keeps the planner from probing the
    row-id index for each match and sorting, instead of walking the value index in order.
    """
    if len(query.sort) != 1:
        return None
    key = query.sort[0]
    if key.param is None or key.param.table not in ("date", "string"):
        return None
    rest, _ = _resource_filters(query, "r")
    if rest:
        return None
    matched, matched_params = match_set(query)
    every = not matched
    if every:
        matched = "SELECT a.rid FROM resources a WHERE a.rtype = ? AND a.deleted = 0"
        matched_params = [query.rtype]
    table = TABLES[key.param.table]
    column, direction = ("hi", "DESC") if key.descending else ("lo", "ASC")
    if key.param.table == "string":  # the first value seen in sort order is MIN (ascending) or MAX
        column = "norm"
    snapshot, snapshot_params = ("", []) if query.snapshot is None else (" AND d.rid <= ?", [query.snapshot])
    after, after_params = _rows_after(query, table, column, "d")
    among = "" if every else f" AND d.rid{' + 0' if steer else ''} IN ({matched})"
    walk = (  # the key column too: a resource's first row in the walk holds its sort key (a cursor's)
        f"SELECT d.rid, d.{column} FROM {table} d WHERE d.rtype = ? AND d.param = ?{among}{snapshot}{after}"
        f" ORDER BY d.{column} {direction}, d.rid {direction} LIMIT ?"
    )
    walk_params: Params = [query.rtype, key.param.code, *([] if every else matched_params), *snapshot_params,
                           *after_params]
    snapshot_m = "" if query.snapshot is None else " AND m.rid <= ?"
    # Without the key: by row id, descending after a descending date as ``date_sort_plan`` and
    # ``order_by`` give them (a string's ascending either way).
    missing_direction = "DESC" if key.descending and key.param.table == "date" else "ASC"
    if query.after is not None and query.after[1][0] is None:  # a cursor among them: after its row id
        snapshot_m += f" AND m.rid {'<' if missing_direction == 'DESC' else '>'} ?"
        snapshot_params = [*snapshot_params, query.after[0]]
    missing = (
        f"SELECT m.rid FROM ({matched}) m WHERE m.rid NOT IN (SELECT e.rid FROM {table} e WHERE e.rtype = ?"
        f" AND e.param = ?){snapshot_m} ORDER BY m.rid {missing_direction} LIMIT ? OFFSET ?"
    )
    missing_params: Params = [*matched_params, query.rtype, key.param.code, *snapshot_params]
    return walk, walk_params, missing, missing_params


@dataclass(frozen=True, slots=True)
class DateSortPlan:
    """Ways to one page of a query sorted by a date or string parameter (see ``date_sort_plan``)."""

    counts: list[tuple[str, Params]]  # per criterion: its matches, counted up to a limit appended
    bound: str  # the sort key of the ``cap``-th index row in sort order (none if fewer rows)
    bound_params: Params
    walk: str  # index rows in sort order up to the bound, kept if every criterion holds;
    walk_params: Params  # the bound and the limit are appended
    # Per driving criterion (or one for every resource of the type): its matches meeting the
    # others, sorted by their own key; limit and offset appended.
    by_match: list[tuple[str, Params]]
    descending: bool
    unbounded: Any  # the bound when the index has fewer rows than the cap (past every key)
    # Newest first by a date that criteria on the same date bound (``date_window``): the
    # window's sides; the row id of the cap-th row with an open end (far future and offset
    # appended) and the walk over those rows (read first: their key is the far future; far
    # future, that row id and limit appended); the bound and walk below a start (start, then
    # the ``bound`` query's offset or the walk's bound and limit appended).
    window: Window | None = None
    open_bound: str = ""
    open_walk: str = ""
    bound_below: str = ""
    walk_below: str = ""


def date_sort_plan(query: SearchQuery, cap: int) -> DateSortPlan | None:
    """For ``_sort`` on one date or string parameter with plain criteria: a bounded walk, or the
    few matches sorted.

    ``counts`` counts each criterion's matches up to a limit from its index alone. When one
    criterion matches few resources, ``by_match`` driven by it (the others probed per row)
    sorts exactly those by their own key. Otherwise the walk reads the parameter's index in sort
    order, no further than its ``cap``-th row (whose key ``bound`` finds from the index
    alone), keeping the rows whose resource meets every criterion (one probe per criterion on
    the row-id indexes), and stops once it has the page: after ``page / share`` rows when the
    criteria match a fair share of the resources, however large the store. When even that
    does not fill the page, the matches are few (fewer than ``page * rows / cap``) and
    ``by_match`` sorts them. The cost is bounded by ``cap`` probes or by the matches of the
    most selective criterion, never by the size of the store. None when the query has
    another shape (a chain, ``_has``, a negation, a data policy, a second sort key).
    """
    if len(query.sort) != 1:
        return None
    key = query.sort[0]
    if key.param is None or key.param.table not in ("date", "string"):
        return None
    if not _index_only(query):
        return None
    table = TABLES[key.param.table]
    column, direction, agg = ("hi", "DESC", "MAX") if key.descending else ("lo", "ASC", "MIN")
    unbounded: Any = -_FAR if key.descending else _FAR
    # A string sorts by its lowest value ascending, its highest descending; resources without
    # one come last in row-id order, as the index walk of earlier releases gave them.
    missing_order = ""
    if key.param.table == "string":
        column = "norm"
        unbounded = "" if key.descending else _MAX_CHAR * 8
        missing_order = " (CASE WHEN bm.k IS NULL THEN bm.rid END) ASC,"
    code = key.param.code
    # After a ``_cursor`` every walk and bound starts after its resource (``_rows_after``).
    after, after_params = _rows_after(query, table, column, "d")
    snapshot: Params = [*([] if query.snapshot is None else [query.snapshot]), *after_params]
    bounded = "" if query.snapshot is None else " AND d.rid <= ?"
    head = f"FROM {table} d WHERE d.rtype = ? AND d.param = ?{bounded}{after}"
    order = f"ORDER BY d.{column} {direction}, d.rid {direction}"
    bound = f"SELECT d.{column} {head} {order} LIMIT 1 OFFSET ?"
    probes = [_probe(c, "d", per_row=True) for c in query.criteria]
    limit_key = f"d.{column} {'>=' if key.descending else '<='} ?"
    # Each walk reads the key column too: a resource's first row holds its sort key (a cursor's).
    walk = f"SELECT d.rid, d.{column} {head} AND {' AND '.join([*(p for p, _ in probes), limit_key])} {order} LIMIT ?"
    walk_params: Params = [query.rtype, key.param.code, *snapshot, *(v for _, ps in probes for v in ps)]

    past, past_params = _keys_after(query, "bm.k", "bm.rid")

    def sorted_matches(driver: str, driver_params: Params, others: list[Criterion]) -> tuple[str, Params]:
        tests = [_probe(c, "b0", per_row=True) for c in others]
        # "+ 0": a bare rid bound tempts SQLite to range-scan a row-id index instead of the driver
        conds = [t for t, _ in tests] + ([] if query.snapshot is None else ["b0.rid + 0 <= ?"])
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        sql = (
            f"SELECT bm.rid, bm.k FROM (SELECT b0.rid AS rid, (SELECT {agg}(e.{column}) FROM {table} e"
            f" WHERE e.rid = b0.rid AND e.param = ?) AS k FROM ({driver}) b0{where}) bm{past}"
            f" ORDER BY (CASE WHEN bm.k IS NULL THEN 1 ELSE 0 END), bm.k {direction},{missing_order}"
            f" bm.rid {direction} LIMIT ? OFFSET ?"
        )  # resources without the key sort last, as in the walk
        snapshot_params = [] if query.snapshot is None else [query.snapshot]
        return sql, [code, *driver_params, *(v for _, ps in tests for v in ps), *snapshot_params, *past_params]

    counts: list[tuple[str, Params]] = []
    by_match: list[tuple[str, Params]] = []
    for n, criterion in enumerate(query.criteria):
        driver, driver_params = rid_set(query.rtype, criterion, distinct=True)
        # Index rows, not distinct resources: the count only chooses a plan, and DISTINCT makes
        # PostgreSQL hash every row of a code before the limit stops it.
        rows, rows_params = rid_set(query.rtype, criterion)
        counts.append((f"SELECT COUNT(*) FROM (SELECT 1 FROM ({rows}) f LIMIT ?) g", rows_params))
        by_match.append(sorted_matches(driver, driver_params, [c for i, c in enumerate(query.criteria) if i != n]))
    if not query.criteria:
        every = "SELECT a.rid FROM resources a WHERE a.rtype = ? AND a.deleted = 0"
        by_match.append(sorted_matches(every, [query.rtype], []))
    window = sort_window(query, code) if key.param.table == "date" and key.descending else None
    if window is None:
        return DateSortPlan(
            counts, bound, [query.rtype, key.param.code, *snapshot, cap - 1], walk, walk_params, by_match,
            key.descending, unbounded,
        )
    checks = " AND ".join(p for p, _ in probes)
    return DateSortPlan(
        counts, bound, [query.rtype, key.param.code, *snapshot, cap - 1], walk, walk_params, by_match,
        key.descending, unbounded, window,
        open_bound=f"SELECT d.rid {head} AND d.hi >= ? {order} LIMIT 1 OFFSET ?",
        open_walk=f"SELECT d.rid, d.hi {head} AND {checks} AND d.hi >= ? AND d.rid >= ? {order} LIMIT ?",
        bound_below=f"SELECT d.hi {head} AND d.hi <= ? {order} LIMIT 1 OFFSET ?",
        walk_below=f"SELECT d.rid, d.hi {head} AND {checks} AND d.hi <= ? AND {limit_key} {order} LIMIT ?",
    )


def type_walk_sql(query: SearchQuery, *, steer: bool = False) -> tuple[str, Params, str, Params] | None:
    """For an unsorted search on several plain criteria: SQL walking row ids in order (those of one
    ``system|code`` criterion when there is one, else the type's), testing every other criterion per
    row on its row-id index, or None for other searches.

    Intersecting the criteria costs the matches of the narrowest one (every Observation of a code,
    to keep those in a month); the default order is by row id, so walking the type's rows in that
    order stops after about the page over the share of the type that matches, whatever the store
    holds. Returns the SQL of the row id ``cap`` rows in (the cap appended) and the walk (the
    upper row id and the limit appended); the caller falls back to the plain plan when the
    walk up to that row does not fill the page. ``steer`` (SQLite) names the (rtype, rid) index.
    """
    if query.sort or query.ids or query.last_updated or len(query.criteria) < 2:
        return None
    if visible_rids(query.policy, query.rtype) is not None:
        return None
    for c in query.criteria:
        # A reference to one resource already drives a cheap plan; a deleted resource has no
        # index rows, so every positive probe also excludes it.
        if not _is_positive(c) or c.chain is not None or c.has is not None or _one_target(c):
            return None
    driver = next((c for c in query.criteria if _rid_ordered_token(c)), None)
    # The broad criteria (date and number ranges) first: they pass fewest rows in a walk.
    ordered = sorted((c for c in query.criteria if c is not driver), key=lambda c: 0 if not _selective(c) else 1)
    snapshot = query.snapshot if query.snapshot is not None else 2**62
    floor = rid_floor(query) or 0  # a ``_cursor``'s page starts after its row id
    if driver is not None:
        # One system|code: its index rows (rtype, param, code, system, rid) are in row-id order,
        # and the other criteria keep a share of them (a month of one code's Observations).
        probes = [_probe(c, "w", per_row=True) for c in ordered]
        value = driver.values[0]
        assert isinstance(value, TokenValue)
        head = "FROM idx_token w WHERE w.rtype = ? AND w.param = ? AND w.code = ? AND w.system = ? AND w.rid > ?"
        key: Params = [query.rtype, driver.param.code, value.code, value.system, floor]
        bound = f"SELECT w.rid {head} AND w.rid <= ? ORDER BY w.rid LIMIT 1 OFFSET ?"
        walk = f"SELECT w.rid {head} AND {' AND '.join(p for p, _ in probes)} AND w.rid <= ? ORDER BY w.rid LIMIT ?"
        return bound, [*key, snapshot], walk, [*key, *(v for _, ps in probes for v in ps)]
    probes = [_probe(c, "r", per_row=True) for c in ordered]
    source = "resources r INDEXED BY resources_type_rid" if steer else "resources r"
    bound = f"SELECT r.rid FROM {source} WHERE r.rtype = ? AND r.rid > ? AND r.rid <= ? ORDER BY r.rid LIMIT 1 OFFSET ?"
    walk = (f"SELECT r.rid FROM {source} WHERE r.rtype = ? AND r.rid > ? AND {' AND '.join(p for p, _ in probes)}"
            " AND r.rid <= ? ORDER BY r.rid LIMIT ?")
    return bound, [query.rtype, floor, snapshot], walk, [query.rtype, floor, *(v for _, ps in probes for v in ps)]


def selective_counts(query: SearchQuery) -> list[tuple[str, Params]]:
    """Per criterion the plain plan intersects (see ``match_set``): SQL counting its index rows up
    to a limit appended. One with few rows makes the plain plan cheap, and a walk needless."""
    return [(f"SELECT COUNT(*) FROM (SELECT 1 FROM ({sql}) f LIMIT ?) g", params)
            for sql, params in (rid_set(query.rtype, c) for c in query.criteria if _selective(c))]


def code_system_sql(query: SearchQuery) -> tuple[int, str, Params] | None:
    """For ``type_walk_sql``, when no criterion names a ``system|code``: the first criterion naming a
    code alone, with SQL answering (lowest system, highest system, rows without a system) of that
    code's index rows from the index alone. One system means ``pin_system`` may name it: the
    code's rows are then in row-id order in the index, and the walk can drive from them."""
    if any(_rid_ordered_token(c) for c in query.criteria):
        return None
    for n, c in enumerate(query.criteria):
        if (c.param.table != "token" or c.param.stored_as or c.modifier is not None or c.missing is not None
                or len(c.values) != 1):
            continue
        value = c.values[0]
        if not isinstance(value, TokenValue) or value.system is not None or value.code is None:
            continue
        head = "FROM idx_token t WHERE t.rtype = ? AND t.param = ? AND t.code = ?"
        key: Params = [query.rtype, c.param.code, value.code]
        sql = (f"SELECT (SELECT t.system {head} AND t.system IS NOT NULL ORDER BY t.system ASC LIMIT 1),"
               f" (SELECT t.system {head} AND t.system IS NOT NULL ORDER BY t.system DESC LIMIT 1),"
               f" (SELECT COUNT(*) FROM (SELECT 1 {head} AND t.system IS NULL LIMIT 1) b)")
        return n, sql, [*key, *key, *key]
    return None


def pin_system(query: SearchQuery, n: int, system: str) -> SearchQuery:
    """``query`` with criterion ``n`` (a code alone, see ``code_system_sql``) naming ``system``: the
    same matches while the code has no row of another system."""
    criteria = list(query.criteria)
    value = criteria[n].values[0]
    assert isinstance(value, TokenValue)
    criteria[n] = replace(criteria[n], values=[TokenValue(system, value.code)])
    return replace(query, criteria=criteria)


def _rid_ordered_token(c: Criterion) -> bool:
    """One ``system|code`` token value: its rows of the value index are in row-id order (of one
    parameter's rows: not an alias's, which are several parameters')."""
    if c.param.table != "token" or c.param.stored_as or c.modifier is not None or c.missing is not None:
        return False
    if len(c.values) != 1:
        return False
    value = c.values[0]
    return isinstance(value, TokenValue) and bool(value.system) and value.code is not None


def order_by(query: SearchQuery, alias: str = "r") -> tuple[str, Params]:
    """ORDER BY clause; the row id is the last key so pages are stable."""
    keys: list[str] = []
    params: Params = []
    for key in query.sort:
        expr, expr_params = _sort_expr(query.rtype, key, alias)
        direction = "DESC" if key.descending else "ASC"
        # Resource columns are never NULL; leaving NULLS LAST off them lets an index serve the order.
        keys.append(f"{expr} {direction}" if key.param is None else f"{expr} {direction} NULLS LAST")
        params.extend(expr_params)
    last = query.sort[-1] if query.sort else None
    # Ties go by row id in the last key's direction (lastUpdated has millisecond precision: among
    # resources written in the same millisecond "-_lastUpdated" is newest first), as the index walks
    # of one date or string key and ``date_sort_plan``'s sorted matches give them; resources without
    # the key come last by row id ascending, but a date's in its direction, as those sorted matches
    # give them. A sorted page of a ``_cursor`` is read in this order (``keyset_sql``) after a first
    # page of theirs: it must be the same.
    if last is not None and last.descending:
        if _nulls_ascending(last):
            expr, expr_params = _sort_expr(query.rtype, last, alias)
            keys.append(f"(CASE WHEN {expr} IS NULL THEN {alias}.rid END) ASC")
            params.extend(expr_params)
        keys.append(f"{alias}.rid DESC")
    else:
        keys.append(f"{alias}.rid ASC")
    return ", ".join(keys), params


def _sort_expr(rtype: str, key: SortKey, alias: str) -> tuple[str, Params]:
    if key.param is None:
        return (f"{alias}.lu" if key.code == "_lastUpdated" else f"{alias}.id"), []
    table = key.param.table
    agg = "MAX" if key.descending else "MIN"
    column = {
        "token": "x.code",
        "string": "x.norm",
        "date": "x.hi" if key.descending else "x.lo",
        "reference": "x.tid",
        "number": "x.value",
    }[table]
    rows, params = param_rows(key.param, "x", of_one_row=True)
    return f"(SELECT {agg}({column}) FROM {TABLES[table]} x WHERE x.rid = {alias}.rid AND {rows})", params
