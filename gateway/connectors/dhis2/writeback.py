"""DHIS2 UIDs written back onto the FHIR resources they came from, without a delivery loop.

Once DHIS2 has accepted the objects planned from a job's resource, that resource gets one
identifier per object (``use: secondary``), so partner systems can cross-reference it:

==============  ==================================  ============================================
resource        object                              identifier system (default)
==============  ==================================  ============================================
Patient         tracked entity                      ``<base_url>/api/tracker/trackedEntities``
EpisodeOfCare   enrollment                          ``<base_url>/api/tracker/enrollments``
Encounter       event, and the enrollment when no   ``…/events``, ``…/enrollments``
                EpisodeOfCare produced it
==============  ==================================  ============================================

``<system>/<value>`` is the object in DHIS2's tracker API. ``identifier_system_base`` in the
destination's options replaces ``<base_url>/api/tracker``.

Why this cannot loop, and why DHIS2 gets nothing twice. A write-back is a new version of the
resource, which the outbox queues for this destination like any change, so:

1. The write-back is one store transaction that re-reads the resource and writes only if its
   current version is still the one DHIS2 just accepted (the job's version, ``if_match``)
   and the identifiers differ. With the new version it stores a ``Provenance`` whose id is
   derived from (destination, resource, new version): "this version is the accepted one
   plus its UIDs". If the resource has moved on, nothing is written: the newer version has
   its own job, and its own write-back after delivery.
2. A job whose version has that Provenance was written back: DHIS2 already holds its content,
   so it succeeds without a request and without a write (the identifiers are there).
3. A version equal to a written-back version apart from our identifiers (and
   ``meta.versionId``/``lastUpdated``) is no news for DHIS2 either. The identifiers are typed
   as ones the store keeps (``gateway.store.rows.KEPT_IDENTIFIER_TYPE``), so a re-ingested
   record neither drops them nor counts as a change; this case is left for identifiers
   written before they were typed: the connector sends nothing and restores them as in 1,
   and that version is case 2.
4. Every other version is a real change: delivered normally, then written back as in 1.

Every write-back is preceded by DHIS2 accepting, or by case 3 (content DHIS2 already
holds), and case 2 and 3 versions are never sent: the sequence ends after one write-back
per accepted change and one restore per identifier-less resubmission.

"DHIS2 already holds the content" needs one more guarantee: that adding or removing these
identifiers never changes what is sent. So the connector plans DHIS2 objects from the
resources *without* them (``hide``, ``hiding``), whatever a mapping's expressions read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway import jsonio
from gateway.connectors.base import Job
from gateway.connectors.dhis2.sources import ResourceSource
from gateway.connectors.dhis2.tracker_transform import TrackerPlan
from gateway.store import KEPT_IDENTIFIER_TYPE, ResourceStore, VersionConflict

__all__ = ["Held", "WriteBack", "WriteBackTarget", "identifier_systems", "provenance_id"]

logger = logging.getLogger(__name__)

JsonObject = dict[str, Any]
_KINDS = ("TRACKED_ENTITY", "ENROLLMENT", "EVENT")
_PATHS = {"TRACKED_ENTITY": "trackedEntities", "ENROLLMENT": "enrollments", "EVENT": "events"}
_VERSION_META = ("versionId", "lastUpdated")
_DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def identifier_systems(base: str) -> dict[str, str]:
    """Tracker type → identifier system under ``base`` (e.g. ``https://dhis2.org/api/tracker``)."""
    root = base.rstrip("/")
    return {kind: f"{root}/{path}" for kind, path in _PATHS.items()}


def provenance_id(destination: str, ref: str, version: int) -> str:
    """The id of the Provenance marking ``ref`` version ``version`` as a write-back for ``destination``."""
    digest = hashlib.sha256(f"dhis2-write-back|{destination}|{ref}|{version}".encode()).hexdigest()
    return f"dhis2-uid-{digest[:40]}"


@dataclass(frozen=True, slots=True)
class WriteBackTarget:
    """Identifiers to set on one version of one resource."""

    resource_type: str
    resource_id: str
    version: int  # write only if this is still the current version
    identifiers: tuple[JsonObject, ...]

    @property
    def ref(self) -> str:
        """``Type/id``."""
        return f"{self.resource_type}/{self.resource_id}"


@dataclass(frozen=True, slots=True)
class Held:
    """DHIS2 already holds a job's content: send nothing, and restore identifiers if ``restore``."""

    restore: WriteBackTarget | None = None


class _Hiding:
    """A ``ResourceSource`` passing every resource through ``hide``."""

    def __init__(self, source: ResourceSource, hide: Callable[[JsonObject], JsonObject]) -> None:
        self._source = source
        self._hide = hide

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The current version, without the written-back identifiers."""
        found = self._source.get(resource_type, resource_id)
        return None if found is None else self._hide(found)

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        """A search, without the written-back identifiers."""
        return [self._hide(found) for found in self._source.find(resource_type, param, reference)]

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The last live version of a deleted resource, without the written-back identifiers."""
        found = self._source.was_deleted(resource_type, resource_id)
        return None if found is None else self._hide(found)


class WriteBack:
    """Writes DHIS2 UIDs onto FHIR resources and recognises its own versions (see the module docstring).

    Synchronous, like the store: call it from a worker thread.
    """

    def __init__(
        self, store: ResourceStore, destination: str, systems: Mapping[str, str], *, label: str = "DHIS2"
    ) -> None:
        self.store = store
        self.destination = destination
        self.systems = dict(systems)
        self._ours = frozenset(self.systems.values())
        # Names the destination's kind in the Provenance and the log: the client-registry
        # connector writes its national ids back with this class too.
        self.label = label

    # -- what a delivered plan writes

    def identifiers_for(self, job_ref: str, plan: TrackerPlan, accepted: Iterable[tuple[str, str]]) -> list[JsonObject]:
        """The identifiers of the objects DHIS2 accepted that belong on the job's own resource."""
        taken = set(accepted)
        found: dict[str, JsonObject] = {}
        for obj in plan.objects:
            mine = obj.origin == job_ref or (
                # Without an EpisodeOfCare the enrollment is the (Patient, program) one; the
                # Encounter whose visit produced it carries its UID.
                obj.tracker_type == "ENROLLMENT"
                and job_ref.startswith("Encounter/")
                and obj.origin.startswith("Patient/")
            )
            if mine and (obj.tracker_type, obj.uid) in taken:
                found[obj.tracker_type] = self._identifier(obj.tracker_type, obj.uid)
        return [found[kind] for kind in _KINDS if kind in found]

    def hide(self, resource: JsonObject) -> JsonObject:
        """``resource`` as the mappings see it: without the identifiers of this destination's systems."""
        items = resource.get("identifier")
        if not isinstance(items, list) or not any(
            isinstance(item, dict) and item.get("system") in self._ours for item in items
        ):
            return resource
        others = [item for item in items if not (isinstance(item, dict) and item.get("system") in self._ours)]
        hidden = {key: value for key, value in resource.items() if key != "identifier"}
        if others:
            hidden["identifier"] = others
        return hidden

    def hiding(self, source: ResourceSource) -> ResourceSource:
        """``source`` whose resources come through ``hide``."""
        return _Hiding(source, self.hide)

    def _identifier(self, kind: str, uid: str) -> JsonObject:
        # Typed as an identifier the gateway keeps: re-ingested source records (which do not
        # know it) neither drop it nor count as a change (gateway.store.rows).
        kept = {"system": KEPT_IDENTIFIER_TYPE, "code": "dhis2-uid", "display": "DHIS2 UID"}
        return {"use": "secondary", "type": {"coding": [kept]}, "system": self.systems[kind], "value": uid}

    # -- judging a job before it is sent

    def already_held(self, job: Job) -> Held | None:
        """``Held`` when DHIS2 already has this version's content (cases 2 and 3 of the module
        docstring), with the identifiers to restore in case 3; None when it must be delivered."""
        if job.op != "update":
            return None
        resource = job.resource()
        if self.ours(resource) and self._written_back(job.ref, job.version):
            return Held()
        if job.version < 2:
            return None
        previous = self.store.vread(job.resource_type, job.resource_id, job.version - 1)
        if previous is None or previous.deleted or not previous.content:
            return None
        before: JsonObject = jsonio.loads(previous.content)
        if not self.ours(before) or not self._written_back(job.ref, job.version - 1):
            return None
        if self._without_ours(before) != self._without_ours(resource):
            return None
        if self.ours(before) == self.ours(resource):
            return Held()
        return Held(WriteBackTarget(job.resource_type, job.resource_id, job.version, tuple(self.ours(before))))

    def ours(self, resource: Mapping[str, Any]) -> list[JsonObject]:
        """The identifiers of ``resource`` in this destination's systems."""
        return [
            item
            for item in resource.get("identifier") or []
            if isinstance(item, dict) and item.get("system") in self._ours
        ]

    def _without_ours(self, resource: JsonObject) -> JsonObject:
        body = self.hide(resource)
        meta = body.get("meta")
        if isinstance(meta, dict):
            body = {key: value for key, value in body.items() if key != "meta"}
            kept = {key: value for key, value in meta.items() if key not in _VERSION_META}
            if kept:
                body["meta"] = kept
        return body

    def _written_back(self, ref: str, version: int) -> bool:
        found = self.store.read("Provenance", provenance_id(self.destination, ref, version))
        return found is not None and not found.deleted

    # -- writing

    def apply(self, targets: Sequence[WriteBackTarget], *, now: float) -> int:
        """Set the identifiers in one transaction; how many resources got a new version."""
        written = 0
        if not targets:
            return written
        with self.store.transaction() as tx:
            for target in targets:
                current = tx.read(target.resource_type, target.resource_id)
                if current is None or current.deleted or current.version != target.version:
                    continue  # moved on: the newer version is delivered, then written back
                resource: JsonObject = jsonio.loads(current.content)
                updated = self._with_identifiers(resource, target.identifiers)
                if updated is None:
                    continue
                try:
                    result = tx.update(updated, if_match=target.version)
                except VersionConflict:
                    continue
                tx.update(self._provenance(target, result.resource.version, now))
                written += 1
        if written:
            logger.info("%s %s: wrote identifiers back onto %d resources", self.label, self.destination, written)
        return written

    def _with_identifiers(self, resource: JsonObject, identifiers: Sequence[JsonObject]) -> JsonObject | None:
        """``resource`` with exactly ``identifiers`` in our systems; None if it has them already."""
        if self.ours(resource) == list(identifiers):
            return None
        others = [item for item in resource.get("identifier") or [] if item not in self.ours(resource)]
        return {**resource, "identifier": [*others, *identifiers]}

    def _provenance(self, target: WriteBackTarget, version: int, now: float) -> JsonObject:
        recorded = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {
            "resourceType": "Provenance",
            "id": provenance_id(self.destination, target.ref, version),
            "target": [{"reference": f"{target.ref}/_history/{version}"}],
            "recorded": recorded,
            "activity": {"coding": [{"system": _DATA_OPERATION, "code": "UPDATE"}]},
            "agent": [
                {
                    "type": {"coding": [{"system": _PARTICIPANT, "code": "assembler"}]},
                    "who": {"display": f"CHW gateway, {self.label} destination {self.destination}"},
                }
            ],
            "entity": [{"role": "revision", "what": {"reference": f"{target.ref}/_history/{target.version}"}}],
        }
