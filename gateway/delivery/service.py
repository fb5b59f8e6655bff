"""The delivery engine as one object: outbox, worker and admin over one queue.

``gateway serve`` creates it in the app lifespan (in-process worker by default) and
``gateway worker`` runs it as its own process; both go through ``DeliveryService.create``:

    service = DeliveryService.create(
        store=store, queue_url=settings.queue_url, destinations=settings.destinations,
        settings=settings.delivery, environ=os.environ, run_worker=True,
    )
    await service.start()      # outbox loop + claim/settle loops
    service.notify()           # optional: a write committed, look at the feed now
    ...
    await service.stop()       # graceful: in-flight jobs finish or are released

With ``run_worker=False`` nothing runs and no credentials are read: the service only
serves the admin view (``service.admin``) of a queue that other processes work on.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence

import httpx

from gateway.clock import Clock, SystemClock, wait_event
from gateway.connectors import Connector, Redaction, resolve_credentials
from gateway.delivery.admin import DeliveryAdmin
from gateway.delivery.alerts import run_alerts
from gateway.delivery.breaker import CircuitBreaker
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.factory import ConnectorFactory, build_connector, default_factories
from gateway.delivery.journal import Journal
from gateway.delivery.keys import DEFAULT_PREFIX
from gateway.delivery.outbox import FeedFollower, FollowerFactory, Outbox
from gateway.delivery.queue import DeliveryQueue, reraise_if_cancelled
from gateway.delivery.queue_factory import open_queue
from gateway.delivery.worker import DestinationRuntime, Worker
from gateway.errors import raised_at
from gateway.store import Store

log = logging.getLogger(__name__)

MAX_OUTBOX_BACKOFF = 30.0


class DeliveryService:
    """Outbox + worker + admin for a set of destinations (see the module docstring)."""

    def __init__(
        self,
        *,
        store: Store,
        queue: DeliveryQueue,
        destinations: Sequence[DestinationConfig],
        connectors: Mapping[str, Connector],
        settings: DeliverySettings,
        clock: Clock,
        redactions: Mapping[str, Redaction] | None = None,
        worker_name: str | None = None,
        rand: Callable[[], float] = random.random,
        alerts: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        journal: Journal | None = None,
        followers: Sequence[FeedFollower] = (),
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.settings = settings
        self.connectors = dict(connectors)
        self.admin = DeliveryAdmin(
            queue, destinations, feed=store, clock=clock, heartbeat_interval=settings.heartbeat_interval
        )
        active = [d for d in destinations if d.enabled and d.name in self.connectors]
        self.followers = list(followers)
        followed = {name for follower in self.followers for name in follower.destinations}
        self.outbox = Outbox(store, queue, [d for d in active if d.name not in followed], clock,
                             batch=settings.outbox_batch)
        runtimes = [
            DestinationRuntime(
                config=d,
                connector=self.connectors[d.name],
                policy=settings.retry_for(d),
                breaker=CircuitBreaker(settings.breaker_for(d)),
                redaction=(redactions or {}).get(d.name, Redaction()),
            )
            for d in active
        ]
        self.worker = Worker(
            queue,
            runtimes,
            clock,
            name=worker_name,
            poll_interval=settings.poll_interval,
            lease=settings.lease,
            drain_timeout=settings.drain_timeout,
            settle_batch=settings.settle_batch,
            heartbeat_interval=settings.heartbeat_interval,
            rand=rand,
            journal=journal,
        )
        self._changed = asyncio.Event()
        self._alerts = alerts and settings.alerts.webhook_url is not None
        self._alert_transport = transport
        self._alert_task: asyncio.Task[None] | None = None
        self._alert_client: httpx.AsyncClient | None = None
        self._outbox_task: asyncio.Task[None] | None = None
        self._running = False
        self._stopping = False

    @classmethod
    def create(
        cls,
        *,
        store: Store,
        queue_url: str,
        destinations: Sequence[DestinationConfig],
        settings: DeliverySettings,
        environ: Mapping[str, str],
        run_worker: bool = True,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        factories: Mapping[str, ConnectorFactory] | None = None,
        queue_prefix: str = DEFAULT_PREFIX,
        only: Sequence[str] | None = None,
        alerts: bool = False,
        journal: Journal | None = None,
        extra_factories: Mapping[str, ConnectorFactory] | None = None,
        followers: Sequence[FollowerFactory] = (),
    ) -> DeliveryService:
        """Open the queue and, if this process delivers, build the connectors.

        ``only`` limits the worker and outbox to some destinations (the admin view keeps all);
        ``alerts`` runs the alert checks (``delivery.alerts``) in this process.
        ``journal`` receives a message log line per delivery attempt.
        ``extra_factories`` add connector kinds built elsewhere (the subscriptions' ``rest-hook``);
        ``followers`` read the change feed for destinations of their own (built over the opened queue).
        """
        clock = clock or SystemClock()
        queue = open_queue(queue_url, clock=clock, lease=settings.lease, prefix=queue_prefix)
        connectors: dict[str, Connector] = {}
        redactions: dict[str, Redaction] = {}
        if run_worker:
            factories = factories if factories is not None else default_factories(store, queue)
            factories = {**factories, **(extra_factories or {})}
            for destination in destinations:
                if destination.enabled and (only is None or destination.name in only):
                    connectors[destination.name] = build_connector(
                        destination, environ=environ, clock=clock, transport=transport, factories=factories
                    )
                    if destination.auth is not None:
                        redactions[destination.name] = resolve_credentials(destination.auth, environ).redaction()
        return cls(
            store=store,
            queue=queue,
            destinations=destinations,
            connectors=connectors,
            settings=settings,
            clock=clock,
            redactions=redactions,
            alerts=alerts,
            transport=transport,
            journal=journal,
            followers=[make(queue) for make in followers] if run_worker else (),
        )

    async def start(self) -> None:
        """Start the alert checks (if asked), the outbox loop and the worker (no-op without connectors)."""
        if self._alerts and self._alert_task is None:
            self._alert_client = httpx.AsyncClient(transport=self._alert_transport)
            self._alert_task = asyncio.create_task(
                run_alerts(self.admin, self.settings.alerts, self.clock, self._alert_client), name="delivery-alerts"
            )
        if self._running or not self.connectors:
            return
        self._running = True
        self._stopping = False
        await self.worker.start()
        self._outbox_task = asyncio.create_task(self._outbox_loop(), name="delivery-outbox")

    async def stop(self) -> None:
        """Stop the alert checks and the outbox, drain the worker, close connectors and the queue."""
        if self._alert_task is not None:
            self._alert_task.cancel()
            await asyncio.gather(self._alert_task, return_exceptions=True)
            self._alert_task = None
        if self._alert_client is not None:
            await self._alert_client.aclose()
            self._alert_client = None
        if self._outbox_task is not None:
            self._stopping = True
            self._changed.set()
            done, _ = await asyncio.wait({self._outbox_task}, timeout=self.settings.drain_timeout)
            if not done:
                self._outbox_task.cancel()
            await asyncio.gather(self._outbox_task, return_exceptions=True)
            self._outbox_task = None
        if self._running:
            await self.worker.stop()
            self._running = False
        for connector in self.connectors.values():
            await connector.aclose()
        await self.queue.close()

    def notify(self) -> None:
        """A write was committed: look at the change feed now rather than at the next poll."""
        self._changed.set()

    async def _outbox_loop(self) -> None:
        backoff = self.settings.poll_interval
        while not self._stopping:
            self._changed.clear()
            try:
                queued = await self.outbox.run_once()
                for follower in self.followers:
                    queued.update(await follower.run_once())
            except Exception as exc:  # store or queue down: keep the loop alive, retry with backoff
                reraise_if_cancelled(exc)
                # The type and place only: messages of database errors can quote row data.
                log.error("delivery outbox: %s at %s; retrying in %.1fs", type(exc).__name__, raised_at(exc), backoff)
                await self.clock.sleep(backoff)
                backoff = min(backoff * 2, MAX_OUTBOX_BACKOFF)
                continue
            backoff = self.settings.poll_interval
            for name, count in queued.items():
                if count:
                    self.worker.wake(name)
            if not queued:
                await wait_event(self._changed, self.settings.poll_interval, self.clock)
