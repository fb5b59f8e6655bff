"""Schema migrations: every backend (SQLite, PostgreSQL) migrates idempotently, older databases are upgraded."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest

from gateway.store import open_store
from gateway.store.migrations import LATEST, MIGRATIONS, statements_for
from gateway.store.postgres import split_schema
from gateway.store.sql import SchemaTooNew, SqlStore
from tests.store.helpers import patient


def test_migrate_is_idempotent(store: SqlStore) -> None:
    assert store.migrate() == LATEST
    assert store.schema_version() == LATEST


def test_an_older_sqlite_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied REAL NOT NULL)")
    for statement in statements_for("sqlite", MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 0)")
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SqlStore)  # schema_version is the SQL store's, not the Store protocol's
        assert store.schema_version() == LATEST
        store.quarantine_add("x", b"{}", "application/json", {"resourceType": "OperationOutcome", "issue": []})
    finally:
        store.close()


def test_an_older_database_keeps_each_version_once(tmp_path: Path) -> None:
    """Before schema 3 ``history`` also held the current version; the upgrade removes that copy."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied REAL NOT NULL)")
    for migration in MIGRATIONS[:2]:
        for statement in statements_for("sqlite", migration):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, 0)", (migration.version,))
    for version in (1, 2):
        content = orjson.dumps({"resourceType": "Patient", "id": "old", "meta": {"versionId": str(version)}})
        conn.execute("INSERT INTO history VALUES ('Patient', 'old', ?, ?, 0, ?)", (version, float(version), content))
    conn.execute("INSERT INTO resources (rtype, id, version, lu, deleted, chash, content) VALUES"
                 " ('Patient', 'old', 2, 2.0, 0, NULL, ?)", (content,))
    conn.commit()
    conn.close()
    store = open_store(f"sqlite:///{path}")
    try:
        versions, total = store.history("Patient", "old")
        assert total == 2 and [v.version for v in versions] == [2, 1]
        # Versions from before the method was stored (schema 22) show what history always showed.
        assert [(v.method, v.created) for v in versions] == [("PUT", False), ("POST", True)]
        with store.transaction() as tx:
            assert tx.update(patient(id="old")).resource.version == 3
        assert store.history("Patient", "old")[1] == 3
    finally:
        store.close()



def build_at_schema(store_url: str, version: int, *extra: str) -> None:
    """Create the store's database as migrations up to ``version`` left it, then run ``extra`` SQL."""
    dialect = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    statements = ["CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied REAL NOT NULL)"]
    for migration in (m for m in MIGRATIONS if m.version <= version):
        statements += statements_for(dialect, migration)
        statements.append(f"INSERT INTO schema_migrations VALUES ({migration.version}, 0)")
    statements += extra
    if dialect == "sqlite":
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        for statement in statements:
            conn.execute(statement)
        conn.commit()
        conn.close()
    else:
        conninfo, schema = split_schema(store_url)
        with psycopg.connect(conninfo, autocommit=True) as pg:
            pg.execute(f'CREATE SCHEMA "{schema}"')
            pg.execute(f'SET search_path TO "{schema}"')
            for statement in statements:
                pg.execute(statement)

def test_a_store_at_the_previous_version_keeps_its_clients(store_url: str) -> None:
    """Schema 4 adds expiry, revocation and last use to ``api_clients``; existing clients stay valid."""
    build_at_schema(store_url, 3, "INSERT INTO api_clients (name, token_hash, scopes, created, disabled)"
                    " VALUES ('emr', 'hash-1', 'system/Patient.rs admin', 1700000000, 0)")
    store = open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert store.schema_version() == LATEST
        found = store.client_by_token_hash("hash-1")
        assert found is not None and found.scopes == ("system/Patient.rs", "admin")
        assert (found.expires, found.revoked, found.last_used) == (None, None, None)
        assert found.active(datetime.now(UTC))
        assert store.revoke_client("emr")
    finally:
        store.close()


def test_a_store_at_schema_5_gains_access_tokens_and_keeps_its_clients(store_url: str) -> None:
    """Schema 6 adds the SMART tables; a client registered before keeps its keys and can be issued tokens."""
    build_at_schema(store_url, 5, "INSERT INTO api_clients (name, token_hash, scopes, created, disabled, jwks)"
                    """ VALUES ('emr', 'hash-1', 'system/Patient.rs', 1700000000, 0, '{"jwks_uri": "https://e/j"}')""")
    store = open_store(store_url)
    try:
        assert isinstance(store, SqlStore)
        assert store.schema_version() == LATEST
        client = store.client_by_name("emr")
        assert client is not None and client.jwks == {"jwks_uri": "https://e/j"}
        later = datetime.now(UTC) + timedelta(minutes=5)
        assert store.remember_jti("emr", "jti-1", later) and not store.remember_jti("emr", "jti-1", later)
        store.save_access_token("at-1", "emr", ("system/Patient.rs",), later)
        found = store.access_token_by_hash("at-1")
        assert found is not None and found.client.name == "emr"
    finally:
        store.close()


def test_a_missing_version_below_the_newest_is_applied(store: SqlStore) -> None:
    # A database that reached a later version before an earlier-numbered branch was merged
    # (bulk export's 10 after pull cursors' 12) still gets the earlier migration.
    with store._write_cursor() as cur:
        cur.execute("DROP TABLE bulk_exports")
        cur.execute("DROP INDEX resources_type_rid")
        cur.execute("DELETE FROM schema_migrations WHERE version = 10")
    assert store.migrate() == LATEST
    assert store.export_list() == []
    with store._read_cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM schema_migrations WHERE version = 10")
        assert cur.fetchone()[0] == 1


def test_a_store_written_by_a_newer_gateway_is_refused(store_url: str) -> None:
    # An older gateway started on an upgraded store (a rollback without restoring the backup) would
    # write without keeping up what the newer migrations added: it must stop, as for the queue file.
    store = open_store(store_url)
    assert isinstance(store, SqlStore)
    try:
        with store._write_cursor() as cur:
            cur.execute(store.q("INSERT INTO schema_migrations (version, applied) VALUES (?, ?)"), (LATEST + 1, 0.0))
    finally:
        store.close()
    with pytest.raises(SchemaTooNew, match=rf"schema version {LATEST + 1}, newer than the {LATEST}"):
        open_store(store_url).close()
