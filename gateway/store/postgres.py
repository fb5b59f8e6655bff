"""``PostgresStore``: the resource store on PostgreSQL (psycopg 3).

Writes are buffered by ``SqlTransaction`` and sent in one pipelined round trip, or by
``COPY`` for the large batches of ingest. Write transactions take one transaction-scoped
advisory lock before anything else. That keeps change-feed sequence numbers and reserved
row ids in commit order (a reader of ``seq > cursor`` can never miss a change that commits
late with a smaller number) at the price of serialising writes.

The lock is held through the commit's fsync, so taken once per write it allowed one write
and one fsync at a time: the CRUD-mix benchmark (38 clients) showed write p99 of 144-468 ms.
So the writers of one process share one writer connection (``PostgresWriter``, a
``GroupCommit``): writers that queue up behind one another run in one transaction, a
savepoint each, and one commit (one lock, one fsync) covers the burst; each returns only
after that commit. The advisory lock still serialises the bursts of different processes.

Reads draw on a connection pool of their own, so a read by id never waits behind writers.
"""

from __future__ import annotations

import selectors
import time
import weakref
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from gateway.search import SearchRegistry
from gateway.store.base import StoreUnavailable, WriteBatch
from gateway.store.group_commit import GroupCommit
from gateway.store.rows import Cursor
from gateway.store.sql import SqlStore
from gateway.store.sqlops import INSERT_COLUMNS, WriteStep
from gateway.store.urls import pool_timeout, schema_name, split_params

#: From this many buffered rows on, a flush appends with COPY instead of INSERTs.
_COPY_FROM_ROWS = 256

_WRITE_LOCK = 7_274_220_911  # arbitrary, fixed: the gateway's change-feed writer lock


@lru_cache(maxsize=4096)
def _to_pyformat(sql: str) -> str:
    return sql.replace("?", "%s")


def rows_by_id_sql(columns: str, where: str = "", lock: bool = False) -> str:
    """The query of ``PostgresStore.rows_by_id``: parameters are the id array and the type."""
    # One lateral lookup per id uses the (rtype, id) index whatever the statistics say. On a
    # table not analysed yet (after a first bulk load) ``r.id IN (…)`` and a plain join were
    # planned as a scan of every row of the type: 13 ms instead of 1.8 ms for 500 ids of 33,000.
    return (
        f"SELECT {columns} FROM unnest(%s::text[]) AS k(id) CROSS JOIN LATERAL"
        f" (SELECT * FROM resources r WHERE r.rtype = %s AND r.id = k.id{where}"
        f"{' FOR UPDATE' if lock else ''}) AS r"
    )


def rows_by_refs_sql(columns: str, lock: bool = False) -> str:
    """The query of ``PostgresStore.rows_by_refs``: parameters are the type and id arrays, pairwise."""
    return (
        f"SELECT {columns} FROM unnest(%s::text[], %s::text[]) AS k(rtype, id) CROSS JOIN LATERAL"
        f" (SELECT * FROM resources r WHERE r.rtype = k.rtype AND r.id = k.id"
        f"{' FOR UPDATE' if lock else ''}) AS r"
    )


#: How long a writer whose COMMIT got no answer keeps asking the server what became of it.
_OUTCOME_SECONDS = 5.0
#: Seconds a pooled read connection may sit idle before it is tried on checkout (``_check_idle``).
_IDLE_CHECK = 1.0
_PING_SECONDS = 3.0  # how long a readiness check may take: a pooled connection and its answer


def _select_one(conn: psycopg.Connection[Any], deadline: float) -> None:
    """``SELECT 1`` on ``conn``, waiting for the server until ``deadline`` (``time.monotonic``) at most.

    psycopg waits for an answer without a time limit, and a server that froze, or a network path
    that stopped carrying bytes without a reset, leaves the connection open: nothing ends that
    wait (TCP keepalives are answered, or come after two hours). So the ping speaks libpq's
    asynchronous protocol itself and gives up at the deadline with ``StoreUnavailable``, closing the
    connection (its answer could still come, and would be read as the next statement's): the pool
    then drops it."""
    pgconn = conn.pgconn
    with selectors.DefaultSelector() as selector:

        def wait(events: int) -> None:
            socket = pgconn.socket
            selector.register(socket, events)
            ready = selector.select(max(0.0, deadline - time.monotonic()))
            selector.unregister(socket)
            if not ready:
                conn.close()
                raise StoreUnavailable(f"the PostgreSQL store did not answer within {_PING_SECONDS:g} s")

        pgconn.send_query(b"SELECT 1")
        while pgconn.flush():  # 1 while part of the query is still to be sent
            wait(selectors.EVENT_WRITE)
        pgconn.consume_input()
        while pgconn.is_busy():
            wait(selectors.EVENT_READ)
            pgconn.consume_input()
        failed = None
        while (result := pgconn.get_result()) is not None:
            if result.status != psycopg.pq.ExecStatus.TUPLES_OK:
                failed = result.get_error_message()
        if failed is not None:
            raise psycopg.OperationalError(failed)


