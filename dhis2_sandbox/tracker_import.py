"""The sandbox's tracker importer: validate, commit and report like ``POST /api/tracker``.

Flow (dhis2-core ``TrackerImporterService``): flatten → validate every object →
with ``atomicMode=OBJECT`` drop children of invalid parents (``E5000``) → commit the valid
objects in one transaction (``atomicMode=ALL``: nothing when any object failed) → build the
``ImportReport``. The report shape follows the DHIS2 version the sandbox emulates: ``index``
in object reports before 2.41, ``bundleReport.status``/``stats`` before 2.40, ``args`` on
error reports from 2.43.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from dhis2_sandbox.catalog import Catalog
from dhis2_sandbox.errors import SandboxError
from dhis2_sandbox.storage import SandboxStore
from dhis2_sandbox.tracker_payload import FlatPayload, TrackerError, TrackerType
from dhis2_sandbox.tracker_validation import Action, ImportStrategy, TrackerValidator

__all__ = ["ParamError", "TrackerImportParams", "TrackerImportResult", "run_tracker_import"]

JsonObject = dict[str, Any]
Version = tuple[int, int]


class ParamError(SandboxError):
    """An import parameter DHIS2 would refuse (400 from 2.40, 409 before)."""


class _Mode(StrEnum):
    pass


_CHOICES: dict[str, tuple[str, ...]] = {
    "importMode": ("COMMIT", "VALIDATE"),
    "importStrategy": tuple(ImportStrategy),
    "atomicMode": ("ALL", "OBJECT"),
    "flushMode": ("AUTO", "OBJECT"),
    "validationMode": ("FULL", "FAIL_FAST", "SKIP"),
    "reportMode": ("FULL", "ERRORS", "WARNINGS"),
}
_ID_SCHEME_PARAMS = (
    "idScheme",
    "dataElementIdScheme",
    "orgUnitIdScheme",
    "programIdScheme",
    "programStageIdScheme",
    "categoryOptionComboIdScheme",
    "categoryOptionIdScheme",
)


@dataclass(frozen=True, slots=True)
class TrackerImportParams:
    """Query parameters of ``POST /api/tracker`` with DHIS2's defaults (``ImportRequestParams``)."""

    run_async: bool = True
    import_mode: str = "COMMIT"
    import_strategy: ImportStrategy = ImportStrategy.CREATE_AND_UPDATE
    atomic_mode: str = "ALL"
    validation_mode: str = "FULL"
    report_mode: str = "ERRORS"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> TrackerImportParams:
        """Read and check the query string."""
        values: dict[str, str] = {}
        for name, choices in _CHOICES.items():
            raw = query.get(name)
            if raw is None:
                continue
            if raw.upper() not in choices:
                raise ParamError(
                    f"Value {raw} is not valid for parameter {name}. Valid values are: {list(choices)}"
                )
            values[name] = raw.upper()
        for name in _ID_SCHEME_PARAMS:
            if query.get(name, "UID").upper() != "UID":
                # The sandbox's demo metadata is addressed by UID only; say so instead of guessing.
                raise ParamError(f"The DHIS2 sandbox supports only {name}=UID")
        run_async = query.get("async", "true").lower() != "false"
        return cls(
            run_async=run_async,
            import_mode=values.get("importMode", "COMMIT"),
            import_strategy=ImportStrategy(values.get("importStrategy", "CREATE_AND_UPDATE")),
            atomic_mode=values.get("atomicMode", "ALL"),
            validation_mode=values.get("validationMode", "FULL"),
            report_mode=values.get("reportMode", "ERRORS"),
        )

    def as_job_data(self) -> JsonObject:
        """The effective parameters as the job's first notification shows them."""
        scheme = {"idScheme": "UID", "attributeUid": None}
        return {
            "importMode": self.import_mode,
            "idSchemes": {name: scheme for name in _ID_SCHEME_PARAMS},
            "importStrategy": self.import_strategy.value,
            "atomicMode": self.atomic_mode,
            "flushMode": "AUTO",
            "validationMode": self.validation_mode,
            "skipPatternValidation": False,
            "skipSideEffects": False,
            "skipRuleEngine": False,
            "filename": None,
            "reportMode": self.report_mode,
        }


@dataclass(frozen=True, slots=True)
class TrackerImportResult:
    """The import report and the counts the job notification quotes."""

    report: JsonObject
    status: str
    created: int
    updated: int
    deleted: int
    ignored: int


_ORDER = (TrackerType.TRACKED_ENTITY, TrackerType.ENROLLMENT, TrackerType.EVENT, TrackerType.RELATIONSHIP)


