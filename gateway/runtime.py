"""Services that run inside ``gateway serve`` next to the API (hooks for ``create_app``),
and the scheduler of periodic tasks shared with ``gateway worker``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from gateway.connectors import Clock, SystemClock
from gateway.delivery.config import DestinationConfig
from gateway.scheduler import PeriodicTask, Scheduler
from gateway.settings import Settings
from gateway.store.base import ResourceStore

if TYPE_CHECKING:
    from gateway.api.app import Hook


def service_hooks(settings: Settings, environ: Mapping[str, str]) -> list[Hook]:
    """The lifespan hooks ``gateway serve`` starts: the delivery outbox and worker, and the scheduler.

    Periodic tasks run where delivery runs: with ``delivery.in_process_worker`` (the default)
    unless ``scheduler.enabled`` is off. ``environ`` supplies destination secrets named in
    the config (the CLI passes ``os.environ``; nothing else in the package reads the environment).
    """
    from gateway.api.admin_delivery import delivery_hook

    hooks = [delivery_hook(environ)]
    if settings.scheduler.enabled and settings.delivery.in_process_worker:
        hooks.append(scheduler_hook(environ))
    return hooks


def build_scheduler(
    destinations: Sequence[DestinationConfig],
    *,
    store: ResourceStore,
    environ: Mapping[str, str],
    clock: Clock,
    connectors: Mapping[str, Any],
    only: Sequence[str] | None = None,
) -> Scheduler:
    """The scheduler of every enabled destination's periodic tasks (DHIS2 declares some)."""
    tasks: list[PeriodicTask] = []
    closers: list[Callable[[], Awaitable[None]]] = []
    for destination in destinations:
        if not destination.enabled or destination.kind != "dhis2" or (only and destination.name not in only):
            continue
        from gateway.connectors.dhis2.tasks import dhis2_tasks

        group = dhis2_tasks(
            destination, store=store, environ=environ, clock=clock, connector=connectors.get(destination.name)
        )
        tasks += group.periodic()
        closers.append(group.aclose)
    return Scheduler(tasks, clock, on_stop=closers)


def scheduler_hook(environ: Mapping[str, str], clock: Clock | None = None) -> Hook:
    """A ``create_app`` hook running the scheduler; after ``delivery_hook``, to reuse its connectors."""
    from fastapi import FastAPI

    from gateway.api.context import AppContext

    async def hook(app: FastAPI, ctx: AppContext) -> Callable[[], Awaitable[None]]:
        service = getattr(app.state, "delivery", None)
        scheduler = build_scheduler(
            ctx.settings.destinations,
            store=ctx.store,
            environ=environ,
            clock=clock or SystemClock(),
            connectors=service.connectors if service is not None else {},
        )
        await scheduler.start()
        return scheduler.stop

    return hook
