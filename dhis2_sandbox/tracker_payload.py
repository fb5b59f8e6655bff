"""Tracker import payloads: flattening, normalisation and DHIS2's error-report vocabulary.

DHIS2 flattens nested payloads (``trackedEntities[].enrollments[].events[]``) before
validating, filling in parent links and generating UIDs for objects sent without one.
Timestamps are parsed as instants; one that cannot be parsed fails the whole request with
a 400, as Jackson does in DHIS2. Message templates are those of dhis2-core
``ValidationCode``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from dhis2_sandbox.errors import SandboxError

__all__ = [
    "FlatPayload",
    "PayloadError",
    "TrackerError",
    "TrackerType",
    "flatten",
    "format_message",
    "generate_uid",
    "normalize_instant",
]

JsonObject = dict[str, Any]


class TrackerType(StrEnum):
    """The four kinds of tracker objects, as named in import reports."""

    TRACKED_ENTITY = "TRACKED_ENTITY"
    ENROLLMENT = "ENROLLMENT"
    EVENT = "EVENT"
    RELATIONSHIP = "RELATIONSHIP"

    @property
    def id_field(self) -> str:
        """The JSON property holding the object's UID."""
        return {
            TrackerType.TRACKED_ENTITY: "trackedEntity",
            TrackerType.ENROLLMENT: "enrollment",
            TrackerType.EVENT: "event",
            TrackerType.RELATIONSHIP: "relationship",
        }[self]


MESSAGES: dict[str, str] = {
    "E1000": "User: `{0}`, has no write access to OrganisationUnit: `{1}`.",
    "E1002": "TrackedEntity: `{0}`, already exists.",
    "E1005": "Could not find TrackedEntityType: `{0}`.",
    "E1006": "Attribute: `{0}`, does not exist.",
    "E1007": "Error validating attribute value type: `{0}`; Error: `{1}`.",
    "E1010": "Could not find Program: `{0}`, linked to Event.",
    "E1011": "Could not find OrganisationUnit: `{0}`, linked to Event.",
    "E1013": "Could not find ProgramStage: `{0}`, linked to Event.",
    "E1014": "Provided Program: `{0}`, is a Program without registration. "
    "An Enrollment cannot be created into Program without registration.",
    "E1015": "TrackedEntity: `{0}`, already has an active Enrollment in Program `{1}`.",
    "E1016": "TrackedEntity: `{0}`, already has an enrollment in Program: `{1}`, and this "
    "program only allows enrolling one time.",
    "E1018": "Attribute: `{0}`, is mandatory in program `{1}` but not declared in enrollment `{2}`.",
    "E1019": "Only Program attributes is allowed for enrollment; Non valid attribute: `{0}`.",
    "E1020": "Enrollment date: `{0}`, cannot be a future date.",
    "E1021": "Incident date: `{0}`, cannot be a future date.",
    "E1022": "TrackedEntity: `{0}`, must have same TrackedEntityType as Program `{1}`.",
    "E1023": "DisplayIncidentDate is true but property occurredAt is null or has an invalid format: `{0}`.",
    "E1025": "Property enrolledAt is null or has an invalid format: `{0}`.",
    "E1029": "Event OrganisationUnit: `{0}`, and Program: `{1}`, dont match.",
    "E1030": "Event: `{0}`, already exists.",
    "E1031": "Event OccurredAt date is missing.",
    "E1032": "Event: `{0}`, do not exist.",
    "E1033": "Event: `{0}`, Enrollment value is NULL.",
    "E1039": "ProgramStage: `{0}`, is not repeatable and an event already exists.",
    "E1041": "Enrollment OrganisationUnit: `{0}`, and Program: `{1}`, dont match.",
    "E1048": "Object: `{0}`, uid: `{1}`, has an invalid uid format.",
    "E1049": "Could not find OrganisationUnit: `{0}`, linked to Tracked Entity.",
    "E1050": "Event ScheduledAt date is missing.",
    "E1054": "AttributeOptionCombo `{0}` is not in the event programs category combo `{1}`.",
    "E1063": "TrackedEntity: `{0}`, does not exist.",
    "E1064": "Non-unique attribute value `{0}` for attribute `{1}`",
    "E1068": "Could not find TrackedEntity: `{0}`, linked to Enrollment.",
    "E1069": "Could not find Program: `{0}`, linked to Enrollment.",
    "E1070": "Could not find OrganisationUnit: `{0}`, linked to Enrollment.",
    "E1076": "`{0}` `{1}` is mandatory and must be specified",
    "E1077": "Attribute: `{0}`, text value exceed the maximum allowed length: `{0}`.",
    "E1079": "Event: `{0}`, program: `{1}` is different from program defined in enrollment `{2}`.",
    "E1080": "Enrollment: `{0}`, already exists.",
    "E1081": "Enrollment: `{0}`, do not exist.",
    "E1082": "Event: `{0}`, is already deleted and cannot be modified.",
    "E1089": "Event: `{0}`, references a Program Stage `{1}` that does not belong to Program `{2}`.",
    "E1090": "Attribute: `{0}`, is mandatory in tracked entity type `{1}` "
    "but not declared in tracked entity `{2}`.",
    "E1094": "Not allowed to update Enrollment: `{0}`, existing Program `{1}`.",
    "E1100": "User: `{0}`, is lacking 'F_TEI_CASCADE_DELETE' authority to delete TrackedEntity: `{1}`.",
    "E1103": "User: `{0}`, is lacking 'F_ENROLLMENT_CASCADE_DELETE' authority to delete Enrollment : `{1}`.",
    "E1110": "Not allowed to update Event: `{0}`, existing Program `{1}`.",
    "E1113": "Enrollment: `{0}`, is already deleted and cannot be modified.",
    "E1114": "TrackedEntity: `{0}`, is already deleted and cannot be modified.",
    "E1115": "Could not find CategoryOptionCombo: `{0}`.",
    "E1121": "Missing required trackedEntity property: `{0}`.",
    "E1122": "Missing required enrollment property: `{0}`.",
    "E1123": "Missing required event property: `{0}`.",
    "E1125": "Value `{0}` is not a valid option code in option set `{1}`",
    "E1126": "Not allowed to update Tracked Entity property: {0}.",
    "E1127": "Not allowed to update Enrollment property: {0}.",
    "E1128": "Not allowed to update Event property: {0}.",
    "E1302": "DataElement `{0}` is not valid: `{1}`",
    "E1303": "Mandatory DataElement `{0}` is not present",
    "E1304": "DataElement `{0}` is not a valid data element",
    "E1305": "DataElement `{0}` is not part of `{1}` program stage",
    "E4006": "Could not find relationship type: `{0}`.",
    "E5000": '"{0}" `{1}` cannot be persisted because "{2}" `{3}` referenced by it cannot be persisted.',
}


