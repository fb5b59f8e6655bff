"""Delivery configuration sections and the operator's view of a queue (``gateway queue …``).

    sections = delivery_sections(settings, destinations_file=None)
    handle = open_admin(settings.queue_url, sections)    # status, dead letters, replay

``gateway worker`` itself runs through the composition root (``gateway.services.run_worker``).

Destinations come from ``settings.destinations`` / ``settings.delivery`` or, when given,
from a separate YAML file with the same two sections (``--destinations FILE``), e.g. a
file mounted next to the secrets it names.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

from gateway.delivery.admin import DeliveryAdmin
from gateway.delivery.clock import SystemClock
from gateway.delivery.config import DeliveryConfigError, DeliverySettings, DestinationConfig
from gateway.delivery.queue import DeliveryQueue, open_queue

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
