"""Operator actions on delivery, shared by the admin API and the CLI.

admin = DeliveryAdmin(queue, destinations, feed=store)
for row in await admin.status(): ...     # queue counts, lag, circuit, live workers
for worker in await admin.workers(): ...
await admin.pause("shr")
count = await admin.replay_matching(DeadLetterFilter(destination="shr"), progress=bar.update)

Lag is what a destination has not received yet of what the store committed: in changes,
the change feed's head minus the outbox's cursor (changes not yet looked at) plus the
jobs still queued; in seconds, the age of the oldest of those (the commit time of the first
change past the cursor, or the queueing time of the oldest live job). It needs the store
(``feed``); without it both are None. A worker is live while its heartbeat is younger than
three heartbeat intervals.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.clock import Clock, SystemClock
from gateway.delivery.config import DeliverySections, DestinationConfig
from gateway.delivery.keys import DEFAULT_PREFIX
from gateway.delivery.queue import DeadLetter, DeadLetterFilter, DeliveryQueue, QueueStats, WorkerBeat
from gateway.delivery.queue_factory import open_queue
from gateway.errors import RequestError

if TYPE_CHECKING:
    from gateway.store import ChangeFeed

log = logging.getLogger("gateway.delivery")

MISSED_BEATS = 3  # heartbeat intervals without a heartbeat before a worker counts as gone

REPLAY_CHUNK = 500  # dead letters replayed per queue transaction

Progress = Callable[[int, int], None]  # (done so far, total)


class UnknownDestination(RequestError):
    """No destination has this name."""


class UnknownDeadLetter(RequestError):
    """No dead letter has this id."""


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """One row of ``GET /admin/destinations`` and ``gateway queue status``."""

    name: str
    kind: str
    enabled: bool
    stats: QueueStats
    feed_head: int | None = None  # the store's newest change seq (None: store not open)
    lag_changes: int | None = None  # changes committed but not delivered (module docstring)
    lag_seconds: float | None = None  # age of the oldest of them (0 when none)
    workers_alive: int = 0  # live workers serving this destination
    last_heartbeat: float | None = None  # newest heartbeat of a worker serving it (epoch s)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self.stats)
        data.pop("destination")
        return {
            "name": self.name,
            "kind": self.kind,
            "enabled": self.enabled,
            **data,
            "feed_head": self.feed_head,
            "lag_changes": self.lag_changes,
            "lag_seconds": self.lag_seconds,
            "workers_alive": self.workers_alive,
            "last_heartbeat": self.last_heartbeat,
        }


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A worker process with whether it still counts as live."""

    beat: WorkerBeat
    alive: bool
    age: float  # seconds since its last heartbeat

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self.beat), "destinations": list(self.beat.destinations), "alive": self.alive,
                "heartbeat_age": self.age}


