"""FHIR Location/Organization → DHIS2 org unit, by identifier only (IHE mCSD style).

A reference resolves when the resource carries the DHIS2 org-unit identifier
(``http://dhis2.org/fhir/id/org-unit``, written by the mCSD pull) or an identifier listed in
the mapping's org-unit table; otherwise its ``partOf`` parent is tried (a household
Location resolves to its CHW area), up to ``MAX_DEPTH`` levels. Names are never compared.

``lookup`` also says why a reference did not resolve, because the two reasons call for
different outcomes: a Location not stored yet (CHT and CommCare send a person before their
household) is worth waiting for, a stored chain that no identifier maps is a configuration
gap an integrator fixes in the org-unit table.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.connectors.dhis2.mapping_spec import OrgUnitTable
from gateway.connectors.dhis2.sources import ResourceSource, reference_of

__all__ = ["MAX_DEPTH", "ORG_UNIT_CODE_SYSTEM", "ORG_UNIT_SYSTEM", "OrgUnitLookup", "OrgUnitResolver"]

ORG_UNIT_SYSTEM = "http://dhis2.org/fhir/id/org-unit"
ORG_UNIT_CODE_SYSTEM = "http://dhis2.org/fhir/id/org-unit-code"
MAX_DEPTH = 10


@dataclass(frozen=True, slots=True)
class OrgUnitLookup:
    """The outcome of resolving one reference.

    ``org_unit`` when it resolved; otherwise ``missing`` is the first reference of the
    ``partOf`` chain that is not stored (yet), or None when the whole chain is stored and
    maps to nothing; ``chain`` lists the stored Locations/Organizations that were tried.
    """

    reference: str | None
    org_unit: str | None = None
    missing: str | None = None
    chain: tuple[str, ...] = ()


class OrgUnitResolver:
    """Resolves Location/Organization references through an identifier table."""

    def __init__(self, table: OrgUnitTable, source: ResourceSource) -> None:
        self._table = {(entry.system, entry.value): entry.org_unit for entry in table.entries}
        self._source = source

    @property
    def source(self) -> ResourceSource:
        """Where the resolver reads places (and the transformer the resources around one)."""
        return self._source

    def by_identifiers(self, identifiers: object) -> str | None:
        """The org unit one of these FHIR identifiers names, if any."""
        if not isinstance(identifiers, list):
            return None
        for identifier in identifiers:
            if not isinstance(identifier, dict):
                continue
            system, value = identifier.get("system"), identifier.get("value")
            if system == ORG_UNIT_SYSTEM and isinstance(value, str):
                return value
            found = self._table.get((str(system), str(value)))
            if found is not None:
                return found
        return None

    def resolve(self, reference: str | None) -> str | None:
        """The org unit of ``Location/…`` or ``Organization/…``, walking ``partOf`` upwards."""
        return self.lookup(reference).org_unit

    def lookup(self, reference: str | None) -> OrgUnitLookup:
        """Like ``resolve``, and when nothing maps, whether a Location is still to come."""
        start = reference_of(reference) if reference else None
        seen: list[str] = []
        current = start
        for _ in range(MAX_DEPTH):
            if current is None or current in seen:
                break
            kind, _, rid = current.partition("/")
            if kind not in ("Location", "Organization"):
                break
            resource = self._source.get(kind, rid)
            if resource is None:
                return OrgUnitLookup(start, missing=current, chain=tuple(seen))
            seen.append(current)
            found = self.by_identifiers(resource.get("identifier"))
            if found is not None:
                return OrgUnitLookup(start, org_unit=found, chain=tuple(seen))
            current = reference_of(resource.get("partOf"))
        return OrgUnitLookup(start, chain=tuple(seen))
