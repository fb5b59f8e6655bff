"""The contract every delivery queue backend passes (SQLite file and real Redis)."""

from __future__ import annotations

import dataclasses

import orjson

from gateway.clock import ManualClock
from gateway.connectors.base import Job, RecordedRequest, RecordedResponse
from gateway.delivery.queue import (
    WORKER_MEMORY,
    Ack,
    Bury,
    DeadLetterFilter,
    DeliveryQueue,
    Nack,
    Release,
    Split,
    WorkerBeat,
    part_job,
)

DEST = "shr"


def make_job(
    seq: int, key: str = "Patient/a", rid: str | None = None, *, dest: str = DEST, at: float = 0.0
) -> Job:
    rid = rid or f"o{seq}"
    payload = orjson.dumps({"resourceType": "Observation", "id": rid, "status": "final"})
    return Job(
        id=f"{dest}:{seq}",
        destination=dest,
        seq=seq,
        resource_type="Observation",
        resource_id=rid,
        version=1,
        op="create",
        key=key,
        payload=payload,
        source="commcare",
        enqueued_at=at or 1_700_000_000.0 + seq,
    )


async def enqueue(queue: DeliveryQueue, *jobs: Job, dest: str = DEST) -> None:
    after = await queue.cursor(dest)
    assert await queue.enqueue(dest, list(jobs), after=after, cursor=max(j.seq for j in jobs))


async def claim(
    queue: DeliveryQueue, limit: int = 10, *, worker: str = "w1", coalesce: bool = False
) -> list[Job]:
    return await queue.claim(DEST, worker=worker, limit=limit, coalesce=coalesce)


def seqs(jobs: list[Job]) -> list[int]:
    return sorted(job.seq for job in jobs)


async def test_enqueue_then_claim_returns_the_job_with_its_payload(queue: DeliveryQueue) -> None:
    job = make_job(1)
    assert await queue.cursor(DEST) is None
    await enqueue(queue, job)
    assert await queue.cursor(DEST) == 1
    [got] = await claim(queue)
    assert got == job  # all fields but the receipt (a lease token) round-trip
    assert got.receipt
    assert got.resource()["id"] == "o1"
    assert await claim(queue) == []  # in flight now


async def test_enqueue_is_compare_and_set_on_the_cursor(queue: DeliveryQueue) -> None:
    assert await queue.enqueue(DEST, [make_job(1)], after=None, cursor=5)
    assert not await queue.enqueue(DEST, [make_job(2, key="k2")], after=None, cursor=6)
    assert not await queue.enqueue(DEST, [make_job(3, key="k3")], after=4, cursor=6)
    assert await queue.cursor(DEST) == 5
    assert seqs(await claim(queue)) == [1]
    assert await queue.enqueue(DEST, [], after=5, cursor=9)  # a batch with no matching change
    assert await queue.cursor(DEST) == 9


async def test_enqueueing_the_same_job_id_twice_is_a_no_op(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1))
    assert await queue.enqueue(DEST, [make_job(1)], after=1, cursor=2)
    assert (await queue.stats(DEST)).depth == 1


async def test_only_the_oldest_job_of_a_key_is_claimable(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1, "Patient/a"), make_job(2, "Patient/a"), make_job(3, "Patient/b"))
    first = await claim(queue)
    assert seqs(first) == [1, 3]
    await queue.settle([Ack(job) for job in first if job.seq == 1])
    assert seqs(await claim(queue)) == [2]


async def test_a_retrying_job_holds_back_its_key_only(queue: DeliveryQueue, clock: ManualClock) -> None:
    await enqueue(queue, make_job(1, "Patient/a"), make_job(2, "Patient/a"), make_job(3, "Patient/b"))
    jobs = {job.seq: job for job in await claim(queue)}
    await queue.settle([Nack(jobs[1], due_at=clock.now() + 30, reason="http_503"), Ack(jobs[3])])
    assert await claim(queue) == []  # job 2 waits behind job 1
    stats = await queue.stats(DEST)
    assert (stats.depth, stats.retrying, stats.in_flight) == (2, 1, 0)
    await clock.advance(31)
    [retried] = await claim(queue)
    assert (retried.seq, retried.attempts) == (1, 1)
    await queue.settle([Ack(retried)])
    assert seqs(await claim(queue)) == [2]


