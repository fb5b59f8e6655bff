"""The embedded, durable queue: one SQLite file in WAL mode (the single-node default).

Every operation is one ``BEGIN IMMEDIATE`` transaction on one connection owned by one
thread, so operations are atomic, serialised within the process, and safe against other
processes sharing the file (``gateway serve`` plus a ``gateway worker`` on one machine).
With ``synchronous=FULL`` (the default) a committed transaction survives ``kill -9`` and
power loss; ``normal`` survives ``kill -9`` only.

Per-key order is kept with a ``head`` flag: exactly the oldest live job (lowest ``pos``)
of each (destination, key) has ``head = 1``, and only heads are claimed. ``pos`` is a
queue-wide counter, so a replayed job goes behind the live jobs of its key.

The tables are versioned (``sqlite_schema``): a connection brings its file up to date
when it opens, and refuses a file written by a newer gateway.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from gateway.clock import Clock
from gateway.connectors import Job
from gateway.delivery.codec import decode_detail, decode_job, encode_detail, encode_job
from gateway.delivery.queue import (
    WORKER_MEMORY,
    Ack,
    Bury,
    DeadLetter,
    DeadLetterFilter,
    Nack,
    QueueError,
    QueueStats,
    QueueUnavailable,
    Release,
    Settlement,
    Split,
    WorkerBeat,
    grouped,
)
from gateway.delivery.sqlite_schema import migrate
from gateway.delivery.states import JobState

T = TypeVar("T")

STATS_BUCKET = 10  # seconds per delivered-count bucket

_JOB_COLUMNS = "id, job, payload, attempts, enqueued_at, claims"


class SQLiteQueue:
    """``DeliveryQueue`` on one SQLite file (see the module docstring)."""

    def __init__(
        self, path: str | Path, *, clock: Clock, lease: float = 60.0, synchronous: str = "FULL"
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous must be FULL, NORMAL or EXTRA")
        self.path = Path(path)
        self.clock = clock
        self.lease = lease
        self._synchronous = synchronous.upper()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-queue")
        self._local = threading.local()
        self._closed = False

    # -- plumbing ---------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise QueueError("queue is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(self._guarded, fn, *args))

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(self._connection(), *args)
        except sqlite3.OperationalError as exc:
            # "database is locked" after busy_timeout, or the disk went away: transient.
            raise QueueUnavailable(f"sqlite queue unavailable: {exc}") from exc
        except sqlite3.Error as exc:
            raise QueueError(f"sqlite queue error: {exc}") from exc

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            try:
                migrate(conn)
            except BaseException:
                conn.close()
                raise
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    async def close(self) -> None:
        """Close the connection and stop the queue's thread."""
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_connection)
        self._closed = True
        self._executor.shutdown(wait=True)

    def _close_connection(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- outbox -----------------------------------------------------------------------------

    async def cursor(self, destination: str) -> int | None:
        """The outbox's change-feed position for ``destination``."""
        return await self._run(self._cursor, destination)

    @staticmethod
    def _cursor(conn: sqlite3.Connection, destination: str) -> int | None:
        row = conn.execute("SELECT seq FROM cursors WHERE destination = ?", (destination,)).fetchone()
        return None if row is None else int(row[0])

    async def enqueue(self, destination: str, jobs: Sequence[Job], *, after: int | None, cursor: int) -> bool:
        """Add ``jobs`` and move the cursor from ``after`` to ``cursor`` in one transaction."""
        return await self._run(self._enqueue, destination, list(jobs), after, cursor)

    def _enqueue(
        self, conn: sqlite3.Connection, destination: str, jobs: list[Job], after: int | None, cursor: int
    ) -> bool:
        with self._tx(conn):
            if self._cursor(conn, destination) != after:
                return False
            pos = self._take_positions(conn, len(jobs))
            live_keys: dict[str, bool] = {}
            for offset, job in enumerate(jobs):
                live = live_keys.get(job.key)
                if live is None:
                    live = self._key_has_live(conn, destination, job.key)
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO jobs (id, destination, seq, pos, key, ref, state, head, due,"
                    " enqueued_at, job, payload, lane) VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
                    (
                        job.id,
                        destination,
                        job.seq,
                        pos + offset,
                        job.key,
                        job.ref,
                        0 if live else 1,
                        job.enqueued_at,
                        job.enqueued_at,
                        encode_job(job),
                        job.payload,
                        int(job.backfill),
                    ),
                ).rowcount
                live_keys[job.key] = live or inserted == 1
            conn.execute(
                "INSERT INTO cursors (destination, seq) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET seq = excluded.seq",
                (destination, cursor),
            )
            conn.execute("INSERT OR IGNORE INTO destinations (name) VALUES (?)", (destination,))
        return True

    @staticmethod
    def _take_positions(conn: sqlite3.Connection, count: int) -> int:
        row = conn.execute(
            "INSERT INTO counters (name, value) VALUES ('pos', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value RETURNING value",
            (count,),
        ).fetchone()
        return int(row[0]) - count + 1

    @staticmethod
    def _key_has_live(conn: sqlite3.Connection, destination: str, key: str) -> bool:
        row = conn.execute(
            "SELECT 1 FROM jobs WHERE destination = ? AND key = ? AND state != 'dead' LIMIT 1",
            (destination, key),
        ).fetchone()
        return row is not None

    # -- workers ----------------------------------------------------------------------------

    async def claim(self, destination: str, *, worker: str, limit: int, coalesce: bool) -> list[Job]:
        """Lease up to ``limit`` due head jobs of ``destination``."""
        return await self._run(self._claim, destination, limit, coalesce)

    def _claim(self, conn: sqlite3.Connection, destination: str, limit: int, coalesce: bool) -> list[Job]:
        now = self.clock.now()
        claimed: list[Job] = []
        with self._tx(conn):
            row = conn.execute("SELECT paused FROM destinations WHERE name = ?", (destination,)).fetchone()
            if row is not None and row[0]:
                return []
            while len(claimed) < limit:
                want = limit - len(claimed)
                rows = conn.execute(
                    f"SELECT {_JOB_COLUMNS}, seq, ref, key FROM jobs WHERE destination = ?"
                    " AND state = 'in_flight' AND lease_until <= ? LIMIT ?",
                    (destination, now, want),
                ).fetchall()
                if len(rows) < want:
                    rows += self._heads(conn, destination, now, want - len(rows))
                if not rows:
                    break
                skipped = 0
                for job_id, data, payload, attempts, enqueued_at, claims, seq, ref, key in rows:
                    if coalesce and self._superseded(conn, destination, ref, seq):
                        self._finish(conn, destination, job_id, key, now, dead=None)
                        skipped += 1
                        continue
                    conn.execute(
                        "UPDATE jobs SET state = 'in_flight', lease_until = ?, claims = claims + 1"
                        " WHERE id = ?",
                        (now + self.lease, job_id),
                    )
                    claimed.append(
                        decode_job(
                            data,
                            job_id=job_id,
                            payload=payload,
                            attempts=attempts,
                            enqueued_at=enqueued_at,
                            receipt=str(claims + 1),
                        )
                    )
                if not skipped:
                    break
        return claimed

    @staticmethod
    def _heads(conn: sqlite3.Connection, destination: str, now: float, limit: int) -> list[Any]:
        # Fresh jobs are claimable at once (whatever the clocks of other machines say);
        # retrying ones once due. Both lists come live lane first, then in queue-time order,
        # and are merged in that order: a backlog of backfilled jobs never delays a live one.
        fresh = conn.execute(
            f"SELECT {_JOB_COLUMNS}, seq, ref, key, lane, due FROM jobs WHERE destination = ? AND head = 1"
            " AND state = 'pending' ORDER BY lane, due LIMIT ?",
            (destination, limit),
        ).fetchall()
        retrying = conn.execute(
            f"SELECT {_JOB_COLUMNS}, seq, ref, key, lane, due FROM jobs WHERE destination = ? AND head = 1"
            " AND state = 'retrying' AND due <= ? ORDER BY lane, due LIMIT ?",
            (destination, now, limit),
        ).fetchall()
        merged = sorted(fresh + retrying, key=lambda row: (row[-2], row[-1]))[:limit]
        return [row[:-2] for row in merged]

    @staticmethod
    def _superseded(conn: sqlite3.Connection, destination: str, ref: str, seq: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM jobs WHERE destination = ? AND ref = ? AND seq > ? AND state != 'dead' LIMIT 1",
            (destination, ref, seq),
        ).fetchone()
        return row is not None

    def _finish(
        self,
        conn: sqlite3.Connection,
        destination: str,
        job_id: str,
        key: str,
        now: float,
        *,
        dead: Bury | None,
        attempts: int = 0,
    ) -> None:
        """Take a head job off its key (delivered: deleted; dead: kept) and promote the next one."""
        if dead is None:
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            bucket = int(now // STATS_BUCKET)
            conn.execute(
                "INSERT INTO delivered (destination, bucket, n) VALUES (?, ?, 1)"
                " ON CONFLICT (destination, bucket) DO UPDATE SET n = n + 1",
                (destination, bucket),
            )
        else:
            conn.execute(
                "UPDATE jobs SET state = 'dead', head = 0, lease_until = NULL, attempts = ?, reason = ?,"
                " detail = ?, died_at = ?, dead_group = ? WHERE id = ?",
                (
                    attempts,
                    dead.reason,
                    encode_detail(dead.detail, dead.request, dead.response),
                    now,
                    dead.group,
                    job_id,
                ),
            )
        self._promote_next(conn, destination, key)

    def _insert_dead(self, conn: sqlite3.Connection, dead: Bury, key: str, attempts: int, now: float) -> None:
        """Keep one refused part of a split job as a dead job (off its key until replayed)."""
        part = dead.job
        conn.execute(
            "INSERT OR IGNORE INTO jobs (id, destination, seq, pos, key, ref, state, head, due, attempts,"
            " enqueued_at, job, payload, reason, detail, died_at, dead_group, lane)"
            " VALUES (?, ?, ?, ?, ?, ?, 'dead', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                part.id,
                part.destination,
                part.seq,
                self._take_positions(conn, 1),
                key,
                part.ref,
                now,
                attempts,
                part.enqueued_at,
                encode_job(part),
                part.payload,
                dead.reason,
                encode_detail(dead.detail, dead.request, dead.response),
                now,
                dead.group,
                int(part.backfill),
            ),
        )

    @staticmethod
    def _promote_next(conn: sqlite3.Connection, destination: str, key: str) -> None:
        row = conn.execute(
            "SELECT id, head FROM jobs WHERE destination = ? AND key = ? AND state != 'dead'"
            " ORDER BY pos LIMIT 1",
            (destination, key),
        ).fetchone()
        if row is not None and not row[1]:
            conn.execute("UPDATE jobs SET head = 1 WHERE id = ?", (row[0],))

    async def extend(self, jobs: Sequence[Job]) -> set[str]:
        """Renew the leases of ``jobs`` still held by the same claim; the ids renewed."""
        if not jobs:
            return set()
        return await self._run(self._extend, list(jobs))

    def _extend(self, conn: sqlite3.Connection, jobs: list[Job]) -> set[str]:
        until = self.clock.now() + self.lease
        renewed: set[str] = set()
        with self._tx(conn):
            for job in jobs:
                if conn.execute(
                    "UPDATE jobs SET lease_until = ? WHERE id = ? AND claims = ? AND state = 'in_flight'",
                    (until, job.id, int(job.receipt or 0)),
                ).rowcount:
                    renewed.add(job.id)
        return renewed

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Apply acks, retries, burials and releases in one transaction."""
        if settlements:
            await self._run(self._settle, list(settlements))

    def _settle(self, conn: sqlite3.Connection, settlements: list[Settlement]) -> None:
        now = self.clock.now()
        with self._tx(conn):
            for item in settlements:
                job = item.job
                row = conn.execute("SELECT claims, state, key FROM jobs WHERE id = ?", (job.id,)).fetchone()
                if row is None or row[1] != JobState.IN_FLIGHT.value or str(row[0]) != job.receipt:
                    continue  # a stale claim: another worker holds (or finished) this job
                key = row[2]
                if isinstance(item, Ack):
                    self._finish(conn, job.destination, job.id, key, now, dead=None)
                elif isinstance(item, Nack):
                    conn.execute(
                        "UPDATE jobs SET state = 'retrying', due = ?, attempts = ?, last_error = ?,"
                        " lease_until = NULL WHERE id = ?",
                        (item.due_at, job.attempts + 1, item.reason, job.id),
                    )
                elif isinstance(item, Bury):
                    self._finish(
                        conn, job.destination, job.id, key, now, dead=item, attempts=job.attempts + 1
                    )
                elif isinstance(item, Release):
                    conn.execute(
                        "UPDATE jobs SET state = 'pending', due = ?, lease_until = NULL WHERE id = ?",
                        (now, job.id),
                    )
                elif isinstance(item, Split):
                    self._finish(conn, job.destination, job.id, key, now, dead=None)
                    for part in item.parts:
                        self._insert_dead(conn, part, key, job.attempts + 1, now)
            conn.execute("DELETE FROM delivered WHERE bucket < ?", (int((now - 3600) // STATS_BUCKET),))

    # -- operations -------------------------------------------------------------------------

    async def stats(self, destination: str) -> QueueStats:
        """Counts and state for ``destination``."""
        return await self._run(self._stats, destination)

    def _stats(self, conn: sqlite3.Connection, destination: str) -> QueueStats:
        now = self.clock.now()
        counts: dict[str, int] = {}
        oldest: float | None = None
        for state, count, first in conn.execute(
            "SELECT state, COUNT(*), MIN(enqueued_at) FROM jobs WHERE destination = ? GROUP BY state",
            (destination,),
        ):
            counts[state] = count
            if state != JobState.DEAD.value and (oldest is None or first < oldest):
                oldest = first
        delivered = conn.execute(
            "SELECT COALESCE(SUM(n), 0) FROM delivered WHERE destination = ? AND bucket > ?",
            (destination, int((now - 60) // STATS_BUCKET)),
        ).fetchone()[0]
        row = conn.execute(
            "SELECT paused, circuit, circuit_until FROM destinations WHERE name = ?", (destination,)
        ).fetchone()
        paused, circuit, circuit_until = row if row is not None else (0, "closed", None)
        return QueueStats(
            destination=destination,
            depth=sum(n for state, n in counts.items() if state != JobState.DEAD.value),
            in_flight=counts.get(JobState.IN_FLIGHT.value, 0),
            retrying=counts.get(JobState.RETRYING.value, 0),
            dead=counts.get(JobState.DEAD.value, 0),
            oldest_pending_age=None if oldest is None else max(now - oldest, 0.0),
            delivered_per_min=float(delivered),
            paused=bool(paused),
            circuit=circuit,
            circuit_until=circuit_until,
            cursor=self._cursor(conn, destination) or 0,
        )

    async def destinations(self) -> list[str]:
        """Destinations this queue has seen."""
        return await self._run(self._destinations)

    @staticmethod
    def _destinations(conn: sqlite3.Connection) -> list[str]:
        return [row[0] for row in conn.execute("SELECT name FROM destinations ORDER BY name")]

    async def set_paused(self, destination: str, paused: bool) -> None:
        """Pause or resume ``destination``."""
        await self._run(self._set_destination, destination, "paused", int(paused))

    async def set_circuit(self, destination: str, state: str, until: float | None) -> None:
        """Publish a circuit transition."""
        await self._run(self._set_destination, destination, "circuit", state, until)

    def _set_destination(self, conn: sqlite3.Connection, destination: str, what: str, *values: Any) -> None:
        with self._tx(conn):
            conn.execute("INSERT OR IGNORE INTO destinations (name) VALUES (?)", (destination,))
            if what == "paused":
                conn.execute("UPDATE destinations SET paused = ? WHERE name = ?", (values[0], destination))
            else:
                conn.execute(
                    "UPDATE destinations SET circuit = ?, circuit_until = ? WHERE name = ?",
                    (values[0], values[1], destination),
                )

    # -- worker heartbeats -------------------------------------------------------------------

    async def heartbeat(self, beat: WorkerBeat) -> None:
        """Record that a worker is alive."""
        await self._run(self._heartbeat, beat)

    def _heartbeat(self, conn: sqlite3.Connection, beat: WorkerBeat) -> None:
        with self._tx(conn):
            conn.execute(
                "INSERT OR REPLACE INTO workers (name, destinations, started_at, last_seen, in_flight)"
                " VALUES (?, ?, ?, ?, ?)",
                (beat.name, "\n".join(beat.destinations), beat.started_at, beat.last_seen, beat.in_flight),
            )
            conn.execute("DELETE FROM workers WHERE last_seen < ?", (beat.last_seen - WORKER_MEMORY,))

    async def forget_worker(self, name: str) -> None:
        """Drop a worker's heartbeat."""
        await self._run(self._forget_worker, name)

    def _forget_worker(self, conn: sqlite3.Connection, name: str) -> None:
        with self._tx(conn):
            conn.execute("DELETE FROM workers WHERE name = ?", (name,))

    async def workers(self) -> list[WorkerBeat]:
        """Workers heard from within a day, by name."""
        return await self._run(self._workers)

    def _workers(self, conn: sqlite3.Connection) -> list[WorkerBeat]:
        rows = conn.execute(
            "SELECT name, destinations, started_at, last_seen, in_flight FROM workers"
            " WHERE last_seen >= ? ORDER BY name",
            (self.clock.now() - WORKER_MEMORY,),
        )
        return [
            WorkerBeat(name, tuple(d for d in dests.split("\n") if d), started, seen, in_flight)
            for name, dests, started, seen, in_flight in rows
        ]

    async def dead_letters(self, where: DeadLetterFilter, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters matching ``where``, newest first."""
        return await self._run(self._dead_letters, where, limit)

    def _dead_letters(
        self, conn: sqlite3.Connection, where: DeadLetterFilter, limit: int, job_id: str | None = None
    ) -> list[DeadLetter]:
        clause, params = _dead_where(where)
        if job_id is not None:
            clause, params = clause + " AND id = ?", (*params, job_id)
        rows: list[DeadLetter] = []
        seen: set[tuple[str, str]] = set()
        count = 0
        offset = 0
        # Newest first, page by page, until ``limit`` letters: a group counts once.
        while count < limit:
            page = self._dead_rows(conn, clause, params, 500, offset)
            if not page:
                break
            offset += len(page)
            for row in page:
                key = (row.job.destination, row.group) if row.group is not None else None
                if key is not None and key in seen:
                    continue
                if count >= limit:
                    break
                count += 1
                if key is not None:
                    seen.add(key)
                rows.append(row)
        members = {
            (row.job.destination, group): self._dead_rows(
                conn,
                "state = 'dead' AND destination = ? AND dead_group = ?",
                (row.job.destination, group),
                -1,
                0,
                oldest_first=True,
            )
            for row in rows
            if (group := row.group) is not None
        }
        return grouped(rows, members)[:limit]

    @staticmethod
    def _dead_rows(
        conn: sqlite3.Connection,
        clause: str,
        params: tuple[Any, ...],
        limit: int,
        offset: int,
        *,
        oldest_first: bool = False,
    ) -> list[DeadLetter]:
        order = "died_at, pos" if oldest_first else "died_at DESC, pos DESC"
        rows = conn.execute(
            f"SELECT {_JOB_COLUMNS}, reason, died_at, detail, dead_group FROM jobs WHERE {clause}"
            f" ORDER BY {order} LIMIT ? OFFSET ?",
            (*params, limit, offset),
        ).fetchall()
        letters = []
        for found_id, data, payload, attempts, enqueued_at, _claims, reason, died_at, detail, group in rows:
            text, request, response = decode_detail(detail)
            job = decode_job(
                data, job_id=found_id, payload=payload, attempts=attempts, enqueued_at=enqueued_at, receipt=""
            )
            letters.append(DeadLetter(job, reason, died_at, attempts, text, request, response, group))
        return letters

    async def dead_letter(self, job_id: str) -> DeadLetter | None:
        """The dead letter holding dead job ``job_id``."""
        found = await self._run(self._dead_letters, DeadLetterFilter(), 1, job_id)
        return found[0] if found else None

    async def dead_letter_ids(self, where: DeadLetterFilter) -> list[str]:
        """Ids of the dead letters matching ``where`` (a group's first job), oldest first."""
        return await self._run(self._dead_letter_ids, where)

    @staticmethod
    def _dead_letter_ids(conn: sqlite3.Connection, where: DeadLetterFilter) -> list[str]:
        clause, params = _dead_where(where)
        ids: list[str] = []
        seen: set[tuple[str, str]] = set()
        for job_id, destination, group in conn.execute(
            f"SELECT id, destination, dead_group FROM jobs WHERE {clause} ORDER BY died_at, pos", params
        ):
            if group is None:
                ids.append(job_id)
            elif (destination, group) not in seen:
                seen.add((destination, group))
                ids.append(job_id)
        return ids

    @staticmethod
    def _with_groups(conn: sqlite3.Connection, ids: list[str]) -> list[str]:
        """``ids`` with every dead job of their groups, each once, in death order within a group."""
        result: dict[str, None] = {}
        for job_id in ids:
            row = conn.execute(
                "SELECT destination, dead_group FROM jobs WHERE id = ? AND state = 'dead'", (job_id,)
            ).fetchone()
            if row is None:
                continue
            if row[1] is None:
                result[job_id] = None
                continue
            for (member,) in conn.execute(
                "SELECT id FROM jobs WHERE destination = ? AND dead_group = ? AND state = 'dead'"
                " ORDER BY died_at, pos",
                row,
            ):
                result[member] = None
        return list(result)

    async def replay(self, ids: Sequence[str]) -> int:
        """Queue dead jobs again behind their key's live jobs, with a fresh attempt budget."""
        return await self._run(self._replay, list(ids))

    def _replay(self, conn: sqlite3.Connection, ids: list[str]) -> int:
        now = self.clock.now()
        count = 0
        with self._tx(conn):
            for job_id in self._with_groups(conn, ids):
                row = conn.execute(
                    "SELECT destination, key FROM jobs WHERE id = ? AND state = 'dead'", (job_id,)
                ).fetchone()
                if row is None:
                    continue
                destination, key = row
                head = 0 if self._key_has_live(conn, destination, key) else 1
                conn.execute(
                    "UPDATE jobs SET state = 'pending', head = ?, pos = ?, due = ?, enqueued_at = ?,"
                    " attempts = 0, reason = NULL, detail = NULL, died_at = NULL, last_error = NULL,"
                    " dead_group = NULL"
                    " WHERE id = ?",
                    (head, self._take_positions(conn, 1), now, now, job_id),
                )
                count += 1
        return count

    async def purge(self, ids: Sequence[str]) -> int:
        """Delete dead jobs and their payloads."""
        return await self._run(self._purge, list(ids))

    def _purge(self, conn: sqlite3.Connection, ids: list[str]) -> int:
        with self._tx(conn):
            return sum(
                conn.execute("DELETE FROM jobs WHERE id = ? AND state = 'dead'", (job_id,)).rowcount
                for job_id in self._with_groups(conn, ids)
            )

    # -- accepted digests -------------------------------------------------------------------

    async def accepted_digests(self, destination: str, names: Sequence[str]) -> dict[str, str]:
        """The digest recorded for each of ``names`` that has one."""
        if not names:
            return {}
        return await self._run(self._accepted_digests, destination, list(dict.fromkeys(names)))

    @staticmethod
    def _accepted_digests(conn: sqlite3.Connection, destination: str, names: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                conn.execute(
                    f"SELECT name, digest FROM digests WHERE destination = ? AND name IN ({marks})",
                    (destination, *chunk),
                ).fetchall()
            )
        return found

    async def record_digests(self, destination: str, digests: Mapping[str, str | None]) -> None:
        """Record digests of accepted objects; None forgets one."""
        if digests:
            await self._run(self._record_digests, destination, dict(digests))

    def _record_digests(self, conn: sqlite3.Connection, destination: str, digests: dict[str, str | None]) -> None:
        with self._tx(conn):
            for name, digest in digests.items():
                if digest is None:
                    conn.execute("DELETE FROM digests WHERE destination = ? AND name = ?", (destination, name))
                else:
                    conn.execute(
                        "INSERT INTO digests (destination, name, digest) VALUES (?, ?, ?)"
                        " ON CONFLICT (destination, name) DO UPDATE SET digest = excluded.digest",
                        (destination, name, digest),
                    )


def _dead_where(where: DeadLetterFilter) -> tuple[str, tuple[Any, ...]]:
    clauses = ["state = 'dead'"]
    params: list[Any] = []
    if where.destination is not None:
        clauses.append("destination = ?")
        params.append(where.destination)
    if where.reason is not None:
        if where.reason.endswith("*"):
            clauses.append("substr(reason, 1, ?) = ?")
            params += [len(where.reason) - 1, where.reason[:-1]]
        else:
            clauses.append("reason = ?")
            params.append(where.reason)
    if where.since is not None:
        clauses.append("died_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("died_at < ?")
        params.append(where.until)
    return " AND ".join(clauses), tuple(params)
