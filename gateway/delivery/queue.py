"""The delivery queue seam: one protocol, two durable backends.

``SQLiteQueue`` (``sqlite:///path``) is the single-node default: WAL, one file, survives
``kill -9``. ``RedisQueue`` (``redis://…``) is for many workers on many machines. Both
pass ``tests/delivery/test_queue_contract.py``; ``queue_factory.open_queue`` picks one
by URL (this module imports neither).

What every backend guarantees:

* **Atomic outbox hand-over.** ``enqueue`` adds a batch of jobs *and* moves the
  destination's change-feed cursor in one transaction, compare-and-set on the old cursor:
  a crash between the two cannot lose a change or queue it twice, and two outboxes
  racing cannot both queue it.
* **Per-key order.** Only the oldest live job of an ordering key (the patient compartment)
  can be claimed; the next one becomes claimable when it is delivered or dead. A job
  that is retrying holds back only its own key.
* **Leases.** A claimed job is in flight until settled; if its worker goes silent for the
  lease period, another worker claims it again. Each claim gets a new token (in
  ``Job.receipt``), and a settlement carrying an old token is ignored, so a worker that
  was presumed dead cannot settle a job twice. ``extend`` renews only claims still held
  and says which, so a worker learns when it lost one; the lease deadline is the
  caller's clock at the claim (or renewal) plus the lease, never earlier. With that the
  worker fences its sends (``fencing``): a claim it may have lost is never sent, so a slow
  worker cannot deliver a job again after the key's later jobs.
* **Coalescing.** When asked (``coalesce=True``), ``claim`` skips a job whose resource has a
  newer version queued for the same destination, and counts it as delivered.
* **Payload retention.** A delivered job is deleted with its payload; retrying and dead
  jobs keep theirs until delivered, replayed and delivered, or purged.
* **Heartbeats.** Each worker process records, every few seconds, that it is alive and
  which destinations it serves; ``workers`` lists them with the time each was last seen
  (forgotten a day after), so the admin view tells a stopped worker from an idle one.
* **Split.** A job the destination accepted except some parts (``Split``) is delivered and,
  in the same transaction, each refused part becomes a dead job of its own (id
  ``<job id>.<part>``, the part's payload, the job's key and sequence number), listed,
  replayed and purged like any dead letter.
* **Grouped dead letters.** A burial may name a ``group`` (the destination object it was
  refused for): the dead jobs of one destination and group are listed as one dead letter
  naming every job and resource, and replaying or purging any of them acts on all; a job
  buried later with the same group joins it.
* **Accepted digests.** ``record_digests``/``accepted_digests`` keep, per destination, a
  digest of each destination object as last accepted (durable like the jobs), so a
  connector can skip objects that did not change.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.connectors import Job, RecordedRequest, RecordedResponse
from gateway.errors import QueueError as QueueError  # re-exported: the queue's error category


def reraise_if_cancelled(exc: BaseException) -> None:
    """Raise ``CancelledError`` instead of ``exc`` when the current task is being cancelled.

    Network clients sometimes surface a cancellation as their own timeout or connection
    error; handled as an ordinary failure, it would swallow the cancellation and keep a
    retry loop running after shutdown asked it to stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError() from exc


class QueueUnavailable(QueueError):
    """The queue's database cannot be reached now (retry later)."""


@dataclass(frozen=True, slots=True)
class Ack:
    """Settlement: the job was delivered."""

    job: Job


@dataclass(frozen=True, slots=True)
class Nack:
    """Settlement: the job failed transiently; try again at ``due_at``."""

    job: Job
    due_at: float
    reason: str  # error code of this attempt


@dataclass(frozen=True, slots=True)
class Bury:
    """Settlement: the job goes to the dead letters."""

    job: Job
    reason: str
    detail: str | None = None
    request: RecordedRequest | None = None
    response: RecordedResponse | None = None
    group: str | None = None  # the destination object refused; dead jobs of one group are one letter


@dataclass(frozen=True, slots=True)
class Release:
    """Settlement: give the job back untried (shutdown); it counts no attempt."""

    job: Job


@dataclass(frozen=True, slots=True)
class Split:
    """Settlement: the job was delivered except some parts, each kept as a dead job of its own.

    Each ``Bury`` in ``parts`` carries a part job made by ``part_job`` (same destination,
    key and sequence number as ``job``), with why that part died.
    """

    job: Job
    parts: tuple[Bury, ...]


Settlement = Ack | Nack | Bury | Release | Split