async def test_bury_keeps_the_job_with_request_and_response_and_frees_its_key(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1, "Patient/a"), make_job(2, "Patient/a"))
    [job] = await claim(queue)
    request = RecordedRequest(
        "PUT", "https://shr/Observation/o1", {"content-type": "application/fhir+json"}, "{}"
    )
    response = RecordedResponse(
        422, {"content-type": "application/fhir+json"}, '{"resourceType":"OperationOutcome"}'
    )
    await queue.settle([Bury(job, reason="http_422", request=request, response=response)])
    assert seqs(await claim(queue)) == [2]
    [dead] = await queue.dead_letters(DeadLetterFilter(destination=DEST))
    assert (dead.job.id, dead.job.seq, dead.job.key, dead.job.attempts) == (job.id, 1, "Patient/a", 1)
    assert dead.job.payload == job.payload  # kept until replayed or purged
    assert (dead.reason, dead.attempts, dead.request, dead.response) == ("http_422", 1, request, response)
    assert (await queue.stats(DEST)).dead == 1


async def test_replay_sends_a_dead_job_again_behind_live_jobs_of_its_key(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1, "Patient/a"), make_job(2, "Patient/a"))
    [job] = await claim(queue)
    await queue.settle([Bury(job, reason="internal_error", detail="Traceback ...")])
    [second] = await claim(queue)
    letter = await queue.dead_letter(job.id)
    assert letter is not None and letter.detail == "Traceback ..."
    assert await queue.dead_letter(second.id) is None
    assert await queue.replay([job.id, "shr:999"]) == 1
    assert await queue.dead_letter(job.id) is None
    assert await claim(queue) == []  # behind job 2, still in flight
    await queue.settle([Ack(second)])
    [again] = await claim(queue)
    assert (again.seq, again.attempts) == (1, 0)
    await queue.settle([Ack(again)])
    stats = await queue.stats(DEST)
    assert (stats.depth, stats.dead) == (0, 0)
    assert await queue.replay([job.id]) == 0


async def test_a_split_job_is_delivered_and_each_refused_part_is_a_dead_letter_of_its_own(
    queue: DeliveryQueue, clock: ManualClock
) -> None:
    await enqueue(queue, make_job(1, "MeasureReport/r", rid="r"), make_job(2, "MeasureReport/r", rid="r"))
    [job] = await claim(queue)
    response = RecordedResponse(409, {"content-type": "application/json"}, '{"errorCode":"E7610"}')
    parts = tuple(
        Bury(part_job(job, f"v{n}", b'{"part":%d}' % n), f"dhis2_E76{n}0", f"value #{n}", None, response)
        for n in (1, 3)
    )
    await queue.settle([Split(job, parts)])
    assert seqs(await claim(queue)) == [2]  # the job itself counts as delivered: its key moves on
    stats = await queue.stats(DEST)
    assert (stats.dead, stats.delivered_per_min) == (2, 1)
    found = await queue.dead_letters(DeadLetterFilter(destination=DEST))
    letters = {letter.job.id: letter for letter in found}
    assert sorted(letters) == ["shr:1.v1", "shr:1.v3"]
    one = letters["shr:1.v1"]
    assert (one.reason, one.detail, one.response, one.attempts) == ("dhis2_E7610", "value #1", response, 1)
    assert (one.job.payload, one.job.seq, one.job.key) == (b'{"part":1}', 1, "MeasureReport/r")
    assert (one.job.ref, one.job.enqueued_at) == (job.ref, job.enqueued_at)
    assert await queue.dead_letter_ids(DeadLetterFilter(reason="dhis2_E7630")) == ["shr:1.v3"]
    # Replaying one part queues that part alone, behind its key's live job.
    assert await queue.replay(["shr:1.v3"]) == 1
    assert await claim(queue) == []  # job 2 is still in flight
    await queue.settle([Ack(job) for job in await claim_in_flight(queue, clock)])
    [again] = await claim(queue)
    assert (again.id, again.payload, again.attempts) == ("shr:1.v3", b'{"part":3}', 0)
    await queue.settle([Ack(again)])
    assert [letter.job.id for letter in await queue.dead_letters(DeadLetterFilter())] == ["shr:1.v1"]
    assert (await queue.stats(DEST)).depth == 0


async def claim_in_flight(queue: DeliveryQueue, clock: ManualClock) -> list[Job]:
    """Take over whatever is in flight (its lease expires), as a restarted worker would."""
    await clock.advance(61)
    return await claim(queue, worker="w9")