def dead_letter_summary(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter without payload or bodies (for listings)."""
    job = letter.job
    return {
        "id": job.id,
        "destination": job.destination,
        "resource": f"{job.ref}/_history/{job.version}",
        "op": job.op,
        "seq": job.seq,
        "reason": letter.reason,
        "died_at": letter.died_at,
        "attempts": letter.attempts,
        "status": letter.response.status if letter.response is not None else None,
        # A refused destination object: every job and FHIR resource it stands for (replayed together).
        "group": letter.group,
        "jobs": list(letter.job_ids or (job.id,)),
        "resources": list(letter.resources or (job.ref,)),
        "superseded_by": letter.superseded_by,
    }


def dead_letter_detail(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter with its detail, request and response (for one-letter views)."""
    return {
        **dead_letter_summary(letter),
        "detail": letter.detail,
        "request": asdict(letter.request) if letter.request is not None else None,
        "response": asdict(letter.response) if letter.response is not None else None,
    }


class DeliveryAdmin:
    """Status, pause/resume, dead-letter listing, replay and purge."""

    def __init__(
        self,
        queue: DeliveryQueue,
        destinations: Sequence[DestinationConfig],
        *,
        feed: ChangeFeed | None = None,
        clock: Clock | None = None,
        heartbeat_interval: float = 10.0,
    ) -> None:
        self.queue = queue
        self.destinations = {d.name: d for d in destinations}
        self.feed = feed
        self.clock = clock or SystemClock()
        self.heartbeat_interval = heartbeat_interval

    def _check(self, name: str) -> DestinationConfig:
        try:
            return self.destinations[name]
        except KeyError:
            raise UnknownDestination(f"no destination is named {name!r}") from None

    async def status(self) -> list[DestinationStatus]:
        """Every configured destination with its queue counts, lag and live workers."""
        workers = await self.workers()
        head = await asyncio.to_thread(self.feed.last_change_seq) if self.feed is not None else None
        rows = []
        for d in self.destinations.values():
            if d.internal and await self.queue.cursor(d.name) is None:
                continue
            stats = await self.queue.stats(d.name)
            serving = [w for w in workers if d.name in w.beat.destinations]
            lag_changes, lag_seconds = await self._lag(stats, head)
            rows.append(
                DestinationStatus(
                    d.name,
                    d.kind,
                    d.enabled,
                    stats,
                    feed_head=head,
                    lag_changes=lag_changes,
                    lag_seconds=lag_seconds,
                    workers_alive=sum(w.alive for w in serving),
                    last_heartbeat=max((w.beat.last_seen for w in serving), default=None),
                )
            )
        return rows

    async def _lag(self, stats: QueueStats, head: int | None) -> tuple[int | None, float | None]:
        if self.feed is None or head is None:
            return None, None
        unexamined = max(head - stats.cursor, 0)
        ages = [stats.oldest_pending_age or 0.0]
        if unexamined:
            first = await asyncio.to_thread(self.feed.changes, stats.cursor, 1)
            if first:
                ages.append(self.clock.now() - first[0].at.timestamp())
        return unexamined + stats.depth, max(max(ages), 0.0)

    async def workers(self) -> list[WorkerStatus]:
        """Worker processes heard from (within a day), with whether each is live."""
        now = self.clock.now()
        limit = MISSED_BEATS * self.heartbeat_interval
        return [
            WorkerStatus(beat, alive=now - beat.last_seen <= limit, age=max(now - beat.last_seen, 0.0))
            for beat in await self.queue.workers()
        ]

    async def pause(self, name: str) -> None:
        """Stop delivering to ``name`` (jobs keep queueing)."""
        self._check(name)
        await self.queue.set_paused(name, True)

    async def resume(self, name: str) -> None:
        """Deliver to ``name`` again."""
        self._check(name)
        await self.queue.set_paused(name, False)

    async def dead_letters(self, where: DeadLetterFilter, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters matching ``where``, newest first."""
        if where.destination is not None:
            self._check(where.destination)
        return await self._with_newer_versions(await self.queue.dead_letters(where, limit=limit))

    async def dead_letter(self, job_id: str) -> DeadLetter:
        """One dead letter by job id."""
        letter = await self.queue.dead_letter(job_id)
        if letter is None:
            raise UnknownDeadLetter(f"no dead letter has the id {job_id!r}")
        [letter] = await self._with_newer_versions([letter])
        return letter

    async def replay(self, job_id: str) -> int:
        """Send one dead letter (every job of its group) again; how many jobs (a superseded one,
        discarded instead, counts: see ``_superseded``)."""
        count = await self._replay_or_discard([job_id])
        if count < 1:
            raise UnknownDeadLetter(f"no dead letter has the id {job_id!r}")
        return count

    async def _replay_or_discard(self, ids: Sequence[str]) -> int:
        """Replay the dead letters ``ids``, discarding the superseded ones instead; how many jobs."""
        stale = await self._superseded(ids)
        discarded = set(stale)
        rest = [job_id for job_id in ids if job_id not in discarded]
        return (await self.queue.purge(stale) if stale else 0) + (await self.queue.replay(rest) if rest else 0)

    async def _superseded(self, ids: Sequence[str]) -> list[str]:
        """The dead letters among ``ids`` whose resource has a later version in the store, for
        destinations that skip superseded versions (``coalesce``: FHIR servers, DHIS2).

        Replayed, such a letter would put its old content back over the newer version the
        destination got since (the queue forgets a delivered job, so it cannot tell); the newer
        version's own job carries the change (delivered, or still queued or dead itself). Those
        letters are discarded instead, and logged. A letter of several jobs is replayed whole."""
        if self.feed is None:
            return []
        stale: list[str] = []
        for job_id in ids:
            letter = await self.queue.dead_letter(job_id)
            if letter is None:
                continue
            [letter] = await self._with_newer_versions([letter])
            if letter.superseded_by is not None:
                log.info("dead letter %s superseded by version %d: discarded, not replayed", job_id,
                         letter.superseded_by)
                stale.append(job_id)
        return stale

    async def _with_newer_versions(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """``letters``, each marked ``superseded_by`` the store's later version of its resource
        where its destination skips superseded versions (see ``_superseded``): listings show
        an operator which letters need nothing done. A letter of several jobs is never marked."""
        if self.feed is None:
            return letters
        feed = self.feed
        marked: list[DeadLetter] = []
        for letter in letters:
            destination = self.destinations.get(letter.job.destination)
            if letter.size == 1 and destination is not None and destination.coalesces:
                job = letter.job
                current = await asyncio.to_thread(feed.read, job.resource_type, job.resource_id)
                if current is not None and current.version > job.version:
                    letter = replace(letter, superseded_by=current.version)
            marked.append(letter)
        return marked

    async def purge(self, job_id: str) -> None:
        """Delete one dead letter and its payload (discard it)."""
        if await self.queue.purge([job_id]) != 1:
            raise UnknownDeadLetter(f"no dead letter has the id {job_id!r}")

    async def replay_matching(self, where: DeadLetterFilter, *, progress: Progress | None = None) -> int:
        """Send every dead letter matching ``where`` again, in chunks; how many (superseded ones,
        discarded instead, count: see ``_superseded``)."""
        return await self._in_chunks(self._replay_or_discard, where, progress)

    async def purge_matching(self, where: DeadLetterFilter, *, progress: Progress | None = None) -> int:
        """Delete every dead letter matching ``where`` with its payload; how many."""
        return await self._in_chunks(self.queue.purge, where, progress)

    async def _in_chunks(
        self,
        action: Callable[[Sequence[str]], Any],
        where: DeadLetterFilter,
        progress: Progress | None,
    ) -> int:
        if where.destination is not None:
            self._check(where.destination)
        ids = await self.queue.dead_letter_ids(where)
        done = 0
        for start in range(0, len(ids), REPLAY_CHUNK):
            done += int(await action(ids[start : start + REPLAY_CHUNK]))
            if progress is not None:
                progress(min(start + REPLAY_CHUNK, len(ids)), len(ids))
        return done


@dataclass(frozen=True, slots=True)
class AdminHandle:
    """A queue opened for operator commands, with its admin facade."""

    queue: DeliveryQueue
    admin: DeliveryAdmin


def open_admin(
    queue_url: str, sections: DeliverySections, *, feed: ChangeFeed | None = None, prefix: str = DEFAULT_PREFIX,
    internal: Sequence[DestinationConfig] = (),
) -> AdminHandle:
    """Open the queue for status, dead letters and replay (no workers, no credentials); ``internal``
    adds the gateway's own destinations (the subscriptions')."""
    queue = open_queue(queue_url, clock=SystemClock(), lease=sections.delivery.lease, prefix=prefix)
    admin = DeliveryAdmin(
        queue, (*sections.destinations, *internal), feed=feed,
        heartbeat_interval=sections.delivery.heartbeat_interval,
    )
    return AdminHandle(queue, admin)
