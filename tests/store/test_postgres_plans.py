"""PostgreSQL query plans that must not depend on table statistics.

A store filled by a first bulk load has not been analysed yet (autovacuum runs a minute or
more later); its hot queries must still use the right index.
"""

from __future__ import annotations

import psycopg

from gateway.search.query import QueryParser
from gateway.search.registry import default_registry
from gateway.store import open_store
from gateway.store.postgres import PostgresStore, rows_by_id_sql, rows_by_refs_sql, split_schema


def _plan(url: str, sql: str, params: tuple[object, ...]) -> str:
    conninfo, schema = split_schema(url)
    with psycopg.connect(conninfo) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        rows = conn.execute(f"EXPLAIN {sql}", params).fetchall()
    return "\n".join(row[0] for row in rows)


def test_rows_by_id_probes_the_type_and_id_index_on_a_table_never_analysed(pg_schema_url: str) -> None:
    store = open_store(pg_schema_url)
    try:
        conninfo, schema = split_schema(pg_schema_url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute(
                "INSERT INTO resources (rtype, id, version, lu, deleted, chash, content)"
                " SELECT 'Observation', 'obs-' || g, 1, g, 0, NULL, '{}'::bytea FROM generate_series(1, 30000) g"
            )
        ids = [f"obs-{n}" for n in range(1, 30000, 60)] + [f"missing-{n}" for n in range(200)]
        plan = _plan(pg_schema_url, rows_by_id_sql("r.rid", lock=True), (ids, "Observation"))
        assert "resources_rtype_id_key" in plan, plan
        assert "resources_type_lu" not in plan and "Seq Scan on resources" not in plan, plan
        # Several types at once (a transaction's prefetch): the same probe per (type, id) pair.
        types = ["Observation"] * len(ids) + ["Patient"] * 3
        plan = _plan(pg_schema_url, rows_by_refs_sql("r.rid", lock=True), (types, [*ids, "p1", "p2", "p3"]))
        assert "resources_rtype_id_key" in plan, plan
        assert "resources_type_lu" not in plan and "Seq Scan on resources" not in plan, plan
        with store.transaction() as tx:  # and the rows come back, locked, through the store
            tx.prefetch([("Observation", "obs-1"), ("Observation", "missing-1"), ("Patient", "obs-2")])
            assert tx.read("Observation", "obs-1") is not None
            assert tx.read("Observation", "missing-1") is None
            assert tx.read("Patient", "obs-2") is None  # the type counts, not the id alone
    finally:
        store.close()


def test_searches_inside_a_write_transaction_are_planned_per_value_as_reads_are(pg_schema_url: str) -> None:
    # A batch's or transaction's GET entries, conditional writes and conditional references search
    # on the writer connection. Prepared after five runs, a search there got a generic plan: a
    # batch GET with _revinclude took 0.7 s from its tenth run on instead of 35 ms, holding the
    # store's write lock meanwhile. Its writes stay prepared (re-planning them cost ~20% of the
    # CRUD mix's throughput).
    store = open_store(pg_schema_url)
    try:
        assert isinstance(store, PostgresStore)
        with store._read_cursor() as cur:
            cur.execute("SHOW plan_cache_mode")
            assert cur.fetchone()[0] == "force_custom_plan"
        parser = QueryParser(default_registry(), 50, 1000)
        for n in range(12):
            with store.transaction() as tx:
                tx.update({"resourceType": "Patient", "id": f"p{n}", "name": [{"family": "Achieng"}]})
                query = parser.parse("Patient", [("family", "Achieng"), ("_revinclude", "Observation:subject")])
                assert len(tx.search(query).resources) == n + 1
        with store.transaction() as tx:
            tx.cur.execute("SELECT statement FROM pg_prepared_statements")
            prepared = [row[0] for row in tx.cur.fetchall()]
        assert prepared, "the writer's own statements are prepared"
        searches = [sql for sql in prepared if sql.lstrip().upper().startswith("SELECT") and "idx_string" in sql]
        assert not searches, "a search was prepared on the writer"
    finally:
        store.close()