def _takes_no_writes(conn: psycopg.Connection[Any]) -> bool:
    """Whether ``conn``'s session is read-only: PostgreSQL 14+ reports both settings as they change."""
    info = conn.info
    return any(info.parameter_status(name) == "on" for name in ("default_transaction_read_only", "in_hot_standby"))


#: The driver's errors that say the server cannot serve the store now, not that a statement is
#: wrong: it cannot be reached (refused, shut down, dropped, pool timeout), or it takes no writes
#: (a standby after a failover, ``default_transaction_read_only`` during a move to another server).
_UNAVAILABLE = (psycopg.OperationalError, psycopg.errors.ReadOnlySqlTransaction)


def _unavailable(exc: psycopg.Error) -> StoreUnavailable:
    """One of ``_UNAVAILABLE`` as the store's own error: a 503 for the API instead of a 500 like a
    bug. Only its type is named."""
    return StoreUnavailable(f"the PostgreSQL store is unavailable ({type(exc).__name__})")


T = TypeVar("T")


@contextmanager
def _reachable(block: AbstractContextManager[T]) -> Iterator[T]:
    """``block``, with the driver's failures to reach the server raised as ``StoreUnavailable``."""
    try:
        with block as value:
            yield value
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


#: libpq settings every connection gets unless the store URL sets them. libpq's own defaults wait
#: without end for a connection to open, send the first keepalive after two hours and retry
#: unacknowledged data for ~15 minutes, so a server gone on a path that carries no reset (its VM
#: stopped, a NAT or firewall dropping the flow) held a request or the ingest writer that long;
#: with these such a connection fails in about a minute (a 503 and a retry by the pool), while
#: a slow query is untouched (a busy server's kernel still acknowledges).
NETWORK_DEFAULTS = {
    "connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
    "keepalives_count": "3", "tcp_user_timeout": "60000",
}  # fmt: skip


def with_network_defaults(conninfo: str) -> str:
    """``conninfo`` with the ``NETWORK_DEFAULTS`` it does not set itself."""
    given = conninfo_to_dict(conninfo)
    return make_conninfo(conninfo, **{k: v for k, v in NETWORK_DEFAULTS.items() if k not in given})


def split_schema(url: str) -> tuple[str, str | None]:
    """Take the gateway's own query parameters out of a PostgreSQL URL; the conninfo and the schema."""
    conninfo, own = split_params(url)
    return conninfo, own.get("schema")


class PostgresWriter(GroupCommit[psycopg.Connection[Any]]):
    """The store's writer connection: a transaction opens by taking the schema's advisory lock."""

    joins_statements = True

    def __init__(self, conninfo: str, kwargs: dict[str, Any], lock: int) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._kwargs = kwargs
        # BEGIN, the lock and the transaction's id in one round trip (a literal: several statements
        # take no parameters). The id is how the outcome of a COMMIT whose answer was lost is asked.
        self._begin_sql = f"BEGIN; SELECT pg_advisory_xact_lock({int(lock)}), txid_current()"
        self._xid: int | None = None

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._conninfo, **self._kwargs)

    def _begin(self, cur: Cursor) -> None:
        assert isinstance(cur, psycopg.Cursor)
        self._xid = None
        cur.execute(self._begin_sql)
        cur.nextset()  # BEGIN's result, then the SELECT's
        row = cur.fetchone()
        self._xid = int(row[1]) if row is not None else None

    def _committed_anyway(self, exc: Exception) -> bool:
        """Ask the server, on a new connection, what became of the transaction (``txid_status``):
        committed, aborted, or still in progress for a moment (its backend finishing the COMMIT, or
        not yet aware that the client is gone). Unknown after a few seconds counts as not committed."""
        xid, self._xid = self._xid, None
        if xid is None or not isinstance(exc, psycopg.OperationalError):
            return False
        deadline = time.monotonic() + _OUTCOME_SECONDS
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self._conninfo, **self._kwargs, connect_timeout=2) as conn:
                    row = conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
                status = row[0] if row is not None else None
                if status != "in progress":
                    return status == "committed"
            except psycopg.OperationalError:
                pass  # not reachable yet
            time.sleep(0.2)
        return False

    def _usable(self, conn: psycopg.Connection[Any]) -> bool:
        # After an error PostgreSQL refuses every statement but a rollback (INERROR).
        return conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS

    def _stale(self, conn: psycopg.Connection[Any]) -> bool:
        # A session that turned read-only takes no more writes: the next batch connects anew (to the
        # new primary after a failover).
        return conn.closed or conn.broken or _takes_no_writes(conn)


