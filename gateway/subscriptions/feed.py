"""Following the change feed for subscriptions: matched changes become numbered notification jobs.

``SubscriptionFeed`` is a ``FeedFollower`` of the delivery engine: its cursor is the cursor of
the ``subscriptions`` destination in the delivery queue, moved in the same transaction that
queues the jobs (as the outbox's). For each batch of changes and each live subscription it
keeps the changes that

* come after the subscription started (``start_seq``) and fire one of its topic's triggers (a
  classic R4 criteria is a topic of one trigger: its type, created or updated, its parameters),
* are of a type both the subscribing token and the client today may read (a client without
  Observation scopes learns nothing about Observations, not even ids), and
* match, in one search per type, the trigger's parameters, the subscription's filter
  criteria, ``_id`` of the changed resources and the owner's data policy.

Each match gets its event number from the store (``subscription_event_numbers``: the same
number when a crash makes the batch be read again) and becomes one job with ordering key
``Subscription/<id>``, so a subscription's notifications are delivered one at a time, in
event order, each retried until delivered or dead-lettered. A search judges a resource as the
store holds it when the feed reads the change, as the outbox's data policy does. A subscription
whose ``end`` has passed is switched off instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors import Job
from gateway.delivery import DeliveryQueue
from gateway.errors import FhirError
from gateway.search import DataPolicy, QueryParser, SearchError, SearchRegistry
from gateway.store import Change, Store, StoredResource, SubscriptionRecord
from gateway.subscriptions.access import OwnerAccess, owner_access
from gateway.subscriptions.config import DESTINATION
from gateway.subscriptions.spec import SubscriptionSpec
from gateway.subscriptions.stored import spec_of
from gateway.subscriptions.topics import Trigger


class SubscriptionFeed:
    """Queues notification jobs for matching changes (see the module docstring)."""

    destinations = frozenset({DESTINATION})

    def __init__(
        self, store: Store, queue: DeliveryQueue, parser: QueryParser, registry: SearchRegistry,
        policies: Mapping[str, DataPolicy], clock: Clock, *, batch: int = 500,
    ) -> None:
        self.store = store
        self.queue = queue
        self.parser = parser
        self.registry = registry
        self.policies = policies
        self.clock = clock
        self.batch = batch

    async def run_once(self) -> dict[str, int]:
        """Queue the notifications of the next batch of changes ({}: nothing new)."""
        cursor = await self.queue.cursor(DESTINATION)
        low = cursor
        if low is None:
            first = await asyncio.to_thread(self.store.subscription_list, live=True)
            if not first:
                return {}  # nobody ever subscribed: the feed is not followed at all
            low = min(s.start_seq for s in first)
        changes = await asyncio.to_thread(self.store.changes, low, self.batch)
        # Listed after the changes were read, so a subscription created since then starts after
        # all of them (its start_seq) and misses none of its own.
        subscriptions = await asyncio.to_thread(self.store.subscription_list, live=True)
        if not changes:
            if cursor is None:
                await self.queue.enqueue(DESTINATION, [], after=None, cursor=low)
            return {}
        jobs = await asyncio.to_thread(self._jobs, subscriptions, changes) if subscriptions else []
        if await self.queue.enqueue(DESTINATION, jobs, after=cursor, cursor=changes[-1].seq):
            return {DESTINATION: len(jobs)}
        return {}

    def _jobs(self, subscriptions: Sequence[SubscriptionRecord], changes: Sequence[Change]) -> list[Job]:
        """Match, number and build the jobs of one batch (runs on a worker thread: the store is synchronous)."""
        now = datetime.now(UTC)
        by_type: dict[str, list[Change]] = {}
        for change in changes:
            by_type.setdefault(change.type, []).append(change)
        matched: list[tuple[SubscriptionRecord, SubscriptionSpec, Change]] = []
        for record in subscriptions:
            access = owner_access(self.store, record, self.policies, self.registry, now)
            if access is None:
                continue
            spec = spec_of(record)
            if spec.end is not None and spec.end <= now:
                self.store.subscription_set_status(record.sid, "off", when=now, only_from=("active", "error"))
                continue
            for rtype, of_type in by_type.items():
                relevant = [c for c in of_type if c.seq > record.start_seq
                            and spec.topic.trigger_for(rtype, c.op.value) is not None]
                if not relevant or not access.can_read(rtype):
                    continue
                trigger = spec.topic.trigger_for(rtype, relevant[0].op.value)
                assert trigger is not None  # ``relevant`` holds only changes that fire one
                hits = self._matching(trigger, sorted({c.id for c in relevant}), spec, access)
                matched += [(record, spec, c) for c in relevant if c.id in hits]
        if not matched:
            return []
        numbers = self.store.subscription_event_numbers([(r.sid, c.seq) for r, _, c in matched], now)
        enqueued = self.clock.now()
        jobs = [
            Job(
                id=f"{DESTINATION}:{change.seq}-{record.sid}",
                destination=DESTINATION,
                seq=change.seq,
                resource_type=change.type,
                resource_id=change.id,
                version=change.version,
                op=change.op.value,
                key=f"Subscription/{record.sid}",
                payload=jsonio.dumps({"event": numbers[(record.sid, change.seq)], "at": change.at.timestamp(),
                                      "topic": str(record.content.get("criteria"))}),
                enqueued_at=enqueued,
            )
            for record, spec, change in matched
        ]
        jobs.sort(key=lambda job: (job.seq, job.key))
        return jobs

    def _matching(self, trigger: Trigger, ids: Sequence[str], spec: SubscriptionSpec, access: OwnerAccess) -> set[str]:
        """The ids among ``ids`` whose resource matches the trigger, the filters and the data policy."""
        found = self._search(trigger.resource_type, [*trigger.query, *spec.filter_items(trigger.resource_type)],
                             ids, access)
        if trigger.focus_type is None:
            return {r.id for r in found}
        focus = {r.id: ref for r in found if (ref := _focus_id(r, trigger.focus_type)) is not None}
        if not access.can_read(trigger.focus_type):
            return set()  # whether the focus is a referral is not the owner's to learn
        focused = {r.id for r in self._search(trigger.focus_type, list(trigger.focus_query),
                                              sorted(set(focus.values())), access)}
        return {rid for rid, ref in focus.items() if ref in focused}

    def _search(
        self, rtype: str, params: list[tuple[str, str]], ids: Sequence[str], access: OwnerAccess
    ) -> list[StoredResource]:
        """The resources among ``ids`` that match ``params`` and the owner's data policy (one search a chunk);
        none when the owner may no longer search what ``params`` look at (a chain or ``_has`` into a type
        its scopes dropped, an element its data policy now strips)."""
        found: list[StoredResource] = []
        step = self.parser.limits.max_values
        for start in range(0, len(ids), step):
            chunk = ids[start:start + step]
            try:
                query = self.parser.parse(rtype, [*params, ("_id", ",".join(chunk))], access=access.matching(rtype))
            except (FhirError, SearchError):
                return []
            query.count = len(chunk)
            query.total = "none"
            query.policy = access.policy
            found += self.store.search(query).resources
        return found


def _focus_id(resource: StoredResource, rtype: str) -> str | None:
    """The id of the ``rtype`` resource the resource's ``focus`` refers to (a referral's Task), if any."""
    focus = jsonio.loads(resource.content).get("focus")
    reference = focus.get("reference") if isinstance(focus, dict) else None
    if not isinstance(reference, str) or not reference.startswith(f"{rtype}/"):
        return None
    return reference.removeprefix(f"{rtype}/").split("/", 1)[0] or None
