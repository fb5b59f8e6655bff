"""Notification latency (issue 16): commit → subscriber receipt, p50/p99, next to a plain webhook
destination receiving the same changes in the same run.

One gateway app (``gateway serve``'s shape: API, outbox, subscriptions feed and delivery worker in
one process, on a fresh SQLite store and a SQLite or Redis queue) takes ``--changes`` new Patients
through ``POST /fhir/Patient`` at ``--rate`` per second. Three receivers listen on one loopback
uvicorn server:

* ``webhook`` (the baseline): a configured ``webhook`` destination for Patients, i.e. the delivery
  engine's own commit → receipt latency;
* ``subscription id-only`` and ``subscription full-resource``: rest-hook subscriptions to the
  new-patient topic, received by the subscriber stand-in (``subscriber_sandbox``).

A change's latency is its receipt time minus the time its ``201`` came back (the commit happened
just before). The outbox looks at the feed every ``delivery.poll_interval`` (``--poll``), so that
interval bounds both rows alike; the ratio shows what subscriptions add (matching by search,
event numbering, building the Bundle). The machine is shared with other work: numbers are as
measured under that load.

Run: ``python -m bench.notification_latency [--changes N] [--rate N] [--poll S] [--queue sqlite|redis]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from bench.pull_bench import serve
from gateway.api.app import create_app
from gateway.auth import hash_token, new_token
from gateway.delivery import DeliverySettings, DestinationConfig, SubscriptionFilter
from gateway.services import ServicePlan
from gateway.settings import RateLimitSettings, Settings
from gateway.store import ApiClient, Store, open_store
from subscriber_sandbox import SubscriberSandbox

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
REDIS_URL = "redis://127.0.0.1:6379/2"


def _token(store: Store, *scopes: str) -> str:
    token = new_token()
    store.save_client(ApiClient(f"bench-{uuid.uuid4().hex[:6]}", scopes, datetime.now(UTC)), hash_token(token))
    return token


def _subscription(endpoint: str, content: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription", "status": "requested", "reason": "bench",
        "criteria": "urn:chw-gateway:topic:new-patient",
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]}},
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _measure(settings: Settings, receivers: str, sandbox: SubscriberSandbox, hooked: dict[str, float],
                   changes: int, rate: float) -> dict[str, list[float]]:
    store = open_store(settings.store_url)
    app = create_app(settings, store=store, plan=ServicePlan(delivery=True, run_worker=True))
    writer_token = _token(store, "system/*.cruds")
    emr_token = _token(store, "system/Subscription.cruds", "system/Patient.rs")
    committed: dict[str, float] = {}
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client:
            for name, content in (("id-only", "id-only"), ("full", "full-resource")):
                answer = await client.post("/fhir/Subscription", json=_subscription(f"{receivers}/sub/hook/{name}",
                                                                                    content),
                                           headers={"Authorization": f"Bearer {emr_token}"})
                if answer.json().get("status") != "active":
                    raise SystemExit(f"subscription not active: {answer.text}")
            auth = {"Authorization": f"Bearer {writer_token}"}
            for n in range(changes):
                response = await client.post("/fhir/Patient", json={"resourceType": "Patient",
                                                                    "name": [{"family": f"Bench{n}"}]}, headers=auth)
                committed[f"Patient/{response.json()['id']}"] = time.time()
                await asyncio.sleep(1.0 / rate)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                len(hooked) >= changes and all(len(sandbox.receiver(r).events) >= changes for r in ("id-only", "full"))
            ):
                await asyncio.sleep(0.05)
    finally:
        store.close()
    rows: dict[str, list[float]] = {"webhook (baseline)": [hooked[ref] - at for ref, at in committed.items()
                                                           if ref in hooked]}
    for name, label in (("id-only", "subscription id-only"), ("full", "subscription full-resource")):
        receiver = sandbox.receiver(name)
        rows[label] = [receiver.received_at[number] - committed[ref]
                       for number, bundle in receiver.events.items()
                       for ref in _focus(bundle) if ref in committed]
    return rows


def _focus(bundle: dict[str, Any]) -> list[str]:
    return [part["valueReference"]["reference"]
            for parameter in bundle["entry"][0]["resource"]["parameter"] if parameter["name"] == "notification-event"
            for part in parameter["part"] if part["name"] == "focus"]


def run(changes: int, rate: float, poll: float, queue: str) -> dict[str, list[float]]:
    """Measure once; latencies in seconds per receiver."""
    sandbox = SubscriberSandbox()
    hooked: dict[str, float] = {}

    async def webhook(request: Request) -> Response:
        resource = request.headers.get("x-gateway-resource", "")
        hooked.setdefault(resource.split("/_history")[0], time.time())
        return Response(status_code=200)

    receivers = Starlette(routes=[Route("/webhook", webhook, methods=["POST"]), Mount("/sub", sandbox.app())])
    with tempfile.TemporaryDirectory() as tmp, serve(receivers) as url:
        queue_url = f"sqlite:///{Path(tmp) / 'queue.db'}" if queue == "sqlite" else REDIS_URL
        prefix = f"bench:{uuid.uuid4().hex[:8]}"
        settings = Settings(
            store_url=f"sqlite:///{Path(tmp) / 'store.db'}", queue_url=queue_url, queue_prefix=prefix,
            allowed_hosts=["gateway.test"],
            rate_limit=RateLimitSettings(enabled=False), audit={"enabled": False}, message_log={"enabled": False},
            destinations=[DestinationConfig(name="hook", kind="webhook", base_url=f"{url}/webhook",
                                            filter=SubscriptionFilter(resource_types=("Patient",)))],
            delivery=DeliverySettings(poll_interval=poll),
        )
        try:
            return asyncio.run(_measure(settings, url, sandbox, hooked, changes, rate))
        finally:
            if queue == "redis":
                _forget(prefix)


def _forget(prefix: str) -> None:
    """Delete the run's Redis keys."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    """Print the latency table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--changes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="new Patients per second")
    parser.add_argument("--poll", type=float, default=DeliverySettings().poll_interval,
                        help="delivery.poll_interval in seconds")
    parser.add_argument("--queue", choices=("sqlite", "redis"), default="sqlite")
    args = parser.parse_args(argv)
    rows = run(args.changes, args.rate, args.poll, args.queue)
    base = rows["webhook (baseline)"]
    if not base:
        print("no webhook deliveries arrived", file=sys.stderr)
        return 1
    base50, base99 = _percentile(base, 0.5), _percentile(base, 0.99)
    print(f"notification latency, commit -> receipt: {args.changes} new Patients at {args.rate:g}/s,"
          f" poll {args.poll:g}s, {args.queue} queue")
    print(f"{'receiver':<30}{'received':>9}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'p50 x':>7}{'p99 x':>7}")
    missing = 0
    for label, values in rows.items():
        missing += args.changes - len(values)
        if not values:
            print(f"{label:<30}{0:>9}")
            continue
        p50, p99 = _percentile(values, 0.5), _percentile(values, 0.99)
        print(f"{label:<30}{len(values):>9}{p50 * 1000:>9.1f}{p99 * 1000:>9.1f}"
              f"{statistics.fmean(values) * 1000:>9.1f}{p50 / base50:>7.2f}{p99 / base99:>7.2f}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