def _create_schema(conninfo: str, schema: str) -> None:
    """Create ``schema`` unless it exists, also when several processes start at once. The first
    connection a store makes: a server that cannot be reached is ``StoreUnavailable`` here too (a
    process started during a database outage then exits with one line, not a driver traceback)."""
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            try:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            except psycopg.errors.UniqueViolation:
                # IF NOT EXISTS checks before inserting into the catalogue: two processes starting
                # together (backfill workers, pods) can both pass the check; the loser's schema exists.
                pass
    except _UNAVAILABLE as exc:
        raise _unavailable(exc) from exc


class _Unprepared:
    """A cursor view whose statements psycopg never prepares on the server (see ``search_cursor``)."""

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur

    def execute(self, sql: Any, params: Any = None, /) -> Any:
        return self._cur.execute(sql, params, prepare=False)  # type: ignore[call-arg]

    def executemany(self, sql: Any, params: Any, /) -> Any:
        return self._cur.executemany(sql, params)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class PostgresStore(SqlStore):
    """The resource store in a PostgreSQL database."""

    dialect = "postgresql"
    snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    inline_reads = False  # a read waits on the server: it must not stall the event loop
    row_locks = True

    def __init__(self, url: str, registry: SearchRegistry | None = None, max_connections: int = 10) -> None:
        super().__init__(registry)
        conninfo, own = split_params(url)
        schema, timeout = schema_name(own.get("schema")), pool_timeout(own.get("pool_timeout"))
        if conninfo.startswith("postgres://"):
            conninfo = "postgresql://" + conninfo[len("postgres://") :]
        conninfo = with_network_defaults(conninfo)
        if schema is not None:
            _create_schema(conninfo, schema)
        # NOTICEs (e.g. from CREATE TABLE IF NOT EXISTS) in pipeline mode can shift results
        # between statements in psycopg 3.3, so the session asks for warnings and above only.
        options = "-c client_min_messages=warning"
        if schema is not None:
            options += f" -c search_path={schema}"
        kwargs: dict[str, Any] = {"autocommit": True, "options": options}
        self.schema = schema
        # One writer lock per store (schema), so stores sharing a database do not serialise each other.
        self._write_lock = _WRITE_LOCK ^ zlib.crc32((schema or "public").encode())
        # Searches are prepared after a few runs, and a generic plan cannot see that a code matches
        # most rows of a type (walk the row-id index: microseconds) or few (sort them): one plan
        # for every value sorted 80,000 index rows for a page of 20. Reads are planned per value;
        # on the writer, only searches are (``search_cursor``): its INSERTs and UPDATEs keep their
        # prepared plans, which re-planning each time made the CRUD mix ~20% slower.
        reads = {**kwargs, "options": options + " -c plan_cache_mode=force_custom_plan"}
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = weakref.WeakKeyDictionary()
        self._pool = ConnectionPool(
            conninfo, min_size=1, max_size=max_connections, kwargs=reads, open=True, timeout=timeout,
            name="reads", check=self._check_idle, reset=self._mark_returned,
        )  # fmt: skip
        self._writer = PostgresWriter(conninfo, kwargs, self._write_lock)

    def q(self, sql: str) -> str:
        """Rewrite ``?`` placeholders to psycopg's ``%s``."""
        return _to_pyformat(sql)

    def _mark_returned(self, conn: psycopg.Connection[Any]) -> None:
        """Pool ``reset`` callback: when the connection went back to the pool."""
        self._returned[conn] = time.monotonic()

    def _check_idle(self, conn: psycopg.Connection[Any]) -> None:
        """Pool ``check`` callback: a connection idle for a while is tried before a read gets it.

        A server restart ends every pooled connection without the gateway knowing, and the first
        read on each failed (503) until one failure had the pool checked. A restart takes seconds,
        so only connections idle past ``_IDLE_CHECK`` pay the round trip; under load they are
        reused sooner and cost nothing. A dead one is dropped and the pool hands out another.
        """
        returned = self._returned.get(conn)
        if returned is not None and time.monotonic() - returned > _IDLE_CHECK:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def _read_cursor(self) -> Iterator[Cursor]:
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as exc:
            # After a server restart every idle connection of the pool is dead, and each would fail
            # one more request: the pool is checked now, so this request is the only one.
            try:
                self._pool.check()
            except psycopg.OperationalError:  # closed, or nothing to check against: the request fails anyway
                pass
            raise _unavailable(exc) from exc

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` if the database cannot be reached within a few seconds (a
        readiness probe must answer before its own timeout, not after the pool's, 30 s by default):
        taking a pooled connection and the server's answer to it share those seconds."""
        deadline = time.monotonic() + _PING_SECONDS
        try:
            with self._pool.connection(timeout=_PING_SECONDS) as conn:
                _select_one(conn, deadline)
                read_only = _takes_no_writes(conn)
        except psycopg.OperationalError as exc:  # PoolTimeout included
            raise _unavailable(exc) from exc
        if read_only:
            # Reads would go through, but every write and ingest would be a 503: a load balancer
            # should send the traffic to a gateway whose server is the primary.
            raise StoreUnavailable("the PostgreSQL server takes no writes (a standby, or read-only)")

    def _write_cursor(self) -> AbstractContextManager[Cursor]:
        return _reachable(self._writer.unit())

    def _spare_ids(self) -> list[int] | None:
        return self._writer.spare_ids()

    def search_cursor(self, cur: Cursor) -> Cursor:
        """The writer's cursor, its statements never prepared: the searches of batch and transaction
        entries, conditional writes and conditional references run there, holding the store's write
        lock, and a generic plan (chosen from a prepared statement's sixth run) made a batch GET with
        ``_revinclude`` take 0.7 s instead of 35 ms. An unprepared statement is planned for its values."""
        return _Unprepared(cur)

    def write_batch(self) -> AbstractContextManager[WriteBatch]:
        """This thread's transactions until the block ends, committed together at its end."""
        return _reachable(self._writer.hold())

    def rows_by_id(
        self, cur: Cursor, columns: str, rtype: str, ids: Sequence[str], *, where: str = "", lock: bool = False
    ) -> list[Any]:
        """``columns`` of the ``resources r`` rows of one type whose ids are in ``ids``."""
        cur.execute(rows_by_id_sql(columns, where, lock), (list(ids), rtype))
        return cur.fetchall()

    def rows_by_refs(self, cur: Cursor, columns: str, refs: Mapping[str, Sequence[str]], *, lock: bool = False) -> (
            list[Any]):
        """``columns`` of the ``resources r`` rows whose ids are in ``refs`` (type to ids), in one round
        trip (a transaction of several types asked once per type: ~12 statements per ingest batch)."""
        if len(refs) == 1:  # every REST write: the one-type statement, prepared and measured before
            ((rtype, ids),) = refs.items()
            return self.rows_by_id(cur, columns, rtype, ids, lock=lock)
        types = [rtype for rtype, ids in refs.items() for _ in ids]
        ids = [rid for found in refs.values() for rid in found]
        cur.execute(rows_by_refs_sql(columns, lock), (types, ids))
        return cur.fetchall()

    def write_rows(self, cur: Cursor, steps: list[WriteStep]) -> None:
        """Small writes in one pipelined round trip; large appends by COPY (~3x faster a row)."""
        assert isinstance(cur, psycopg.Cursor)
        if sum(len(rows) for _, _, rows in steps) < _COPY_FROM_ROWS:
            with cur.connection.pipeline():
                super().write_rows(cur, steps)
            return
        for kind, what, rows in steps:
            if kind == "insert" and len(rows) >= _COPY_FROM_ROWS // 8:
                columns = ", ".join(INSERT_COLUMNS[what])
                with cur.copy(f"COPY {what} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                with cur.connection.pipeline():
                    super().write_rows(cur, [(kind, what, rows)])

    def reserve_row_ids(self, cur: Cursor, count: int, after: int) -> list[int]:
        """``count`` values of the ``resources.rid`` sequence in one round trip."""
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence('resources', 'rid')) FROM generate_series(1, %s)", (count,)
        )
        return sorted(int(row[0]) for row in cur.fetchall())

    def refresh_statistics(self) -> None:
        """``ANALYZE`` the store's tables: after a bulk load the planner would otherwise cost a
        search on the sizes of before until autovacuum gets to it (a code then looked rare, and
        sorting its 80,000 rows for a page of 20 looked cheaper than walking them in order)."""
        with self._pool.connection() as conn:
            conn.execute("ANALYZE")  # the connection's search_path names the store's schema only

    def close(self) -> None:
        """Close the writer connection and the read pool."""
        self._writer.close()
        self._pool.close()