def _validate(
    validator: TrackerValidator, flat: FlatPayload, params: TrackerImportParams
) -> list[TrackerError]:
    checks = {
        TrackerType.TRACKED_ENTITY: validator.tracked_entity,
        TrackerType.ENROLLMENT: validator.enrollment,
        TrackerType.EVENT: validator.event,
    }
    errors: list[TrackerError] = []
    for kind in _ORDER:
        for obj in flat.of(kind):
            if kind is TrackerType.RELATIONSHIP:
                # The demo metadata defines no relationship types, so DHIS2 would find none.
                found = [
                    TrackerError("E4006", kind, obj["relationship"], (str(obj.get("relationshipType")),))
                ]
            elif params.validation_mode == "SKIP":
                found = []
                validator._resolve_action(kind, obj[kind.id_field], found)
            else:
                found = checks[kind](obj)
            errors.extend(found)
            if found and params.validation_mode == "FAIL_FAST":
                return errors
    return errors


def _orphan_errors(flat: FlatPayload, invalid: set[tuple[TrackerType, str]]) -> list[TrackerError]:
    errors: list[TrackerError] = []
    te, en, ev = TrackerType.TRACKED_ENTITY, TrackerType.ENROLLMENT, TrackerType.EVENT
    for enrollment in flat.enrollments:
        uid, parent = enrollment["enrollment"], enrollment.get("trackedEntity")
        if (en, uid) not in invalid and (te, parent) in invalid:
            invalid.add((en, uid))
            errors.append(TrackerError("E5000", en, uid, ("enrollment", uid, "trackedEntity", str(parent))))
    for event in flat.events:
        uid = event["event"]
        if (ev, uid) in invalid:
            continue
        if (en, event.get("enrollment")) in invalid:
            invalid.add((ev, uid))
            errors.append(
                TrackerError("E5000", ev, uid, ("event", uid, "enrollment", str(event["enrollment"])))
            )
    return errors


def _stats(
    created: int = 0, updated: int = 0, deleted: int = 0, ignored: int = 0, total: int = 0
) -> JsonObject:
    return {"created": created, "updated": updated, "deleted": deleted, "ignored": ignored, "total": total}


def _error_json(error: TrackerError, version: Version) -> JsonObject:
    out: JsonObject = {
        "message": error.message,
        "errorCode": error.code,
        "trackerType": error.tracker_type.value,
        "uid": error.uid,
    }
    if version >= (2, 43):
        out["args"] = list(error.args)
    return out


def run_tracker_import(
    flat: FlatPayload,
    params: TrackerImportParams,
    catalog: Catalog,
    store: SandboxStore,
    *,
    username: str,
    capture_roots: frozenset[str] | None,
    version: Version,
    now: datetime,
    cascade_delete: bool = True,
) -> TrackerImportResult:
    """Validate and (unless invalid under ``atomicMode=ALL`` or ``importMode=VALIDATE``) commit."""
    validator = TrackerValidator(
        catalog, store, flat, params.import_strategy, username, capture_roots, now, cascade_delete=cascade_delete
    )
    errors = _validate(validator, flat, params)
    invalid = {(error.tracker_type, error.uid) for error in errors}
    if params.atomic_mode == "OBJECT":
        errors.extend(_orphan_errors(flat, invalid))
    validation: JsonObject = {"errorReports": [_error_json(e, version) for e in errors]}
    if params.report_mode in ("WARNINGS", "FULL"):
        validation["warningReports"] = []
    status = "ERROR" if errors else "OK"
    total = flat.total
    commit = params.import_mode == "COMMIT" and not (errors and params.atomic_mode == "ALL")
    if not commit:
        ignored = total if params.import_mode == "COMMIT" else len(invalid)
        report = {
            "status": status,
            "validationReport": validation,
            "stats": _stats(ignored=ignored, total=total),
        }
        return TrackerImportResult(report, status, 0, 0, 0, ignored)
    applied = _commit(flat, validator, invalid, catalog, store, now)
    type_map: JsonObject = {}
    sums = _stats()
    for kind in _ORDER:
        done = applied[kind]
        counts = {
            name: sum(1 for _, action in done if action is Action[name])
            for name in ("CREATE", "UPDATE", "DELETE")
        }
        count = len(flat.of(kind))
        stats = _stats(counts["CREATE"], counts["UPDATE"], counts["DELETE"], count - len(done), count)
        for key in sums:
            sums[key] += stats[key]
        object_reports = []
        for index, (uid, _) in enumerate(done):
            item: JsonObject = {"trackerType": kind.value, "uid": uid, "errorReports": []}
            if version < (2, 41):
                item["index"] = index
            object_reports.append(item)
        type_map[kind.value] = {"trackerType": kind.value, "stats": stats, "objectReports": object_reports}
    bundle: JsonObject = {"typeReportMap": type_map}
    if version < (2, 40):
        bundle["status"] = status
        bundle["stats"] = dict(sums)
    report = {"status": status, "validationReport": validation, "stats": sums, "bundleReport": bundle}
    return TrackerImportResult(
        report, status, sums["created"], sums["updated"], sums["deleted"], sums["ignored"]
    )


def _merge_values(existing: list[JsonObject], incoming: list[JsonObject], key: str) -> list[JsonObject]:
    # Collections merge on update: omitted entries stay, a null value deletes one.
    merged = {item[key]: item for item in existing}
    for item in incoming:
        if item.get("value") is None:
            merged.pop(item[key], None)
        else:
            kept = {key: item[key], "value": item["value"]}
            if item.get("providedElsewhere"):
                kept["providedElsewhere"] = True
            merged[item[key]] = kept
    return [merged[name] for name in sorted(merged)]


