"""FHIR → DHIS2 tracker objects, as pure functions of a bound mapping and the stored resources.

What a delivered resource becomes (parents first, so one flat payload keeps DHIS2's order
tracked entity → enrollment → event, on the first try and on every retry or replay):

=====================  =======================================================  ==========
resource               objects                                                  primary
=====================  =======================================================  ==========
Patient                tracked entity                                           TE
EpisodeOfCare          tracked entity, enrollment                               enrollment
Encounter (qualifying) tracked entity, enrollment, event                        event
Observation, Medica-   the event of the Encounter they reference (rebuilt from  event
tionDispense, Service  everything stored for that Encounter)
Request, Condition …
=====================  =======================================================  ==========

An enrollment repeats the tracked entity's values of the program's attributes: DHIS2 checks
mandatory program attributes (E1018) against the enrollment and the tracked entity as stored
before the import, so a person created in the same payload (a visit delivered before or with
its person's registration) would otherwise be refused.

UIDs are derived from FHIR identity (``uids.derive_uid``): the tracked entity from the
Patient, the enrollment from the EpisodeOfCare or else from (Patient, program), the event
from the Encounter. DHIS2 never lets a deleted UID be used again, so an object whose earlier
UID DHIS2 deleted (a record restored at its source after its deletion reached DHIS2) takes the
next *generation* of that UID (``TrackerTransformer.uid``; the connector keeps generations).
Values are converted and checked as DHIS2 checks them before anything is sent; a value DHIS2
would refuse raises ``Dhis2MappingError`` with DHIS2's error code.

Org units come from the Location/Organization references the mapping names. When none
resolves, a reference to a place that is not stored yet raises ``Dhis2PendingError``
(records arrive out of order: the household after its people), while places that are all
stored but map to no org unit raise ``Dhis2MappingError`` ``org-unit`` naming them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from gateway.connectors.dhis2.mapping_load import BoundDataValue, BoundStage, BoundTracker
from gateway.connectors.dhis2.orgunits import OrgUnitLookup, OrgUnitResolver
from gateway.connectors.dhis2.person import PersonPendingError, hand_merge_note, person_of
from gateway.connectors.dhis2.plan_cache import PlanCache
from gateway.connectors.dhis2.sources import ResourceSource, is_retracted, reference_of
from gateway.connectors.dhis2.uids import derive_uid
from gateway.connectors.dhis2.values import ValueConversionError, to_dhis2_value
from gateway.errors import ConnectorError
from gateway.mapping import Expression, MappingError
from gateway.store import is_golden

__all__ = ["Dhis2MappingError", "Dhis2PendingError", "PlannedObject", "TrackerPlan", "TrackerTransformer"]

JsonObject = dict[str, Any]

_CODE_FIELDS = {
    "Observation": "code",
    "MedicationDispense": "medicationCodeableConcept",
    "ServiceRequest": "code",
    "Condition": "code",
    "Procedure": "code",
}
_ENCOUNTER_PARAM = {"MedicationDispense": "context"}
_ENCOUNTER_FIELD = {"MedicationDispense": "context"}
_SCHEDULED = frozenset({"SCHEDULE", "OVERDUE", "SKIPPED"})  # event statuses of visits not (yet) made
_WHEN_FIELDS = (
    "effectiveDateTime",
    "issued",
    "whenHandedOver",
    "authoredOn",
    "recordedDate",
    "performedDateTime",
)


class Dhis2MappingError(ConnectorError):
    """A resource that cannot become valid DHIS2 data; carries DHIS2's error code when there is one.

    Messages name UIDs, codes and FHIR references, never values from the record.
    """

    def __init__(self, code: str, message: str, fhir_ref: str) -> None:
        super().__init__(f"{code}: {message} ({fhir_ref})")
        self.code = code
        self.message = message
        self.fhir_ref = fhir_ref


class Dhis2PendingError(ConnectorError):
    """A resource whose parent (its Patient, its place) is not stored yet: try again later.

    ``waiting_for`` names what is awaited (``patient``, ``encounter``, ``location``).
    """

    def __init__(self, message: str, waiting_for: str = "patient") -> None:
        super().__init__(message)
        self.waiting_for = waiting_for


@dataclass(frozen=True, slots=True)
class PlannedObject:
    """One DHIS2 tracker object to import, and the FHIR resource it came from."""

    tracker_type: str  # TRACKED_ENTITY | ENROLLMENT | EVENT
    uid: str
    payload: JsonObject
    origin: str  # FHIR reference, e.g. "Encounter/abc"
    value_origins: tuple[tuple[str, str], ...] = ()  # (data element, FHIR reference of its value)
    seed: str = ""  # what its UID is derived from (with its generation, see TrackerTransformer.uid)

    def origin_of(self, data_element: str | None = None, value: str | None = None) -> str:
        """The FHIR resource behind one data value (by element, or by value), else the object's."""
        values = {item.get("dataElement"): item.get("value") for item in self.payload.get("dataValues", [])}
        for element, ref in self.value_origins:
            if element == data_element or (value is not None and values.get(element) == value):
                return ref
        return self.origin