def part_job(job: Job, part: str, payload: bytes) -> Job:
    """The dead job of one refused part of ``job`` (id ``<job id>.<part>``)."""
    return dataclasses.replace(job, id=f"{job.id}.{part}", payload=payload, receipt="")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead job with why it died; for a group, its first job and every job it stands for."""

    job: Job
    reason: str
    died_at: float  # the latest death in the group
    attempts: int
    detail: str | None
    request: RecordedRequest | None
    response: RecordedResponse | None
    group: str | None = None
    job_ids: tuple[str, ...] = ()  # every dead job of the letter, oldest first (just ``job`` alone)
    resources: tuple[str, ...] = ()  # the FHIR resources (``Type/id``) of those jobs, distinct
    # The store's later version of the resource, on a destination that skips superseded versions:
    # that version's own job carries the change, so the letter needs nothing (see DeliveryAdmin).
    superseded_by: int | None = None

    @property
    def size(self) -> int:
        """How many dead jobs this letter stands for."""
        return len(self.job_ids) or 1


def grouped(
    letters: Sequence[DeadLetter], members: dict[tuple[str, str], list[DeadLetter]]
) -> list[DeadLetter]:
    """One letter per group: ``letters`` (newest first, one row per dead job) folded by group.

    ``members`` maps each (destination, group) to all its dead jobs, oldest first (the letter
    shows the first).
    """
    seen: set[tuple[str, str]] = set()
    result: list[DeadLetter] = []
    for letter in letters:
        if letter.group is None:
            result.append(dataclasses.replace(letter, job_ids=(letter.job.id,), resources=(letter.job.ref,)))
            continue
        key = (letter.job.destination, letter.group)
        if key in seen:
            continue
        seen.add(key)
        rows = members.get(key) or [letter]
        first = rows[0]
        result.append(
            dataclasses.replace(
                first,
                died_at=max(row.died_at for row in rows),
                job_ids=tuple(row.job.id for row in rows),
                resources=tuple(dict.fromkeys(row.job.ref for row in rows)),
            )
        )
    return result


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to list, replay or purge; None means any."""

    destination: str | None = None
    reason: str | None = None  # exact reason code, or a prefix ending in "*" (e.g. "http_4*")
    since: float | None = None  # died at or after (epoch seconds)
    until: float | None = None  # died before

    def matches_reason(self, reason: str) -> bool:
        """True if ``reason`` passes this filter's reason test."""
        if self.reason is None:
            return True
        if self.reason.endswith("*"):
            return reason.startswith(self.reason[:-1])
        return reason == self.reason


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A destination's queue, as counted by the backend."""

    destination: str
    depth: int  # live jobs: pending + in flight + retrying
    in_flight: int
    retrying: int
    dead: int
    oldest_pending_age: float | None  # seconds since the oldest live job was queued
    delivered_per_min: float  # over the last minute
    paused: bool
    circuit: str  # CircuitState value last published by a worker
    circuit_until: float | None  # when an open circuit will let a probe through
    cursor: int  # the outbox's change-feed position


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    """A worker process as its last heartbeat described it."""

    name: str
    destinations: tuple[str, ...]
    started_at: float  # epoch seconds
    last_seen: float  # epoch seconds of the last heartbeat
    in_flight: int  # jobs it was delivering then


WORKER_MEMORY = 86400.0  # a worker silent this long is dropped from ``workers``


class DeliveryQueue(Protocol):
    """A durable job queue per destination (see the module docstring for the guarantees)."""

    async def cursor(self, destination: str) -> int | None:
        """The outbox's change-feed position for ``destination`` (None: never set)."""
        ...

    async def enqueue(self, destination: str, jobs: Sequence[Job], *, after: int | None, cursor: int) -> bool:
        """Add ``jobs`` and move the cursor from ``after`` to ``cursor`` atomically; False if it moved."""
        ...

    async def claim(self, destination: str, *, worker: str, limit: int, coalesce: bool) -> list[Job]:
        """Lease up to ``limit`` due jobs, each the oldest live job of its key (none when paused)."""
        ...

    async def extend(self, jobs: Sequence[Job]) -> set[str]:
        """Renew the leases of in-flight jobs still held by their claim; the ids renewed."""
        ...

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Record what happened to claimed jobs; stale claims are ignored."""
        ...

    async def stats(self, destination: str) -> QueueStats:
        """Counts and state for one destination."""
        ...

    async def destinations(self) -> list[str]:
        """Destinations this queue has seen."""
        ...

    async def set_paused(self, destination: str, paused: bool) -> None:
        """Pause (no claims) or resume a destination."""
        ...

    async def set_circuit(self, destination: str, state: str, until: float | None) -> None:
        """Publish a circuit-breaker transition for the admin view."""
        ...

    async def heartbeat(self, beat: WorkerBeat) -> None:
        """Record that a worker is alive (replaces its previous heartbeat)."""
        ...

    async def forget_worker(self, name: str) -> None:
        """Drop a worker's heartbeat (it stopped cleanly)."""
        ...

    async def workers(self) -> list[WorkerBeat]:
        """Workers heard from within ``WORKER_MEMORY``, by name."""
        ...

    async def dead_letters(self, where: DeadLetterFilter, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters matching ``where``, newest first."""
        ...

    async def dead_letter(self, job_id: str) -> DeadLetter | None:
        """The dead letter holding dead job ``job_id`` (None if there is no such dead job)."""
        ...

    async def dead_letter_ids(self, where: DeadLetterFilter) -> list[str]:
        """Ids of all dead letters matching ``where`` (a group's first job), oldest first."""
        ...

    async def replay(self, ids: Sequence[str]) -> int:
        """Send dead jobs and their groups again (fresh attempt budget, behind their key's live jobs); how many jobs."""
        ...

    async def purge(self, ids: Sequence[str]) -> int:
        """Delete dead jobs, their groups and their payloads; how many jobs."""
        ...

    async def accepted_digests(self, destination: str, names: Sequence[str]) -> dict[str, str]:
        """The digest recorded for each of ``names`` that has one."""
        ...

    async def record_digests(self, destination: str, digests: Mapping[str, str | None]) -> None:
        """Record digests of accepted objects; a None value forgets the name."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...

