"""The pull direction (IHE mCSD): DHIS2 org units → FHIR Location + Organization resources.

Every org unit becomes a Location (the place: position, ``partOf`` the parent's Location)
and an Organization (the unit: ``partOf`` the parent's Organization), both with
deterministic ids (``dhis2-ou-<uid>``) and the identifiers ``http://dhis2.org/fhir/id/org-unit``
(UID) and ``…/org-unit-code`` (code), so partner EMRs resolve facilities through the FHIR
API and the DHIS2 connector resolves them back to org units without any mapping row.
Units with children are typed ``jurisdiction``, the others ``facility`` (mCSD types).
``sync_org_units`` writes only what changed, so running it on a schedule keeps the store
up to date without new versions for unchanged units.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import orjson

from gateway import jsonio
from gateway.connectors.dhis2.client import Dhis2Client
from gateway.connectors.dhis2.metadata import FIELDS
from gateway.connectors.dhis2.orgunits import ORG_UNIT_CODE_SYSTEM, ORG_UNIT_SYSTEM

__all__ = [
    "MCSD_TYPES",
    "fetch_org_units",
    "org_unit_resources",
    "org_units_to_fhir",
    "pull_org_units",
    "resource_id",
    "sync_org_units",
]

JsonObject = dict[str, Any]
MCSD_TYPES = "https://profiles.ihe.net/ITI/mCSD/CodeSystem/IHE.mCSD.Organization.Location.Types"


def resource_id(uid: str) -> str:
    """The FHIR id of the Location and Organization of an org unit."""
    return f"dhis2-ou-{uid}"


def _identifiers(unit: JsonObject) -> list[JsonObject]:
    out = [{"use": "official", "system": ORG_UNIT_SYSTEM, "value": unit["id"]}]
    if unit.get("code"):
        out.append({"system": ORG_UNIT_CODE_SYSTEM, "value": str(unit["code"])})
    return out


def _active(unit: JsonObject, today: datetime) -> bool:
    closed = unit.get("closedDate")
    return not (isinstance(closed, str) and closed[:10] <= today.date().isoformat())


def org_unit_resources(
    unit: JsonObject, has_children: bool, *, today: datetime | None = None
) -> list[JsonObject]:
    """The Location and Organization of one org unit."""
    moment = today or datetime.now(UTC)
    rid = resource_id(unit["id"])
    kind = "jurisdiction" if has_children else "facility"
    type_concept = [{"coding": [{"system": MCSD_TYPES, "code": kind}]}]
    parent = (unit.get("parent") or {}).get("id")
    active = _active(unit, moment)
    organization: JsonObject = {
        "resourceType": "Organization",
        "id": rid,
        "identifier": _identifiers(unit),
        "active": active,
        "type": type_concept,
        "name": unit.get("name") or unit["id"],
    }
    location: JsonObject = {
        "resourceType": "Location",
        "id": rid,
        "identifier": _identifiers(unit),
        "status": "active" if active else "inactive",
        "name": unit.get("name") or unit["id"],
        "mode": "instance",
        "type": type_concept,
        "managingOrganization": {"reference": f"Organization/{rid}"},
    }
    if parent:
        organization["partOf"] = {"reference": f"Organization/{resource_id(parent)}"}
        location["partOf"] = {"reference": f"Location/{resource_id(parent)}"}
    geometry = unit.get("geometry") or {}
    coordinates = geometry.get("coordinates")
    if geometry.get("type") == "Point" and isinstance(coordinates, list) and len(coordinates) == 2:
        location["position"] = {"longitude": coordinates[0], "latitude": coordinates[1]}
    return [organization, location]


def org_units_to_fhir(units: Iterable[JsonObject], *, today: datetime | None = None) -> list[JsonObject]:
    """Locations and Organizations for all org units (parents before children)."""
    ordered = sorted(units, key=lambda u: (int(u.get("level", 99)), str(u["id"])))
    parents = {str((u.get("parent") or {}).get("id")) for u in ordered}
    return [r for unit in ordered for r in org_unit_resources(unit, unit["id"] in parents, today=today)]


def _content(resource: JsonObject) -> bytes:
    return jsonio.dumps({k: v for k, v in resource.items() if k != "meta"}, option=orjson.OPT_SORT_KEYS)


def sync_org_units(store: Any, resources: Iterable[JsonObject]) -> int:
    """Write Locations/Organizations that are new or changed; returns how many were written."""
    written = 0
    with store.transaction() as tx:
        for resource in resources:
            current = tx.read(resource["resourceType"], resource["id"])
            if (
                current is not None
                and not current.deleted
                and _content(jsonio.loads(current.content)) == _content(resource)
            ):
                continue
            tx.update(resource)
            written += 1
    return written


async def fetch_org_units(client: Dhis2Client) -> list[JsonObject]:
    """Every org unit of a DHIS2, page by page, with the fields the FHIR resources need."""
    units: list[JsonObject] = []
    async for page, _, _ in client.pages("organisationUnits", fields=FIELDS["organisationUnits"]):
        units.extend(page)
    return units


async def pull_org_units(client: Dhis2Client, store: Any) -> tuple[int, int]:
    """Fetch every org unit and write what changed: (org units, resources written)."""
    units = await fetch_org_units(client)
    written = await anyio.to_thread.run_sync(sync_org_units, store, org_units_to_fhir(units))
    return len(units), written