@dataclass(frozen=True, slots=True)
class TrackerPlan:
    """What one delivered resource becomes; ``primary`` is the object its outcome follows."""

    objects: tuple[PlannedObject, ...]
    primary: tuple[str, str] | None
    note: str | None = None

    @classmethod
    def skip(cls, note: str) -> TrackerPlan:
        """Nothing to send for this resource."""
        return cls((), None, note)


def _first(expr: Expression, resource: JsonObject, ref: str) -> Any:
    try:
        values = expr.run(resource, {})
    except MappingError as exc:
        raise Dhis2MappingError("mapping", f"expression failed: {exc.code}", ref) from exc
    return values[0] if values else None


def _truthy(expr: Expression, resource: JsonObject) -> bool:
    try:
        values = expr.run(resource, {})
    except MappingError:
        return False
    return bool(values) and all(value is True for value in values)


_CLOCK = re.compile(r"\b(now|today|timeOfDay)\s*\(")


def _reads_clock(mapping: BoundTracker) -> bool:
    """Whether a rule of ``mapping`` reads the clock (its plans then change with time alone)."""
    seen: set[int] = set()
    pending: list[Any] = [mapping]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Expression):
            if _CLOCK.search(item.text):
                return True
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            pending += [getattr(item, f.name) for f in dataclasses.fields(item)]
        elif isinstance(item, tuple | list | frozenset | set):
            pending += list(item)
        elif isinstance(item, dict):
            pending += list(item.values())
    return False


