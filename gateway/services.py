"""The composition root: every long-lived object of a gateway process, built once from settings.

``gateway serve`` (through the API app's lifespan), ``gateway worker``, the CLI commands
and the tests all build their objects here, so there is one place that decides how a store,
the mappings, the delivery engine and the scheduler are put together::

    services = Services.build(settings, ServicePlan.for_serve(settings, os.environ))
    await services.start()          # delivery outbox + worker, scheduled tasks
    ...                             # services.store, services.ingest, services.delivery
    await services.stop()           # reverse order; closes what it opened

A ``ServicePlan`` says which optional parts a process runs; everything else comes from the
``Settings``. Nothing here reads the environment: destination secrets come from the
``environ`` mapping the caller passes (the CLI passes ``os.environ``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import anyio.to_thread

from gateway.audit import AuditWriter, MessageLogWriter
from gateway.clock import Clock, SystemClock
from gateway.connectors import DeliveryConfigError
from gateway.connectors.referral import ReferralSettings, overdue_task
from gateway.delivery import ConnectorFactory, DeliverySections, DeliveryService, DestinationConfig, FollowerFactory
from gateway.errors import FhirError
from gateway.export import BulkExporter
from gateway.identity import IdentityEngine, IdentityRuleError, load_rules_dir
from gateway.ingest import IngestService, MappingRegistry
from gateway.metrics import configure as configure_metrics
from gateway.pull import PullRunner, pull_tasks
from gateway.reload import Reloader, reload_on_sighup
from gateway.scheduler import Claim, PeriodicTask, Scheduler
from gateway.search import QueryParser, SearchLimits, SearchRegistry, default_registry
from gateway.settings import Settings, delivery_sections
from gateway.store import MessageEntry, ResourceStore, RunClaims, Store, open_store
from gateway.subscriptions import DESTINATION as SUBSCRIPTIONS
from gateway.subscriptions import SubscriptionService

__all__ = ["ServicePlan", "Services", "build_scheduler", "run_worker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """Which optional services a process runs next to its store (see the module docstring).

    ``delivery`` opens the delivery queue (the admin view always; outbox and worker when
    ``run_worker`` is true, or, when it is None, as ``delivery.in_process_worker`` says);
    ``sections`` replaces the settings' ``destinations``/``delivery`` (``--destinations``);
    ``scheduler`` runs the destinations' periodic tasks; ``only`` limits delivery and the
    scheduler to some destinations. The clocks default to the system clock (tests move a
    manual one). ``audit`` runs the audit writer (when ``audit.enabled``): the API's
    processes record every access; a delivery worker serves no requests. ``alerts`` runs
    the alert checks (when ``delivery.alerts.webhook_url`` is set): the API's processes do.
    ``exports`` runs bulk data export jobs (when ``bulk_export.enabled``): the API's processes do.
    """

    environ: Mapping[str, str] = field(default_factory=dict)
    ingest: bool = True
    delivery: bool = False
    sections: DeliverySections | None = None
    run_worker: bool | None = None
    scheduler: bool = False
    only: tuple[str, ...] | None = None
    delivery_clock: Clock | None = None
    scheduler_clock: Clock | None = None
    audit: bool = True
    audit_clock: Clock | None = None
    alerts: bool = True
    exports: bool = True

    @classmethod
    def for_serve(cls, settings: Settings, environ: Mapping[str, str]) -> ServicePlan:
        """What ``gateway serve`` runs: ingest, delivery, and the scheduler where delivery runs in-process."""
        scheduled = settings.scheduler.enabled and settings.delivery.in_process_worker
        return cls(environ=environ, delivery=True, scheduler=scheduled)


@dataclass(slots=True)
class Services:
    """The long-lived objects of one process; build with ``Services.build``."""

    settings: Settings
    store: Store
    registry: SearchRegistry
    parser: QueryParser
    ingest: IngestService | None = None
    delivery: DeliveryService | None = None
    scheduler: Scheduler | None = None
    audit: AuditWriter | None = None
    messages: MessageLogWriter | None = None
    exports: BulkExporter | None = None
    pulls: PullRunner | None = None
    identity: IdentityEngine | None = None
    subscriptions: SubscriptionService | None = None
    owns_store: bool = True
    reloader: Reloader | None = None  # set by ``start``: processes that run are the ones that reload

    @classmethod
    def build(cls, settings: Settings, plan: ServicePlan | None = None, *, store: Store | None = None) -> Services:
        """Open the store (unless given), compile the mappings and open the delivery queue as ``plan`` says.

        Refuses to build on broken mappings or delivery configuration; nothing is left open then.
        """
        plan = plan or ServicePlan()
        if settings.metrics.multiprocess_dir is not None:
            configure_metrics(settings.metrics.multiprocess_dir)  # before any sample is recorded
        registry = default_registry()
        search = settings.search
        opened = store or open_store(settings.store_url)
        services = cls(
            settings=settings,
            store=opened,
            registry=registry,
            parser=QueryParser(registry, search.default_count, search.max_count, SearchLimits(
                search.max_values, search.max_criteria, search.max_includes, search.max_included, search.total_cap,
                search.max_bundle_resources, search.max_sort_keys,
            )),
            owns_store=store is None,
        )
        if plan.audit and settings.audit.enabled:
            services.audit = AuditWriter(opened, settings.audit, plan.audit_clock or SystemClock())
        if settings.message_log.enabled:
            services.messages = MessageLogWriter(opened, settings.message_log, plan.audit_clock or SystemClock())
        journal = services.messages.note if services.messages is not None else None
        try:
            if plan.exports and settings.bulk_export.enabled:
                services.exports = BulkExporter(opened, settings.bulk_export)
            if settings.identity.enabled:
                services.identity = _identity(settings, opened)
            if settings.subscriptions.enabled:
                services.subscriptions = SubscriptionService(
                    opened, services.parser, registry, settings.subscriptions, base_url=_base_url(settings),
                    policies=settings.data_policies(), clock=plan.delivery_clock,
                )
            if plan.ingest:
                services.ingest = IngestService(
                    opened, services.parser, MappingRegistry(settings.mappings_dir, settings.sources), journal
                )
                services.pulls = PullRunner(services.ingest, opened, environ=plan.environ)
                if services.identity is not None:
                    services.ingest.after_commit = services.identity.catch_up
            sections = plan.sections or delivery_sections(settings)
            if plan.delivery:
                services.delivery = _delivery(settings, sections, plan, opened, journal, services.subscriptions)
            if plan.scheduler:
                services.scheduler = build_scheduler(
                    sections.destinations,
                    store=opened,
                    environ=plan.environ,
                    clock=plan.scheduler_clock or SystemClock(),
                    connectors=services.delivery.connectors if services.delivery else {},
                    only=plan.only,
                    claims=opened,
                    pulls=services.pulls,
                    referral=settings.referral,
                )
        except BaseException:
            services.close_now()
            raise
        return services

    def require_ingest(self) -> IngestService:
        """The ingest service, or a 503 ``FhirError`` when this process was built without it."""
        if self.ingest is None:
            raise FhirError("ingest is not enabled on this server", status=503, code="not-supported")
        return self.ingest

    def require_exports(self) -> BulkExporter:
        """The bulk exporter, or a 503 ``FhirError`` when this process was built without it."""
        if self.exports is None:
            raise FhirError("bulk data export is not enabled on this server", status=503, code="not-supported")
        return self.exports

    def require_subscriptions(self) -> SubscriptionService:
        """The subscriptions service, or a 503 ``FhirError`` when subscriptions are switched off."""
        if self.subscriptions is None:
            raise FhirError("subscriptions are not enabled on this server", status=503, code="not-supported")
        return self.subscriptions

    def require_delivery(self) -> DeliveryService:
        """The delivery service, or a 503 ``FhirError`` when this process was built without it."""
        if self.delivery is None:
            raise FhirError("delivery is not running in this process", status=503, code="transient")
        return self.delivery

    async def start(self) -> None:
        """Start the background parts: the audit writer, delivery (outbox and worker), then the scheduler;
        first the identity matcher's index is built from the stored Patients (and any unmatched are matched).
        The ``reloader`` notes the configuration file as it is now, to tell later which changes need a restart."""
        self.reloader = await anyio.to_thread.run_sync(Reloader, self)
        if self.identity is not None:
            await anyio.to_thread.run_sync(self.identity.catch_up)
        if self.audit is not None:
            await self.audit.start()
        if self.messages is not None:
            await self.messages.start()
        if self.exports is not None:
            await self.exports.start()
        if self.delivery is not None:
            await self.delivery.start()
            if self.subscriptions is not None and SUBSCRIPTIONS in self.delivery.connectors:
                await self.subscriptions.start()  # heartbeats go where notifications are sent from
        if self.scheduler is not None:
            await self.scheduler.start()

    async def stop(self) -> None:
        """Stop what ``start`` started and close everything, in reverse order of building."""
        try:
            if self.exports is not None:
                await self.exports.stop()
            if self.scheduler is not None:
                await self.scheduler.stop()
            if self.subscriptions is not None:
                await self.subscriptions.stop()
            if self.delivery is not None:
                # stop() also closes the queue and connectors, started or not.
                await self.delivery.stop()
            if self.ingest is not None:
                await anyio.to_thread.run_sync(self.ingest.close)
        finally:
            try:
                if self.audit is not None:
                    await self.audit.stop()  # last: it writes what the requests and admin actions left
                if self.messages is not None:
                    await self.messages.stop()
            finally:
                if self.owns_store:
                    self.store.close()

    def close_now(self) -> None:
        """Close what needs no event loop (the ingest writer and an owned store): for sync callers."""
        if self.ingest is not None:
            self.ingest.close()
        if self.messages is not None:
            self.messages.flush_now()  # what a one-shot command noted (e.g. a quarantine replay)
        if self.owns_store:
            self.store.close()

    def __enter__(self) -> Services:
        """For commands that only need the store (and ingest): ``with Services.build(...) as services``."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close_now()