async def test_a_stale_split_changes_nothing(queue: DeliveryQueue, clock: ManualClock) -> None:
    await enqueue(queue, make_job(1, "a"))
    [mine] = await claim(queue, worker="w1")
    await clock.advance(61)
    [theirs] = await claim(queue, worker="w2")
    await queue.settle([Split(mine, (Bury(part_job(mine, "v0", b"{}"), "dhis2_E7610"),))])
    assert await queue.dead_letters(DeadLetterFilter()) == []
    await queue.settle([Ack(theirs)])
    assert (await queue.stats(DEST)).depth == 0


async def test_purge_deletes_dead_jobs_only(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1, "a"), make_job(2, "b"))
    one, two = sorted(await claim(queue), key=lambda j: j.seq)
    await queue.settle([Bury(one, reason="http_400")])
    assert await queue.purge([one.id, two.id]) == 1
    assert await queue.dead_letters(DeadLetterFilter()) == []
    assert (await queue.stats(DEST)).depth == 1


async def test_an_expired_lease_lets_another_worker_claim_and_stale_settlements_are_ignored(
    queue: DeliveryQueue, clock: ManualClock
) -> None:
    await enqueue(queue, make_job(1, "a"), make_job(2, "a"))
    [mine] = await claim(queue, worker="w1")
    await clock.advance(61)
    [theirs] = await claim(queue, worker="w2")
    assert theirs.id == mine.id and theirs.receipt != mine.receipt
    await queue.settle([Ack(mine)])  # the presumed-dead worker wakes up: ignored
    assert await claim(queue, worker="w2") == []
    await queue.settle([Ack(theirs)])
    assert seqs(await claim(queue, worker="w2")) == [2]


async def test_extend_renews_a_lease(queue: DeliveryQueue, clock: ManualClock) -> None:
    await enqueue(queue, make_job(1))
    [job] = await claim(queue)
    await clock.advance(50)
    assert await queue.extend([job]) == {job.id}
    await clock.advance(50)
    assert await claim(queue, worker="w2") == []
    await clock.advance(11)
    assert seqs(await claim(queue, worker="w2")) == [1]


async def test_extend_tells_a_worker_which_claims_it_lost(queue: DeliveryQueue, clock: ManualClock) -> None:
    # The worker fences its sends on this answer: a claim not renewed is never sent again.
    await enqueue(queue, make_job(1, "a"), make_job(2, "b"), make_job(3, "c"))
    mine = sorted(await claim(queue, worker="w1"), key=lambda j: j.seq)
    await clock.advance(61)
    [theirs] = [job for job in await claim(queue, worker="w2", limit=1)]
    await queue.settle([Ack(mine[2])])
    assert await queue.extend(mine) == {mine[0].id, mine[1].id} - {theirs.id}
    assert await queue.extend([theirs]) == {theirs.id}
    assert await queue.extend([]) == set()
    await queue.settle([Ack(theirs)])
    assert await queue.extend([theirs]) == set()  # settled: nothing to renew


async def test_release_returns_a_job_without_counting_an_attempt(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1))
    [job] = await claim(queue)
    await queue.settle([Release(job)])
    [again] = await claim(queue)
    assert (again.id, again.attempts) == (job.id, 0)


async def test_coalescing_skips_superseded_versions(queue: DeliveryQueue) -> None:
    await enqueue(
        queue, make_job(1, "Patient/a", rid="x"), make_job(2, "Patient/a", rid="x"), make_job(3, "b")
    )
    jobs = await claim(queue, coalesce=True)
    assert seqs(jobs) == [2, 3]
    await queue.settle([Ack(job) for job in jobs])
    stats = await queue.stats(DEST)
    assert (stats.depth, stats.delivered_per_min) == (0, 3.0)


async def test_without_coalescing_every_version_is_delivered_in_order(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1, "Patient/a", rid="x"), make_job(2, "Patient/a", rid="x"))
    [first] = await claim(queue)
    await queue.settle([Ack(first)])
    [second] = await claim(queue)
    assert (first.seq, second.seq) == (1, 2)


async def test_a_paused_destination_yields_no_jobs(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1))
    await queue.set_paused(DEST, True)
    assert await claim(queue) == []
    assert (await queue.stats(DEST)).paused
    await queue.set_paused(DEST, False)
    assert seqs(await claim(queue)) == [1]


