"""The resource store seam: a versioned FHIR resource store with a change feed.

Consumers type against the narrowest protocol they use:

* ``ResourceStore``: resources, their versions, history and search, and write
  transactions (``StoreTransaction``);
* ``ChangeFeed``: the ordered feed of committed writes (the delivery outbox follows it);
* ``ClientRegistry``: API clients and their token hashes, the access tokens issued to them
  and the assertion ids they used (the authenticator and the SMART token endpoint);
* ``QuarantineStore``: received records that failed, kept for replay;
* ``AuditTrail``: AuditEvents, stored and indexed like any resource but outside the change feed;
* ``RunClaims``: which process runs a scheduled task's run, when several share the store;
* ``MessageLog``: one line per record received and per delivery attempt (the operator console's log);
* ``BulkExports``: bulk data export jobs and the row-id paging an export reads the store with;
* ``PullCursors``: how far each pulled source (ODK Central, CommCare, CHT, Kobo) has been read;
* ``Store``: all of them plus the lifecycle (``ping``, ``close``); ``open_store`` returns one.

Two implementations exist (``SQLiteStore`` and ``PostgresStore``), both built on
``SqlStore`` and both held to one contract suite, split along the same seams:
``tests/store/test_resources_contract.py``, ``test_change_feed_contract.py``,
``test_clients_contract.py``, ``test_quarantine_contract.py``, ``test_audit_contract.py``,
``test_message_log_contract.py`` and ``test_schema_contract.py``.

The store is synchronous on purpose: the request and ingest paths run one unit of work
per worker thread (``anyio.to_thread``), so transaction logic (FHIR transaction
Bundles, conditional operations, ingest of a mapped record) is written once, inside a
real database transaction, for both backends.

Every write in a transaction:

* stores a new version (``meta.versionId``/``meta.lastUpdated`` set by the store),
  keeping older versions for ``_history``/vread;
* replaces the resource's search index rows (extracted at write time);
* appends one ``Change`` to the change feed, in the same transaction, so a committed
  write and its change-feed entry can never be separated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from gateway.errors import StoreError
from gateway.search import DataPolicy, IndexRows, RowFilter, SearchQuery


class ChangeOp(StrEnum):
    """What a change-feed entry did to its resource."""

    CREATE = "create"  # first version of a resource id
    UPDATE = "update"  # a later version (including re-creating a deleted resource)
    DELETE = "delete"  # a tombstone version: reads now answer 410


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored: ``content`` is the exact JSON served on reads."""

    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    content: bytes  # FHIR JSON with meta set; b"" for a deletion tombstone
    # History reads only (None elsewhere): the HTTP method that made this version (POST, PUT, PATCH,
    # DELETE), and whether it made the resource anew (a first version, or the first after a deletion).
    method: str | None = None
    created: bool | None = None

    @property
    def etag(self) -> str:
        """The weak ETag FHIR uses for this version."""
        return f'W/"{self.version}"'


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the ordered change feed."""

    seq: int  # global, strictly increasing in commit order
    type: str
    id: str
    version: int
    op: ChangeOp
    at: datetime
    backfill: bool = False  # written by a backfill: its deliveries wait behind live ones


#: Change-feed lanes, as stored (``changes.lane``): live writes, and those of a backfill.
LANES = {"live": 0, "backfill": 1}


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write did."""

    resource: StoredResource
    created: bool  # True for a new resource id (HTTP 201), False for a new version
    unchanged: bool = False  # skip_unchanged found this content current: no version was written


