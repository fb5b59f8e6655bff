"""Bulk data export jobs and row-id paging (``BulkExports``), shared by both SQL backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any

from gateway import jsonio
from gateway.search import RowFilter, SearchQuery, from_epoch, where_clause
from gateway.store.base import ExportJob, ExportScope
from gateway.store.rows import Cursor

_JOB_COLUMNS = ("job_id, client, status, request, params, created, updated, transaction_time, progress, output,"
                " error, expires")
# Every reference to a Patient is in the reference index, so "refers to a Patient" is one index probe.
_REFERS = "r.rid IN (SELECT x.rid FROM idx_ref x WHERE x.ttype = 'Patient'{members})"
_MEMBERS = ("SELECT gm.tid FROM idx_ref gm JOIN resources gr ON gr.rid = gm.rid WHERE gr.rtype = 'Group'"
            " AND gr.id = ? AND gr.deleted = 0 AND gm.param = 'member' AND gm.ttype = 'Patient'")


class ExportJobs:
    """``BulkExports`` over the ``bulk_exports`` table and the resources table (a mixin of ``SqlStore``,
    which provides the four methods below)."""

    def _read_cursor(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def _write_cursor(self) -> AbstractContextManager[Cursor]:
        raise NotImplementedError

    def q(self, sql: str) -> str:
        """Adapt placeholders (``SqlStore.q``)."""
        raise NotImplementedError

    def resolve_policy(self, cur: Cursor, policy: RowFilter | None) -> RowFilter | None:
        """The policy with its subtree looked up (``SqlStore.resolve_policy``)."""
        raise NotImplementedError

    def export_save(self, job: ExportJob) -> None:
        """Create or replace a job."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM bulk_exports WHERE job_id = ?"), (job.job_id,))
            marks = ", ".join("?" for _ in range(12))
            cur.execute(self.q(f"INSERT INTO bulk_exports ({_JOB_COLUMNS}) VALUES ({marks})"), _job_row(job))

    def export_update(self, job: ExportJob) -> bool:
        """Replace a job that still exists."""
        row = _job_row(job)
        with self._write_cursor() as cur:
            cur.execute(self.q("UPDATE bulk_exports SET status = ?, updated = ?, progress = ?, output = ?, error = ?,"
                               " expires = ? WHERE job_id = ?"),
                        (row[2], row[6], row[8], row[9], row[10], row[11], job.job_id))
            return cur.rowcount > 0

    def export_get(self, job_id: str) -> ExportJob | None:
        """One job, or None."""
        with self._read_cursor() as cur:
            cur.execute(self.q(f"SELECT {_JOB_COLUMNS} FROM bulk_exports WHERE job_id = ?"), (job_id,))
            row = cur.fetchone()
        return _job(row) if row else None

    def export_list(self, *, status: str | None = None) -> list[ExportJob]:
        """Jobs (of one status), oldest first."""
        where, params = (" WHERE status = ?", (status,)) if status else ("", ())
        with self._read_cursor() as cur:
            cur.execute(self.q(f"SELECT {_JOB_COLUMNS} FROM bulk_exports{where} ORDER BY created"), params)
            return [_job(row) for row in cur.fetchall()]

    def export_delete(self, job_id: str) -> bool:
        """Forget a job."""
        with self._write_cursor() as cur:
            cur.execute(self.q("DELETE FROM bulk_exports WHERE job_id = ?"), (job_id,))
            return cur.rowcount > 0

    def export_snapshot(self) -> int:
        """The newest resource row id."""
        with self._read_cursor() as cur:
            cur.execute("SELECT COALESCE(MAX(rid), 0) FROM resources")
            return int(cur.fetchone()[0])

    def export_page(
        self, query: SearchQuery, after: int, limit: int, scope: ExportScope | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` live matches of ``query`` after row id ``after``, in row-id order."""
        with self._read_cursor() as cur:
            if query.policy is not None and query.policy.subtree is None:
                query.policy = self.resolve_policy(cur, query.policy)
            where, params = where_clause(query)
            if scope is not None:
                members, own, member_params = "", "r.rtype = 'Patient'", []
                if scope.group is not None:
                    members, own = f" AND x.tid IN ({_MEMBERS})", f"(r.rtype = 'Patient' AND r.id IN ({_MEMBERS}))"
                    member_params = [scope.group, scope.group]
                if scope.patients:
                    marks = ", ".join("?" for _ in scope.patients)
                    members += f" AND x.tid IN ({marks})"
                    own = f"({own} AND r.id IN ({marks}))"
                    # The own-row test comes first in the SQL, then the reference test.
                    member_params = [*member_params[:1], *scope.patients, *member_params[1:], *scope.patients]
                where += f" AND ({own} OR {_REFERS.format(members=members)})"
                params.extend(member_params)
            # The row id and the stored JSON only: an export writes the bytes as they are.
            cur.execute(self.q(f"SELECT r.rid, r.content FROM resources r WHERE {where} AND r.rid > ?"
                               " ORDER BY r.rid LIMIT ?"), (*params, after, limit))
            rows: list[tuple[int, bytes]] = cur.fetchall()
        # The driver's rows as they come (no tuple a row rebuilt) when it gives bytes (SQLite, psycopg's
        # bytea); a driver giving memoryviews gets them copied.
        if rows and type(rows[0][1]) is not bytes:
            return [(rid, bytes(content)) for rid, content in rows]
        return rows


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _job_row(job: ExportJob) -> tuple[Any, ...]:
    return (job.job_id, job.client, job.status, job.request, jsonio.dumps(dict(job.params)).decode(),
            job.created.timestamp(), job.updated.timestamp(), job.transaction_time.timestamp(), job.progress,
            jsonio.dumps([dict(o) for o in job.output]).decode(), jsonio.dumps([dict(e) for e in job.error]).decode(),
            _epoch(job.expires))


def _job(row: Sequence[Any]) -> ExportJob:
    params: Mapping[str, Any] = jsonio.loads(row[4])
    job = ExportJob(job_id=row[0], client=row[1], status=row[2], request=row[3], params=params,
                    created=from_epoch(row[5]), updated=from_epoch(row[6]), transaction_time=from_epoch(row[7]),
                    progress=row[8], output=tuple(jsonio.loads(row[9])), error=tuple(jsonio.loads(row[10])))
    return job if row[11] is None else replace(job, expires=from_epoch(row[11]))