async def test_stats_report_depth_age_rates_and_circuit(queue: DeliveryQueue, clock: ManualClock) -> None:
    now = clock.now()
    await enqueue(
        queue, make_job(1, "a", at=now - 120), make_job(2, "a", at=now - 60), make_job(3, "b", at=now)
    )
    await queue.set_circuit(DEST, "open", now + 30)
    jobs = {job.seq: job for job in await claim(queue)}
    await queue.settle([Ack(jobs[3])])
    stats = await queue.stats(DEST)
    assert (stats.depth, stats.in_flight, stats.retrying, stats.dead) == (2, 1, 0, 0)
    assert stats.oldest_pending_age == 120
    assert stats.delivered_per_min == 1
    assert (stats.circuit, stats.circuit_until, stats.cursor, stats.paused) == ("open", now + 30, 3, False)
    await clock.advance(120)
    assert (await queue.stats(DEST)).delivered_per_min == 0
    assert await queue.destinations() == [DEST]


async def test_dead_letters_filter_by_destination_reason_and_time(
    queue: DeliveryQueue, clock: ManualClock
) -> None:
    await enqueue(queue, make_job(1, "a"), make_job(2, "b"), make_job(3, "c"))
    await enqueue(queue, make_job(1, "a", dest="webhook"), dest="webhook")
    jobs = {job.seq: job for job in await claim(queue)}
    start = clock.now()
    await queue.settle([Bury(jobs[1], reason="http_422")])
    await clock.advance(100)
    await queue.settle([Bury(jobs[2], reason="http_400"), Bury(jobs[3], reason="internal_error")])
    [other] = await queue.claim("webhook", worker="w", limit=5, coalesce=False)
    await queue.settle([Bury(other, reason="http_422")])

    def ids(letters):
        return sorted(letter.job.id for letter in letters)

    assert ids(await queue.dead_letters(DeadLetterFilter())) == ["shr:1", "shr:2", "shr:3", "webhook:1"]
    assert ids(await queue.dead_letters(DeadLetterFilter(destination=DEST))) == ["shr:1", "shr:2", "shr:3"]
    assert ids(await queue.dead_letters(DeadLetterFilter(reason="http_422"))) == ["shr:1", "webhook:1"]
    assert ids(await queue.dead_letters(DeadLetterFilter(destination=DEST, reason="http_4*"))) == [
        "shr:1",
        "shr:2",
    ]
    assert ids(await queue.dead_letters(DeadLetterFilter(until=start + 50))) == ["shr:1"]
    assert ids(await queue.dead_letters(DeadLetterFilter(since=start + 50, destination=DEST))) == [
        "shr:2",
        "shr:3",
    ]
    newest_first = await queue.dead_letters(DeadLetterFilter(destination=DEST), limit=2)
    assert len(newest_first) == 2 and all(letter.job.seq in (2, 3) for letter in newest_first)
    assert await queue.dead_letter_ids(DeadLetterFilter(destination=DEST, reason="http_4*")) == [
        "shr:1",
        "shr:2",
    ]
    assert await queue.dead_letter_ids(DeadLetterFilter(since=start + 50)) == ["shr:2", "shr:3", "webhook:1"]


async def test_jobs_survive_reopening_the_queue(queue_factory) -> None:
    first = await queue_factory()
    await enqueue(first, make_job(1, "a"), make_job(2, "b"))
    [job, _] = sorted(await first.claim(DEST, worker="w", limit=5, coalesce=False), key=lambda j: j.seq)
    await first.settle([Ack(job)])
    await first.close()
    second = await queue_factory()
    assert await second.cursor(DEST) == 2
    stats = await second.stats(DEST)
    assert (stats.depth, stats.in_flight) == (1, 1)


async def test_a_delivered_job_leaves_no_payload_behind(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1))
    [job] = await claim(queue)
    await queue.settle([Ack(job)])
    assert await stored_payloads(queue) == 0


async def stored_payloads(queue: DeliveryQueue) -> int:
    """Backend-specific peek: how many job payloads are still stored."""
    from gateway.delivery.redis_queue import RedisQueue
    from gateway.delivery.sqlite_queue import SQLiteQueue

    if isinstance(queue, SQLiteQueue):
        import sqlite3

        with sqlite3.connect(queue.path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0])
    assert isinstance(queue, RedisQueue)
    return len([key async for key in queue.redis.scan_iter(match=f"{queue.prefix}:*:job:*")])


