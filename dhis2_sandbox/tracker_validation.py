"""Tracker validation rules of the sandbox, object by object, with DHIS2's error codes.

Rules follow dhis2-core's tracker validators as summarised in shared/dhis2 README §1.6 and
§7: existence per import strategy, metadata references, org-unit assignment and capture
scope, dates, enrollment uniqueness, attribute and data value types, option codes,
uniqueness, mandatory attributes and data elements, non-repeatable stages and immutable
properties. Objects are validated in order (tracked entities, enrollments, events) and a
child may reference a parent sent in the same payload; but, as in DHIS2, an enrollment's
mandatory program attributes (E1018) count only its own values and those of its tracked
entity as stored before the import, not the tracked entity sent alongside.

Value types, UIDs and periods are the sandbox's own reading of DHIS2's rules (``valuetypes``,
``periods``), never the connector's: the sandbox judges what the connector sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from dhis2_sandbox.catalog import Catalog
from dhis2_sandbox.storage import SandboxStore, StoredObject
from dhis2_sandbox.tracker_payload import FlatPayload, TrackerError, TrackerType
from dhis2_sandbox.valuetypes import MAX_ATTRIBUTE_LENGTH, is_uid, value_problem

__all__ = ["Action", "ImportStrategy", "TrackerValidator"]

JsonObject = dict[str, Any]

_TABLE = {
    TrackerType.TRACKED_ENTITY: "tracked_entity",
    TrackerType.ENROLLMENT: "enrollment",
    TrackerType.EVENT: "event",
}
_EXISTS = {TrackerType.TRACKED_ENTITY: "E1002", TrackerType.ENROLLMENT: "E1080", TrackerType.EVENT: "E1030"}
_MISSING = {TrackerType.TRACKED_ENTITY: "E1063", TrackerType.ENROLLMENT: "E1081", TrackerType.EVENT: "E1032"}
_DELETED = {TrackerType.TRACKED_ENTITY: "E1114", TrackerType.ENROLLMENT: "E1113", TrackerType.EVENT: "E1082"}
_REQUIRED = {TrackerType.TRACKED_ENTITY: "E1121", TrackerType.ENROLLMENT: "E1122", TrackerType.EVENT: "E1123"}
_EVENT_STATUSES = {"ACTIVE", "COMPLETED", "VISITED", "SCHEDULE", "OVERDUE", "SKIPPED"}


class ImportStrategy(StrEnum):
    """``importStrategy`` of a tracker import."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    CREATE_AND_UPDATE = "CREATE_AND_UPDATE"
    DELETE = "DELETE"


