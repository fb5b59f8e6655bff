"""The scheduler on a manual clock: when tasks run, what a failing task does, how it stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.clock import ManualClock
from gateway.scheduler import RETRY_FIRST, RETRY_MOST, PeriodicTask, Scheduler, next_run

HOUR = 3600.0
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z: 800 s past an hour boundary


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def counting(name: str, calls: list[str], **fields: float | bool) -> PeriodicTask:
    async def run() -> str:
        calls.append(name)
        return f"run {len(calls)}"

    return PeriodicTask(name, fields.pop("interval", HOUR), run, **fields)  # type: ignore[arg-type]


def test_runs_are_at_multiples_of_the_interval_since_the_epoch_plus_the_offset() -> None:
    task = counting("t", [])
    assert next_run(task, T0) == T0 + 2800  # the next full hour
    assert next_run(task, T0 + 2800) == T0 + 2800 + HOUR  # strictly after now
    daily_at_two = counting("d", [], interval=86_400.0, offset=2 * HOUR)
    assert next_run(daily_at_two, 0.0) == 2 * HOUR
    assert next_run(daily_at_two, 2 * HOUR) == 86_400 + 2 * HOUR
    with pytest.raises(ValueError, match="positive"):
        counting("bad", [], interval=0.0)


async def test_tasks_run_at_their_times_and_at_start_when_asked() -> None:
    clock = ManualClock(T0)
    calls: list[str] = []
    daily = counting("daily", calls, interval=86_400.0, offset=2 * HOUR, run_at_start=True)
    scheduler = Scheduler([counting("hourly", calls), daily], clock)
    await scheduler.start()
    try:
        await settle()
        assert calls == ["daily"]  # at start
        await clock.advance(2799)
        await settle()
        assert calls == ["daily"]
        await clock.advance(1)
        await settle()
        assert calls == ["daily", "hourly"]
        await clock.advance(HOUR)
        await settle()
        assert calls == ["daily", "hourly", "hourly"]
        assert scheduler.runs == {"hourly": 2, "daily": 1}
    finally:
        await scheduler.stop()


async def test_a_failing_task_is_logged_without_its_message_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(T0)
    calls: list[str] = []
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("patient Amina Otieno, born 2021-03-04")  # messages can carry record data
        return "ok"

    scheduler = Scheduler([PeriodicTask("flaky", HOUR, flaky), counting("other", calls)], clock)
    await scheduler.start()
    await settle()
    caplog.set_level(logging.INFO, logger="gateway.scheduler")
    try:
        await clock.advance(2800)
        await settle()
        assert (attempts, calls) == (1, ["other"])  # the other task is not affected
        assert scheduler.failures["flaky"] == 1
        failure = next(r for r in caplog.records if r.levelno == logging.ERROR)
        assert "scheduled task flaky failed: RuntimeError" in failure.getMessage()
        assert "Amina" not in caplog.text
        await clock.advance(RETRY_FIRST - 1)
        await settle()
        assert attempts == 1
        await clock.advance(1)  # retried a minute later, not at the next hour
        await settle()
        assert attempts == 2 and scheduler.failures["flaky"] == 1 and scheduler.runs["flaky"] == 2
        await clock.advance(HOUR - RETRY_FIRST)  # the next hour's run, as usual
        await settle()
        assert attempts == 3 and calls == ["other", "other"]
    finally:
        await scheduler.stop()


async def test_a_failed_daily_run_is_retried_with_growing_pauses_until_it_succeeds() -> None:
    # A daily report that met DHIS2 down at its time went out a day later; it goes out when the link is back.
    clock = ManualClock(T0)
    tried: list[float] = []

    async def report() -> str:
        tried.append(clock.now())
        if len(tried) <= 4:
            raise ConnectionError("DHIS2 unreachable")
        return "sent"

    scheduler = Scheduler([PeriodicTask("report", 86_400.0, report)], clock)
    await scheduler.start()
    await settle()
    try:
        due = next_run(scheduler.tasks[0], T0)
        for step in (due - T0, 60, 120, 240, 480):
            await clock.advance(step)
            await settle()
        assert [t - due for t in tried] == [0, 60, 180, 420, 900]  # the fifth went out
        assert scheduler.failures["report"] == 4
        await clock.advance(86_400 - 900 - 1)
        await settle()
        assert len(tried) == 5  # no more tries that day
        await clock.advance(1)
        await settle()
        assert tried[5] == due + 86_400
    finally:
        await scheduler.stop()


async def test_retries_stop_before_the_next_run_and_never_wait_past_an_hour() -> None:
    clock = ManualClock(T0)
    tried: dict[str, list[float]] = {"hourly": [], "daily": []}

    def down(name: str) -> PeriodicTask:
        async def run() -> str:
            tried[name].append(clock.now())
            raise ConnectionError("unreachable")

        return PeriodicTask(name, 86_400.0 if name == "daily" else HOUR, run)

    scheduler = Scheduler([down("hourly"), down("daily")], clock)
    await scheduler.start()
    await settle()
    try:
        await clock.advance(next_run(scheduler.tasks[0], T0) - T0)
        for _ in range(24 * 60):
            await clock.advance(60)
            await settle()
    finally:
        await scheduler.stop()
    hourly = tried["hourly"]
    first = next_run(scheduler.tasks[0], T0)
    assert [t - first for t in hourly[:7]] == [0, 60, 180, 420, 900, 1860, HOUR]  # 31 min + 32 > the hour
    pauses = [b - a for a, b in zip(tried["daily"], tried["daily"][1:], strict=False)]
    assert pauses[:7] == [60, 120, 240, 480, 960, 1920, RETRY_MOST] and max(pauses) == RETRY_MOST


async def test_a_run_that_overruns_skips_the_missed_times_and_never_overlaps() -> None:
    clock = ManualClock(T0)
    running = 0
    most = 0
    runs = 0

    async def slow() -> str:
        nonlocal running, most, runs
        running += 1
        most = max(most, running)
        runs += 1
        await clock.sleep(2.5 * HOUR)  # takes two and a half intervals
        running -= 1
        return "done"

    scheduler = Scheduler([PeriodicTask("slow", HOUR, slow)], clock)
    await scheduler.start()
    await settle()
    try:
        await clock.advance(2800)
        await settle()
        assert runs == 1
        for _ in range(6):
            await clock.advance(HOUR / 2)
            await settle()
        # Started at the boundary B, finished at B + 2.5h, next run at B + 3h, not at B+1h, B+2h.
        assert (runs, most) == (2, 1)
    finally:
        await scheduler.stop()


async def test_stop_cancels_the_loops_and_releases_what_tasks_hold() -> None:
    clock = ManualClock(T0)
    closed: list[str] = []

    async def close() -> None:
        closed.append("client")

    calls: list[str] = []
    scheduler = Scheduler([counting("t", calls)], clock, on_stop=[close])
    await scheduler.start()
    await settle()
    await scheduler.stop()
    assert closed == ["client"]
    await clock.advance(2 * HOUR)
    await settle()
    assert calls == []


async def test_replace_keeps_unchanged_tasks_retimes_changed_ones_and_stops_removed_ones() -> None:
    """A configuration reload swaps the pull tasks (names with a prefix) and leaves the others alone."""
    clock = ManualClock(T0)
    calls: list[str] = []
    scheduler = Scheduler([counting("dhis2", calls), counting("pull-a", calls), counting("pull-b", calls)], clock)
    await scheduler.start()
    try:
        kept = {loop.get_name(): loop for loop in scheduler._loops}
        changes = await scheduler.replace("pull-", [
            counting("pull-a", calls), counting("pull-b", calls, interval=60.0), counting("pull-c", calls)])
        assert changes == ["pull-b every 60s", "pull-c every 3600s"]
        loops = {loop.get_name(): loop for loop in scheduler._loops}
        assert all(loops[name] is kept[name] for name in ("scheduled-dhis2", "scheduled-pull-a"))
        assert kept["scheduled-pull-b"].cancelled() and loops["scheduled-pull-b"] is not kept["scheduled-pull-b"]
        await settle()
        await clock.advance(40.0)  # the next minute boundary (T0 is 20 s past one)
        await settle()
        assert calls == ["pull-b"]
        assert await scheduler.replace("pull-", [counting("pull-a", calls)]) == ["pull-b stopped", "pull-c stopped"]
        assert sorted(task.name for task in scheduler.tasks) == ["dhis2", "pull-a"]
        assert sorted(loop.get_name() for loop in scheduler._loops) == ["scheduled-dhis2", "scheduled-pull-a"]
    finally:
        await scheduler.stop()
