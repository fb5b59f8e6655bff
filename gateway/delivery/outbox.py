"""The outbox: committed changes become delivery jobs, nothing lost, nothing twice.

The store appends a change-feed entry in the same transaction as every write, so the
API path never waits for delivery. The outbox follows the feed with one cursor per
destination, kept *in the queue*: ``queue.enqueue`` writes a batch of jobs and moves the
cursor in one transaction, compare-and-set on the old position. So:

* a crash before that transaction loses nothing (the cursor did not move; the changes
  are read again), and a crash after it duplicates nothing;
* several outboxes (one per ``gateway worker`` process) may run at once: the first to
  move a cursor wins and the others re-read from the new position.

A change becomes a job for a destination when it passes the destination's filter
(resource type, source system, FHIRPath criteria, data policy, and not written by one of its
``exclude_clients``: the Provenance stored with every API write names the client, so an EMR's
own writes through the FHIR API do not go back to it). A delete is judged, and
keyed, by the version it deletes. A data policy judges a resource as the store holds it
when the outbox reads the change (the index answers it, as for an API client); a delete
always passes it, since the index no longer knows what the deleted resource referred to,
and deleting what a destination never had does no harm. Jobs carry the version's JSON so
the queue is self-contained.

A destination that skips superseded versions (``coalesces``) gets no job for a version the
store has already replaced with a later live one it takes: that one's own change, further on in
the feed, carries the resource. The queue's coalescing sees only jobs already queued; when the
feed is read again from far behind (a Redis queue that lost its cursors, or restored from an old
copy), a job for version 1 could be claimed and sent before version 2's change was even read,
and stand at the destination over the version 2 it had, until version 2 came round again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors import Job
from gateway.delivery.codec import job_id
from gateway.delivery.config import DestinationConfig
from gateway.delivery.queue import DeliveryQueue
from gateway.fhir import CLIENT_SYSTEM, content_as_policy_gives
from gateway.search import QueryParser, RowFilter, default_registry
from gateway.store import Change, ChangeFeed, ChangeOp, StoredResource

log = logging.getLogger(__name__)

#: Provenance resources of one resource read back to find who wrote a version (newest first).
_PROVENANCE_LOOKBACK = 50

# Where a resource points at its patient, in the order they are tried.
PATIENT_FIELDS = ("subject", "patient", "beneficiary", "individual", "for", "focus")


def ordering_key(resource_type: str, resource_id: str, resource: dict[str, Any]) -> str:
    """The patient compartment a resource belongs to (``Patient/x``), else the resource itself."""
    if resource_type == "Patient":
        return f"Patient/{resource_id}"
    for name in PATIENT_FIELDS:
        value = resource.get(name)
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str) and reference.startswith("Patient/"):
            return reference.split("/_history", 1)[0]
    return f"{resource_type}/{resource_id}"


def _source_and_content(content: bytes) -> tuple[str | None, dict[str, Any]]:
    """A stored version's ``meta.source`` (what destination filters match) and its content."""
    resource: dict[str, Any] = jsonio.loads(content)
    meta = resource.get("meta")
    source = meta.get("source") if isinstance(meta, dict) else None
    return (source if isinstance(source, str) else None), resource


class FeedFollower(Protocol):
    """Another reader of the change feed that queues jobs for destinations of its own (e.g. the
    subscriptions' notifications), with the same cursor hand-over as ``Outbox``."""

    @property
    def destinations(self) -> frozenset[str]:
        """The destinations whose cursors it moves (the ``Outbox`` leaves them alone)."""
        ...

    async def run_once(self) -> dict[str, int]:
        """Queue the next batch of changes; jobs queued per destination whose cursor moved ({}: idle)."""
        ...


FollowerFactory = Callable[[DeliveryQueue], FeedFollower]


@dataclass(frozen=True, slots=True)
class _Version:
    """What the outbox needs to know about one changed version."""

    payload: bytes  # b"" for a delete
    resource: dict[str, Any]  # the content judged by filters (the deleted version for a delete)
    source: str | None
    key: str
    # The store's later live version of the resource, when it has one: (its source, its content).
    later: tuple[str | None, dict[str, Any]] | None = None