def format_message(code: str, args: tuple[str, ...]) -> str:
    """Fill a ValidationCode template with its arguments."""
    template = MESSAGES[code]
    for index, arg in enumerate(args):
        template = template.replace("{" + str(index) + "}", arg)
    return template


@dataclass(frozen=True, slots=True)
class TrackerError:
    """One entry of ``validationReport.errorReports``."""

    code: str
    tracker_type: TrackerType
    uid: str
    args: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        """The human-readable DHIS2 message."""
        return format_message(self.code, self.args)


class PayloadError(SandboxError):
    """The request body cannot be read as a tracker payload (DHIS2 answers 400)."""


_UID_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def generate_uid() -> str:
    """A random UID the way DHIS2's ``CodeGenerator`` makes one."""
    return secrets.choice(_UID_ALPHABET[:52]) + "".join(secrets.choice(_UID_ALPHABET) for _ in range(10))


def normalize_instant(value: Any, name: str) -> str | None:
    """Parse a payload timestamp as DHIS2 does and render it as DHIS2 exports it (server time, UTC)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PayloadError(f"Cannot deserialize value of property `{name}`: `{value}`")
    text = value.strip()
    try:
        if len(text) == 10:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise PayloadError(f'Cannot deserialize value of property `{name}` from String "{text}"') from exc
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed.isoformat(timespec="milliseconds")


def _text(value: Any) -> str | None:
    # Jackson coerces JSON scalars to the String properties of the tracker model.
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise PayloadError(f"Cannot deserialize a {type(value).__name__} as a String")


def _values(items: Any, key: str) -> list[JsonObject]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise PayloadError(f"`{key}` must be an array")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise PayloadError(f"`{key}` items must be objects")
        ref = item.get("attribute" if key == "attributes" else "dataElement")
        out.append(
            {
                **item,
                "value": _text(item.get("value")),
                ("attribute" if key == "attributes" else "dataElement"): _text(ref),
            }
        )
    return out


@dataclass
class FlatPayload:
    """A payload after flattening: each object once, parents linked by UID, in request order."""

    tracked_entities: list[JsonObject] = field(default_factory=list)
    enrollments: list[JsonObject] = field(default_factory=list)
    events: list[JsonObject] = field(default_factory=list)
    relationships: list[JsonObject] = field(default_factory=list)

    def of(self, tracker_type: TrackerType) -> list[JsonObject]:
        """The objects of one type."""
        return {
            TrackerType.TRACKED_ENTITY: self.tracked_entities,
            TrackerType.ENROLLMENT: self.enrollments,
            TrackerType.EVENT: self.events,
            TrackerType.RELATIONSHIP: self.relationships,
        }[tracker_type]

    @property
    def total(self) -> int:
        """Number of objects in the payload."""
        return sum(len(self.of(kind)) for kind in TrackerType)


def _list(body: JsonObject, key: str) -> list[JsonObject]:
    items = body.get(key) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PayloadError(f"`{key}` must be an array of objects")
    return items


def _event(raw: JsonObject, enrollment: JsonObject | None) -> JsonObject:
    event = dict(raw)
    event["event"] = _text(event.get("event")) or generate_uid()
    if enrollment is not None:
        event["enrollment"] = enrollment["enrollment"]
        event["trackedEntity"] = enrollment.get("trackedEntity")
        event.setdefault("program", enrollment.get("program"))
    for name in ("occurredAt", "scheduledAt", "completedAt"):
        event[name] = normalize_instant(event.get(name), name)
    event["dataValues"] = _values(event.get("dataValues"), "dataValues")
    return event


def _enrollment(raw: JsonObject, tracked_entity: JsonObject | None, flat: FlatPayload) -> JsonObject:
    enrollment = {key: value for key, value in raw.items() if key != "events"}
    enrollment["enrollment"] = _text(enrollment.get("enrollment")) or generate_uid()
    if tracked_entity is not None:
        enrollment["trackedEntity"] = tracked_entity["trackedEntity"]
    for name in ("enrolledAt", "occurredAt", "completedAt"):
        enrollment[name] = normalize_instant(enrollment.get(name), name)
    enrollment["attributes"] = _values(enrollment.get("attributes"), "attributes")
    flat.enrollments.append(enrollment)
    for event in _list(raw, "events"):
        flat.events.append(_event(event, enrollment))
    return enrollment


def flatten(body: Any) -> FlatPayload:
    """Flatten a nested or flat payload into request order (parents before children)."""
    if not isinstance(body, dict):
        raise PayloadError("The request body must be a JSON object")
    flat = FlatPayload()
    nested_enrollments: list[tuple[JsonObject, JsonObject]] = []
    for raw in _list(body, "trackedEntities"):
        tracked_entity = {
            key: value for key, value in raw.items() if key not in ("enrollments", "relationships")
        }
        tracked_entity["trackedEntity"] = _text(tracked_entity.get("trackedEntity")) or generate_uid()
        tracked_entity["attributes"] = _values(tracked_entity.get("attributes"), "attributes")
        flat.tracked_entities.append(tracked_entity)
        nested_enrollments.extend((tracked_entity, enrollment) for enrollment in _list(raw, "enrollments"))
        flat.relationships.extend(_list(raw, "relationships"))
    for tracked_entity, raw in nested_enrollments:
        _enrollment(raw, tracked_entity, flat)
    for raw in _list(body, "enrollments"):
        _enrollment(raw, None, flat)
    for raw in _list(body, "events"):
        flat.events.append(_event(raw, None))
    flat.relationships.extend(_list(body, "relationships"))
    for relationship in flat.relationships:
        relationship["relationship"] = _text(relationship.get("relationship")) or generate_uid()
    return flat