def _instant(value: Any) -> str | None:
    """A FHIR date/dateTime as DHIS2 accepts it (date-only stays a date)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    return value


def _not_in_future(when: str, now: float) -> str:
    """``when``, or today's date (UTC) when ``when`` is still to come.

    DHIS2 refuses an enrollment or incident date in the future (E1020/E1021) unless the program
    allows it; a person's first visit may be one still to come (a planned follow-up, the only
    visit recorded yet). Today's date is midnight of a day that has begun wherever DHIS2 runs.
    """
    today = datetime.fromtimestamp(now, UTC).date()
    try:
        if len(when) == 10:
            future = date.fromisoformat(when) > today
        else:
            parsed = datetime.fromisoformat(when.replace("Z", "+00:00"))
            future = parsed.tzinfo is not None and parsed.timestamp() > now
            future = future or (parsed.tzinfo is None and parsed.date() > today)
    except ValueError:
        return when  # not a date DHIS2 reads either: its own answer says so
    return today.isoformat() if future else when


def _sort_key(resource: JsonObject) -> tuple[str, str]:
    when = next((str(resource[f]) for f in _WHEN_FIELDS if isinstance(resource.get(f), str)), "")
    updated = str((resource.get("meta") or {}).get("lastUpdated", ""))
    return (when, updated)


def _codings(resource: JsonObject, field: str) -> set[tuple[str, str]]:
    concept = resource.get(field)
    if not isinstance(concept, dict):
        return set()
    return {
        (str(coding.get("system", "")), str(coding.get("code", "")))
        for coding in concept.get("coding") or []
        if isinstance(coding, dict)
    }


class TrackerTransformer:
    """Turns stored FHIR resources into DHIS2 tracker objects with one bound mapping."""

    def __init__(
        self,
        mapping: BoundTracker,
        *,
        namespace: str,
        per_person: bool = False,
        now: Callable[[], float] | None = None,
    ) -> None:
        self.mapping = mapping
        # The clock (Unix seconds) an enrollment dated by a visit still to come is held to (E1020);
        # None: dates are sent as the visits give them.
        self.now = now
        self.namespace = namespace
        self.per_person = per_person  # one tracked entity per golden record (``person``), not per Patient
        # (kind, seed) -> generation of its UID, above 0 once DHIS2 deleted an earlier one (see ``uid``).
        self.generations: dict[tuple[str, str], int] = {}
        # EpisodeOfCare seed -> seed of the enrollment DHIS2 already holds for that person and
        # program (see ``adopt_enrollment``).
        self.enrollment_aliases: dict[str, str] = {}
        # The jobs of one visit plan the same objects: reuse the plan while its reads answer the same.
        self._plans = None if _reads_clock(mapping) else PlanCache()

    def uid(self, kind: str, seed: str) -> str:
        """The UID of the ``kind`` object derived from ``seed``, in its current generation: DHIS2
        keeps deleted UIDs for ever (E1082/E1113/E1114), so one restored after a deletion needs a
        new UID, derived from the same seed and the generation."""
        return self._derived(kind, seed, self.generation(kind, seed))

    def generation(self, kind: str, seed: str) -> int:
        """The generation the next plan gives the UID of ``(kind, seed)``."""
        return self.generations.get((kind, seed), 0)

    def generation_of(self, kind: str, seed: str, uid: str) -> int | None:
        """Which generation of ``(kind, seed)`` ``uid`` is (None: none up to the current one)."""
        for generation in range(self.generation(kind, seed), -1, -1):
            if self._derived(kind, seed, generation) == uid:
                return generation
        return None

    def _derived(self, kind: str, seed: str, generation: int) -> str:
        # Generation 0 is the UID every earlier release derived: objects DHIS2 already holds keep theirs.
        return derive_uid(self.namespace, kind, seed if generation == 0 else f"{seed}#{generation}")

    def adopt(self, kind: str, seed: str, generation: int) -> None:
        """Plan ``(kind, seed)`` in ``generation`` from now on (cached plans hold older UIDs: dropped)."""
        if self.generations.get((kind, seed), 0) != generation:
            self.generations[(kind, seed)] = generation
            if self._plans is not None:
                self._plans = PlanCache()

    def enrollment_seed(self, episode_ref: str) -> str:
        """The seed of an EpisodeOfCare's enrollment: its own, or the one it took over."""
        return self.enrollment_aliases.get(episode_ref, episode_ref)

    def adopt_enrollment(self, episode_ref: str, held_seed: str) -> None:
        """Plan the enrollment of ``episode_ref`` as the one derived from ``held_seed`` from now on.

        A person's visits delivered before their EpisodeOfCare enrolled them under the
        (person, program) enrollment; DHIS2 refuses a second ACTIVE enrollment in the program
        (E1015) and never moves an event to another enrollment (E1128), so the EpisodeOfCare
        becomes that enrollment (updated with its dates, place and status) instead of a new one.
        """
        if self.enrollment_aliases.get(episode_ref) != held_seed:
            self.enrollment_aliases[episode_ref] = held_seed
            if self._plans is not None:
                self._plans = PlanCache()

    def _person(self, patient: JsonObject, source: ResourceSource) -> tuple[str, JsonObject]:
        """The reference the tracked entity is derived from, and the Patient its values come from."""
        if not self.per_person:
            return f"Patient/{patient['id']}", patient
        try:
            return person_of(patient, source)
        except PersonPendingError as exc:
            raise Dhis2PendingError(str(exc), "golden_record") from exc

    # -- entry point

    def plan(self, resource: JsonObject, source: ResourceSource) -> TrackerPlan:
        """The DHIS2 objects for one resource (parents first)."""
        kind = resource.get("resourceType")
        resolver = OrgUnitResolver(self.mapping.org_units, source)
        if kind == "Patient":
            return self._person_plan(resource, source, resolver)
        if kind == "EpisodeOfCare":
            return self._episode_plan(resource, source, resolver)
        if kind == "Encounter":
            return self._visit_plan(resource, source)
        if kind in _CODE_FIELDS:
            encounter_ref = reference_of(resource.get(_ENCOUNTER_FIELD.get(str(kind), "encounter")))
            if encounter_ref is None or not encounter_ref.startswith("Encounter/"):
                return TrackerPlan.skip(f"{kind} without an Encounter is not sent to DHIS2")
            encounter_id = encounter_ref.partition("/")[2]
            encounter = source.get("Encounter", encounter_id)
            if encounter is None:
                if source.was_deleted("Encounter", encounter_id) is not None:
                    return TrackerPlan.skip(f"{encounter_ref} was deleted: its event is deleted in DHIS2")
                raise Dhis2PendingError(f"{encounter_ref} is not stored yet", "encounter")
            if encounter.get("status") == "entered-in-error":
                return TrackerPlan.skip(f"{encounter_ref} was entered in error: its event is deleted in DHIS2")
            return self._visit_plan(encounter, source)
        return TrackerPlan.skip(f"{kind} is not mapped to DHIS2 tracker data")

    def _visit_plan(self, encounter: JsonObject, source: ResourceSource) -> TrackerPlan:
        """The Encounter's plan, from the cache when nothing it was planned from has changed."""

        def make(reads: ResourceSource) -> TrackerPlan:
            return self._encounter_plan(encounter, reads, OrgUnitResolver(self.mapping.org_units, reads))

        if self._plans is None:
            return make(source)
        plan: TrackerPlan = self._plans.plan(encounter, source, make)
        return plan

    # -- retractions

    def visit_deletes(self, encounter_id: str, last: JsonObject, source: ResourceSource) -> TrackerPlan:
        """An Encounter voided or deleted: its event, and its person too if nothing else of theirs remains."""
        ref = f"Encounter/{encounter_id}"
        ev = self.uid("EVENT", ref)
        objects = [PlannedObject("EVENT", ev, {"event": ev}, ref, seed=ref)]
        patient_ref = reference_of(last.get("subject"))
        if patient_ref is not None and patient_ref.startswith("Patient/"):
            patient_id = patient_ref.partition("/")[2]
            if source.get("Patient", patient_id) is None and source.was_deleted("Patient", patient_id) is not None:
                person = self.person_deletes(patient_id, source, leaving=ref)
                objects += [obj for obj in person.objects if obj.tracker_type != "EVENT"]
        return TrackerPlan(tuple(objects), ("EVENT", ev), note="delete")

    def episode_deletes(self, episode_id: str, last: dict[str, Any] | None, source: ResourceSource) -> TrackerPlan:
        """An EpisodeOfCare deleted or voided (``last``: its last version): its enrollment, unless a
        live visit of its patient remains."""
        ref = f"EpisodeOfCare/{episode_id}"
        if last is None or self.mapping.episode_filter is None or not _truthy(self.mapping.episode_filter, last):
            return TrackerPlan.skip("EpisodeOfCare not for this program")
        patient_ref = reference_of(last.get("patient"))
        remaining = [
            e
            for e in (source.find("Encounter", "patient", patient_ref) if patient_ref else [])
            if e.get("status") != "entered-in-error" and any(_truthy(stage.when, e) for stage in self.mapping.stages)
        ]
        if remaining:
            # Its events hang under the enrollment: deleting it would need F_ENROLLMENT_CASCADE_DELETE
            # (E1103) and take those visits' events with it.
            return TrackerPlan.skip(
                f"{len(remaining)} visits of the deleted {ref}'s patient remain: its enrollment stays"
            )
        seed = self.enrollment_seed(ref)
        uid = self.uid("ENROLLMENT", seed)
        enrollment = PlannedObject("ENROLLMENT", uid, {"enrollment": uid}, ref, seed=seed)
        return TrackerPlan((enrollment,), ("ENROLLMENT", uid), note="delete")

    def person_deletes(self, patient_id: str, source: ResourceSource, *, leaving: str | None = None) -> TrackerPlan:
        """A Patient deleted: its enrollments and tracked entity, unless a live visit of theirs remains."""
        if self.per_person:
            return TrackerPlan.skip("one source record of a person deleted: the person's tracked entity stays")
        ref = f"Patient/{patient_id}"
        remaining = [
            e
            for e in source.find("Encounter", "patient", ref)
            if e.get("status") != "entered-in-error"
            and f"Encounter/{e.get('id')}" != leaving
            and any(_truthy(stage.when, e) for stage in self.mapping.stages)
        ]
        if remaining:
            return TrackerPlan.skip(
                f"{len(remaining)} visits of the deleted {ref} remain: its tracked entity stays until they go"
            )
        te = self.uid("TRACKED_ENTITY", ref)
        origins = [f"{ref}|{self.mapping.program}"] + [
            self.enrollment_seed(f"EpisodeOfCare/{episode['id']}")
            for episode in source.find("EpisodeOfCare", "patient", ref)
        ]
        seeds = {self.uid("ENROLLMENT", origin): origin for origin in origins}
        objects = [
            PlannedObject("ENROLLMENT", uid, {"enrollment": uid}, ref, seed=origin) for uid, origin in seeds.items()
        ]
        objects.append(PlannedObject("TRACKED_ENTITY", te, {"trackedEntity": te}, ref, seed=ref))
        return TrackerPlan(tuple(objects), ("TRACKED_ENTITY", te), note="delete")

    # -- plans

    def _patient_of(self, resource: JsonObject, source: ResourceSource, ref: str) -> JsonObject:
        patient_ref = reference_of(resource.get("subject") or resource.get("patient"))
        if patient_ref is None or not patient_ref.startswith("Patient/"):
            raise Dhis2MappingError("mapping", "the resource has no Patient subject", ref)
        patient = source.get("Patient", patient_ref.partition("/")[2])
        if patient is None:
            raise Dhis2PendingError(f"{patient_ref} is not stored yet")
        return patient

    def _person_plan(self, patient: JsonObject, source: ResourceSource, resolver: OrgUnitResolver) -> TrackerPlan:
        if is_golden(patient):
            if not self.per_person:
                return TrackerPlan.skip("a golden record: with tracked_entity_per: record only source records are sent")
            note = hand_merge_note(patient, self.namespace)
            if note is not None:
                raise Dhis2MappingError("merge", note, f"Patient/{patient['id']}")
            return TrackerPlan.skip("a golden record: its tracked entity is sent with its source records")
        tried: list[OrgUnitLookup] = []
        fallback = None
        if self._org_unit(self.mapping.te_org_unit, patient, resolver, tried) is None and not tried:
            # A person who names no place (a CommCare case without a household) is registered
            # where their first visit took place; before any visit there is nothing to send yet,
            # and the visit's own job sends them.
            first = self._first_visit(patient, source)
            stage = next((s for s in self.mapping.stages if first and _truthy(s.when, first)), None)
            fallback = self._org_unit(stage.org_unit, first, resolver) if first and stage else None
            if fallback is None:
                return TrackerPlan.skip("the Patient names no place: registered in DHIS2 with their first visit")
        te = self.tracked_entity(patient, resolver, fallback_org_unit=fallback)
        return TrackerPlan((te,), ("TRACKED_ENTITY", te.uid))

    def _episode_plan(
        self, episode: JsonObject, source: ResourceSource, resolver: OrgUnitResolver
    ) -> TrackerPlan:
        ref = f"EpisodeOfCare/{episode['id']}"
        if self.mapping.episode_filter is None or not _truthy(self.mapping.episode_filter, episode):
            return TrackerPlan.skip("EpisodeOfCare not for this program")
        patient = self._patient_of(episode, source, ref)
        org_unit = self._org_unit(self.mapping.enrollment_org_unit, episode, resolver)
        te = self.tracked_entity(patient, resolver, fallback_org_unit=org_unit)
        en = self._enrollment(patient, episode, org_unit or te.payload["orgUnit"], None, te)
        return TrackerPlan((te, en), ("ENROLLMENT", en.uid))

    def _encounter_plan(
        self, encounter: JsonObject, source: ResourceSource, resolver: OrgUnitResolver
    ) -> TrackerPlan:
        ref = f"Encounter/{encounter['id']}"
        stage = next((s for s in self.mapping.stages if _truthy(s.when, encounter)), None)
        if stage is None:
            return TrackerPlan.skip("Encounter does not qualify for any program stage")
        patient = self._patient_of(encounter, source, ref)
        tried: list[OrgUnitLookup] = []
        org_unit = self._org_unit(stage.org_unit, encounter, resolver, tried)
        if org_unit is None:
            raise _no_org_unit("the Encounter's location/service provider", ref, tried)
        te = self.tracked_entity(patient, resolver, fallback_org_unit=org_unit)
        episode = self._episode_for(encounter, patient, source)
        first = self._first_visit(patient, source) or encounter
        en_org = self._org_unit(self.mapping.enrollment_org_unit, episode, resolver) if episode else None
        if en_org is None and first is not encounter:
            # The enrollment is the first visit's (its date, and its place): planned from any
            # visit's job it stays the same object, not moved to wherever this visit took place.
            first_stage = next((s for s in self.mapping.stages if _truthy(s.when, first)), None)
            en_org = self._org_unit(first_stage.org_unit, first, resolver) if first_stage else None
        en = self._enrollment(patient, episode, en_org or org_unit, first, te)
        ev = self.event(encounter, stage, en.uid, te.uid, org_unit, source)
        return TrackerPlan((te, en, ev), ("EVENT", ev.uid))

    # -- objects

    def _org_unit(
        self,
        exprs: tuple[Expression, ...],
        resource: JsonObject,
        resolver: OrgUnitResolver,
        tried: list[OrgUnitLookup] | None = None,
    ) -> str | None:
        """The first reference that resolves; the ones that did not are added to ``tried``."""
        for expr in exprs:
            try:
                values = expr.run(resource, {})
            except MappingError:
                continue
            for value in values:
                found = resolver.lookup(value if isinstance(value, str) else reference_of(value))
                if found.org_unit is not None:
                    return found.org_unit
                if tried is not None:
                    tried.append(found)
        return None

    def tracked_entity(
        self, patient: JsonObject, resolver: OrgUnitResolver, *, fallback_org_unit: str | None
    ) -> PlannedObject:
        """Patient → tracked entity (the person's, keyed by the golden record, with ``per_person``)."""
        ref, person = self._person(patient, resolver.source)
        tried: list[OrgUnitLookup] = []
        org_unit = self._org_unit(self.mapping.te_org_unit, patient, resolver, tried) or fallback_org_unit
        if org_unit is None:
            raise _no_org_unit("the Patient (household or organization)", f"Patient/{patient['id']}", tried)
        attributes = []
        for rule in self.mapping.attributes:
            value = _no_false_for_true_only(_first(rule.value, person, ref), rule.value_type, rule.option_codes)
            if value is None:
                # An attribute the mapping owns but the record no longer has is cleared in DHIS2
                # (null deletes a value; omitted ones are kept), unless DHIS2 requires it (E1076).
                if rule.uid not in self.mapping.mandatory_attributes:
                    attributes.append({"attribute": rule.uid, "value": None})
                continue
            text = self._convert(value, rule.value_type, rule.option_codes, "E1007", rule.uid, ref)
            attributes.append({"attribute": rule.uid, "value": text})
        uid = self.uid("TRACKED_ENTITY", ref)
        payload = {
            "trackedEntity": uid,
            "trackedEntityType": self.mapping.tracked_entity_type,
            "orgUnit": org_unit,
            "attributes": attributes,
        }
        return PlannedObject("TRACKED_ENTITY", uid, payload, ref, seed=ref)

    def _episode_for(
        self, encounter: JsonObject, patient: JsonObject, source: ResourceSource
    ) -> JsonObject | None:
        if self.mapping.episode_filter is None:
            return None
        linked = [reference_of(item) for item in encounter.get("episodeOfCare") or []]
        candidates = [source.get("EpisodeOfCare", ref.partition("/")[2]) for ref in linked if ref]
        if not any(candidates):
            candidates = list(source.find("EpisodeOfCare", "patient", f"Patient/{patient['id']}"))
        matching = [c for c in candidates if c is not None and _truthy(self.mapping.episode_filter, c)]
        return sorted(matching, key=lambda c: str(c.get("id")))[0] if matching else None

    def _first_visit(self, patient: JsonObject, source: ResourceSource) -> JsonObject | None:
        visits = [
            e
            for e in source.find("Encounter", "patient", f"Patient/{patient['id']}")
            if any(_truthy(stage.when, e) for stage in self.mapping.stages)
            and e.get("status") != "entered-in-error"
        ]
        dated = [(str((e.get("period") or {}).get("start", "")), str(e.get("id"))) for e in visits]
        if not dated:
            return None
        _, first_id = min(dated)
        return next(e for e in visits if str(e.get("id")) == first_id)

    def _enrollment(
        self,
        patient: JsonObject,
        episode: JsonObject | None,
        org_unit: str,
        first_visit: JsonObject | None,
        te: PlannedObject,
    ) -> PlannedObject:
        if episode is not None:
            origin = f"EpisodeOfCare/{episode['id']}"
            seed = self.enrollment_seed(origin)
            uid = self.uid("ENROLLMENT", seed)
            enrolled_at = _instant(_first(self.mapping.enrolled_at, episode, origin))
            if enrolled_at is not None and self.now is not None:  # a planned episode: E1020 as for a visit
                enrolled_at = _not_in_future(enrolled_at, self.now())
            status = self.mapping.enrollment_status.get(str(episode.get("status")), "ACTIVE")
        else:
            # Without an EpisodeOfCare the enrollment belongs to (Patient, program): the same
            # UID whichever visit is delivered first, dated by the earliest stored visit.
            origin = te.origin  # the person's: every record of one person enrolls once
            seed = f"{origin}|{self.mapping.program}"
            uid = self.uid("ENROLLMENT", seed)
            enrolled_at = _instant(((first_visit or {}).get("period") or {}).get("start"))
            if enrolled_at is not None and self.now is not None:
                enrolled_at = _not_in_future(enrolled_at, self.now())
            status = "ACTIVE"
        if enrolled_at is None:
            raise Dhis2MappingError("E1025", "no enrollment date (period.start)", origin)
        # DHIS2 checks the program's mandatory attributes against the enrollment's own values and
        # the tracked entity as stored before this import (E1018), so a person registered in the
        # same payload (a visit that arrives before or with its registration) needs them here.
        program_values = [
            dict(item)
            for item in te.payload["attributes"]
            if item["attribute"] in self.mapping.program_attributes and item["value"] is not None
        ]
        payload = {
            "enrollment": uid,
            "trackedEntity": te.uid,
            "program": self.mapping.program,
            "orgUnit": org_unit,
            "enrolledAt": enrolled_at,
            "occurredAt": enrolled_at,
            "status": status,
            "attributes": program_values,
        }
        return PlannedObject("ENROLLMENT", uid, payload, origin, seed=seed)

    def event(
        self,
        encounter: JsonObject,
        stage: BoundStage,
        enrollment_uid: str,
        te_uid: str,
        org_unit: str,
        source: ResourceSource,
    ) -> PlannedObject:
        """Encounter (+ what references it) → event of ``stage``."""
        ref = f"Encounter/{encounter['id']}"
        occurred_at = _instant(_first(stage.occurred_at, encounter, ref))
        if occurred_at is None:
            raise Dhis2MappingError("E1031", "the Encounter has no date (period.start)", ref)
        status = stage.status.get(str(encounter.get("status")), "ACTIVE")
        # dhis2-core needsToValidateDataValues: never for SCHEDULE/SKIPPED events, on an ON_COMPLETE
        # stage only for COMPLETED ones. A validated event's compulsory value cannot be deleted
        # (E1076): one without a source any more is left out, so DHIS2 keeps it.
        validated = status not in ("SCHEDULE", "SKIPPED") and (
            stage.validation_strategy != "ON_COMPLETE" or status == "COMPLETED"
        )
        values: list[JsonObject] = []
        origins: list[tuple[str, str]] = []
        related: dict[str, list[JsonObject]] = {}  # one look-up per resource type, not per rule
        for rule in stage.data_values:
            value, origin = self._data_value(rule, encounter, source, ref, related)
            if value["value"] is None and rule.compulsory and validated:
                continue
            values.append(value)
            origins.append((rule.uid, origin))
        uid = self.uid("EVENT", ref)
        payload = {
            "event": uid,
            "program": self.mapping.program,
            "programStage": stage.uid,
            "enrollment": enrollment_uid,
            "trackedEntity": te_uid,
            "orgUnit": org_unit,
            # A visit still to come (a planned Encounter) has a due date, not a date it took place (E1050).
            "scheduledAt" if status in _SCHEDULED else "occurredAt": occurred_at,
            "status": status,
            "dataValues": values,
        }
        return PlannedObject("EVENT", uid, payload, ref, tuple(origins), seed=ref)

    def _candidates(
        self,
        rule: BoundDataValue,
        encounter: JsonObject,
        source: ResourceSource,
        related: dict[str, list[JsonObject]],
    ) -> list[JsonObject]:
        if rule.source == "Encounter":
            found = [encounter]
        else:
            if rule.source not in related:
                param = _ENCOUNTER_PARAM.get(rule.source, "encounter")
                related[rule.source] = [
                    r
                    for r in source.find(rule.source, param, f"Encounter/{encounter['id']}")
                    if not is_retracted(r)
                ]
            found = related[rule.source]
            if rule.codes:
                field = _CODE_FIELDS[rule.source]
                found = [r for r in found if _codings(r, field) & rule.codes]
        if rule.where is not None:
            where = rule.where
            found = [r for r in found if _truthy(where, r)]
        return sorted(found, key=_sort_key)

    def _data_value(
        self,
        rule: BoundDataValue,
        encounter: JsonObject,
        source: ResourceSource,
        ref: str,
        related: dict[str, list[JsonObject]],
    ) -> tuple[JsonObject, str]:
        candidates = self._candidates(rule, encounter, source, related)
        value: Any = None
        origin = ref
        if candidates:
            latest = candidates[-1]
            origin = f"{latest['resourceType']}/{latest['id']}"
            value = (
                rule.present
                if rule.present is not None
                else (_first(rule.value, latest, origin) if rule.value is not None else None)
            )
        elif rule.absent is not None:
            value = rule.absent
        value = _no_false_for_true_only(value, rule.value_type, rule.option_codes)
        if value is None:
            # An element the mapping owns but the record no longer has is cleared in DHIS2.
            return {"dataElement": rule.uid, "value": None}, origin
        text = self._convert(value, rule.value_type, rule.option_codes, "E1302", rule.uid, origin)
        return {"dataElement": rule.uid, "value": text}, origin

    def _convert(
        self, value: Any, value_type: str, options: frozenset[str] | None, code: str, uid: str, ref: str
    ) -> str:
        if options is not None:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if text not in options:
                raise Dhis2MappingError("E1125", f"value is not a valid option code for `{uid}`", ref)
            return text
        try:
            return to_dhis2_value(value, value_type)
        except ValueConversionError as exc:
            what = "DataElement" if code == "E1302" else "Attribute"
            raise Dhis2MappingError(code, f"{what} `{uid}` is not valid: `{exc.key}`", ref) from exc


