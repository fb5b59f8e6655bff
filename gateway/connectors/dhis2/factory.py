"""Building a ``kind: dhis2`` connector for the delivery engine (``create_connector``, ``dhis2_factory``)."""

from __future__ import annotations

from functools import partial

import httpx

from gateway.clock import Clock
from gateway.connectors.base import Connector, DigestStore
from gateway.connectors.config import DeliveryConfigError, Destination
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.config import Dhis2Options
from gateway.connectors.dhis2.connector import Dhis2Connector
from gateway.connectors.dhis2.metadata import MetadataCache
from gateway.connectors.dhis2.sources import ResourceSource, StoreResourceSource
from gateway.connectors.dhis2.writeback import WriteBack, identifier_systems
from gateway.mapping import MappingLoadError
from gateway.store import ResourceStore

__all__ = ["create_connector", "dhis2_factory"]


def create_connector(
    destination: Destination,
    *,
    client: httpx.AsyncClient,
    clock: Clock,
    source: ResourceSource | None = None,
    store: ResourceStore | None = None,
    digests: DigestStore | None = None,
) -> Connector:
    """The connector of a ``kind: dhis2`` destination (mappings checked now if metadata is cached)."""
    if source is None:
        raise DeliveryConfigError(
            f"destination {destination.name}: the dhis2 connector reads related resources from the store; "
            "build it with gateway.connectors.dhis2.dhis2_factory(store)"
        )
    try:
        options = Dhis2Options.model_validate(destination.options)
    except ValueError as exc:
        raise DeliveryConfigError(f"destination {destination.name}: invalid dhis2 options: {exc}") from exc
    if options.mapping is None and options.aggregate_mapping is None:
        raise DeliveryConfigError(
            f"destination {destination.name}: set options.mapping and/or aggregate_mapping"
        )
    snapshot = None
    if options.metadata_cache is not None and options.metadata_cache.exists():
        snapshot = MetadataCache(options.metadata_cache).snapshot
    dhis2 = Dhis2Client(destination.base_url, http=client)
    writeback = None
    if store is not None and options.write_back_identifiers:
        base = options.identifier_system_base or f"{destination.base_url.rstrip('/')}/api/tracker"
        writeback = WriteBack(store, destination.name, identifier_systems(base))
    try:
        return Dhis2Connector(
            dhis2,
            options,
            source,
            clock,
            snapshot=snapshot,
            writeback=writeback,
            digests=digests if options.skip_unchanged else None,
            destination=destination.name,
        )
    except MappingLoadError as exc:
        raise DeliveryConfigError(f"destination {destination.name}: mapping problems:\n{exc}") from exc


def dhis2_factory(store: ResourceStore, digests: DigestStore | None = None) -> partial[Connector]:
    """A ``ConnectorFactory`` for ``kind: dhis2`` reading related resources from ``store`` (and writing UIDs back).

    With ``digests`` (the delivery queue) objects unchanged since DHIS2 accepted them are not sent.
    """
    return partial(create_connector, source=StoreResourceSource(store), store=store, digests=digests)
