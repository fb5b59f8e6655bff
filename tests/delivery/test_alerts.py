"""Alerts: the webhook hears of a circuit open too long, lag over the threshold and new dead letters."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import httpx
import respx

from gateway.clock import ManualClock
from gateway.delivery.admin import DeliveryAdmin
from gateway.delivery.alerts import Alert, AlertMonitor, AlertSettings, post_alerts
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.queue import Bury
from gateway.delivery.service import DeliveryService
from gateway.delivery.sqlite_queue import SQLiteQueue
from gateway.store import open_store
from tests.delivery.helpers import eventually
from tests.delivery.test_queue_contract import make_job

HOOK = "https://alerts.example.org/hooks/gateway"
SHR = DestinationConfig(name="shr", kind="fhir", base_url="http://127.0.0.1:9/fhir")


async def test_each_condition_fires_once_repeats_after_a_while_and_resolves(tmp_path: Path) -> None:
    clock = ManualClock()
    queue = SQLiteQueue(tmp_path / "q.db", clock=clock)
    settings = AlertSettings(
        webhook_url=HOOK, circuit_open_minutes=10, lag_seconds=None, lag_changes=None, dead_letters=2,
        repeat_after=3600,
    )
    admin = DeliveryAdmin(queue, [SHR], clock=clock)
    monitor = AlertMonitor(settings, clock)

    async def check() -> list[tuple[str, str]]:  # the webhook takes every alert
        alerts = monitor.evaluate(await admin.status())
        monitor.sent(alerts)
        return [(a.alert, a.state) for a in alerts]

    try:
        assert await check() == []
        await queue.set_circuit("shr", "open", clock.now() + 5)
        assert await check() == []  # open, but not for long
        await clock.advance(9 * 60)
        assert await check() == []
        await clock.advance(61)
        assert await check() == [("circuit_open", "firing")]
        await clock.advance(600)
        assert await check() == []  # still open: not again before repeat_after
        await clock.advance(3600)
        assert await check() == [("circuit_open", "firing")]
        await queue.set_circuit("shr", "closed", None)
        assert await check() == [("circuit_open", "resolved")]
        assert await check() == []

        # Dead letters: growth by at least two between checks.
        jobs = [make_job(seq, key=f"k{seq}", at=clock.now()) for seq in (1, 2, 3)]
        await queue.enqueue("shr", jobs, after=None, cursor=3)
        claimed = await queue.claim("shr", worker="w", limit=3, coalesce=False)
        await queue.settle([Bury(claimed[0], "http_422")])
        assert await check() == []  # one is below the threshold
        await queue.settle([Bury(job, "http_422") for job in claimed[1:]])
        assert await check() == [("dead_letters", "firing")]
        assert await check() == []  # no new ones
    finally:
        await queue.close()


async def test_lag_over_the_threshold_fires(tmp_path: Path) -> None:
    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    queue = SQLiteQueue(tmp_path / "q.db", clock=clock)
    admin = DeliveryAdmin(queue, [SHR], feed=store, clock=clock)
    monitor = AlertMonitor(AlertSettings(webhook_url=HOOK, lag_seconds=None, lag_changes=2), clock)
    try:
        with store.transaction() as tx:
            tx.update({"resourceType": "Patient", "id": "a"})
            tx.update({"resourceType": "Patient", "id": "b"})
        assert monitor.evaluate(await admin.status()) == []  # two waiting: at the threshold, not over
        with store.transaction() as tx:
            tx.update({"resourceType": "Patient", "id": "c"})
        [alert] = monitor.evaluate(await admin.status())
        assert (alert.alert, alert.state, alert.value, alert.threshold) == ("delivery_lag", "firing", 3, 2)
    finally:
        await queue.close()
        store.close()


async def test_the_webhook_gets_one_json_post_per_alert_and_a_failing_hook_is_survived() -> None:
    clock = ManualClock()
    settings = AlertSettings(webhook_url=HOOK)
    with respx.mock(assert_all_called=True) as router:
        route = router.post(HOOK).mock(side_effect=[httpx.Response(204), httpx.Response(500)])
        async with httpx.AsyncClient() as client:
            alerts = [
                Alert("delivery_lag", "shr", "firing", "delivery to shr lags: 1200", 1200, 900),
                Alert("circuit_open", "dhis2", "firing", "circuit of dhis2 not closed for 12.0 min", 12, 10),
            ]
            assert await post_alerts(alerts, settings, clock, client) == alerts[:1]  # the second answered 500
    first = json.loads(route.calls[0].request.content)
    assert first == {
        "source": "chw-gateway", "alert": "delivery_lag", "destination": "shr", "state": "firing",
        "summary": "delivery to shr lags: 1200", "value": 1200, "threshold": 900, "at": clock.now(),
    }


async def test_the_api_process_posts_a_lag_alert_when_no_worker_delivers(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    alerts = AlertSettings(webhook_url=HOOK, lag_changes=1, lag_seconds=None, check_interval=0.05)
    settings = DeliverySettings(in_process_worker=False, alerts=alerts)
    with respx.mock() as router:
        route = router.post(HOOK).respond(200)
        service = DeliveryService.create(
            store=store, queue_url=f"sqlite:///{tmp_path}/q.db", destinations=[SHR], settings=settings,
            environ={}, run_worker=False, alerts=True,
        )
        await service.start()
        try:
            with store.transaction() as tx:
                tx.update({"resourceType": "Patient", "id": "a"})
                tx.update({"resourceType": "Patient", "id": "b"})
            await eventually(lambda: route.call_count >= 1)
        finally:
            await service.stop()
            store.close()
    body = json.loads(route.calls[0].request.content)
    assert (body["alert"], body["destination"], body["state"], body["value"]) == ("delivery_lag", "shr", "firing", 2)


async def test_an_alert_the_webhook_did_not_take_is_sent_again_at_the_next_check(tmp_path: Path) -> None:
    """The chat webhook is down when the lag starts (an incident rarely comes alone): the failed
    POST is logged and the alert goes again at the next check, not an hour later (``repeat_after``)
    or never (a dead-letter growth, a resolution)."""
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    alerts = AlertSettings(webhook_url=HOOK, lag_changes=1, lag_seconds=None, check_interval=0.05)
    settings = DeliverySettings(in_process_worker=False, alerts=alerts)
    with respx.mock() as router:
        route = router.post(HOOK).mock(side_effect=[httpx.Response(503), httpx.Response(204), httpx.Response(204)])
        service = DeliveryService.create(
            store=store, queue_url=f"sqlite:///{tmp_path}/q.db", destinations=[SHR], settings=settings,
            environ={}, run_worker=False, alerts=True,
        )
        await service.start()
        try:
            with store.transaction() as tx:
                tx.update({"resourceType": "Patient", "id": "a"})
                tx.update({"resourceType": "Patient", "id": "b"})
            await eventually(lambda: route.call_count >= 2, timeout=5)
        finally:
            await service.stop()
            store.close()
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert [(b["alert"], b["state"]) for b in bodies[:2]] == [("delivery_lag", "firing")] * 2
    assert len(bodies) == 2  # taken once: not again before repeat_after


async def test_a_dead_letter_or_resolved_alert_the_webhook_did_not_take_is_kept_for_the_next_check() -> None:
    clock = ManualClock()
    monitor = AlertMonitor(AlertSettings(webhook_url=HOOK, circuit_open_minutes=1, lag_seconds=None), clock)

    def row(circuit: str, dead: int) -> SimpleNamespace:
        return SimpleNamespace(name="shr", stats=SimpleNamespace(circuit=circuit, dead=dead),
                               lag_seconds=None, lag_changes=None)

    def states(alerts: list[Alert]) -> list[tuple[str, str, float]]:
        return [(a.alert, a.state, a.value) for a in alerts]

    assert monitor.evaluate([row("closed", 0)]) == []
    lost = monitor.evaluate([row("closed", 2)])
    assert states(lost) == [("dead_letters", "firing", 2)]
    # the webhook did not take it: the growth is still news at the next check, with what came since
    taken = monitor.evaluate([row("closed", 3)])
    assert states(taken) == [("dead_letters", "firing", 3)]
    monitor.sent(taken)
    assert monitor.evaluate([row("closed", 3)]) == []

    monitor.evaluate([row("open", 3)])
    await clock.advance(61)
    firing = monitor.evaluate([row("open", 3)])
    assert states(firing) == [("circuit_open", "firing", round(61 / 60, 3))]
    monitor.sent(firing)
    assert monitor.evaluate([row("open", 3)]) == []
    assert states(monitor.evaluate([row("closed", 3)])) == [("circuit_open", "resolved", 0.0)]  # not taken
    resolved = monitor.evaluate([row("closed", 3)])
    assert states(resolved) == [("circuit_open", "resolved", 0.0)]
    monitor.sent(resolved)
    assert monitor.evaluate([row("closed", 3)]) == []


async def test_a_queue_that_cannot_be_read_fires_an_alert_of_its_own(tmp_path: Path) -> None:
    """Redis down: no worker delivers, the lag grows, and the check that would tell of it cannot
    read the status. Each failed check was a log line only, so the webhook heard nothing of an
    outage however long it lasted; an unreadable status is an alert itself."""
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    alerts = AlertSettings(webhook_url=HOOK, status_unreadable_minutes=0.002, check_interval=0.05)
    settings = DeliverySettings(in_process_worker=False, alerts=alerts)
    with respx.mock() as router:
        route = router.post(HOOK).respond(204)
        service = DeliveryService.create(
            store=store, queue_url="redis://127.0.0.1:1/0", destinations=[SHR], settings=settings,
            environ={}, run_worker=False, alerts=True,
        )
        await service.start()
        try:
            await eventually(lambda: route.call_count >= 1, timeout=5)
        finally:
            await service.stop()
            store.close()
    body = json.loads(route.calls[0].request.content)
    assert (body["alert"], body["destination"], body["state"]) == ("status_unreadable", "*", "firing")
    assert body["threshold"] == 0.002 and "QueueUnavailable" in body["summary"]


async def test_an_unreadable_status_fires_once_repeats_and_resolves_when_read_again() -> None:
    clock = ManualClock()
    monitor = AlertMonitor(AlertSettings(webhook_url=HOOK, status_unreadable_minutes=5, lag_seconds=None,
                                         circuit_open_minutes=None, dead_letters=None, repeat_after=3600), clock)

    def told(alerts: list[Alert]) -> list[tuple[str, str, str]]:
        monitor.sent(alerts)
        return [(a.alert, a.destination, a.state) for a in alerts]

    assert told(monitor.unreadable("QueueUnavailable")) == []
    await clock.advance(4 * 60)
    assert told(monitor.unreadable("QueueUnavailable")) == []
    await clock.advance(61)
    assert told(monitor.unreadable("QueueUnavailable")) == [("status_unreadable", "*", "firing")]
    await clock.advance(600)
    assert told(monitor.unreadable("QueueUnavailable")) == []  # not again before repeat_after
    await clock.advance(3600)
    assert told(monitor.unreadable("StoreUnavailable")) == [("status_unreadable", "*", "firing")]
    assert told(monitor.evaluate([])) == [("status_unreadable", "*", "resolved")]
    assert told(monitor.evaluate([])) == []
    assert told(monitor.unreadable("QueueUnavailable")) == []  # a new outage counts from its own start
