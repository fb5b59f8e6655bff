"""Building a connector for each configured destination, by kind.

``fhir`` and ``webhook`` are built here; ``dhis2`` comes from
``gateway.connectors.dhis2.dhis2_factory(store)`` (it reads related resources from the
store), a ``fhir`` destination with ``options.profile: openmrs`` from
``gateway.connectors.openmrs.openmrs_factory(store)`` (it keeps the ids OpenMRS assigns in
the store), and the referral return path (``cht-api``, ``commcare-api``) from
``gateway.connectors.referral.return_factories(store)`` (they read related resources from the
store), ``client-registry`` from
``gateway.connectors.client_registry.client_registry_factory(store)`` (it writes national ids
back), all following ``ConnectorFactory``:

    def factory(destination: DestinationConfig, *, client: httpx.AsyncClient,
                clock: Clock) -> Connector: ...

The factory receives a ready ``httpx.AsyncClient`` (credentials, timeouts, pool size
and transport already applied) and owns it from then on (``Connector.aclose`` closes it).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol, cast

import httpx

from gateway.clock import Clock
from gateway.connectors import (
    Connector,
    DeliveryConfigError,
    FhirServerConnector,
    WebhookConnector,
    resolve_credentials,
)
from gateway.connectors.openmrs import SiteStore, openmrs_factory
from gateway.delivery.config import DestinationConfig
from gateway.delivery.http import destination_client
from gateway.store import ResourceStore


class ConnectorFactory(Protocol):
    """Builds the connector of one destination kind."""

    def __call__(
        self, destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock
    ) -> Connector:
        """A connector for ``destination`` that sends through ``client``."""
        ...


def fhir_connector(destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock) -> Connector:
    """The ``fhir`` kind; ``options.mode`` is ``id`` (default) or ``identifier``."""
    if destination.options.get("profile") is not None:
        raise DeliveryConfigError(
            f"destination {destination.name}: options.profile {destination.options['profile']!r} needs the store;"
            " build it with default_factories(store)"
        )
    mode = destination.options.get("mode", "id")
    if mode not in ("id", "identifier"):
        raise DeliveryConfigError(f"destination {destination.name}: options.mode must be id or identifier")
    return FhirServerConnector(client, destination.base_url, clock, mode=mode)


def webhook_connector(
    destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock
) -> Connector:
    """The ``webhook`` kind: POST to ``base_url``."""
    return WebhookConnector(client, destination.base_url, clock)


FACTORIES: Mapping[str, ConnectorFactory] = {"fhir": fhir_connector, "webhook": webhook_connector}


def default_factories(store: object, digests: object = None) -> dict[str, ConnectorFactory]:
    """Every kind; ``dhis2`` reads related resources from ``store``, accepted digests from ``digests`` (the queue)."""

    def dhis2(destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock) -> Connector:
        # Imported only when a dhis2 destination is built: a build may leave it out, and it
        # loads the mapping engine, which processes without such a destination do not need.
        try:
            module = importlib.import_module("gateway.connectors.dhis2")
        except ImportError as exc:
            raise DeliveryConfigError("the dhis2 connector is not available in this build") from exc
        connector: Connector = module.dhis2_factory(store, digests)(destination, client=client, clock=clock)
        return connector

    def client_registry(destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock) -> Connector:
        # Lazily, like dhis2: it writes national ids back into ``store`` with DHIS2's write-back.
        module = importlib.import_module("gateway.connectors.client_registry")
        connector: Connector = module.client_registry_factory(store)(destination, client=client, clock=clock)
        return connector

    def fhir(destination: DestinationConfig, *, client: httpx.AsyncClient, clock: Clock) -> Connector:
        if destination.options.get("profile") == "openmrs":
            # The store keeps the ids OpenMRS assigns (DestinationIds); the caller passes the Store.
            return openmrs_factory(cast(SiteStore, store))(destination, client=client, clock=clock)
        return fhir_connector(destination, client=client, clock=clock)

    from gateway.connectors.referral import return_factories  # loads the mapping engine, like dhis2

    return {**FACTORIES, "fhir": fhir, "dhis2": dhis2, "client-registry": client_registry,
            **return_factories(cast(ResourceStore, store))}


def build_connector(
    destination: DestinationConfig,
    *,
    environ: Mapping[str, str],
    clock: Clock,
    transport: httpx.AsyncBaseTransport | None = None,
    factories: Mapping[str, ConnectorFactory] = FACTORIES,
) -> Connector:
    """The connector for ``destination``, with its credentials resolved from ``environ``."""
    factory = factories.get(destination.kind)
    if factory is None:
        raise DeliveryConfigError(f"destination {destination.name}: no connector for {destination.kind!r}")
    auth = resolve_credentials(destination.auth, environ).httpx_auth() if destination.auth else None
    client = destination_client(
        timeout=destination.timeout, concurrency=destination.concurrency, auth=auth, transport=transport
    )
    return factory(destination, client=client, clock=clock)
