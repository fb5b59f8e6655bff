"""Reading the ImportSummary of ``POST /api/dataValueSets`` into per-value results.

From 2.38 the summary is wrapped in a WebMessage and a summary with conflicts answers 409;
``status: WARNING`` means *partial* success: the values at ``rejectedIndexes`` (or named by
a conflict's ``indexes``, 2.39+) were refused, every other value was imported, updated or
ignored as unchanged. ``ERROR`` means the data-set level checks failed and nothing was
imported. Older conflicts (``{object, value}``) carry no indexes; they are attributed to
the values whose data element, period, org unit or option combo equals ``object``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.connectors.dhis2.errors import Dhis2ProtocolError

__all__ = ["AggregateSummary", "Conflict", "parse_import_summary"]

_KEY_FIELDS = ("dataElement", "period", "orgUnit", "categoryOptionCombo", "attributeOptionCombo", "value")


@dataclass(frozen=True, slots=True)
class Conflict:
    """One conflict of an import summary."""

    message: str
    code: str | None
    object: str | None
    property: str | None
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AggregateSummary:
    """A parsed ImportSummary."""

    status: str  # SUCCESS | WARNING | ERROR
    imported: int
    updated: int
    ignored: int
    deleted: int
    conflicts: tuple[Conflict, ...]
    rejected: frozenset[int]

    def conflicts_for(self, index: int) -> list[Conflict]:
        """Conflicts that name the value at ``index``."""
        return [c for c in self.conflicts if index in c.indexes]

    @property
    def aborted(self) -> bool:
        """True when nothing was imported (data-set level failure)."""
        return self.status == "ERROR"


def _summary_of(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and body.get("responseType") == "ImportSummary":
        return body
    response = body.get("response") if isinstance(body, dict) else None
    if isinstance(response, dict) and response.get("responseType") == "ImportSummary":
        return response
    raise Dhis2ProtocolError("the answer is not a data value ImportSummary")


def _attribute(obj: str | None, values: Sequence[dict[str, Any]]) -> tuple[int, ...]:
    if not obj:
        return ()
    return tuple(i for i, value in enumerate(values) if any(str(value.get(f)) == obj for f in _KEY_FIELDS))


def parse_import_summary(body: Any, values: Sequence[dict[str, Any]]) -> AggregateSummary:
    """Parse the answer to a data value import of ``values`` (the payload's ``dataValues``)."""
    summary = _summary_of(body)
    status = summary.get("status")
    if status not in ("SUCCESS", "WARNING", "ERROR", "OK"):
        raise Dhis2ProtocolError(f"unknown ImportSummary status {status!r}")
    counts = summary.get("importCount") or {}
    conflicts: list[Conflict] = []
    for raw in summary.get("conflicts") or []:
        if not isinstance(raw, dict):
            raise Dhis2ProtocolError("a conflict is not an object")
        obj = raw.get("object")
        indexes = raw.get("indexes")
        found = tuple(int(i) for i in indexes) if isinstance(indexes, list) else _attribute(obj, values)
        conflicts.append(
            Conflict(
                message=str(raw.get("value", "")),
                code=raw.get("errorCode") if isinstance(raw.get("errorCode"), str) else None,
                object=None if obj is None else str(obj),
                property=raw.get("property") if isinstance(raw.get("property"), str) else None,
                indexes=found,
            )
        )
    rejected = set(int(i) for i in summary.get("rejectedIndexes") or [])
    for conflict in conflicts:
        rejected.update(conflict.indexes)
    return AggregateSummary(
        status="SUCCESS" if status == "OK" else str(status),
        imported=int(counts.get("imported", 0)),
        updated=int(counts.get("updated", 0)),
        ignored=int(counts.get("ignored", 0)),
        deleted=int(counts.get("deleted", 0)),
        conflicts=tuple(conflicts),
        rejected=frozenset(rejected),
    )