async def test_dead_jobs_of_one_group_are_one_dead_letter_replayed_and_purged_together(
    queue: DeliveryQueue, clock: ManualClock
) -> None:
    # Three jobs of one visit refused for the same DHIS2 event, one job refused for nothing shared.
    await enqueue(queue, make_job(1), make_job(2), make_job(3, key="Patient/b"), make_job(4))
    request = RecordedRequest("POST", "https://dhis2/api/tracker", {}, '{"events": []}')
    first = await claim(queue)
    assert seqs(first) == [1, 3]
    by_seq = {job.seq: job for job in first}
    await queue.settle(
        [
            Bury(by_seq[1], "dhis2_E1302", "refused", request, None, group="EVENT/ev1"),
            Bury(by_seq[3], "dhis2_E1302", "refused", None, None, group="EVENT/ev1"),
        ]
    )
    await clock.advance(5)
    [second] = await claim(queue)
    assert second.seq == 2
    await queue.settle([Bury(second, "dhis2_E1302", "refused again", group="EVENT/ev1")])
    [fourth] = await claim(queue)
    await queue.settle([Bury(fourth, "http_422", "other")])

    letters = await queue.dead_letters(DeadLetterFilter(destination=DEST))
    assert len(letters) == 2
    group = next(letter for letter in letters if letter.group == "EVENT/ev1")
    assert group.job.id == "shr:1" and group.request == request  # the first refusal, with its request
    assert sorted(group.job_ids) == ["shr:1", "shr:2", "shr:3"] and group.size == 3
    assert sorted(group.resources) == ["Observation/o1", "Observation/o2", "Observation/o3"]
    alone = next(letter for letter in letters if letter.group is None)
    assert alone.job_ids == ("shr:4",)
    assert (await queue.stats(DEST)).dead == 4  # jobs, not letters

    for member in ("shr:1", "shr:2", "shr:3"):  # any member finds the whole letter
        found = await queue.dead_letter(member)
        assert found is not None and sorted(found.job_ids) == ["shr:1", "shr:2", "shr:3"]
    ids = await queue.dead_letter_ids(DeadLetterFilter(destination=DEST))
    assert len(ids) == 2 and "shr:4" in ids

    assert await queue.replay(["shr:2"]) == 3  # one letter replays every job it stands for
    assert [letter.job.id for letter in await queue.dead_letters(DeadLetterFilter())] == ["shr:4"]
    replayed = await claim(queue)
    assert seqs(replayed) == [1, 3]  # per-key order again: 1 before 2 on Patient/a
    await queue.settle([Ack(job) for job in replayed])
    assert seqs(await claim(queue)) == [2]

    # Dying again after a replay makes a fresh letter; purging one member purges the group.
    await enqueue(queue, make_job(5, key="Patient/c"), make_job(6, key="Patient/d"))
    jobs = {job.seq: job for job in await claim(queue)}
    await queue.settle([Bury(jobs[5], "dhis2_E1018", "x", group="ENROLLMENT/en1"),
                        Bury(jobs[6], "dhis2_E1018", "x", group="ENROLLMENT/en1")])
    [letter] = await queue.dead_letters(DeadLetterFilter(reason="dhis2_E1018"))
    assert sorted(letter.job_ids) == ["shr:5", "shr:6"]
    assert await queue.purge([letter.job.id]) == 2
    assert await queue.dead_letters(DeadLetterFilter(reason="dhis2_E1018")) == []


async def test_a_refused_split_part_joins_its_group(queue: DeliveryQueue) -> None:
    await enqueue(queue, make_job(1), make_job(2, key="Patient/b"))
    one, two = sorted(await claim(queue), key=lambda job: job.seq)
    await queue.settle([Bury(one, "dhis2_E7610", "refused", group="DATAVALUE/x")])
    part = Bury(part_job(two, "v1", b"{}"), "dhis2_E7610", "refused", group="DATAVALUE/x")
    await queue.settle([Split(two, (part,))])
    [letter] = await queue.dead_letters(DeadLetterFilter())
    assert sorted(letter.job_ids) == ["shr:1", "shr:2.v1"]