@dataclass(frozen=True, slots=True)
class ApiClient:
    """A registered API client (the token itself is never stored, only its hash)."""

    name: str
    scopes: tuple[str, ...]
    created: datetime
    disabled: bool = False
    expires: datetime | None = None
    revoked: datetime | None = None
    last_used: datetime | None = None
    # The client's data policy (``gateway.auth.DataPolicy`` as JSON); None: no limit beyond scopes.
    policy: Mapping[str, Any] | None = None
    # Public keys for SMART Backend Services: ``{"keys": [...]}`` (a JWK Set) or ``{"jwks_uri": url}``.
    jwks: Mapping[str, Any] | None = None

    def active(self, now: datetime) -> bool:
        """Whether the client's token may authenticate at ``now`` (not disabled, revoked or expired)."""
        return not self.disabled and self.revoked is None and (self.expires is None or self.expires > now)


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An access token the token endpoint issued, with its client as the client is now."""

    client: ApiClient
    scopes: tuple[str, ...]  # the scopes granted when it was issued
    expires: datetime


@dataclass(slots=True)
class SearchResult:
    """One page of search matches plus, when asked for, the total."""

    resources: list[StoredResource]
    total: int | None
    included: list[StoredResource] = field(default_factory=list)
    snapshot: int | None = None  # the store position the paging window is pinned to
    # The ``_cursor`` of the next page (the last match's row id and sort key values), when the page is
    # full; and, for a page read after a cursor, whether another match follows (None: not known).
    after: tuple[int, tuple[Any, ...]] | None = None
    more: bool | None = None


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    """A received record that could not be mapped, validated or stored, kept for replay."""

    qid: int
    source: str
    received: datetime
    content_type: str
    body: bytes  # the record exactly as received
    record_key: str | None  # the source's own record id, when it could be read
    outcome: dict[str, Any]  # the OperationOutcome explaining the failure
    status: str  # held | replayed | discarded
    attempts: int
    updated: datetime


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """The CPU work of writing one resource, done before the transaction (``ResourceStore.prepare``)."""

    rtype: str
    id: str
    body: dict[str, Any]  # the stored JSON without meta.versionId/lastUpdated
    chash: str
    rows: IndexRows


@dataclass(frozen=True, slots=True)
class RecordOutput:
    """A resource one source record produced, and how to take it back once it no longer does.

    ``on_retract`` is ``status`` (a new version saying entered-in-error, revoked, …),
    ``delete`` or ``keep``.
    """

    rtype: str
    id: str
    rule: str
    on_retract: str


class VersionConflict(StoreError):
    """``If-Match`` named a version that is not the current one."""

    def __init__(self, current: int | None) -> None:
        super().__init__(f"current version is {current}")
        self.current = current



class StoreUnavailable(StoreError):
    """The store's database cannot be reached now, or dropped the connection (retry later).

    The driver's error is its ``__cause__``; the API answers 503 ``transient`` with ``Retry-After``.
    """


class StoreTransaction(Protocol):
    """Reads and writes inside one database transaction (see ``ResourceStore.transaction``)."""

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """Current version (a tombstone if deleted), or None if the id was never used."""
        ...

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a parsed search inside this transaction (it sees the transaction's own writes)."""
        ...

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` lets the client see, seeing this
        transaction's writes."""
        ...

    def in_subtree(self, policy: DataPolicy, ids: Sequence[str]) -> set[str]:
        """Which of the Organization ``ids`` are in ``policy``'s Organizations' subtree (``partOf``,
        any depth; the policy's own Organizations always are), as this transaction sees it now
        (never a cached lookup)."""
        ...

    def organization_named(self, rid: str) -> bool:
        """Whether a live Patient (``managingOrganization``) or Organization (``partOf``) names
        ``Organization/rid``: what moving it into an organisations policy's subtree would bring along."""
        ...

    def prefetch(self, refs: Iterable[tuple[str, str]]) -> None:
        """Load the current versions of these resources at once, ahead of writing them."""
        ...

    def create(self, resource: dict[str, Any], *, rid: str | None = None, method: str = "POST") -> WriteResult:
        """Store a new resource; ``rid`` None means a server-assigned id; ``method``: the HTTP method
        that made it (POST, or PUT for a conditional update that creates), which history shows."""
        ...

    def update(
        self,
        resource: dict[str, Any],
        *,
        if_match: int | None = None,
        skip_unchanged: bool = False,
        prepared: PreparedWrite | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Store a new version of ``resource['id']`` (update-as-create if unknown); ``method``: the
        HTTP method that made it (PUT, or PATCH), which history shows.

        With ``skip_unchanged`` an update whose content equals the current version (apart
        from ``meta.versionId``/``meta.lastUpdated``) writes nothing and returns the current
        version, so re-sent records do not create versions or change-feed entries.
        ``prepared`` is ``ResourceStore.prepare(resource)``, computed before the transaction.
        """
        ...

    def delete(self, rtype: str, rid: str) -> StoredResource | None:
        """Write a tombstone; None if there was nothing live to delete."""
        ...

    def record_outputs(self, source: str, record_key: str) -> list[RecordOutput]:
        """What the record ``record_key`` of ``source`` produced when last stored (empty if never)."""
        ...

    def set_record_outputs(self, source: str, record_key: str, outputs: Sequence[RecordOutput]) -> None:
        """Replace what the record produced (an empty list forgets the record)."""
        ...

    def records_outputs(self, source: str, record_keys: Sequence[str]) -> dict[str, list[RecordOutput]]:
        """``record_outputs`` of many records of ``source`` at once (a key never stored maps to [])."""
        ...

    def set_records_outputs(self, source: str, outputs: Sequence[tuple[str, Sequence[RecordOutput]]]) -> None:
        """``set_record_outputs`` of many (distinct) records of ``source`` at once."""
        ...

    def move_record_outputs(self, old: str, new: str) -> None:
        """Keep every list stored under ``old`` under ``new`` instead (joined with a list the same
        record has there already)."""
        ...

    def claim_record_versions(self, system: str, versions: Sequence[tuple[str, float]]) -> set[str]:
        """Record each (distinct) record's version as its latest unless a later one is stored; the
        keys whose stored version is later (the stale ones; nothing recorded for them). ``system``
        is the records' source system (every source configured with one mapping set shares it).
        Locks the records' rows until the transaction ends, so concurrent writers of one record queue."""
        ...

    def produced_by_others(self, rtype: str, rid: str, source: str, record_key: str) -> bool:
        """Whether any record other than ``record_key`` of ``source`` still produces the resource."""
        ...


class WriteBatch(Protocol):
    """A batch of write transactions one thread holds open (``ResourceStore.write_batch``)."""

    @property
    def lost(self) -> bool:
        """Whether a failed transaction took the batch with it: it will roll back, and no more can join."""
        ...

    @property
    def seconds_open(self) -> float:
        """How long the batch's database transaction has been open."""
        ...


class StoreReads(Protocol):
    """Reads that see one state of the store (``ResourceStore.snapshot``)."""

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """Current version (a tombstone if deleted), or None if the id was never used."""
        ...

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a parsed search."""
        ...

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` lets the client see."""
        ...


class ResourceStore(Protocol):
    """Versioned FHIR resources: reads, history, search and write transactions."""

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        """Open a write transaction: committed on normal exit, rolled back on error."""
        ...

    def snapshot(self) -> AbstractContextManager[StoreReads]:
        """Open a read-only transaction: its reads all see the store as it was at its first one, and
        it takes no write lock (a transaction Bundle of reads only must not stall the writers)."""
        ...

    def write_batch(self) -> AbstractContextManager[WriteBatch]:
        """Until the block ends, this thread's transactions share one commit, at its end.

        A transaction inside ends when its work is done, not committed (one that fails is
        rolled back alone, unless ``lost``); the block's end commits them all or raises, and
        then none of them is stored. Other threads' transactions wait for the block to end.
        """
        ...

    def read(self, rtype: str, rid: str, *, policy: RowFilter | None = None) -> StoredResource | None:
        """Current version of a resource (a tombstone if deleted), or None; with ``policy``, None
        unless it is live and the policy shows it."""
        ...

    def prepare(self, resource: dict[str, Any], rid: str | None = None) -> PreparedWrite:
        """The database-free part of writing a resource (stored body, content hash, index
        rows), to pass to ``update(prepared=…)``: it can run while another transaction commits."""
        ...

    def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None:
        """One stored version of a resource, or None."""
        ...

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` lets the client see."""
        ...

    def visible_versions(self, policy: RowFilter | None, versions: Sequence[StoredResource]) -> list[StoredResource]:
        """Of ``versions`` (of resources ``policy`` shows as they are now), those it shows by their own
        content too (a version of a Patient-linked type refers to a Patient the policy shows)."""
        ...

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
        """Versions, newest first (then by type and id), for an instance, a type or the whole system,
        last updated from ``since`` to ``until``, and the total (only of resources ``policy`` lets the
        client see as they are now). With ``at`` (history's ``_at``: periods ``[lo, hi)``), only the
        versions current at some point of one of them: from their lastUpdated to the next version's
        (the latest, a tombstone too, from its lastUpdated on; a next version after ``until`` is
        not there yet)."""
        ...

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a parsed search."""
        ...

    def read_many(self, refs: Sequence[tuple[str, str]]) -> list[StoredResource]:
        """Current live versions of the given (type, id) pairs, in no particular order."""
        ...

    def compartment(
        self, rtype: str, rid: str, count: int, offset: int, types: Sequence[str] | None = None,
        also: Sequence[str] = (), since: datetime | None = None, hidden: Sequence[str] = (),
        after: tuple[str, str] | None = None,
    ) -> tuple[list[StoredResource], int]:
        """Live resources of ``types`` (None: any) that refer to ``rtype/rid`` (its compartment, e.g. for
        $everything), and their total; ``also`` adds the compartments of more ``rtype`` ids (a golden
        Patient's linked records); ``since``: only those changed at or after it; ``hidden``: ``rtype``
        ids left out (those a data policy does not show); ``after``: the page starts after this resource
        (type, id) of the compartment's order, wherever it is now (deleted or not), instead of at ``offset``."""
        ...


class ChangeFeed(Protocol):
    """The ordered feed of committed writes, and the versions its entries name."""

    #: The lane (``LANES``) of the changes written through this store object: "live", or
    #: "backfill" in a ``gateway backfill`` process (its deliveries then wait behind live ones).
    feed_lane: str

    def changes(self, after: int, limit: int = 1000) -> list[Change]:
        """Change-feed entries with ``seq > after``, oldest first."""
        ...

    def iter_changes(self, after: int, batch: int = 1000) -> Iterator[Change]:
        """All change-feed entries after ``after``, fetched in batches."""
        ...

    def visible(self, policy: RowFilter | None, rtype: str, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` (live ``rtype`` resources) ``policy`` shows (destination filters)."""
        ...

    def last_change_seq(self) -> int:
        """The newest change-feed sequence number (0 when empty)."""
        ...

    # An entry names a version without its content; a follower of the feed (the delivery
    # outbox) must read that version, and the previous one for a delete, to act on it.
    def vread(self, rtype: str, rid: str, version: int) -> StoredResource | None:
        """One stored version of a resource, or None."""
        ...

    def read(self, rtype: str, rid: str) -> StoredResource | None:
        """The current version of a resource (a tombstone once deleted), or None: what tells a
        follower that a version it holds has been superseded."""
        ...

    def search(self, query: SearchQuery) -> SearchResult:
        """Run a search (a follower finds the Provenance naming who wrote a version)."""
        ...


class ClientRegistry(Protocol):
    """Registered API clients (found by their token hash), and their SMART access tokens and assertion ids."""

    def save_client(self, client: ApiClient, token_hash: str) -> None:
        """Create or replace an API client and the hash of its token."""
        ...

    def client_by_token_hash(self, token_hash: str) -> ApiClient | None:
        """Look up an API client by the hash of its bearer token."""
        ...

    def list_clients(self) -> list[ApiClient]:
        """All API clients."""
        ...

    def revoke_client(self, name: str) -> bool:
        """Revoke a client for good (its token stops working); False if there is no such client."""
        ...

    def rekey_client(self, name: str, token_hash: str) -> bool:
        """Replace the token hash of a client that is not revoked, keeping its other fields; False if none."""
        ...

    def client_by_name(self, name: str) -> ApiClient | None:
        """One API client by name, live or not."""
        ...

    def set_client_policy(self, name: str, policy: Mapping[str, Any] | None) -> bool:
        """Replace a client's data policy (None removes it); False if there is no such client."""
        ...

    def set_client_keys(self, name: str, jwks: Mapping[str, Any] | None) -> bool:
        """Replace a client's public keys (None removes them); False if there is no such client."""
        ...

    def touch_client(self, name: str, when: datetime) -> None:
        """Record that a client authenticated at ``when`` (callers throttle this)."""
        ...

    def save_access_token(self, token_hash: str, client: str, scopes: Sequence[str], expires: datetime) -> None:
        """Keep the hash of an access token issued to ``client`` (expired ones are dropped on the way)."""
        ...

    def access_token_by_hash(self, token_hash: str) -> AccessToken | None:
        """An issued access token and its client, or None (unknown, or its client is gone)."""
        ...

    def remember_jti(self, client: str, jti: str, expires: datetime) -> bool:
        """Record an assertion id of ``client`` until ``expires``; False if it is already recorded."""
        ...


class QuarantineStore(Protocol):
    """Received records that could not be mapped, validated or stored, kept for replay."""

    def quarantine_add(
        self,
        source: str,
        body: bytes,
        content_type: str,
        outcome: dict[str, Any],
        record_key: str | None = None,
    ) -> QuarantinedRecord:
        """Keep a record that failed, with the OperationOutcome that explains why. The same record
        (source, key and bytes) sent again while held keeps its entry: the new outcome, one more
        attempt."""
        ...

    def quarantine_list(
        self,
        *,
        source: str | None = None,
        status: str | None = "held",
        limit: int = 100,
        after: int = 0,
    ) -> list[QuarantinedRecord]:
        """Quarantined records, oldest first, optionally filtered."""
        ...

    def quarantine_get(self, qid: int) -> QuarantinedRecord | None:
        """One quarantined record."""
        ...

    def quarantine_update(self, qid: int, *, status: str, outcome: dict[str, Any] | None = None) -> None:
        """Record the result of a replay (``replayed``), a failed replay (``held``) or a discard."""
        ...


class AuditTrail(Protocol):
    """The audit trail: AuditEvent resources, searchable like any other, never in the change feed.

    An audit write is not a change of the health record: it must never be delivered to a
    destination nor wake the delivery outbox, so it bypasses ``StoreTransaction`` and its feed.
    """

    def audit_append(self, resources: Sequence[dict[str, Any]], rows: Sequence[IndexRows] | None = None) -> int:
        """Store AuditEvents (server-assigned ids, version 1, search index rows), in one transaction;
        return how many were stored. No change-feed entry is written.

        ``rows`` are the events' index rows when the caller built them (they must equal what
        ``index_rows`` extracts); otherwise they are extracted here.
        """
        ...

    def audit_purge(self, before: datetime) -> int:
        """Delete the AuditEvents stored before ``before`` (and their index rows); return how many."""
        ...


class RunClaims(Protocol):
    """Scheduled runs claimed once across every process sharing the store."""

    def claim_run(self, task: str, slot: int, holder: str) -> bool:
        """Claim run ``slot`` of ``task`` for ``holder``: True for the first claim only (atomic)."""
        ...


class PullCursors(Protocol):
    """How far each pulled source has been read: an opaque text per source, set after the records
    it covers are stored (so a crash re-reads, never skips)."""

    def pull_cursor(self, source: str) -> str | None:
        """The source's saved cursor, or None before its first pull."""
        ...

    def set_pull_cursor(self, source: str, cursor: str | None) -> None:
        """Save the source's cursor (None forgets it: the next pull starts from the beginning)."""
        ...


class DestinationIds(Protocol):
    """The ids destinations assigned to delivered resources (servers that assign their own, like OpenMRS).

    A ref (``Type/id``) recorded without an id is a create that was sent but not confirmed:
    the next attempt looks for it at the destination before creating it again.
    """

    def destination_ids(self, destination: str, refs: Sequence[str]) -> dict[str, str | None]:
        """The recorded id of each of ``refs`` that has a row (None: a create not yet confirmed)."""
        ...

    def set_destination_id(self, destination: str, ref: str, remote_id: str | None) -> None:
        """Record the destination's id of ``ref`` (None: a create is about to be sent)."""
        ...

    def forget_destination_id(self, destination: str, ref: str) -> None:
        """Forget ``ref`` at ``destination`` (deleted there)."""
        ...


@dataclass(frozen=True, slots=True)
class MessageEntry:
    """One line of the message log: a record received (``kind`` received/replayed) or a delivery
    attempt (``kind`` delivery). It names things (source, destination, Patient id, record key,
    resource reference, reason code), never a record's values."""

    at: float  # epoch seconds
    kind: str  # received | replayed | delivery
    channel: str  # the source (received, replayed) or the destination (delivery)
    status: str  # stored | unchanged | quarantined (records); delivered | retrying | dead | partial (attempts)
    patient: str | None = None  # the Patient id concerned, when known
    subject: str | None = None  # the source's record key, or the delivered resource's reference
    ref: str | None = None  # the quarantine id or the delivery job id
    detail: str | None = None  # short: resources written, reason code, HTTP status


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """A message log line as stored (``mid`` increases with insertion)."""

    mid: int
    entry: MessageEntry


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Which message log lines to list; None means any."""

    channel: str | None = None
    kind: str | None = None
    status: str | None = None
    patient: str | None = None
    since: float | None = None  # at or after (epoch seconds)
    until: float | None = None  # before
    before_mid: int | None = None  # paging: lines older than this one


class MessageLog(Protocol):
    """The message log (OpenHIM's transaction log, kept small): one line per record received and per
    delivery attempt, outside the change feed, purged by age."""

    def message_append(self, entries: Sequence[MessageEntry]) -> int:
        """Store lines in one transaction; return how many."""
        ...

    def message_search(self, where: MessageFilter, *, limit: int = 100) -> list[LoggedMessage]:
        """Lines matching ``where``, newest first."""
        ...

    def message_counts(self, since: float) -> list[tuple[str, str, str, int]]:
        """How many lines were logged at or after ``since``, per (kind, channel, status)."""
        ...

    def message_purge(self, before: datetime) -> int:
        """Delete the lines logged before ``before``; return how many."""
        ...


@dataclass(frozen=True, slots=True)
class ExportJob:
    """One bulk data export (``$export``) as kept in the store, so a restart reports it instead of losing it.

    ``status`` is accepted, running, done or failed; ``output``/``error`` are the manifest's
    entries (``{"type", "file", "count"}``, file names relative to the job's directory).
    """

    job_id: str
    client: str  # the principal that kicked it off: the only one that may poll and download
    status: str
    request: str  # the kick-off URL
    params: Mapping[str, Any]  # what was asked (level, types, since, filters, profile), for the operator
    created: datetime
    updated: datetime  # a running job's heartbeat
    transaction_time: datetime
    progress: str = ""
    output: tuple[Mapping[str, Any], ...] = ()
    error: tuple[Mapping[str, Any], ...] = ()
    expires: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExportScope:
    """Which rows a Patient- or Group-level export reads: the compartments of every Patient
    (``group`` None) or of the Patients a Group lists as members."""

    group: str | None = None
    patients: tuple[str, ...] = ()  # only these Patients' compartments (within the group, if any)


class BulkExports(Protocol):
    """Bulk data export jobs, and paging a search's matches by row id (bounded memory at any size)."""

    def export_save(self, job: ExportJob) -> None:
        """Create or replace a job."""
        ...

    def export_update(self, job: ExportJob) -> bool:
        """Replace a job that still exists (False when it was deleted, e.g. cancelled)."""
        ...

    def export_get(self, job_id: str) -> ExportJob | None:
        """One job, or None."""
        ...

    def export_list(self, *, status: str | None = None) -> list[ExportJob]:
        """Jobs (of one status), oldest first."""
        ...

    def export_delete(self, job_id: str) -> bool:
        """Forget a job; False if there was none."""
        ...

    def export_snapshot(self) -> int:
        """The newest resource row id: an export pins its queries to it (``SearchQuery.snapshot``)."""
        ...

    def export_page(
        self, query: SearchQuery, after: int, limit: int, scope: ExportScope | None = None
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` live matches of ``query`` (its filters, data policy and snapshot; not its
        paging or sort) with row ids above ``after``, in row-id order: (row id, stored JSON);
        ``scope`` keeps only resources in the Patient compartments it names."""
        ...


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """A topic-based Subscription as the store keeps it, with what the server tracks beside it.

    ``content`` is the R4 Subscription JSON (its ``status`` is the column's); ``scopes`` are the
    owner's scopes when it created the subscription; ``start_seq`` is the change-feed position
    then (earlier changes are never notified); ``failures`` counts consecutive failed sends.
    """

    sid: str
    owner: str
    scopes: tuple[str, ...]
    content: Mapping[str, Any]
    status: str  # requested | active | error | off
    start_seq: int
    created: datetime
    updated: datetime
    failures: int = 0
    error: str | None = None
    heartbeat_at: datetime | None = None
    events: int = 0  # events-since-subscription-start: the highest event number given out


class SubscriptionStore(Protocol):
    """Subscriptions and their persisted event numbers."""

    def subscription_save(self, record: SubscriptionRecord) -> None:
        """Create or replace a subscription (its event numbers are kept)."""
        ...

    def subscription_get(self, sid: str) -> SubscriptionRecord | None:
        """One subscription, with its event count, or None."""
        ...

    def subscription_list(self, *, owner: str | None = None, live: bool = False) -> list[SubscriptionRecord]:
        """Subscriptions (of one owner; ``live``: not ``off``), oldest first."""
        ...

    def subscription_delete(self, sid: str) -> bool:
        """Forget a subscription and its event numbers; False if there was none."""
        ...

    def subscription_set_status(
        self, sid: str, status: str, *, failures: int | None = None, error: str | None = None,
        when: datetime, only_from: Sequence[str] | None = None,
    ) -> bool:
        """Change a subscription's status (and failure count, error text); with ``only_from``, only from
        those statuses. False when nothing changed."""
        ...

    def subscription_note_failure(self, sid: str, error: str, threshold: int, when: datetime) -> str | None:
        """Count a failed send; the status becomes ``error`` at ``threshold`` consecutive failures.
        Returns the status after (None: no such subscription)."""
        ...

    def subscription_heartbeat(self, sid: str, when: datetime) -> None:
        """Record when a heartbeat was sent."""
        ...

    def subscription_event_numbers(
        self, matches: Sequence[tuple[str, int]], when: datetime
    ) -> dict[tuple[str, int], int]:
        """The event number of each (subscription, change seq), given out in order the first time a pair
        is seen and the same on every later call (so a change read twice keeps its number)."""
        ...


class Store(
    ResourceStore, ChangeFeed, ClientRegistry, QuarantineStore, AuditTrail, MessageLog, RunClaims, PullCursors,
    DestinationIds, BulkExports, SubscriptionStore, Protocol,
):
    """The whole store, as ``open_store`` returns it: every part above plus its lifecycle."""

    @property
    def inline_reads(self) -> bool:
        """Whether a read-only call may run inline on the event loop instead of on a worker thread.

        True where a read costs microseconds (SQLite: a local file in the page cache), less
        than the hop to a thread; False where a read waits on a server (PostgreSQL), which
        would stall every request on the loop.
        """
        ...

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...

    def refresh_statistics(self) -> None:
        """Bring the query planner's statistics up to date after a bulk load (a backfill)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
