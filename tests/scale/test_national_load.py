"""The national load test at a toy size (``bench/national_load.py``): 2 ``gateway serve`` and 2
``gateway worker`` processes on PostgreSQL + Redis, CHT records at a scheduled rate with a morning
peak, a DHIS2 sandbox answering in 200 ms and failing 10% of requests, partner EMR reads and
searches throughout, and API process 1 and worker 1 SIGKILLed mid-run and started again.

What must hold whatever the machine's speed: every record is acknowledged and reaches DHIS2
exactly once (one event per record, no other event, one tracked entity per child), including
the records sent after the kill, and the EMR's reads are answered throughout, during the kill too.
"""

from __future__ import annotations

from bench.national_load import Plan, redis_prefix, run

PLAN = Plan(scale=0.5, minutes=0.2, persons=10, reads_per_second=10, kill_at=0.3, down_for=1.0, retry_initial="0.2s",
            retry_max="1s", lease="3s", drain_timeout=90)  # fmt: skip


def test_no_record_is_lost_or_duplicated_across_kills_and_reads_are_answered(pg_schema_url: str) -> None:
    with redis_prefix() as prefix:
        result = run(PLAN, pg_schema_url, prefix)

    assert len(result.records) >= 50 and all(r.acked is not None for r in result.records)
    assert len(result.expected_events) == len(result.records)  # each record its own DHIS2 event
    assert set(result.accepted) == result.expected_events  # none lost, none extra
    assert result.stored["event"] == len(result.records) and result.persons_delivered == PLAN.persons

    killed, back = result.kill_window
    assert 0 < killed < back
    after_kill = [r for r in result.records if r.due >= killed]
    assert after_kill and all(r.event_uid in result.accepted for r in after_kill)

    assert result.reads and {r.status for r in result.reads} == {200}
    assert {r.kind for r in result.reads if killed <= r.at <= back} == {"read", "identifier", "obs-sorted"}
    assert any(r.failed_over for r in result.reads)  # the killed process was asked, the other answered
    assert result.dead_letters == 0
