"""Overdue referrals on both store backends: which Tasks are marked, and that a second run marks nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.connectors.referral import REFERRAL_STATUS_SYSTEM, ReferralSettings, due_at, mark_overdue
from gateway.store import Store

FULFILL = {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]}
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()


def _task(rid: str, **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "id": rid, "status": "requested", "intent": "order", "code": FULFILL, **fields}


def _stored(store: Store, rid: str) -> dict[str, Any]:
    found = store.read("Task", rid)
    assert found is not None
    value: dict[str, Any] = orjson.loads(found.content)
    return value


def test_tasks_past_their_follow_up_date_or_the_setting_are_marked_overdue(store: Store) -> None:
    tasks = [
        _task("past-follow-up", authoredOn="2025-05-30", restriction={"period": {"end": "2025-05-31"}}),
        _task("follow-up-today", authoredOn="2025-05-01", restriction={"period": {"end": "2025-06-01"}}),
        _task("authored-long-ago", authoredOn="2025-05-20T08:00:00Z"),
        _task("authored-recently", authoredOn="2025-05-30T08:00:00Z"),
        _task("received-long-ago", status="received", authoredOn="2025-05-01"),
        _task("completed", status="completed", authoredOn="2025-05-01"),
        _task("no-dates"),
        {**_task("identity-review", authoredOn="2025-05-01"), "code": {"coding": [{"code": "identity-review"}]}},
    ]
    with store.transaction() as tx:
        for task in tasks:
            tx.create(task, rid=task["id"])
    settings = ReferralSettings(overdue_after=7 * 86_400)
    assert mark_overdue(store, settings, NOW) == 3
    for rid in ("past-follow-up", "authored-long-ago", "received-long-ago"):
        task = _stored(store, rid)
        assert task["businessStatus"]["coding"][0] == {"system": REFERRAL_STATUS_SYSTEM, "code": "overdue",
                                                       "display": "Overdue"}  # fmt: skip
        assert task["lastModified"] == "2025-06-01T12:00:00Z"
        assert task["status"] in ("requested", "received")  # the facility may still act
    for rid in ("follow-up-today", "authored-recently", "completed", "no-dates", "identity-review"):
        assert "businessStatus" not in _stored(store, rid)
    assert mark_overdue(store, settings, NOW) == 0  # already marked: no new version
    assert store.read("Task", "past-follow-up").version == 2  # type: ignore[union-attr]


def test_many_waiting_tasks_are_all_looked_at(store: Store) -> None:
    with store.transaction() as tx:
        for n in range(450):  # more than one page, due and not due interleaved
            authored = "2025-05-01" if n % 3 else "2025-05-31T00:00:00Z"
            tx.create(_task(f"t{n:03d}", authoredOn=authored), rid=f"t{n:03d}")
    assert mark_overdue(store, ReferralSettings(), NOW) == 300


def test_due_dates() -> None:
    week = 7 * 86_400.0
    assert due_at(_task("a", restriction={"period": {"end": "2025-05-16"}}), week) == datetime(2025, 5, 17, tzinfo=UTC)
    assert due_at(_task("b", authoredOn="2025-05-14T08:59:05.211Z"), week) == \
        datetime(2025, 5, 21, 8, 59, 5, 211000, tzinfo=UTC)  # fmt: skip
    assert due_at(_task("c"), week) is None


def test_partial_follow_up_dates_end_with_their_month_or_year() -> None:
    week = 7 * 86_400.0
    assert due_at(_task("m", restriction={"period": {"end": "2025-04"}}), week) == datetime(2025, 5, 1, tzinfo=UTC)
    assert due_at(_task("d", restriction={"period": {"end": "2025-12"}}), week) == datetime(2026, 1, 1, tzinfo=UTC)
    assert due_at(_task("y", restriction={"period": {"end": "2025"}}), week) == datetime(2026, 1, 1, tzinfo=UTC)


def test_the_command_line_runs_the_check_now(tmp_path: Any) -> None:
    import yaml
    from typer.testing import CliRunner

    from gateway.cli.main import app
    from gateway.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/store.db")
    try:
        with store.transaction() as tx:
            tx.create(_task("late", authoredOn="2025-01-01"), rid="late")
            tx.create(_task("soon", authoredOn="2025-01-01", restriction={"period": {"end": "2999-01-01"}}), rid="soon")
    finally:
        store.close()
    config = tmp_path / "gateway.yaml"
    settings = {"store_url": f"sqlite:///{tmp_path}/store.db", "referral": {"overdue_after": "3d"}}
    config.write_text(yaml.safe_dump(settings))
    first = CliRunner().invoke(app, ["referrals", "overdue", "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert "1 referral(s) marked overdue" in first.output
    again = CliRunner().invoke(app, ["referrals", "overdue", "--config", str(config)])
    assert "0 referral(s) marked overdue" in again.output


async def test_the_scheduler_runs_the_check_when_it_is_on(sqlite_store: Store) -> None:
    from gateway.clock import ManualClock
    from gateway.services import build_scheduler

    with sqlite_store.transaction() as tx:
        tx.create(_task("late", authoredOn="2025-05-01"), rid="late")
    common: dict[str, Any] = {"store": sqlite_store, "environ": {}, "clock": ManualClock(start=NOW), "connectors": {}}
    off = build_scheduler([], referral=ReferralSettings(overdue_check=False), **common)
    assert "referral-overdue" not in [task.name for task in off.tasks]
    scheduler = build_scheduler([], referral=ReferralSettings(check_interval="30m"), **common)
    (check,) = [task for task in scheduler.tasks if task.name == "referral-overdue"]
    assert check.interval == 1800 and check.cluster_once
    assert await scheduler.run_once("referral-overdue")
    assert _stored(sqlite_store, "late")["businessStatus"]["coding"][0]["code"] == "overdue"
