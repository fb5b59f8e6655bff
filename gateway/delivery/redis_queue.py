"""The Redis queue, for many workers on many machines (``queue_url: redis://…``).

Per destination: a stream with one consumer group holds the claimable jobs (only the
head job of each ordering key is ever in it), a sorted set holds retrying jobs by due
time, another holds in-flight jobs by lease deadline (a worker that dies simply stops
renewing, and the next claim takes its jobs over with ``XCLAIM``), a small hash per job
holds its state and a string its JSON and payload. Every transition is one Lua script
(``redis_scripts``); key names live in ``keys``.

Run Redis with persistence (``appendonly yes``) for durability across Redis restarts.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors import Job
from gateway.delivery import keys, redis_scripts
from gateway.delivery.codec import decode_detail, decode_job, encode_detail, encode_job
from gateway.delivery.queue import (
    WORKER_MEMORY,
    Ack,
    Bury,
    DeadLetter,
    DeadLetterFilter,
    Nack,
    QueueError,
    QueueStats,
    QueueUnavailable,
    Release,
    Settlement,
    Split,
    WorkerBeat,
    grouped,
    reraise_if_cancelled,
)

PROMOTE_LIMIT = 1000  # retrying jobs moved to the ready stream per claim


def _ms(seconds: float) -> str:
    return str(int(seconds * 1000))


def _s(seconds: float) -> str:
    return repr(float(seconds))


def _str(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class RedisQueue:
    """``DeliveryQueue`` on Redis (see the module docstring)."""

    def __init__(
        self, client: aioredis.Redis, *, clock: Clock, lease: float = 60.0, prefix: str = keys.DEFAULT_PREFIX
    ) -> None:
        self.redis = client
        self.clock = clock
        self.lease = lease
        self.prefix = prefix
        self._enqueue = client.register_script(redis_scripts.ENQUEUE)
        self._claim = client.register_script(redis_scripts.CLAIM)
        self._settle = client.register_script(redis_scripts.SETTLE)
        self._extend = client.register_script(redis_scripts.EXTEND)
        self._replay = client.register_script(redis_scripts.REPLAY)
        self._purge = client.register_script(redis_scripts.PURGE)

    @classmethod
    def from_url(
        cls, url: str, *, clock: Clock, lease: float = 60.0, prefix: str = keys.DEFAULT_PREFIX
    ) -> RedisQueue:
        """Connect to the Redis at ``url`` (a pool; connections are made lazily)."""
        client = aioredis.Redis.from_url(url, socket_timeout=30.0, socket_connect_timeout=5.0)
        return cls(client, clock=clock, lease=lease, prefix=prefix)

    def _base(self, destination: str) -> str:
        return keys.destination_base(self.prefix, destination)

    async def _call(self, fn: Callable[[], Any]) -> Any:
        # redis-py's asyncio commands are typed "Awaitable[T] | T"; callers type the result.
        try:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            return result
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            reraise_if_cancelled(exc)
            raise QueueUnavailable(f"redis queue unavailable: {type(exc).__name__}") from exc
        except redis.exceptions.RedisError as exc:
            reraise_if_cancelled(exc)
            raise QueueError(f"redis queue error: {exc}") from exc

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    # -- outbox -----------------------------------------------------------------------------

    async def cursor(self, destination: str) -> int | None:
        """The outbox's change-feed position for ``destination``."""
        value = await self._call(lambda: self.redis.get(self._base(destination) + keys.CURSOR))
        return None if value is None else int(value)

    async def enqueue(self, destination: str, jobs: Sequence[Job], *, after: int | None, cursor: int) -> bool:
        """Add ``jobs`` and move the cursor from ``after`` to ``cursor`` in one script."""
        args: list[Any] = ["" if after is None else str(after), str(cursor), destination]
        for job in jobs:
            args += [
                job.id,
                job.key,
                job.ref,
                str(job.seq),
                _s(job.enqueued_at),
                encode_job(job) + b"\n" + job.payload,
                "1" if job.backfill else "0",
            ]
        keys_ = [self._base(destination), keys.destinations_key(self.prefix)]
        result = await self._call(lambda: self._enqueue(keys=keys_, args=args))
        return int(result) >= 0

    # -- workers ----------------------------------------------------------------------------

    async def claim(self, destination: str, *, worker: str, limit: int, coalesce: bool) -> list[Job]:
        """Lease up to ``limit`` ready head jobs (and jobs whose lease expired)."""
        now = self.clock.now()
        args = [
            _ms(now),
            str(limit),
            worker,
            _ms(now + self.lease),
            "1" if coalesce else "0",
            str(PROMOTE_LIMIT),
        ]
        flat = await self._call(lambda: self._claim(keys=[self._base(destination)], args=args))
        jobs = []
        for i in range(0, len(flat), 5):
            job_id, body, attempts, queued, token = flat[i : i + 5]
            data, _, payload = body.partition(b"\n")
            jobs.append(
                decode_job(
                    data,
                    job_id=_str(job_id),
                    payload=payload,
                    attempts=int(attempts),
                    enqueued_at=float(queued),
                    receipt=_str(token),
                )
            )
        return jobs

    async def extend(self, jobs: Sequence[Job]) -> set[str]:
        """Renew the leases of ``jobs`` still held by the same claim; the ids renewed."""
        by_destination: dict[str, list[str]] = defaultdict(list)
        for job in jobs:
            by_destination[job.destination] += [job.id, job.receipt]
        until = _ms(self.clock.now() + self.lease)
        renewed: set[str] = set()
        for destination, pairs in by_destination.items():
            held = await self._call(
                functools.partial(self._extend, keys=[self._base(destination)], args=[until, *pairs])
            )
            renewed.update(_str(job_id) for job_id in held)
        return renewed

    async def settle(self, settlements: Sequence[Settlement]) -> None:
        """Apply acks, retries, burials, releases and splits, one script per destination."""
        now = self.clock.now()
        by_destination: dict[str, list[Any]] = defaultdict(list)
        for item in settlements:
            job = item.job
            if isinstance(item, Ack):
                row: list[Any] = ["a", job.id, job.receipt, "", "", "", "", ""]
            elif isinstance(item, Nack):
                row = ["n", job.id, job.receipt, _ms(item.due_at), str(job.attempts + 1), item.reason, "", ""]
            elif isinstance(item, Bury):
                detail = encode_detail(item.detail, item.request, item.response)
                row = ["b", job.id, job.receipt, "", str(job.attempts + 1), item.reason, detail, item.group or ""]
            elif isinstance(item, Split):
                # The parts follow their job in the same script call and apply only if it did.
                row = ["s", job.id, job.receipt, "", "", "", "", ""]
                for part in item.parts:
                    body = encode_job(part.job) + b"\n" + part.job.payload
                    detail = encode_detail(part.detail, part.request, part.response)
                    row += ["d", part.job.id, body, "", str(job.attempts + 1), part.reason, detail, part.group or ""]
            else:
                assert isinstance(item, Release)
                row = ["r", job.id, job.receipt, "", "", "", "", ""]
            by_destination[job.destination] += row
        for destination, rows in by_destination.items():
            args = [_ms(now), _s(now), *rows]
            await self._call(functools.partial(self._settle, keys=[self._base(destination)], args=args))

    # -- operations -------------------------------------------------------------------------

    async def stats(self, destination: str) -> QueueStats:
        """Counts and state for ``destination``, read in one round trip."""
        now = self.clock.now()
        base = self._base(destination)
        first_bucket = int((now - 60) // 10) + 1
        buckets = range(first_bucket, int(now // 10) + 1)

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zcard(base + keys.PENDING)
                pipe.zcard(base + keys.INFLIGHT)
                pipe.zcard(base + keys.DELAYED)
                pipe.zcard(base + keys.DEAD)
                pipe.zrange(base + keys.PENDING, 0, 0, withscores=True)
                pipe.exists(base + keys.PAUSED)
                pipe.hgetall(base + keys.CIRCUIT)
                pipe.get(base + keys.CURSOR)
                for bucket in buckets:
                    pipe.get(f"{base}{keys.DELIVERED}{bucket}")
                result: list[Any] = await pipe.execute()
                return result

        depth, in_flight, retrying, dead, oldest, paused, circuit, cursor, *delivered = await self._call(read)
        until = circuit.get(b"until")
        return QueueStats(
            destination=destination,
            depth=depth,
            in_flight=in_flight,
            retrying=retrying,
            dead=dead,
            oldest_pending_age=max(now - oldest[0][1], 0.0) if oldest else None,
            delivered_per_min=float(sum(int(n) for n in delivered if n is not None)),
            paused=bool(paused),
            circuit=_str(circuit.get(b"state")) or "closed",
            circuit_until=float(until) if until else None,
            cursor=int(cursor or 0),
        )

    async def destinations(self) -> list[str]:
        """Destinations this queue has seen."""
        names = await self._call(lambda: self.redis.smembers(keys.destinations_key(self.prefix)))
        return sorted(_str(name) for name in names)

    async def set_paused(self, destination: str, paused: bool) -> None:
        """Pause or resume ``destination`` (claims check the flag atomically)."""
        key = self._base(destination) + keys.PAUSED
        if paused:
            await self._call(lambda: self.redis.set(key, b"1"))
        else:
            await self._call(lambda: self.redis.delete(key))
        await self._call(lambda: self.redis.sadd(keys.destinations_key(self.prefix), destination))

    async def set_circuit(self, destination: str, state: str, until: float | None) -> None:
        """Publish a circuit transition."""
        mapping = {"state": state, "until": "" if until is None else _s(until)}
        await self._call(lambda: self.redis.hset(self._base(destination) + keys.CIRCUIT, mapping=mapping))

    # -- worker heartbeats -------------------------------------------------------------------

    async def heartbeat(self, beat: WorkerBeat) -> None:
        """Record that a worker is alive (one hash field per worker)."""
        value = jsonio.dumps(dataclasses.asdict(beat))
        await self._call(lambda: self.redis.hset(keys.workers_key(self.prefix), mapping={beat.name: value}))

    async def forget_worker(self, name: str) -> None:
        """Drop a worker's heartbeat."""
        await self._call(lambda: self.redis.hdel(keys.workers_key(self.prefix), name))

    async def workers(self) -> list[WorkerBeat]:
        """Workers heard from within a day, by name; older heartbeats are deleted."""
        raw = await self._call(lambda: self.redis.hgetall(keys.workers_key(self.prefix)))
        horizon = self.clock.now() - WORKER_MEMORY
        beats, stale = [], []
        for name, value in raw.items():
            data = jsonio.loads(value)
            if data["last_seen"] < horizon:
                stale.append(name)
                continue
            beats.append(WorkerBeat(**{**data, "destinations": tuple(data["destinations"])}))
        if stale:
            await self._call(lambda: self.redis.hdel(keys.workers_key(self.prefix), *stale))
        return sorted(beats, key=lambda beat: beat.name)

    async def _dead_destinations(self, where: DeadLetterFilter) -> list[str]:
        return [where.destination] if where.destination is not None else await self.destinations()

    async def dead_letters(self, where: DeadLetterFilter, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters matching ``where``, newest first (a group is one letter)."""
        letters: list[DeadLetter] = []
        high = "+inf" if where.until is None else f"({_s(where.until)}"
        low = "-inf" if where.since is None else _s(where.since)
        for destination in await self._dead_destinations(where):
            base = self._base(destination)
            start = 0
            found: list[DeadLetter] = []
            groups: set[str] = set()
            while len(groups) + sum(1 for f in found if f.group is None) < limit:
                page = 500
                ids = await self._call(
                    functools.partial(
                        self.redis.zrevrangebyscore, base + keys.DEAD, high, low, start=start, num=page
                    )
                )
                if not ids:
                    break
                start += len(ids)
                for letter in await self._load_dead(base, [_str(i) for i in ids]):
                    if where.matches_reason(letter.reason):
                        found.append(letter)
                        if letter.group is not None:
                            groups.add(letter.group)
            letters += await self._fold(base, found)
        letters.sort(key=lambda letter: letter.died_at, reverse=True)
        return letters[:limit]

    async def _fold(self, base: str, found: list[DeadLetter]) -> list[DeadLetter]:
        """``found`` (one row per dead job, newest first) as one letter per group."""
        members: dict[tuple[str, str], list[DeadLetter]] = {}
        for letter in found:
            if letter.group is not None and (letter.job.destination, letter.group) not in members:
                ids = await self._call(
                    functools.partial(self.redis.smembers, base + keys.DEAD_GROUP + letter.group)
                )
                rows = await self._load_dead(base, sorted(_str(i) for i in ids))
                rows.sort(key=lambda row: (row.died_at, row.job.seq, row.job.id))
                members[(letter.job.destination, letter.group)] = rows
        return grouped(found, members)

    async def _load_dead(self, base: str, ids: list[str]) -> list[DeadLetter]:
        fields = ["a", "e", "rsn", "died", "dtl", "grp", "s"]

        async def read() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.get(base + keys.BODY + job_id)
                    pipe.hmget(base + keys.JOB + job_id, fields)
                result: list[Any] = await pipe.execute()
                return result

        letters = []
        rows = await self._call(read)
        pairs = zip(ids, rows[0::2], rows[1::2], strict=True)
        for job_id, body, (attempts, queued, reason, died, detail, group, state) in pairs:
            if body is None or _str(state) != "dead":
                continue
            text, request, response = decode_detail(detail)
            data, _, payload = body.partition(b"\n")
            job = decode_job(
                data,
                job_id=job_id,
                payload=payload,
                attempts=int(attempts or 0),
                enqueued_at=float(queued or 0),
                receipt="",
            )
            letters.append(
                DeadLetter(
                    job,
                    _str(reason),
                    float(died or 0),
                    int(attempts or 0),
                    text,
                    request,
                    response,
                    _str(group) or None,
                )
            )
        return letters

    async def dead_letter(self, job_id: str) -> DeadLetter | None:
        """The dead letter holding dead job ``job_id``."""
        destination = job_id.rpartition(":")[0]
        base = self._base(destination)
        if await self._call(functools.partial(self.redis.zscore, base + keys.DEAD, job_id)) is None:
            return None
        found = await self._fold(base, await self._load_dead(base, [job_id]))
        return found[0] if found else None

    async def dead_letter_ids(self, where: DeadLetterFilter) -> list[str]:
        """Ids of the dead letters matching ``where`` (a group's first job), oldest first."""
        high = "+inf" if where.until is None else f"({_s(where.until)}"
        low = "-inf" if where.since is None else _s(where.since)
        result: list[tuple[float, str]] = []
        for destination in await self._dead_destinations(where):
            base = self._base(destination)
            pairs = await self._call(
                functools.partial(self.redis.zrangebyscore, base + keys.DEAD, low, high, withscores=True)
            )
            ids = [_str(member) for member, _ in pairs]
            reasons = await self._call(functools.partial(self._fields, base, ids, "rsn"))
            groups = await self._call(functools.partial(self._fields, base, ids, "grp"))
            seen: set[str] = set()
            for (member, score), reason, group in zip(pairs, reasons, groups, strict=True):
                if not where.matches_reason(reason):
                    continue
                if group:
                    if group in seen:
                        continue
                    seen.add(group)
                result.append((score, _str(member)))
        result.sort()
        return [job_id for _, job_id in result]

    async def _fields(self, base: str, ids: list[str], name: str) -> list[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(base + keys.JOB + job_id, name)
            return [_str(value) for value in await pipe.execute()]

    async def _with_groups(self, base: str, ids: list[str]) -> list[str]:
        """``ids`` with every dead job of their groups, each once."""
        groups = await self._call(functools.partial(self._fields, base, ids, "grp"))
        result: dict[str, None] = {}
        for job_id, group in zip(ids, groups, strict=True):
            if not group:
                result[job_id] = None
                continue
            members = await self._call(functools.partial(self.redis.smembers, base + keys.DEAD_GROUP + group))
            scores = await self._call(
                functools.partial(self._scores, base, sorted(_str(m) for m in members))
            )
            for _, member in sorted(scores):
                result[member] = None
            result.setdefault(job_id, None)
        return list(result)

    async def _scores(self, base: str, ids: list[str]) -> list[tuple[float, str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.zscore(base + keys.DEAD, job_id)
            scores = await pipe.execute()
        return [(float(score), job_id) for job_id, score in zip(ids, scores, strict=True) if score is not None]

    async def replay(self, ids: Sequence[str]) -> int:
        """Queue dead jobs again behind their key's live jobs, with a fresh attempt budget."""
        now = _s(self.clock.now())
        count = 0
        for destination, group in _by_destination(ids).items():
            base = self._base(destination)
            args = [now, *await self._with_groups(base, group)]
            count += int(
                await self._call(functools.partial(self._replay, keys=[self._base(destination)], args=args))
            )
        return count

    async def purge(self, ids: Sequence[str]) -> int:
        """Delete dead jobs and their payloads."""
        count = 0
        for destination, group in _by_destination(ids).items():
            base = self._base(destination)
            members = await self._with_groups(base, group)
            count += int(await self._call(functools.partial(self._purge, keys=[base], args=members)))
        return count

    # -- accepted digests -------------------------------------------------------------------

    async def accepted_digests(self, destination: str, names: Sequence[str]) -> dict[str, str]:
        """The digest recorded for each of ``names`` that has one."""
        unique = list(dict.fromkeys(names))
        if not unique:
            return {}
        key = self._base(destination) + keys.DIGESTS
        values = await self._call(functools.partial(self.redis.hmget, key, unique))
        return {name: _str(value) for name, value in zip(unique, values, strict=True) if value is not None}

    async def record_digests(self, destination: str, digests: Mapping[str, str | None]) -> None:
        """Record digests of accepted objects; None forgets one."""
        key = self._base(destination) + keys.DIGESTS
        kept = {name: digest for name, digest in digests.items() if digest is not None}
        dropped = [name for name, digest in digests.items() if digest is None]
        if kept:
            await self._call(functools.partial(self.redis.hset, key, mapping=kept))
        if dropped:
            await self._call(functools.partial(self.redis.hdel, key, *dropped))


def _by_destination(ids: Sequence[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for job_id in ids:
        destination, _, _seq = job_id.rpartition(":")
        if destination:
            groups[destination].append(job_id)
    return groups
