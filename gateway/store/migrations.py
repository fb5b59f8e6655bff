"""Versioned schema migrations for the SQL stores, applied on start-up.

Each migration is a list of DDL statements written once with placeholders for the few
type names that differ between SQLite and PostgreSQL. A database records the versions
it has in ``schema_migrations``; opening an older database applies the missing ones in
order, inside one transaction each.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES = {
    "sqlite": {"ID": "INTEGER PRIMARY KEY AUTOINCREMENT", "BLOB": "BLOB", "FLOAT": "REAL", "TEXTC": "TEXT"},
    "postgresql": {
        "ID": "BIGSERIAL PRIMARY KEY",
        "BLOB": "BYTEA",
        "FLOAT": "DOUBLE PRECISION",
        # Byte-order collation so string prefix ranges use the index like in SQLite.
        "TEXTC": 'TEXT COLLATE "C"',
    },
}


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema version."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "resources, history, change feed, search indexes, API clients",
        (
            """CREATE TABLE resources (
                rid {ID}, rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
                lu {FLOAT} NOT NULL, deleted INTEGER NOT NULL DEFAULT 0, chash TEXT,
                content {BLOB} NOT NULL, UNIQUE (rtype, id))""",
            "CREATE INDEX resources_type_lu ON resources (rtype, lu)",
            # Index rows carry the resource row id last, so filters and counts are index-only.
            """CREATE TABLE history (
                rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, lu {FLOAT} NOT NULL,
                deleted INTEGER NOT NULL, content {BLOB} NOT NULL, PRIMARY KEY (rtype, id, version))""",
            "CREATE INDEX history_lu ON history (lu)",
            "CREATE INDEX history_type_lu ON history (rtype, lu)",
            """CREATE TABLE changes (
                seq {ID}, rtype TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
                op TEXT NOT NULL, at {FLOAT} NOT NULL)""",
            """CREATE TABLE idx_token (rid BIGINT NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
                system TEXT, code TEXT NOT NULL)""",
            "CREATE INDEX idx_token_q ON idx_token (rtype, param, code, system, rid)",
            "CREATE INDEX idx_token_rid ON idx_token (rid, param, code)",
            """CREATE TABLE idx_string (rid BIGINT NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
                norm {TEXTC} NOT NULL, exact TEXT NOT NULL)""",
            "CREATE INDEX idx_string_q ON idx_string (rtype, param, norm, rid)",
            "CREATE INDEX idx_string_rid ON idx_string (rid, param, norm)",
            """CREATE TABLE idx_date (rid BIGINT NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
                lo {FLOAT} NOT NULL, hi {FLOAT} NOT NULL)""",
            "CREATE INDEX idx_date_q ON idx_date (rtype, param, lo, hi, rid)",
            "CREATE INDEX idx_date_rid ON idx_date (rid, param, lo, hi)",
            "CREATE INDEX idx_date_hi ON idx_date (rtype, param, hi, rid)",
            """CREATE TABLE idx_ref (rid BIGINT NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
                ttype TEXT, tid TEXT, url TEXT NOT NULL)""",
            "CREATE INDEX idx_ref_q ON idx_ref (rtype, param, tid, ttype, rid)",
            "CREATE INDEX idx_ref_target ON idx_ref (ttype, tid)",
            "CREATE INDEX idx_ref_rid ON idx_ref (rid, param)",
            """CREATE TABLE idx_number (rid BIGINT NOT NULL, rtype TEXT NOT NULL, param TEXT NOT NULL,
                value {FLOAT} NOT NULL, system TEXT, code TEXT)""",
            "CREATE INDEX idx_number_q ON idx_number (rtype, param, value, rid)",
            "CREATE INDEX idx_number_rid ON idx_number (rid, param, value)",
            """CREATE TABLE api_clients (name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
                scopes TEXT NOT NULL, created {FLOAT} NOT NULL, disabled INTEGER NOT NULL DEFAULT 0)""",
        ),
    ),
    Migration(
        2,
        "quarantine of records that could not be mapped or stored",
        (
            """CREATE TABLE quarantine (
                qid {ID}, source TEXT NOT NULL, received {FLOAT} NOT NULL, content_type TEXT NOT NULL,
                body {BLOB} NOT NULL, record_key TEXT, outcome TEXT NOT NULL,
                status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1, updated {FLOAT} NOT NULL)""",
            "CREATE INDEX quarantine_source ON quarantine (source, status, qid)",
            "CREATE INDEX quarantine_status ON quarantine (status, qid)",
        ),
    ),
    Migration(
        3,
        "history keeps superseded versions only; the current version is read from resources",
        (
            "CREATE INDEX resources_lu ON resources (lu)",
            """DELETE FROM history WHERE EXISTS (SELECT 1 FROM resources r
                WHERE r.rtype = history.rtype AND r.id = history.id AND r.version = history.version)""",
        ),
    ),
    Migration(
        4,
        "API client lifecycle: expiry, revocation and last use (epoch seconds, NULL for none)",
        (
            # One column per statement: SQLite adds only one per ALTER TABLE.
            "ALTER TABLE api_clients ADD COLUMN expires {FLOAT}",
            "ALTER TABLE api_clients ADD COLUMN revoked {FLOAT}",
            "ALTER TABLE api_clients ADD COLUMN last_used {FLOAT}",
        ),
    ),
    Migration(
        5,
        "API client data policy and public keys (JSON text, NULL for none)",
        (
            "ALTER TABLE api_clients ADD COLUMN policy TEXT",
            "ALTER TABLE api_clients ADD COLUMN jwks TEXT",
        ),
    ),
    Migration(
        6,
        "SMART Backend Services: issued access tokens (by hash) and the assertion ids seen (replay protection)",
        (
            """CREATE TABLE access_tokens (token_hash TEXT PRIMARY KEY, client TEXT NOT NULL,
                scopes TEXT NOT NULL, expires {FLOAT} NOT NULL)""",
            "CREATE INDEX access_tokens_expires ON access_tokens (expires)",
            "CREATE INDEX access_tokens_client ON access_tokens (client)",
            # The key makes remembering an id atomic in every process: a second insert conflicts.
            """CREATE TABLE assertion_ids (client TEXT NOT NULL, jti TEXT NOT NULL, expires {FLOAT} NOT NULL,
                PRIMARY KEY (client, jti))""",
            "CREATE INDEX assertion_ids_expires ON assertion_ids (expires)",
        ),
    ),
    Migration(
        7,
        "retractions: which resources each source record produced, by which rule, and how to take each back",
        (
            """CREATE TABLE record_outputs (source TEXT NOT NULL, record_key TEXT NOT NULL, rtype TEXT NOT NULL,
                id TEXT NOT NULL, rule TEXT NOT NULL, on_retract TEXT NOT NULL,
                PRIMARY KEY (source, record_key, rtype, id))""",
            # A shared resource (a household, a CHW) is taken back only when no record produces it.
            "CREATE INDEX record_outputs_target ON record_outputs (rtype, id)",
        ),
    ),
    Migration(
        8,
        "scheduled runs claimed cluster-wide (each (task, slot) by one process only); the date index in"
        " ascending start order, which searches sorted oldest first walk",
        (
            """CREATE TABLE scheduled_runs (task TEXT NOT NULL, slot BIGINT NOT NULL, holder TEXT NOT NULL,
                claimed {FLOAT} NOT NULL, PRIMARY KEY (task, slot))""",
            "CREATE INDEX idx_date_lo ON idx_date (rtype, param, lo, rid)",
        ),
    ),
    Migration(
        9,
        "message log: every received record and every delivery attempt, for the operator console",
        (
            """CREATE TABLE message_log (
                mid {ID}, at {FLOAT} NOT NULL, kind TEXT NOT NULL, channel TEXT NOT NULL,
                status TEXT NOT NULL, patient TEXT, subject TEXT, ref TEXT, detail TEXT)""",
            "CREATE INDEX message_log_at ON message_log (at)",
            "CREATE INDEX message_log_channel ON message_log (channel, at)",
            "CREATE INDEX message_log_patient ON message_log (patient, at)",
        ),
    ),
    Migration(
        10,
        "bulk data export jobs (their state survives a restart) and paging one type by row id",
        (
            """CREATE TABLE bulk_exports (
                job_id TEXT PRIMARY KEY, client TEXT NOT NULL, status TEXT NOT NULL, request TEXT NOT NULL,
                params TEXT NOT NULL, created {FLOAT} NOT NULL, updated {FLOAT} NOT NULL,
                transaction_time {FLOAT} NOT NULL, progress TEXT NOT NULL, output TEXT NOT NULL,
                error TEXT NOT NULL, expires {FLOAT})""",
            "CREATE INDEX bulk_exports_status ON bulk_exports (status, updated)",
            # An export walks each type in row-id order, a page at a time.
            "CREATE INDEX resources_type_rid ON resources (rtype, rid)",
        ),
    ),
    Migration(
        12,
        "pull cursors: how far each pulled source has been read (advanced after its records are stored)",
        (
            """CREATE TABLE pull_cursors (source TEXT PRIMARY KEY, cursor TEXT NOT NULL,
                updated {FLOAT} NOT NULL)""",
        ),
    ),
    Migration(
        14,
        "topic-based subscriptions (R5 backport on R4): each subscription, its owner, status and event"
        " numbers (one per matched change, kept so a re-read change gets the number it had)",
        (
            """CREATE TABLE subscriptions (
                sid TEXT PRIMARY KEY, owner TEXT NOT NULL, scopes TEXT NOT NULL, content TEXT NOT NULL,
                status TEXT NOT NULL, start_seq BIGINT NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
                error TEXT, heartbeat_at {FLOAT}, created {FLOAT} NOT NULL, updated {FLOAT} NOT NULL)""",
            "CREATE INDEX subscriptions_owner ON subscriptions (owner)",
            """CREATE TABLE subscription_events (
                sid TEXT NOT NULL, seq BIGINT NOT NULL, event_number BIGINT NOT NULL, at {FLOAT} NOT NULL,
                PRIMARY KEY (sid, seq), UNIQUE (sid, event_number))""",
        ),
    ),
    Migration(
        15,
        "destination ids: the id a destination assigned to each resource delivered there (OpenMRS assigns its"
        " own); a row without one marks a create that was sent and not yet confirmed",
        (
            """CREATE TABLE destination_ids (destination TEXT NOT NULL, rtype TEXT NOT NULL, id TEXT NOT NULL,
                remote_id TEXT, updated {FLOAT} NOT NULL, PRIMARY KEY (destination, rtype, id))""",
        ),
    ),
    Migration(
        18,
        "change-feed lanes: changes written by a backfill are marked, so their deliveries wait behind live ones",
        ("ALTER TABLE changes ADD COLUMN lane INTEGER NOT NULL DEFAULT 0",),
    ),
    Migration(
        19,
        "date spreads: per type and date parameter the widest spread of one resource's values (see"
        " gateway.search.date_window), so a date sort walks only the rows a date range allows",
        (
            """CREATE TABLE date_spreads (rtype TEXT NOT NULL, param TEXT NOT NULL, spread {FLOAT} NOT NULL,
                PRIMARY KEY (rtype, param))""",
            # 1e12 is gateway.search.dates.FAR_FUTURE: an open end, left out of the spread.
            """INSERT INTO date_spreads (rtype, param, spread)
                SELECT rtype, param, MAX(CASE WHEN k - m > inverted THEN k - m ELSE inverted END)
                FROM (SELECT rtype, param, MAX(hi) AS k, MIN(lo) AS m, MAX(lo - hi) AS inverted
                      FROM idx_date GROUP BY rid, rtype, param) spread
                WHERE k < 1e12 GROUP BY rtype, param""",
        ),
    ),
    Migration(
        20,
        "record versions: per source record (by its mapping set's system, which every source of the set"
        " shares) the latest version stored (the mapping's ``modified``), so a version that arrives after"
        " a later one is not stored over it",
        (
            """CREATE TABLE record_versions (system TEXT NOT NULL, record_key TEXT NOT NULL,
                version {FLOAT} NOT NULL, PRIMARY KEY (system, record_key))""",
        ),
    ),
    Migration(
        21,
        "quarantine entries found by record: the same record sent again while held updates its entry",
        ("CREATE INDEX quarantine_record ON quarantine (source, record_key)",),
    ),
    Migration(
        22,
        "the HTTP method that made each version (POST, PUT, PATCH, DELETE), which history Bundles show in"
        " entry.request; NULL for versions written before (shown as before: POST for a first version)",
        (
            "ALTER TABLE resources ADD COLUMN method TEXT",
            "ALTER TABLE history ADD COLUMN method TEXT",
        ),
    ),
    Migration(
        23,
        "quarantine entries of records without a key found by their bytes (SHA-256): a sender retrying a"
        " refused record that has no id keeps one entry; NULL for entries kept before",
        (
            "ALTER TABLE quarantine ADD COLUMN body_hash TEXT",
            "CREATE INDEX quarantine_unkeyed ON quarantine (source, body_hash)"
            " WHERE record_key IS NULL AND status = 'held'",
        ),
    ),
)


def statements_for(dialect: str, migration: Migration) -> list[str]:
    """A migration's DDL for one dialect."""
    types = TYPES[dialect]
    return [stmt.format(**types) for stmt in migration.statements]


LATEST = MIGRATIONS[-1].version
