"""Building a ``kind: client-registry`` connector for the delivery engine."""

from __future__ import annotations

from functools import partial

import httpx
import pydantic

from gateway.clock import Clock
from gateway.connectors.base import Connector
from gateway.connectors.client_registry.config import ClientRegistryOptions
from gateway.connectors.client_registry.connector import ClientRegistryConnector
from gateway.connectors.client_registry.exchanges import RegistryApi
from gateway.connectors.config import DeliveryConfigError, Destination
from gateway.connectors.dhis2 import WriteBack
from gateway.store import ResourceStore


def create_connector(
    destination: Destination, *, client: httpx.AsyncClient, clock: Clock, store: ResourceStore | None = None
) -> Connector:
    """The connector of a ``kind: client-registry`` destination (national ids written back into ``store``)."""
    try:
        options = ClientRegistryOptions.model_validate(destination.options)
    except pydantic.ValidationError as exc:
        raise DeliveryConfigError(f"destination {destination.name}: invalid client-registry options: {exc}") from exc
    api = RegistryApi(client, destination.base_url, clock)
    writeback = None
    if store is not None and options.write_back:
        system = options.national_id_system or f"{api.base_url}/Patient"
        writeback = WriteBack(store, destination.name, {"CRUID": system}, label="client registry")
    return ClientRegistryConnector(api, options, writeback)


def client_registry_factory(store: ResourceStore) -> partial[Connector]:
    """A ``ConnectorFactory`` for ``kind: client-registry`` writing national ids back into ``store``."""
    return partial(create_connector, store=store)