def _identity(settings: Settings, store: Store) -> IdentityEngine:
    """The matcher, from the one rule file of ``identity.rules_dir`` (refused when missing or broken)."""
    directory = settings.identity.rules_dir or settings.mappings_dir / "identity"
    rules = load_rules_dir(directory)
    if rules is None:
        raise IdentityRuleError(f"{directory}: identity.enabled needs a rule file (*.yaml) here")
    return IdentityEngine(store, rules)


def _delivery(
    settings: Settings,
    sections: DeliverySections,
    plan: ServicePlan,
    store: Store,
    journal: Callable[[Sequence[MessageEntry]], None] | None,
    subscriptions: SubscriptionService | None,
) -> DeliveryService:
    """The delivery engine over the configured destinations and, with ``subscriptions``, the
    subscriptions' own destination (its connector kind and change-feed follower)."""
    destinations = tuple(sections.destinations)
    extra: dict[str, ConnectorFactory] = {}
    followers: list[FollowerFactory] = []
    if subscriptions is not None and (not plan.only or SUBSCRIPTIONS in plan.only):
        destinations += (subscriptions.destination(),)
        extra[SUBSCRIPTIONS] = subscriptions.connector
        followers.append(subscriptions.follower)
    if plan.only:
        unknown = sorted(set(plan.only) - {d.name for d in destinations})
        if unknown:
            raise DeliveryConfigError(f"unknown destination(s): {', '.join(unknown)}")
    run = sections.delivery.in_process_worker if plan.run_worker is None else plan.run_worker
    return DeliveryService.create(
        store=store,
        queue_url=settings.queue_url,
        queue_prefix=settings.queue_prefix,
        destinations=destinations,
        settings=sections.delivery,
        environ=plan.environ,
        run_worker=run,
        clock=plan.delivery_clock,
        only=plan.only,
        alerts=plan.alerts,
        journal=journal,
        extra_factories=extra,
        followers=followers,
    )