class Outbox:
    """Turns change-feed entries into queued jobs for each enabled destination."""

    def __init__(
        self,
        store: ChangeFeed,
        queue: DeliveryQueue,
        destinations: Sequence[DestinationConfig],
        clock: Clock,
        *,
        batch: int = 500,
    ) -> None:
        self.store = store
        self.queue = queue
        self.destinations = [d for d in destinations if d.enabled]
        self.clock = clock
        self.batch = batch
        self._policies: dict[str, RowFilter] = {}
        for destination in self.destinations:
            policy = destination.filter.data_policy()
            if policy is not None and policy.limits_rows:
                self._policies[destination.name] = RowFilter(policy, default_registry().patient_linked())
        # Versions of types no destination wants are never read.
        self._types: set[str] | None = None
        if all(d.filter.resource_types for d in self.destinations):
            self._types = {t for d in self.destinations for t in d.filter.resource_types}

    async def run_once(self) -> dict[str, int]:
        """Queue the next batch of changes; jobs queued per destination whose cursor moved ({}: idle)."""
        if not self.destinations:
            return {}
        cursors = {d.name: await self.queue.cursor(d.name) for d in self.destinations}
        low = min(cursor or 0 for cursor in cursors.values())
        changes = await asyncio.to_thread(self.store.changes, low, self.batch)
        if not changes:
            return {}
        versions = await asyncio.to_thread(self._load, changes)
        shown = await asyncio.to_thread(self._visible, changes, versions) if self._policies else {}
        excluding = [d for d in self.destinations if d.filter.exclude_clients]
        writers = await asyncio.to_thread(self._writers, changes, versions, excluding) if excluding else {}
        now = self.clock.now()
        queued: dict[str, int] = {}
        for destination in self.destinations:
            after = cursors[destination.name]
            relevant = [c for c in changes if c.seq > (after or 0)]
            if not relevant:
                continue
            visible = shown.get(destination.name)
            limited = destination.name in self._policies
            jobs = [
                self._job(destination.name, change, versions[change.seq], now, limited)
                for change in relevant
                if change.seq in versions and self._wanted(destination, change, versions[change.seq])
                and not self._superseded(destination, change, versions[change.seq])
                and (visible is None or change.op is ChangeOp.DELETE or (change.type, change.id) in visible)
                and writers.get(change.seq) not in destination.filter.exclude_clients
            ]
            if await self.queue.enqueue(destination.name, jobs, after=after, cursor=relevant[-1].seq):
                queued[destination.name] = len(jobs)
            else:
                log.debug("outbox: cursor of %s moved concurrently; re-reading", destination.name)
        return queued

    async def drain(self) -> int:
        """Queue everything the feed holds now (used by tests and the CLI); jobs queued."""
        total = 0
        while True:
            queued = await self.run_once()
            if not queued:
                return total
            total += sum(queued.values())

    @staticmethod
    def _wanted(destination: DestinationConfig, change: Change, version: _Version) -> bool:
        return destination.filter.matches(change.type, version.source, version.resource)

    @staticmethod
    def _superseded(destination: DestinationConfig, change: Change, version: _Version) -> bool:
        """Whether the store's later version of the resource will reach ``destination`` in its place."""
        if version.later is None or not destination.coalesces:
            return False
        source, resource = version.later
        return destination.filter.matches(change.type, source, resource)

    @staticmethod
    def _job(destination: str, change: Change, version: _Version, now: float, limited: bool = False) -> Job:
        # As a client with this data policy reads it: without the identity matcher's links, which
        # name other sources' records of the person (maybe hidden) and the golden record.
        payload = content_as_policy_gives(version.payload, limits_rows=limited, deidentified=False)
        return Job(
            id=job_id(destination, change.seq),
            destination=destination,
            seq=change.seq,
            resource_type=change.type,
            resource_id=change.id,
            version=change.version,
            op=change.op.value,
            key=version.key,
            payload=payload,
            source=version.source,
            enqueued_at=now,
            backfill=change.backfill,
        )

    def _visible(self, changes: list[Change], versions: dict[int, _Version]) -> dict[str, set[tuple[str, str]]]:
        """Per destination with a data policy: the changed resources it shows (runs on a worker thread)."""
        by_type: dict[str, set[str]] = {}
        for change in changes:
            if change.seq in versions and change.op is not ChangeOp.DELETE:
                by_type.setdefault(change.type, set()).add(change.id)
        return {
            name: {(rtype, rid) for rtype, ids in by_type.items()
                   for rid in (self.store.visible(policy, rtype, sorted(ids)) if policy.applies_to(rtype) else ids)}
            for name, policy in self._policies.items()
        }  # fmt: skip

    def _writers(
        self, changes: list[Change], versions: dict[int, _Version], excluding: list[DestinationConfig]
    ) -> dict[int, str]:
        """The API client that wrote each change some destination in ``excluding`` would take (its
        Provenance's author; runs on a worker thread). Changes written otherwise are left out."""
        parser = QueryParser(default_registry(), _PROVENANCE_LOOKBACK, _PROVENANCE_LOOKBACK)
        found: dict[int, str] = {}
        for change in changes:
            version = versions.get(change.seq)
            if version is None or change.type == "Provenance":
                continue  # a Provenance is the gateway's record of a write, never a client's own
            if not any(self._wanted(d, change, version) for d in excluding):
                continue
            query = parser.parse("Provenance", [("target", f"{change.type}/{change.id}"), ("_sort", "-_lastUpdated")])
            query.total = "none"
            written = f"{change.type}/{change.id}/_history/{change.version}"
            for provenance in self.store.search(query).resources:
                client = _author_of(jsonio.loads(provenance.content), written)
                if client is not None:
                    found[change.seq] = client
                    break
        return found

    def _load(self, changes: list[Change]) -> dict[int, _Version]:
        """Read each changed version once (runs on a worker thread: the store is synchronous)."""
        versions: dict[int, _Version] = {}
        coalescing = any(d.coalesces for d in self.destinations)
        current: dict[tuple[str, str], StoredResource | None] = {}
        for change in changes:
            if self._types is not None and change.type not in self._types:
                continue
            stored = self.store.vread(change.type, change.id, change.version)
            if stored is None:
                log.warning("outbox: change %s names a missing version; skipped", change.seq)
                continue
            payload = b"" if change.op is ChangeOp.DELETE else stored.content
            judged = payload
            if change.op is ChangeOp.DELETE and change.version > 1:
                previous = self.store.vread(change.type, change.id, change.version - 1)
                judged = previous.content if previous is not None else b""
            source, resource = _source_and_content(judged) if judged else (None, {})
            later = None
            if coalescing:
                ref = (change.type, change.id)
                if ref not in current:
                    current[ref] = self.store.read(change.type, change.id)
                newest = current[ref]
                if newest is not None and newest.version > change.version and not newest.deleted:
                    later = _source_and_content(newest.content)
            versions[change.seq] = _Version(
                payload=payload,
                resource=resource,
                source=source,
                key=ordering_key(change.type, change.id, resource),
                later=later,
            )
        return versions


def _author_of(provenance: dict[str, Any], target: str) -> str | None:
    """The API client a Provenance names as author of ``target`` (``Type/id/_history/v``), if it does."""
    targets = provenance.get("target")
    if not isinstance(targets, list) or not any(isinstance(t, dict) and t.get("reference") == target for t in targets):
        return None
    for agent in provenance.get("agent") or []:
        who = agent.get("who") if isinstance(agent, dict) else None
        identifier = who.get("identifier") if isinstance(who, dict) else None
        if isinstance(identifier, dict) and identifier.get("system") == CLIENT_SYSTEM:
            value = identifier.get("value")
            return value if isinstance(value, str) else None
    return None
