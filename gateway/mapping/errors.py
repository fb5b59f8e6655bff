"""Errors of the mapping engine.

::

    MappingError (gateway.errors)   one source record cannot be mapped (bad value, unmapped
                                    code, …); carries the record field path, so the sender
                                    can fix the record
    ConfigError (gateway.errors)
    └── MappingLoadError            mapping files are invalid; carries every ``LoadIssue``
                                    found, each naming file, line and rule

A ``MappingError`` is data, not a bug: the ingest path quarantines the record with the
OperationOutcome built by ``to_operation_outcome``. Its ``message`` may quote a (truncated)
source value, so it belongs in the OperationOutcome and the quarantine, never in logs:
log ``code`` and ``path`` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError, MappingError

__all__ = ["LoadIssue", "MappingError", "MappingLoadError", "to_operation_outcome"]

_MAX_QUOTED = 40


def quote(value: Any) -> str:
    """A short printable rendering of a source value for error messages (JSON's spelling of
    true, false and null: the sender wrote those)."""
    text = "null" if value is None else ("true" if value else "false") if type(value) is bool else repr(value)
    return text if len(text) <= _MAX_QUOTED else text[: _MAX_QUOTED - 3] + "..."


def to_operation_outcome(error: MappingError) -> dict[str, Any]:
    """The FHIR OperationOutcome describing a mapping failure."""
    return error.outcome()


@dataclass(frozen=True, slots=True)
class LoadIssue:
    """One problem in a mapping or ConceptMap file."""

    file: str
    line: int
    where: str  # e.g. "rules[3] (weight).value"
    message: str

    def __str__(self) -> str:
        location = f"{self.file}:{self.line}" if self.line else self.file
        return f"{location}: {self.where}: {self.message}" if self.where else f"{location}: {self.message}"


class MappingLoadError(ConfigError):
    """Mapping files failed to load; ``issues`` lists every problem with file and line."""

    def __init__(self, issues: list[LoadIssue]) -> None:
        super().__init__("\n".join(str(issue) for issue in issues))
        self.issues = issues
