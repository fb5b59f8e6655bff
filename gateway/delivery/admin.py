"""Operator actions on delivery, shared by the admin API and the CLI.

admin = DeliveryAdmin(queue, destinations)
for row in await admin.status(): ...
await admin.pause("shr")
count = await admin.replay_matching(DeadLetterFilter(destination="shr"), progress=bar.update)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gateway.clock import SystemClock
from gateway.delivery.config import DeliverySections, DestinationConfig
from gateway.delivery.queue import DeadLetter, DeadLetterFilter, DeliveryQueue, QueueStats
from gateway.delivery.queue_factory import open_queue
from gateway.errors import RequestError

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

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self.stats)
        data.pop("destination")
        return {"name": self.name, "kind": self.kind, "enabled": self.enabled, **data}


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

    def __init__(self, queue: DeliveryQueue, destinations: Sequence[DestinationConfig]) -> None:
        self.queue = queue
        self.destinations = {d.name: d for d in destinations}

    def _check(self, name: str) -> DestinationConfig:
        try:
            return self.destinations[name]
        except KeyError:
            raise UnknownDestination(f"no destination is named {name!r}") from None

    async def status(self) -> list[DestinationStatus]:
        """Every configured destination with its queue counts."""
        return [
            DestinationStatus(d.name, d.kind, d.enabled, await self.queue.stats(d.name))
            for d in self.destinations.values()
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
        return await self.queue.dead_letters(where, limit=limit)

    async def dead_letter(self, job_id: str) -> DeadLetter:
        """One dead letter by job id."""
        letter = await self.queue.dead_letter(job_id)
        if letter is None:
            raise UnknownDeadLetter(f"no dead letter has the id {job_id!r}")
        return letter

    async def replay(self, job_id: str) -> None:
        """Send one dead letter again."""
        if await self.queue.replay([job_id]) != 1:
            raise UnknownDeadLetter(f"no dead letter has the id {job_id!r}")

    async def purge(self, job_id: str) -> None:
        """Delete one dead letter and its payload (discard it)."""
        if await self.queue.purge([job_id]) != 1:
            raise UnknownDeadLetter(f"no dead letter has the id {job_id!r}")

    async def replay_matching(self, where: DeadLetterFilter, *, progress: Progress | None = None) -> int:
        """Send every dead letter matching ``where`` again, in chunks; how many."""
        return await self._in_chunks(self.queue.replay, where, progress)

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


def open_admin(queue_url: str, sections: DeliverySections) -> AdminHandle:
    """Open the queue for status, dead letters and replay (no workers, no credentials)."""
    queue = open_queue(queue_url, clock=SystemClock(), lease=sections.delivery.lease)
    return AdminHandle(queue, DeliveryAdmin(queue, sections.destinations))