def _base_url(settings: Settings) -> str:
    """The FHIR base URL notifications name resources by (``public_base_url``, else where the gateway listens)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/fhir"


def build_scheduler(
    destinations: Sequence[DestinationConfig],
    *,
    store: ResourceStore,
    environ: Mapping[str, str],
    clock: Clock,
    connectors: Mapping[str, object],
    only: Sequence[str] | None = None,
    claims: RunClaims | None = None,
    pulls: PullRunner | None = None,
    referral: ReferralSettings | None = None,
) -> Scheduler:
    """The scheduler of every enabled destination's periodic tasks (DHIS2 declares some) and, with
    ``pulls``, of every pulled source, with ``referral``, of the overdue-referral check; with
    ``claims`` (the shared store), ``cluster_once`` tasks run once across processes."""
    from gateway.connectors.dhis2 import dhis2_tasks  # only deployments with DHIS2 pay its import

    tasks: list[PeriodicTask] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    for destination in destinations:
        if not destination.enabled or destination.kind != "dhis2" or (only and destination.name not in only):
            continue
        group = dhis2_tasks(
            destination, store=store, environ=environ, clock=clock, connector=connectors.get(destination.name)
        )
        tasks += group.periodic()
        closers.append(group.aclose)
    if pulls is not None:
        tasks += pull_tasks(pulls)
    if referral is not None and referral.overdue_check:
        tasks.append(overdue_task(store, referral, clock))
    return Scheduler(tasks, clock, on_stop=closers, claim=_store_claim(claims) if claims is not None else None)


def _store_claim(claims: RunClaims) -> Claim:
    """Scheduled runs claimed through the shared store, by this process (host and pid)."""
    holder = f"{socket.gethostname()}:{os.getpid()}"

    async def claim(task: str, slot: int) -> bool:
        return await anyio.to_thread.run_sync(claims.claim_run, task, slot, holder)

    return claim


async def run_worker(
    settings: Settings,
    sections: DeliverySections,
    *,
    environ: Mapping[str, str],
    only: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    scheduler: bool = True,
) -> None:
    """``gateway worker``: run outbox, workers (and the scheduler) until SIGTERM/SIGINT or ``stop``;
    SIGHUP reloads the sources and their pull schedules (``gateway.reload``)."""
    plan = ServicePlan(
        environ=environ,
        # Pulled sources are scheduled where the scheduler runs, and their records need ingest.
        ingest=scheduler and any(source.pull is not None for source in settings.sources),
        audit=False,
        delivery=True,
        sections=sections,
        run_worker=True,
        scheduler=scheduler,
        only=tuple(only) if only else None,
        alerts=False,  # the API process checks (module docstring of gateway.delivery.alerts)
        exports=False,
    )
    services = Services.build(settings, plan)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    stop_reloading: Callable[[], None] = lambda: None  # noqa: E731
    try:
        await services.start()
        assert services.reloader is not None
        stop_reloading = reload_on_sighup(services.reloader)
        delivery = services.require_delivery()
        log.info("delivery worker running for %d destinations", len(delivery.connectors))
        await stop.wait()
    finally:
        stop_reloading()
        await services.stop()