async def test_accepted_digests_are_kept_per_destination_and_forgotten_on_request(
    queue: DeliveryQueue, queue_factory
) -> None:
    assert await queue.accepted_digests(DEST, ["EVENT/a", "ENROLLMENT/b"]) == {}
    await queue.record_digests(DEST, {"EVENT/a": "d1", "ENROLLMENT/b": "d2"})
    await queue.record_digests("other", {"EVENT/a": "x9"})
    await queue.record_digests(DEST, {"EVENT/a": "d3"})
    assert await queue.accepted_digests(DEST, ["EVENT/a", "ENROLLMENT/b", "EVENT/c"]) == {
        "EVENT/a": "d3",
        "ENROLLMENT/b": "d2",
    }
    assert await queue.accepted_digests("other", ["EVENT/a"]) == {"EVENT/a": "x9"}
    await queue.record_digests(DEST, {"ENROLLMENT/b": None})
    assert await queue.accepted_digests(DEST, ["ENROLLMENT/b", "EVENT/a"]) == {"EVENT/a": "d3"}
    reopened = await queue_factory()  # durable like the jobs
    assert await reopened.accepted_digests(DEST, ["EVENT/a"]) == {"EVENT/a": "d3"}


async def test_worker_heartbeats_are_listed_replaced_forgotten_and_expire(
    queue_factory, clock: ManualClock
) -> None:
    queue = await queue_factory()
    assert await queue.workers() == []
    now = clock.now()
    await queue.heartbeat(WorkerBeat("w1", ("shr", "dhis2"), started_at=now, last_seen=now, in_flight=2))
    await queue.heartbeat(WorkerBeat("w2", ("shr",), started_at=now, last_seen=now, in_flight=0))
    await clock.advance(10)
    later = WorkerBeat("w1", ("shr", "dhis2"), started_at=now, last_seen=clock.now(), in_flight=0)
    await queue.heartbeat(later)
    # Another process sharing the queue (the API next to a worker) sees the same.
    other = await queue_factory()
    assert await other.workers() == [later, WorkerBeat("w2", ("shr",), now, now, 0)]
    await other.forget_worker("w2")
    assert [beat.name for beat in await queue.workers()] == ["w1"]
    await clock.advance(WORKER_MEMORY + 1)  # silent for a day: forgotten
    assert await queue.workers() == []


# -- lanes: jobs of backfilled changes wait behind live ones ------------------------------------
def backfilled(seq: int, key: str) -> Job:
    return dataclasses.replace(make_job(seq, key=key), backfill=True)


async def test_a_live_job_is_claimed_before_a_backlog_of_backfilled_jobs(queue: DeliveryQueue) -> None:
    await enqueue(queue, *(backfilled(seq, f"Patient/b{seq}") for seq in range(1, 41)))
    await enqueue(queue, make_job(41, key="Patient/live"))
    [first] = await claim(queue, limit=1)
    assert first.seq == 41 and not first.backfill  # not behind the 40 queued before it
    rest = await claim(queue, limit=50)
    assert seqs(rest) == list(range(1, 41)) and all(job.backfill for job in rest)  # the lane round-trips


async def test_live_jobs_keep_coming_first_while_backfilled_ones_wait(queue: DeliveryQueue) -> None:
    await enqueue(queue, *(backfilled(seq, f"Patient/b{seq}") for seq in range(1, 11)))
    await enqueue(queue, *(make_job(seq, key=f"Patient/l{seq}") for seq in range(11, 14)))
    got = await claim(queue, limit=3)
    assert seqs(got) == [11, 12, 13]  # the three live ones, though queued after ten backfilled
    await queue.settle([Ack(job) for job in got])
    await enqueue(queue, make_job(14, key="Patient/l14"))
    [next_one] = await claim(queue, limit=1)
    assert next_one.seq == 14  # a live job queued later still overtakes the backlog


async def test_lanes_never_break_the_order_of_a_key(queue: DeliveryQueue) -> None:
    await enqueue(queue, backfilled(1, "Patient/a"), make_job(2, key="Patient/a"), backfilled(3, "Patient/z"))
    [first] = await claim(queue, limit=1)
    assert first.seq == 1  # the live change of Patient/a waits for the backfilled one before it
    await queue.settle([Ack(first)])
    assert [job.seq for job in await claim(queue, limit=1)] == [2]


async def test_a_retried_backfilled_job_stays_in_its_lane(queue: DeliveryQueue, clock: ManualClock) -> None:
    await enqueue(queue, backfilled(1, "Patient/b"))
    [job] = await claim(queue)
    await queue.settle([Nack(job, due_at=clock.now(), reason="http_503")])
    await enqueue(queue, make_job(2, key="Patient/live"))
    got = await claim(queue, limit=1)
    assert [j.seq for j in got] == [2]
    [again] = await claim(queue, limit=1)
    assert again.seq == 1 and again.backfill and again.attempts == 1
