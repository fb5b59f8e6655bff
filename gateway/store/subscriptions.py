"""Topic-based subscriptions and their event numbers (``SubscriptionStore``), shared by both SQL backends."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from gateway import jsonio
from gateway.search import from_epoch
from gateway.store.base import SubscriptionRecord
from gateway.store.rows import Cursor

_COLUMNS = ("s.sid, s.owner, s.scopes, s.content, s.status, s.start_seq, s.failures, s.error, s.heartbeat_at,"
            " s.created, s.updated,"
            " (SELECT COALESCE(MAX(e.event_number), 0) FROM subscription_events e WHERE e.sid = s.sid)")


class SubscriptionRows:
    """``SubscriptionStore`` over the ``subscriptions`` and ``subscription_events`` tables (a mixin of
    ``SqlStore``, which provides the three methods below)."""

    def _read_cursor(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _write_cursor(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def q(self, sql: str) -> str:
        """Adapt placeholders (``SqlStore.q``)."""
        raise NotImplementedError

    def subscription_save(self, record: SubscriptionRecord) -> None:
        """Create or replace a subscription (its event numbers are kept)."""
        row = (record.owner, jsonio.dumps(list(record.scopes)).decode(), jsonio.dumps(dict(record.content)).decode(),
               record.status, record.start_seq, record.failures, record.error,
               None if record.heartbeat_at is None else record.heartbeat_at.timestamp(),
               record.created.timestamp(), record.updated.timestamp())
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE subscriptions SET owner = ?, scopes = ?, content = ?, status = ?, start_seq = ?,"
                               " failures = ?, error = ?, heartbeat_at = ?, created = ?, updated = ? WHERE sid = ?"),
                        (*row, record.sid))
            if cur.rowcount == 0:
                cur.execute(self.q("INSERT INTO subscriptions (owner, scopes, content, status, start_seq, failures,"
                                   " error, heartbeat_at, created, updated, sid)"
                                   " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            (*row, record.sid))

    def subscription_get(self, sid: str) -> SubscriptionRecord | None:
        """One subscription, with its event count, or None."""
        with self._read_cursor() as cur:
            cur.execute(self.q(f"SELECT {_COLUMNS} FROM subscriptions s WHERE s.sid = ?"), (sid,))
            row = cur.fetchone()
        return _record(row) if row else None

    def subscription_list(self, *, owner: str | None = None, live: bool = False) -> list[SubscriptionRecord]:
        """Subscriptions (of one owner; ``live``: not ``off``), oldest first."""
        where: list[str] = []
        params: list[Any] = []
        if owner is not None:
            where.append("s.owner = ?")
            params.append(owner)
        if live:
            where.append("s.status != 'off'")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._read_cursor() as cur:
            cur.execute(self.q(f"SELECT {_COLUMNS} FROM subscriptions s{clause} ORDER BY s.created, s.sid"), params)
            return [_record(row) for row in cur.fetchall()]

    def subscription_delete(self, sid: str) -> bool:
        """Forget a subscription and its event numbers."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM subscription_events WHERE sid = ?"), (sid,))
            cur.execute(self.q("DELETE FROM subscriptions WHERE sid = ?"), (sid,))
            return cur.rowcount > 0

    def subscription_set_status(
        self, sid: str, status: str, *, failures: int | None = None, error: str | None = None,
        when: datetime, only_from: Sequence[str] | None = None,
    ) -> bool:
        """Change a subscription's status (and failure count, error text), optionally only from some statuses."""
        sql = "UPDATE subscriptions SET status = ?, error = ?, updated = ?"
        params: list[Any] = [status, error, when.timestamp()]
        if failures is not None:
            sql += ", failures = ?"
            params.append(failures)
        sql += " WHERE sid = ?"
        params.append(sid)
        if only_from:
            sql += f" AND status IN ({', '.join('?' for _ in only_from)})"
            params.extend(only_from)
        with self._write_cursor() as cur:
            cur.execute(self.q(sql), params)
            return cur.rowcount > 0

    def subscription_note_failure(self, sid: str, error: str, threshold: int, when: datetime) -> str | None:
        """Count a failed send; ``error`` status at ``threshold`` consecutive failures (``off`` stays off)."""
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE subscriptions SET failures = failures + 1, error = ?, updated = ?,"
                               " status = CASE WHEN status != 'off' AND failures + 1 >= ? THEN 'error' ELSE status END"
                               " WHERE sid = ?"), (error, when.timestamp(), threshold, sid))
            cur.execute(self.q("SELECT status FROM subscriptions WHERE sid = ?"), (sid,))
            row = cur.fetchone()
        return None if row is None else str(row[0])

    def subscription_heartbeat(self, sid: str, when: datetime) -> None:
        """Record when a heartbeat was sent."""
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE subscriptions SET heartbeat_at = ? WHERE sid = ?"), (when.timestamp(), sid))

    def subscription_event_numbers(
        self, matches: Sequence[tuple[str, int]], when: datetime
    ) -> dict[tuple[str, int], int]:
        """The event number of each (subscription, seq): new pairs numbered in seq order, known ones kept."""
        numbers: dict[tuple[str, int], int] = {}
        if not matches:
            return numbers
        by_sub: dict[str, list[int]] = {}
        for sid, seq in matches:
            by_sub.setdefault(sid, []).append(seq)
        with self._write_cursor() as cur:
            for sid, seqs in by_sub.items():
                ordered = sorted(set(seqs))
                marks = ", ".join("?" for _ in ordered)
                cur.execute(self.q("SELECT seq, event_number FROM subscription_events"
                                   f" WHERE sid = ? AND seq IN ({marks})"), (sid, *ordered))
                known = {int(seq): int(number) for seq, number in cur.fetchall()}
                cur.execute(self.q("SELECT COALESCE(MAX(event_number), 0) FROM subscription_events WHERE sid = ?"),
                            (sid,))
                last = int(cur.fetchone()[0])
                for seq in ordered:
                    if seq not in known:
                        last += 1
                        # The (sid, event_number) key makes a concurrent outbox numbering the same
                        # subscription fail its whole transaction instead of giving a number twice.
                        cur.execute(self.q("INSERT INTO subscription_events (sid, seq, event_number, at)"
                                           " VALUES (?, ?, ?, ?)"), (sid, seq, last, when.timestamp()))
                        known[seq] = last
                    numbers[(sid, seq)] = known[seq]
        return numbers


def _record(row: Sequence[Any]) -> SubscriptionRecord:
    return SubscriptionRecord(
        sid=row[0], owner=row[1], scopes=tuple(jsonio.loads(row[2])), content=jsonio.loads(row[3]), status=row[4],
        start_seq=int(row[5]), failures=int(row[6]), error=row[7],
        heartbeat_at=None if row[8] is None else from_epoch(row[8]),
        created=from_epoch(row[9]), updated=from_epoch(row[10]), events=int(row[11]),
    )
