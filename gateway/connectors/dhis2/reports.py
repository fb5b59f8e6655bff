"""Reading DHIS2 tracker ImportReports into per-object results.

Report shapes differ by version (``index`` until 2.40, ``bundleReport.status`` until 2.39,
``args`` from 2.43); only the parts common to all are relied on:

* ``validationReport.errorReports[]`` — ``{errorCode, message, trackerType, uid}``: the
  object with that UID was not imported, for that reason;
* ``bundleReport.typeReportMap.<TYPE>.objectReports[]`` — objects that were committed;
* no ``bundleReport`` — nothing was committed (``atomicMode=ALL`` with an error, or
  ``importMode=VALIDATE``): objects without errors of their own were rolled back.

An E5000 error ("cannot be persisted because <parent> … cannot be persisted") names the
parent whose failure blocked the child; ``root_cause`` follows that chain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.connectors.dhis2.errors import Dhis2ProtocolError

__all__ = [
    "ErrorReport",
    "ObjectState",
    "TrackerReport",
    "job_completed",
    "job_id_of",
    "parse_tracker_report",
]

_TYPES = ("TRACKED_ENTITY", "ENROLLMENT", "EVENT", "RELATIONSHIP")
_E5000_PARENT = re.compile(r'because "(\w+)" `([^`]+)`')
_TYPE_NAMES = {
    "trackedentity": "TRACKED_ENTITY",
    "tracked_entity": "TRACKED_ENTITY",
    "enrollment": "ENROLLMENT",
    "event": "EVENT",
    "relationship": "RELATIONSHIP",
}


@dataclass(frozen=True, slots=True)
class ErrorReport:
    """One validation error DHIS2 reported for one object."""

    code: str
    message: str
    tracker_type: str
    uid: str

    def parent(self) -> tuple[str, str] | None:
        """For E5000: the (tracker type, UID) of the parent that could not be persisted."""
        if self.code != "E5000":
            return None
        match = _E5000_PARENT.search(self.message)
        if match is None:
            return None
        kind = _TYPE_NAMES.get(match.group(1).lower().replace(" ", ""))
        return None if kind is None else (kind, match.group(2))


class ObjectState(StrEnum):
    """What became of one object of an import."""

    ACCEPTED = "accepted"  # committed (created, updated or deleted)
    REJECTED = "rejected"  # DHIS2 reported errors for it
    NOT_COMMITTED = "not_committed"  # no error of its own, but nothing was committed (rolled back)
    UNREPORTED = "unreported"  # committed import that does not mention it (should not happen)


@dataclass(frozen=True, slots=True)
class TrackerReport:
    """A parsed ImportReport."""

    status: str
    errors: tuple[ErrorReport, ...]
    accepted: frozenset[tuple[str, str]]
    committed: bool
    stats: dict[str, int]

    def errors_for(self, tracker_type: str, uid: str) -> list[ErrorReport]:
        """Errors DHIS2 reported for one object."""
        return [e for e in self.errors if e.tracker_type == tracker_type and e.uid == uid]

    def state_of(self, tracker_type: str, uid: str) -> ObjectState:
        """Whether one object was committed, rejected or left out."""
        if self.errors_for(tracker_type, uid):
            return ObjectState.REJECTED
        if not self.committed:
            return ObjectState.NOT_COMMITTED
        if (tracker_type, uid) in self.accepted:
            return ObjectState.ACCEPTED
        return ObjectState.UNREPORTED

    def root_cause(self, tracker_type: str, uid: str) -> ErrorReport | None:
        """The error that kept an object out: its own, or (through E5000) its parent's."""
        seen: set[tuple[str, str]] = set()
        key = (tracker_type, uid)
        found: ErrorReport | None = None
        while key not in seen:
            seen.add(key)
            errors = self.errors_for(*key)
            if not errors:
                return found
            own = [e for e in errors if e.code != "E5000"]
            if own:
                return own[0]
            found = errors[0]
            parent = found.parent()
            if parent is None:
                return found
            key = parent
        return found


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def parse_tracker_report(body: Any) -> TrackerReport:
    """Parse an ImportReport (sync answer or ``/jobs/{id}/report``)."""
    if (
        not isinstance(body, dict)
        or body.get("status") not in ("OK", "WARNING", "ERROR")
        or "httpStatusCode" in body  # a WebMessage, not a report
        or not ("validationReport" in body or "stats" in body)
    ):
        raise Dhis2ProtocolError("the answer is not a tracker ImportReport")
    validation = body.get("validationReport") or {}
    errors: list[ErrorReport] = []
    for item in validation.get("errorReports") or []:
        if not isinstance(item, dict):
            raise Dhis2ProtocolError("an errorReport is not an object")
        errors.append(
            ErrorReport(
                code=str(item.get("errorCode", "E9999")),
                message=str(item.get("message", "")),
                tracker_type=str(item.get("trackerType", "")),
                uid=str(item.get("uid", "")),
            )
        )
    bundle = body.get("bundleReport")
    accepted: set[tuple[str, str]] = set()
    if isinstance(bundle, dict):
        type_map = bundle.get("typeReportMap") or {}
        for kind in _TYPES:
            for report in (type_map.get(kind) or {}).get("objectReports") or []:
                if isinstance(report, dict) and not report.get("errorReports"):
                    accepted.add((kind, str(report.get("uid"))))
    stats = body.get("stats") or {}
    return TrackerReport(
        status=body["status"],
        errors=tuple(errors),
        accepted=frozenset(accepted),
        committed=isinstance(bundle, dict),
        stats={name: _int(stats.get(name)) for name in ("created", "updated", "deleted", "ignored", "total")},
    )


def job_id_of(body: Any) -> str:
    """The job id of a "Tracker job added" WebMessage."""
    response = body.get("response") if isinstance(body, dict) else None
    job_id = response.get("id") if isinstance(response, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise Dhis2ProtocolError("the async tracker answer names no job id")
    return job_id


def job_completed(notifications: Any) -> bool:
    """True once the job's notification list (newest first) holds a completed entry."""
    if not isinstance(notifications, list):
        raise Dhis2ProtocolError("tracker job notifications are not a list")
    return any(isinstance(item, dict) and item.get("completed") is True for item in notifications)