class Action(StrEnum):
    """What the import does to one object once validated."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass
class TrackerValidator:
    """Validates one flattened payload against metadata and what the store holds."""

    catalog: Catalog
    store: SandboxStore
    payload: FlatPayload
    strategy: ImportStrategy
    username: str
    capture_roots: frozenset[str] | None
    now: datetime
    actions: dict[tuple[TrackerType, str], Action] = field(default_factory=dict)
    stored: dict[tuple[TrackerType, str], StoredObject] = field(default_factory=dict)
    cascade_delete: bool = True  # the user holds F_TEI_CASCADE_DELETE and F_ENROLLMENT_CASCADE_DELETE

    def __post_init__(self) -> None:
        self._te_by_uid = {te["trackedEntity"]: te for te in self.payload.tracked_entities}
        self._enrollment_by_uid = {en["enrollment"]: en for en in self.payload.enrollments}
        # Indexes of the payload, so checks against "the rest of the payload" stay linear.
        self._holders: dict[tuple[str, str], set[str]] = {}
        for te in self.payload.tracked_entities:
            for item in te["attributes"]:
                if item.get("value") is not None:
                    self._holders.setdefault((item["attribute"], item["value"]), set()).add(
                        te["trackedEntity"]
                    )
        for en in self.payload.enrollments:
            for item in en["attributes"]:
                if item.get("value") is not None:
                    key = (item["attribute"], item["value"])
                    self._holders.setdefault(key, set()).add(en.get("trackedEntity") or "")
        self._enrollments_by_te: dict[tuple[str, str], list[JsonObject]] = {}
        for en in self.payload.enrollments:
            self._enrollments_by_te.setdefault(
                (str(en.get("trackedEntity")), str(en.get("program"))), []
            ).append(en)
        self._events_by_stage: dict[tuple[str, str], list[str]] = {}
        for ev in self.payload.events:
            key = (str(ev.get("enrollment")), str(ev.get("programStage")))
            self._events_by_stage.setdefault(key, []).append(ev["event"])

    # -- shared helpers

    def _resolve_action(self, kind: TrackerType, uid: str, errors: list[TrackerError]) -> Action | None:
        stored = self.store.get(_TABLE[kind], uid)
        if stored is not None:
            self.stored[(kind, uid)] = stored
        if stored is not None and stored.deleted:
            errors.append(TrackerError(_DELETED[kind], kind, uid, (uid,)))
            return None
        exists = stored is not None
        if self.strategy is ImportStrategy.CREATE and exists:
            errors.append(TrackerError(_EXISTS[kind], kind, uid, (uid,)))
            return None
        if self.strategy in (ImportStrategy.UPDATE, ImportStrategy.DELETE) and not exists:
            errors.append(TrackerError(_MISSING[kind], kind, uid, (uid,)))
            return None
        if self.strategy is ImportStrategy.DELETE:
            if not self.cascade_delete and self._has_live_children(kind, uid):
                # Judged against what is stored, not the payload: children deleted in the same
                # request still count, as in dhis2-core's validation before it persists anything.
                code = "E1100" if kind is TrackerType.TRACKED_ENTITY else "E1103"
                errors.append(TrackerError(code, kind, uid, (self.username, uid)))
                return None
            action = Action.DELETE
        else:
            action = Action.UPDATE if exists else Action.CREATE
        self.actions[(kind, uid)] = action
        return action

    def _has_live_children(self, kind: TrackerType, uid: str) -> bool:
        if kind is TrackerType.TRACKED_ENTITY:
            children, _ = self.store.list_objects("enrollment", where={"tracked_entity": uid}, limit=1)
        elif kind is TrackerType.ENROLLMENT:
            children, _ = self.store.list_objects("event", where={"enrollment": uid}, limit=1)
        else:
            return False
        return bool(children)

    def _in_capture_scope(self, org_unit: str) -> bool:
        if self.capture_roots is None:
            return True
        return bool(self.capture_roots.intersection(self.catalog.org_unit_ancestors(org_unit)))

    def _required(
        self, kind: TrackerType, obj: JsonObject, names: tuple[str, ...], errors: list[TrackerError]
    ) -> bool:
        uid = obj[kind.id_field]
        missing = [name for name in names if not obj.get(name)]
        for name in missing:
            errors.append(TrackerError(_REQUIRED[kind], kind, uid, (name,)))
        return not missing

    def _tracked_entity(self, uid: str | None) -> JsonObject | None:
        if uid is None:
            return None
        if uid in self._te_by_uid:
            return self._te_by_uid[uid]
        stored = self.store.get("tracked_entity", uid)
        return None if stored is None or stored.deleted else stored.doc

    def _enrollment(self, uid: str | None) -> JsonObject | None:
        if uid is None:
            return None
        if uid in self._enrollment_by_uid:
            return self._enrollment_by_uid[uid]
        stored = self.store.get("enrollment", uid)
        return None if stored is None or stored.deleted else stored.doc

    def _attribute_value_errors(
        self, kind: TrackerType, uid: str, attribute: JsonObject, value: str, owner: str | None
    ) -> list[TrackerError]:
        errors: list[TrackerError] = []
        option_set = (attribute.get("optionSet") or {}).get("id")
        if option_set is not None:
            if value not in self.catalog.option_codes(option_set):
                errors.append(TrackerError("E1125", kind, uid, (value, option_set)))
        else:
            key = value_problem(value, attribute["valueType"])
            if key is not None:
                errors.append(TrackerError("E1007", kind, uid, (attribute["valueType"], key)))
        if len(value) > MAX_ATTRIBUTE_LENGTH:
            errors.append(TrackerError("E1077", kind, uid, (attribute["id"],)))
        if attribute.get("unique") and self._not_unique(attribute["id"], value, owner):
            errors.append(TrackerError("E1064", kind, uid, (value, attribute["id"])))
        return errors

    def _not_unique(self, attribute: str, value: str, owner: str | None) -> bool:
        holders = set(self.store.tracked_entities_with_value(attribute, value))
        holders |= self._holders.get((attribute, value), set())
        holders.discard(owner or "")
        return bool(holders)

    # -- tracked entities

    def tracked_entity(self, te: JsonObject) -> list[TrackerError]:
        """Errors of one tracked entity."""
        kind, uid = TrackerType.TRACKED_ENTITY, te["trackedEntity"]
        errors: list[TrackerError] = []
        if not is_uid(uid):
            return [TrackerError("E1048", kind, uid, ("trackedEntity", uid))]
        action = self._resolve_action(kind, uid, errors)
        if action is None or action is Action.DELETE:
            return errors
        if not self._required(kind, te, ("trackedEntityType", "orgUnit"), errors):
            return errors
        tet = self.catalog.get("trackedEntityTypes", te["trackedEntityType"])
        if tet is None:
            errors.append(TrackerError("E1005", kind, uid, (te["trackedEntityType"],)))
        if self.catalog.get("organisationUnits", te["orgUnit"]) is None:
            errors.append(TrackerError("E1049", kind, uid, (te["orgUnit"],)))
        elif not self._in_capture_scope(te["orgUnit"]):
            errors.append(TrackerError("E1000", kind, uid, (self.username, te["orgUnit"])))
        stored = self.stored.get((kind, uid))
        if action is Action.UPDATE and stored is not None:
            if stored.doc["trackedEntityType"] != te["trackedEntityType"]:
                errors.append(TrackerError("E1126", kind, uid, ("trackedEntityType",)))
        required = self.catalog.tet_attributes(tet["id"]) if tet is not None else {}
        for item in te["attributes"]:
            meta = self.catalog.get("trackedEntityAttributes", item.get("attribute"))
            if meta is None:
                errors.append(TrackerError("E1006", kind, uid, (str(item.get("attribute")),)))
            elif item.get("value") is not None:
                errors.extend(self._attribute_value_errors(kind, uid, meta, item["value"], uid))
            elif required.get(meta["id"]):
                # A null value deletes one, but a mandatory one can never be deleted (dhis2-core
                # trackedentity.AttributeValidator.validateAttributes).
                errors.append(TrackerError("E1076", kind, uid, ("TrackedEntityAttribute", meta["id"])))
        if action is Action.CREATE and tet is not None:
            present = {a["attribute"] for a in te["attributes"] if a.get("value") is not None}
            for attribute, mandatory in self.catalog.tet_attributes(tet["id"]).items():
                if mandatory and attribute not in present:
                    errors.append(TrackerError("E1090", kind, uid, (attribute, tet["id"], uid)))
        return errors

    # -- enrollments

    def enrollment(self, en: JsonObject) -> list[TrackerError]:
        """Errors of one enrollment."""
        kind, uid = TrackerType.ENROLLMENT, en["enrollment"]
        errors: list[TrackerError] = []
        if not is_uid(uid):
            return [TrackerError("E1048", kind, uid, ("enrollment", uid))]
        action = self._resolve_action(kind, uid, errors)
        if action is None or action is Action.DELETE:
            return errors
        if not self._required(kind, en, ("program", "orgUnit", "trackedEntity"), errors):
            return errors
        program = self.catalog.get("programs", en["program"])
        if program is None:
            errors.append(TrackerError("E1069", kind, uid, (en["program"],)))
        if self.catalog.get("organisationUnits", en["orgUnit"]) is None:
            errors.append(TrackerError("E1070", kind, uid, (en["orgUnit"],)))
        elif not self._in_capture_scope(en["orgUnit"]):
            errors.append(TrackerError("E1000", kind, uid, (self.username, en["orgUnit"])))
        te = self._tracked_entity(en["trackedEntity"])
        if te is None:
            errors.append(TrackerError("E1068", kind, uid, (en["trackedEntity"],)))
        if program is not None:
            errors.extend(self._enrollment_program_rules(en, program, te))
        if not en.get("enrolledAt"):
            errors.append(TrackerError("E1025", kind, uid, ("null",)))
        stored = self.stored.get((kind, uid))
        if action is Action.UPDATE and stored is not None:
            if stored.doc["trackedEntity"] != en["trackedEntity"]:
                errors.append(TrackerError("E1127", kind, uid, ("trackedEntity",)))
            if stored.doc["program"] != en["program"]:
                errors.append(TrackerError("E1094", kind, uid, (uid, stored.doc["program"])))
        errors.extend(self._enrollment_attributes(en, program))
        return errors

    def _enrollment_program_rules(
        self, en: JsonObject, program: JsonObject, te: JsonObject | None
    ) -> list[TrackerError]:
        kind, uid = TrackerType.ENROLLMENT, en["enrollment"]
        errors: list[TrackerError] = []
        if program["programType"] != "WITH_REGISTRATION":
            return [TrackerError("E1014", kind, uid, (program["id"],))]
        if te is not None and (program.get("trackedEntityType") or {}).get("id") != te["trackedEntityType"]:
            errors.append(TrackerError("E1022", kind, uid, (te["trackedEntity"], program["id"])))
        if en["orgUnit"] not in self.catalog.program_org_units(program["id"]) and self.catalog.get(
            "organisationUnits", en["orgUnit"]
        ):
            errors.append(
                TrackerError(
                    "E1041", kind, uid, (f"OrganisationUnit ({en['orgUnit']})", f"Program ({program['id']})")
                )
            )
        now = self.now.isoformat(timespec="milliseconds")
        if (
            en.get("enrolledAt")
            and en["enrolledAt"] > now
            and not program.get("selectEnrollmentDatesInFuture")
        ):
            errors.append(TrackerError("E1020", kind, uid, (en["enrolledAt"],)))
        if en.get("occurredAt") and en["occurredAt"] > now and not program.get("selectIncidentDatesInFuture"):
            errors.append(TrackerError("E1021", kind, uid, (en["occurredAt"],)))
        if program.get("displayIncidentDate") and not en.get("occurredAt"):
            errors.append(TrackerError("E1023", kind, uid, ("null",)))
        te_uid = en["trackedEntity"]
        others = [e for e in self.store.enrollments_of(te_uid, program["id"]) if e.uid != uid]
        other_docs = [e.doc for e in others] + [
            e for e in self._enrollments_by_te.get((te_uid, program["id"]), []) if e["enrollment"] != uid
        ]
        if (en.get("status") or "ACTIVE") == "ACTIVE" and any(
            (doc.get("status") or "ACTIVE") == "ACTIVE" for doc in other_docs
        ):
            errors.append(TrackerError("E1015", kind, uid, (te_uid, program["id"])))
        if program.get("onlyEnrollOnce") and other_docs:
            errors.append(TrackerError("E1016", kind, uid, (te_uid, program["id"])))
        return errors

    def _enrollment_attributes(self, en: JsonObject, program: JsonObject | None) -> list[TrackerError]:
        kind, uid = TrackerType.ENROLLMENT, en["enrollment"]
        errors: list[TrackerError] = []
        allowed = self.catalog.program_attributes(program["id"]) if program is not None else {}
        for item in en["attributes"]:
            attribute = item.get("attribute")
            meta = self.catalog.get("trackedEntityAttributes", attribute)
            if meta is None:
                errors.append(TrackerError("E1006", kind, uid, (str(attribute),)))
            elif program is not None and attribute not in allowed:
                errors.append(TrackerError("E1019", kind, uid, (f"{attribute}={item.get('value')}",)))
            elif item.get("value") is not None:
                errors.extend(
                    self._attribute_value_errors(kind, uid, meta, item["value"], en["trackedEntity"])
                )
            elif allowed.get(attribute):
                # As on a tracked entity: a mandatory program attribute cannot be deleted.
                errors.append(TrackerError("E1076", kind, uid, ("TrackedEntityAttribute", str(attribute))))
        if program is not None:
            # DHIS2 (EnrollmentAttributeValidator.validateMandatoryAttributes) counts the
            # enrollment's own non-empty attributes and those of the tracked entity as stored
            # before this import (its preheat), never the tracked entity sent alongside: a new
            # person enrolled in the same payload must repeat the mandatory values on the enrollment.
            present = {a["attribute"] for a in en["attributes"] if a.get("value")}
            present |= self._stored_attributes(en["trackedEntity"])
            for attribute, mandatory in allowed.items():
                if mandatory and attribute not in present:
                    errors.append(TrackerError("E1018", kind, uid, (attribute, program["id"], uid)))
        return errors

    def _stored_attributes(self, te_uid: str) -> set[str]:
        stored = self.store.get("tracked_entity", te_uid)
        if stored is None or stored.deleted:
            return set()
        return {a["attribute"] for a in stored.doc.get("attributes", []) if a.get("value")}

    # -- events

    def event(self, ev: JsonObject) -> list[TrackerError]:
        """Errors of one event."""
        kind, uid = TrackerType.EVENT, ev["event"]
        errors: list[TrackerError] = []
        if not is_uid(uid):
            return [TrackerError("E1048", kind, uid, ("event", uid))]
        action = self._resolve_action(kind, uid, errors)
        if action is None or action is Action.DELETE:
            return errors
        if not self._required(kind, ev, ("programStage", "orgUnit"), errors):
            return errors
        stage = self.catalog.get("programStages", ev["programStage"])
        if stage is None:
            errors.append(TrackerError("E1013", kind, uid, (ev["programStage"],)))
        program_uid = ev.get("program") or (stage or {}).get("program", {}).get("id")
        program = self.catalog.get("programs", program_uid)
        if program is None and program_uid is not None:
            errors.append(TrackerError("E1010", kind, uid, (program_uid,)))
        if self.catalog.get("organisationUnits", ev["orgUnit"]) is None:
            errors.append(TrackerError("E1011", kind, uid, (ev["orgUnit"],)))
        elif not self._in_capture_scope(ev["orgUnit"]):
            errors.append(TrackerError("E1000", kind, uid, (self.username, ev["orgUnit"])))
        if stage is None or program is None:
            return errors
        ev["program"] = program["id"]
        if stage["id"] not in self.catalog.program_stages(program["id"]):
            errors.append(TrackerError("E1089", kind, uid, (uid, stage["id"], program["id"])))
        if ev["orgUnit"] not in self.catalog.program_org_units(program["id"]) and self.catalog.get(
            "organisationUnits", ev["orgUnit"]
        ):
            errors.append(
                TrackerError(
                    "E1029", kind, uid, (f"OrganisationUnit ({ev['orgUnit']})", f"Program ({program['id']})")
                )
            )
        enrollment: JsonObject | None = None
        if program["programType"] == "WITH_REGISTRATION":
            enrollment = self._enrollment(ev.get("enrollment"))
            if enrollment is None:
                errors.append(TrackerError("E1033", kind, uid, (uid,)))
            elif enrollment["program"] != program["id"]:
                errors.append(TrackerError("E1079", kind, uid, (uid, program["id"], enrollment["program"])))
            else:
                ev["trackedEntity"] = enrollment.get("trackedEntity")
        errors.extend(self._event_dates_and_status(ev))
        stored = self.stored.get((kind, uid))
        if action is Action.UPDATE and stored is not None:
            if stored.doc.get("enrollment") != ev.get("enrollment") and enrollment is not None:
                errors.append(TrackerError("E1128", kind, uid, ("enrollment",)))
            if stored.doc["program"] != program["id"]:
                errors.append(TrackerError("E1110", kind, uid, (uid, stored.doc["program"])))
        if not stage.get("repeatable") and enrollment is not None:
            if self._stage_taken(uid, enrollment["enrollment"], stage["id"]):
                errors.append(TrackerError("E1039", kind, uid, (stage["id"],)))
        errors.extend(self._attribute_option_combo(ev, program))
        errors.extend(self._data_values(ev, stage, stored))
        return errors

    def _event_dates_and_status(self, ev: JsonObject) -> list[TrackerError]:
        kind, uid = TrackerType.EVENT, ev["event"]
        errors: list[TrackerError] = []
        status = ev.get("status") or "ACTIVE"
        if status not in _EVENT_STATUSES:
            status = "ACTIVE"
        if status in ("ACTIVE", "COMPLETED", "VISITED") and not ev.get("occurredAt"):
            errors.append(TrackerError("E1031", kind, uid))
        if status == "SCHEDULE" and not ev.get("scheduledAt"):
            errors.append(TrackerError("E1050", kind, uid))
        return errors

    def _stage_taken(self, uid: str, enrollment: str, stage: str) -> bool:
        if any(other != uid for other in self.store.events_of(enrollment, stage)):
            return True
        return any(other != uid for other in self._events_by_stage.get((enrollment, stage), []))

    def _attribute_option_combo(self, ev: JsonObject, program: JsonObject) -> list[TrackerError]:
        aoc = ev.get("attributeOptionCombo")
        if not aoc:
            return []
        kind, uid = TrackerType.EVENT, ev["event"]
        if self.catalog.get("categoryOptionCombos", aoc) is None:
            return [TrackerError("E1115", kind, uid, (aoc,))]
        combo = program["categoryCombo"]["id"]
        if aoc not in self.catalog.combo_options(combo):
            return [TrackerError("E1054", kind, uid, (aoc, combo))]
        return []

    def _data_values(
        self, ev: JsonObject, stage: JsonObject, stored: StoredObject | None
    ) -> list[TrackerError]:
        kind, uid = TrackerType.EVENT, ev["event"]
        errors: list[TrackerError] = []
        elements = self.catalog.stage_elements(stage["id"])
        status = ev.get("status") or "ACTIVE"
        strategy = stage.get("validationStrategy", "ON_COMPLETE")
        # dhis2-core needsToValidateDataValues: never for SCHEDULE/SKIPPED events; on an
        # ON_COMPLETE stage only once the event is COMPLETED.
        validated = status not in ("SCHEDULE", "SKIPPED") and (
            strategy != "ON_COMPLETE" or status == "COMPLETED"
        )
        for item in ev["dataValues"]:
            element = item.get("dataElement")
            meta = self.catalog.get("dataElements", element)
            if meta is None:
                errors.append(TrackerError("E1304", kind, uid, (str(element),)))
                continue
            if element not in elements:
                errors.append(TrackerError("E1305", kind, uid, (element, stage["id"])))
                continue
            value = item.get("value")
            if value is None:
                # validateNullDataValues: a compulsory element cannot be deleted while validated.
                if validated and elements.get(element):
                    errors.append(TrackerError("E1076", kind, uid, ("DataElement", element)))
                continue
            option_set = (meta.get("optionSet") or {}).get("id")
            if option_set is not None:
                if value not in self.catalog.option_codes(option_set):
                    errors.append(TrackerError("E1125", kind, uid, (value, option_set)))
            else:
                key = value_problem(value, meta["valueType"])
                if key is not None:
                    errors.append(TrackerError("E1302", kind, uid, (element, key)))
        if validated:
            present = {
                v["dataElement"]
                for v in (stored.doc.get("dataValues", []) if stored else [])
                if v.get("value")
            }
            # An element in the payload is not missing (a null one is E1076 above).
            present |= {item.get("dataElement") for item in ev["dataValues"]}
            for element, compulsory in elements.items():
                if compulsory and element not in present:
                    errors.append(TrackerError("E1303", kind, uid, (element,)))
        return errors
