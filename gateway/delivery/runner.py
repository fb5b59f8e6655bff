"""Running delivery from settings: the code path behind ``gateway worker`` and the queue CLI.

    sections = delivery_sections(settings, destinations_file=None)
    await run_worker(settings.store_url, settings.queue_url, sections, environ=os.environ)

Destinations come from ``settings.destinations`` / ``settings.delivery`` or, when given,
from a separate YAML file with the same two sections (``--destinations FILE``), e.g. a
file mounted next to the secrets it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from gateway.connectors import DeliveryConfigError, SystemClock
from gateway.delivery.admin import DeliveryAdmin
from gateway.delivery.config import DeliverySettings, DestinationConfig
from gateway.delivery.queue import DeliveryQueue
from gateway.delivery.queue_factory import open_queue
from gateway.delivery.service import DeliveryService

log = logging.getLogger(__name__)


class DeliverySections(BaseModel):
    """The ``destinations`` and ``delivery`` sections of a config."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    destinations: tuple[DestinationConfig, ...] = ()
    delivery: DeliverySettings = DeliverySettings()

    @model_validator(mode="after")
    def _unique_names(self) -> DeliverySections:
        names = [d.name for d in self.destinations]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"destination names must be unique: {', '.join(duplicates)}")
        return self


def delivery_sections(settings: object, destinations_file: Path | None = None) -> DeliverySections:
    """The delivery sections from ``destinations_file`` if given, else from ``settings``."""
    if destinations_file is not None:
        from gateway.settings import read_config_file

        data = read_config_file(destinations_file)
    else:
        data = {
            "destinations": getattr(settings, "destinations", ()),
            "delivery": getattr(settings, "delivery", DeliverySettings()),
        }
    try:
        return TypeAdapter(DeliverySections).validate_python(data, from_attributes=True)
    except ValidationError as exc:
        if destinations_file is not None:
            from gateway.settings import fhirpath_error_in_file

            located = fhirpath_error_in_file(exc, destinations_file, data)
            if located is not None:
                raise DeliveryConfigError(located) from exc
        where = f" in {destinations_file}" if destinations_file else ""
        first = exc.errors(include_url=False, include_input=False)[0]
        path = ".".join(str(p) for p in first.get("loc", ()))
        raise DeliveryConfigError(f"{path}{where}: {first.get('msg', 'invalid')}") from exc


@dataclass(frozen=True, slots=True)
class AdminHandle:
    """A queue opened for operator commands, with its admin facade."""

    queue: DeliveryQueue
    admin: DeliveryAdmin


def open_admin(queue_url: str, sections: DeliverySections) -> AdminHandle:
    """Open the queue for status, dead letters and replay (no workers, no credentials)."""
    queue = open_queue(queue_url, clock=SystemClock(), lease=sections.delivery.lease)
    return AdminHandle(queue, DeliveryAdmin(queue, sections.destinations))


async def run_worker(
    store_url: str,
    queue_url: str,
    sections: DeliverySections,
    *,
    environ: Mapping[str, str],
    only: Sequence[str] | None = None,
    stop: asyncio.Event | None = None,
    scheduler: bool = True,
) -> None:
    """Run outbox and workers until SIGTERM/SIGINT (or ``stop``), then shut down gracefully.

    With ``scheduler`` the destinations' periodic tasks run here too (``gateway.scheduler``).
    """
    from gateway.store import open_store

    unknown = sorted(set(only or ()) - {d.name for d in sections.destinations})
    if unknown:
        raise DeliveryConfigError(f"unknown destination(s): {', '.join(unknown)}")
    store = open_store(store_url)
    try:
        service = DeliveryService.create(
            store=store,
            queue_url=queue_url,
            destinations=sections.destinations,
            settings=sections.delivery,
            environ=environ,
            only=only,
        )
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        await service.start()
        log.info("delivery worker running for %d destinations", len(service.connectors))
        periodic = None
        try:
            if scheduler:
                from gateway.runtime import build_scheduler

                periodic = build_scheduler(
                    sections.destinations,
                    store=store,
                    environ=environ,
                    clock=SystemClock(),
                    connectors=service.connectors,
                    only=only,
                )
                await periodic.start()
            await stop.wait()
        finally:
            if periodic is not None:
                await periodic.stop()
            await service.stop()
    finally:
        store.close()