def _no_false_for_true_only(value: Any, value_type: str, options: frozenset[str] | None) -> Any:
    """A ``TRUE_ONLY`` element or attribute holds "true" or nothing: a false reading (a yes/no
    question answered no) is no value, cleared in DHIS2, not a value DHIS2 refuses (E1302)."""
    false = value is False or (isinstance(value, str) and value.strip().lower() == "false")
    return None if value_type == "TRUE_ONLY" and options is None and false else value


def _no_org_unit(what: str, ref: str, tried: list[OrgUnitLookup]) -> Exception:
    """Why no org unit: a place still to come (wait), or stored places nothing maps (fix the table)."""
    missing = sorted({lookup.missing for lookup in tried if lookup.missing is not None})
    if missing:
        return Dhis2PendingError(f"{', '.join(missing)} not stored yet (org unit of {ref})", "location")
    described = [
        lookup.chain[0] + (f" (partOf {' → '.join(lookup.chain[1:])})" if len(lookup.chain) > 1 else "")
        for lookup in tried
        if lookup.chain
    ]
    if not described:
        refs = sorted({lookup.reference for lookup in tried if lookup.reference is not None})
        named = f": {', '.join(refs)} is not a Location or Organization" if refs else ""
        return Dhis2MappingError("org-unit", f"no org unit for {what}: no place is referenced{named}", ref)
    return Dhis2MappingError(
        "org-unit",
        f"no org unit for {what}: {'; '.join(described)} maps to no DHIS2 org unit "
        "(add an identifier of it to the org-unit table, then replay)",
        ref,
    )
