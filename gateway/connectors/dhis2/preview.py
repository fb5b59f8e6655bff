"""What DHIS2 would receive for some FHIR resources, without sending anything (the console's playground).

The resources are planned exactly as delivery plans them (``TrackerTransformer.plan``, the
aggregate transform), reading what they reference from the resources themselves first and
then from the store, and the tracker objects are merged into one payload the way a delivery
batch merges them. Problems are listed per resource with DHIS2's error code, as a dead
letter would name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from gateway.connectors.dhis2.aggregate_transform import measure_report_to_data_value_set
from gateway.connectors.dhis2.orgunits import OrgUnitResolver
from gateway.connectors.dhis2.sources import ResourceBundle, ResourceSource
from gateway.connectors.dhis2.tracker_transform import Dhis2MappingError, Dhis2PendingError, PlannedObject
from gateway.mapping import MappingError

if TYPE_CHECKING:
    from gateway.connectors.dhis2.connector import Dhis2Connector

__all__ = ["Dhis2Preview", "preview_payload"]

JsonObject = dict[str, Any]
_ORDER = ("TRACKED_ENTITY", "ENROLLMENT", "EVENT")
_KEYS = {"TRACKED_ENTITY": "trackedEntities", "ENROLLMENT": "enrollments", "EVENT": "events"}


@dataclass(slots=True)
class Dhis2Preview:
    """The tracker payload, the data value sets, and one note per resource (sent, skipped, or why not)."""

    tracker: JsonObject = field(default_factory=dict)
    data_value_sets: list[JsonObject] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (FHIR reference, what happens to it)
    unavailable: str | None = None  # why nothing could be planned (DHIS2 metadata not loaded)


class _Layered:
    """The resources being previewed, then the store."""

    def __init__(self, first: ResourceBundle, then: ResourceSource) -> None:
        self.first, self.then = first, then

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        return self.first.get(resource_type, resource_id) or self.then.get(resource_type, resource_id)

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        if self.first.get(resource_type, resource_id) is not None:
            return None  # previewed as live
        return self.then.was_deleted(resource_type, resource_id)

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        mine = self.first.find(resource_type, param, reference)
        seen = {(r["resourceType"], r["id"]) for r in mine}
        return mine + [r for r in self.then.find(resource_type, param, reference)
                       if (r.get("resourceType"), r.get("id")) not in seen]


async def preview_payload(connector: Dhis2Connector, resources: Sequence[JsonObject]) -> Dhis2Preview:
    """Plan ``resources`` as delivery to ``connector``'s DHIS2 would (fetching its metadata first if needed)."""
    problem = await connector._ensure_ready()  # the same metadata and bound mappings delivery uses
    if problem is not None:
        why = getattr(problem, "reason", type(problem).__name__)
        return Dhis2Preview(unavailable=f"DHIS2 metadata is not available ({why})")
    return await anyio.to_thread.run_sync(_plan, connector, list(resources))


def _plan(connector: Dhis2Connector, resources: list[JsonObject]) -> Dhis2Preview:
    out = Dhis2Preview()
    source = _Layered(ResourceBundle(resources), connector.source)
    merged: dict[tuple[str, str], PlannedObject] = {}
    tracker, aggregate = connector._tracker, connector._aggregate
    for resource in resources:
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        try:
            if resource.get("resourceType") == "MeasureReport":
                if aggregate is None:
                    out.notes.append((ref, "not sent: no aggregate mapping"))
                    continue
                plan = measure_report_to_data_value_set(resource, aggregate, OrgUnitResolver(aggregate.org_units,
                                                                                             source))
                if plan.payload is None:
                    out.notes.append((ref, f"not sent: {plan.note}"))
                else:
                    out.data_value_sets.append(plan.payload)
                    out.notes.append((ref, "sent as a data value set"))
                continue
            if tracker is None:
                out.notes.append((ref, "not sent: no tracker mapping"))
                continue
            tracker_plan = tracker.plan(resource, source)
        except Dhis2MappingError as exc:
            out.notes.append((ref, f"refused before sending: {exc.code}: {exc.message}"))
            continue
        except Dhis2PendingError as exc:
            out.notes.append((ref, f"waits for its {exc.waiting_for} (not stored yet)"))
            continue
        except MappingError as exc:
            out.notes.append((ref, f"mapping error {exc.code} at {exc.path}"))
            continue
        if tracker_plan.primary is None:
            out.notes.append((ref, f"not sent: {tracker_plan.note or 'nothing to send'}"))
            continue
        for obj in tracker_plan.objects:
            merged[(obj.tracker_type, obj.uid)] = obj
        kind, uid = tracker_plan.primary
        out.notes.append((ref, f"sent as {kind.lower().replace('_', ' ')} {uid}"))
    if merged:
        out.tracker = {_KEYS[kind]: [obj.payload for (k, _), obj in merged.items() if k == kind] for kind in _ORDER}
    return out