def _commit(
    flat: FlatPayload,
    validator: TrackerValidator,
    invalid: set[tuple[TrackerType, str]],
    catalog: Catalog,
    store: SandboxStore,
    now: datetime,
) -> dict[TrackerType, list[tuple[str, Action]]]:
    applied: dict[TrackerType, list[tuple[str, Action]]] = {kind: [] for kind in TrackerType}
    stamp = now.isoformat(timespec="milliseconds")
    with store.transaction():
        for kind in _ORDER[:3]:
            for obj in flat.of(kind):
                uid = obj[kind.id_field]
                action = validator.actions.get((kind, uid))
                if action is None or (kind, uid) in invalid:
                    continue
                if action is Action.DELETE:
                    _delete(kind, uid, store)
                elif kind is TrackerType.TRACKED_ENTITY:
                    _save_tracked_entity(obj, store)
                elif kind is TrackerType.ENROLLMENT:
                    _save_enrollment(obj, store, stamp)
                else:
                    _save_event(obj, store, catalog, stamp)
                applied[kind].append((uid, action))
    return applied


def _save_tracked_entity(te: JsonObject, store: SandboxStore) -> None:
    stored = store.get("tracked_entity", te["trackedEntity"])
    existing = stored.doc if stored is not None and not stored.deleted else None
    doc: JsonObject = {
        "trackedEntity": te["trackedEntity"],
        "trackedEntityType": te["trackedEntityType"],
        # dhis2-core sets the registration org unit from every update (only program ownership
        # moves through the separate transfer API).
        "orgUnit": te["orgUnit"],
        "inactive": bool(te.get("inactive", False)),
        "attributes": _merge_values(
            existing["attributes"] if existing else [], te["attributes"], "attribute"
        ),
    }
    if te.get("geometry"):
        doc["geometry"] = te["geometry"]
    store.save_tracked_entity(doc)


def _save_enrollment(en: JsonObject, store: SandboxStore, stamp: str) -> None:
    status = en.get("status") or "ACTIVE"
    doc: JsonObject = {
        "enrollment": en["enrollment"],
        "trackedEntity": en["trackedEntity"],
        "program": en["program"],
        "orgUnit": en["orgUnit"],
        "status": status,
        "enrolledAt": en["enrolledAt"],
        "occurredAt": en.get("occurredAt") or en["enrolledAt"],
        "followUp": bool(en.get("followUp", False)),
    }
    if status == "COMPLETED":
        doc["completedAt"] = en.get("completedAt") or stamp
    store.save_enrollment(doc)
    if en["attributes"]:
        # Program attributes sent on an enrollment are values of the tracked entity.
        te = store.get("tracked_entity", en["trackedEntity"])
        if te is not None:
            te_doc = dict(te.doc)
            te_doc["attributes"] = _merge_values(te_doc["attributes"], en["attributes"], "attribute")
            store.save_tracked_entity(te_doc)


def _save_event(ev: JsonObject, store: SandboxStore, catalog: Catalog, stamp: str) -> None:
    stored = store.get("event", ev["event"])
    existing = stored.doc if stored is not None and not stored.deleted else None
    status = ev.get("status") or "ACTIVE"
    doc: JsonObject = {
        "event": ev["event"],
        "program": ev["program"],
        "programStage": ev["programStage"],
        "orgUnit": ev["orgUnit"],
        "status": status,
        "occurredAt": ev.get("occurredAt"),
        "attributeOptionCombo": ev.get("attributeOptionCombo") or catalog.default_category_option_combo,
        "dataValues": _merge_values(
            existing["dataValues"] if existing else [], ev["dataValues"], "dataElement"
        ),
    }
    if ev.get("enrollment"):
        doc["enrollment"] = ev["enrollment"]
        doc["trackedEntity"] = ev.get("trackedEntity")
    if ev.get("scheduledAt"):
        doc["scheduledAt"] = ev["scheduledAt"]
    if status == "COMPLETED":
        doc["completedAt"] = ev.get("completedAt") or (existing or {}).get("completedAt") or stamp
    store.save_event(doc)


def _delete(kind: TrackerType, uid: str, store: SandboxStore) -> None:
    # Validation let it through: the user holds the cascade-delete authorities, or it has no children.
    if kind is TrackerType.TRACKED_ENTITY:
        enrollments, _ = store.list_objects("enrollment", where={"tracked_entity": uid}, limit=10_000)
        for enrollment in enrollments:
            _delete(TrackerType.ENROLLMENT, enrollment["enrollment"], store)
        store.mark_deleted("tracked_entity", uid)
    elif kind is TrackerType.ENROLLMENT:
        events, _ = store.list_objects("event", where={"enrollment": uid}, limit=10_000)
        for event in events:
            store.mark_deleted("event", event["event"])
        store.mark_deleted("enrollment", uid)
    else:
        store.mark_deleted("event", uid)
