"""Building ``cht-api`` and ``commcare-api`` connectors: options, the source's mapping set, the store."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from gateway.clock import Clock
from gateway.connectors.base import Connector
from gateway.connectors.config import DeliveryConfigError, Destination
from gateway.connectors.referral.config import ReturnOptions
from gateway.connectors.referral.connector import ChtConnector, CommCareConnector
from gateway.mapping import MappingSet, load_mappings
from gateway.store import ResourceStore

__all__ = ["return_factories"]

ReturnFactory = Callable[..., Connector]


def _mapping_set(destination: Destination, folder: Path) -> MappingSet:
    loaded = load_mappings(folder.resolve().parent)
    chosen = [s for s in loaded.sets.values() if Path(s.folder).resolve() == folder.resolve()]
    problems = [str(issue) for issue in loaded.issues if issue.file.startswith(str(folder))]
    if problems or not chosen:
        detail = "\n".join(problems) or f"{folder}: no mapping set (set.yaml) here"
        raise DeliveryConfigError(f"destination {destination.name}: options.mapping: {detail}")
    if not chosen[0].outbound:
        raise DeliveryConfigError(f"destination {destination.name}: {folder}/outbound/ holds no outbound mapping")
    return chosen[0]


def return_factories(store: ResourceStore) -> dict[str, ReturnFactory]:
    """The ``cht-api`` and ``commcare-api`` factories, reading the Task's related resources from ``store``."""

    def build(kind: type[ChtConnector | CommCareConnector], destination: Destination, *,
              client: httpx.AsyncClient, clock: Clock) -> Connector:  # fmt: skip
        try:
            options = ReturnOptions.model_validate(destination.options)
        except ValueError as exc:
            raise DeliveryConfigError(f"destination {destination.name}: invalid options: {exc}") from exc
        if kind is CommCareConnector and not options.domain:
            raise DeliveryConfigError(f"destination {destination.name}: options.domain is required")
        mapping_set = _mapping_set(destination, options.mapping)
        return kind(client, destination.base_url, clock, store=store, system=mapping_set.system,
                    mappings=mapping_set.outbound, options=options)  # fmt: skip

    return {"cht-api": partial(build, ChtConnector), "commcare-api": partial(build, CommCareConnector)}
