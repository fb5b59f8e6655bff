"""Building the connector of a ``kind: fhir`` destination with ``options.profile: openmrs``."""

from __future__ import annotations

from functools import partial

import httpx

from gateway.clock import Clock
from gateway.connectors.base import Connector
from gateway.connectors.config import DeliveryConfigError, Destination
from gateway.connectors.openmrs.config import OpenMrsOptions
from gateway.connectors.openmrs.connector import OpenMrsConnector
from gateway.connectors.openmrs.profile import OpenMrsProfile, SiteStore
from gateway.mapping import LoadIssue, load_concept_tables

__all__ = ["create_connector", "openmrs_factory"]


def create_connector(
    destination: Destination, *, client: httpx.AsyncClient, clock: Clock, store: SiteStore
) -> Connector:
    """The OpenMRS connector of ``destination``, its ConceptMaps loaded and checked now."""
    try:
        options = OpenMrsOptions.model_validate(destination.options)
    except ValueError as exc:
        raise DeliveryConfigError(f"destination {destination.name}: invalid openmrs options: {exc}") from exc
    issues: list[LoadIssue] = []
    tables = load_concept_tables(options.conceptmaps, issues)
    if issues:
        listed = "\n".join(f"  {issue.file}:{issue.line}: {issue.message}" for issue in issues)
        raise DeliveryConfigError(f"destination {destination.name}: ConceptMap problems:\n{listed}")
    wanted = {"identifier_types": options.identifier_types, "encounter_types": options.encounter_types,
              "locations": options.locations}  # fmt: skip
    missing = [f"{name} ({table})" for name, table in wanted.items() if table not in tables]
    if missing:
        raise DeliveryConfigError(
            f"destination {destination.name}: no ConceptMap in {options.conceptmaps} for {', '.join(missing)}"
        )
    profile = OpenMrsProfile(
        destination.name,
        store,
        identifier_types=tables[options.identifier_types],
        encounter_types=tables[options.encounter_types],
        locations=tables[options.locations],
    )
    return OpenMrsConnector(client, destination.base_url, clock, profile, upsert=frozenset(options.upsert))


def openmrs_factory(store: SiteStore) -> partial[Connector]:
    """A ``ConnectorFactory`` for OpenMRS destinations, keeping OpenMRS ids in ``store``."""
    return partial(create_connector, store=store)
