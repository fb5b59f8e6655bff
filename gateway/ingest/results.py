"""What ingest reports: per record, the resources written or the quarantine that kept it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["IngestReport", "RecordResult", "WrittenResource"]


@dataclass(frozen=True, slots=True)
class WrittenResource:
    """A resource a record produced or took back: ``change`` is created, updated, unchanged,
    retracted (a new version with a voiding status) or deleted."""

    type: str
    id: str
    version: str
    change: str

    def to_json(self) -> dict[str, str]:
        """As listed in the ingest response."""
        return {"type": self.type, "id": self.id, "version": self.version, "change": self.change}


@dataclass(slots=True)
class RecordResult:
    """What happened to one record: ``status`` is stored, unchanged, deleted (the source deleted
    or voided it: what it produced is taken back), stale (a later version of it is stored: not
    applied) or quarantined."""

    index: int
    record_key: str | None
    status: str
    resources: list[WrittenResource] = field(default_factory=list)
    quarantine_id: int | None = None
    outcome: dict[str, Any] | None = None
    patient: str | None = None  # the Patient id the record concerns (for the message log; not in the response)

    def to_json(self) -> dict[str, Any]:
        """As listed in the ingest response."""
        out: dict[str, Any] = {"index": self.index, "status": self.status}
        if self.record_key is not None:
            out["record"] = self.record_key
        if self.resources:
            out["resources"] = [resource.to_json() for resource in self.resources]
        if self.quarantine_id is not None:
            out["quarantine_id"] = self.quarantine_id
        if self.outcome is not None:
            out["outcome"] = self.outcome
        return out


@dataclass(slots=True)
class IngestReport:
    """The results of one ingest request, one per record, in order."""

    source: str
    results: list[RecordResult]

    @property
    def quarantined(self) -> int:
        """How many records went to the quarantine."""
        return sum(1 for result in self.results if result.status == "quarantined")

    def to_json(self) -> dict[str, Any]:
        """The ingest response body."""
        counts = {"stored": 0, "unchanged": 0, "deleted": 0, "stale": 0, "quarantined": 0}
        for result in self.results:
            counts[result.status] += 1
        return {
            "source": self.source,
            "records": len(self.results),
            **counts,
            "results": [result.to_json() for result in self.results],
        }
