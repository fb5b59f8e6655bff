"""What a write transaction (``writes.SqlTransaction``) asks of the SQL store it runs on.

``SqlStore`` (``sql.py``) opens transactions, so it imports ``writes.py``; the transaction
reaches back to its store only through ``SqlBackend`` and the write-step format here, so
``writes.py`` never imports ``sql.py``. The backends (SQLite, PostgreSQL) override some of
these operations (row reads by id list, row id reservation, bulk writes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any, Protocol

from gateway.search import ExtractionPlan, RowFilter, SearchQuery
from gateway.store.base import PreparedWrite, SearchResult
from gateway.store.rows import Cursor

#: Tables a transaction appends to, with their columns, in the order ``flush`` writes them
#: (resource rows before the updates that may follow them in the same transaction).
INSERT_COLUMNS: dict[str, tuple[str, ...]] = {
    "resources": ("rid", "rtype", "id", "version", "lu", "deleted", "chash", "content", "method"),
    "history": ("rtype", "id", "version", "lu", "deleted", "content", "method"),
    "changes": ("rtype", "id", "version", "op", "at", "lane"),
    "idx_token": ("rid", "rtype", "param", "system", "code"),
    "idx_string": ("rid", "rtype", "param", "norm", "exact"),
    "idx_date": ("rid", "rtype", "param", "lo", "hi"),
    "idx_ref": ("rid", "rtype", "param", "ttype", "tid", "url"),
    "idx_number": ("rid", "rtype", "param", "value", "system", "code"),
    "record_outputs": ("source", "record_key", "rtype", "id", "rule", "on_retract"),
}

#: One buffered write: ``("sql", statement, rows)`` or ``("insert", table, rows)`` (columns
#: from ``INSERT_COLUMNS``), run with one ``executemany`` (or ``COPY``) per step.
WriteStep = tuple[str, str, list[tuple[Any, ...]]]


@cache
def insert_sql(table: str) -> str:
    """``INSERT INTO table (...) VALUES (?, ...)`` for a table of ``INSERT_COLUMNS``."""
    columns = INSERT_COLUMNS[table]
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"


#: The widest spread of one resource's values of a type's date parameter (``date_spreads``).
SPREAD_SQL = "SELECT spread FROM date_spreads WHERE rtype = ? AND param = ?"


class SqlBackend(Protocol):
    """The store operations a write transaction runs on its open cursor."""

    #: Whether ``SELECT … FOR UPDATE`` locks rows. PostgreSQL needs it so two writers cannot
    #: both build on one version; SQLite has no such clause: its write transaction already
    #: holds the database's only write lock.
    row_locks: bool
    #: The lane of the change-feed entries this store's transactions write (``LANES``).
    feed_lane: str
    #: Per (type, date parameter): a spread ``date_spreads`` is known to hold at least, read from
    #: committed rows only (never set from a write that may still roll back).
    spread_floor: dict[tuple[str, str], float]

    def q(self, sql: str) -> str:
        """Adapt ``?`` placeholders to the driver's style."""
        ...

    def rows_by_id(
        self, cur: Cursor, columns: str, rtype: str, ids: Sequence[str], *, where: str = "", lock: bool = False
    ) -> list[Any]:
        """``columns`` of the ``resources r`` rows of one type whose ids are in ``ids``."""
        ...

    def rows_by_refs(self, cur: Cursor, columns: str, refs: Mapping[str, Sequence[str]], *, lock: bool = False) -> (
            list[Any]):
        """``columns`` of the ``resources r`` rows whose ids are in ``refs`` (type to ids)."""
        ...

    def visible_in(self, cur: Cursor, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` lets the client see."""
        ...

    def search_cursor(self, cur: Cursor) -> Cursor:
        """The cursor a search inside a write transaction runs on (``cur``, or a view of it)."""
        ...

    def take_row_ids(self, cur: Cursor, count: int, after: int) -> list[int]:
        """``count`` unused ``resources.rid`` values, ascending, all above ``after``."""
        ...

    def write_rows(self, cur: Cursor, steps: list[WriteStep]) -> None:
        """Run buffered writes in order."""
        ...

    def search_in(self, cur: Cursor, query: SearchQuery) -> SearchResult:
        """Run a search on an open cursor (inside a transaction it sees the transaction's writes)."""
        ...

    def prepare(self, resource: dict[str, Any], rid: str | None = None) -> PreparedWrite:
        """Stored body, content hash and index rows of ``resource``."""
        ...

    def indexed_params(self, rtype: str) -> ExtractionPlan:
        """The extraction plan of the parameters indexed on write for a type."""
        ...
