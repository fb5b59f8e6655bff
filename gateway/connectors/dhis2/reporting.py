"""The scheduled aggregate report: stored FHIR data → one MeasureReport per org unit and period.

For each period to report (``periods_to_report``: the last ``past_periods`` closed periods
of the data set's period type, and the one in progress when asked), ``write_reports``:

1. finds the candidates: resources of the types the measure counts, dated in the period
   (± ``MARGIN`` for time zones), by each type's date search parameter (``DATE_PARAMS``),
   page by page;
2. groups them by the org unit their Encounter's place resolves to;
3. computes one MeasureReport per org unit (``measure.compute_measure_report``), whose
   reporter is the org unit by its DHIS2 identifier, so the id is the same whichever
   Location a record points at and whichever process computes it;
4. stores each with skip-unchanged: an unchanged report writes nothing and sends nothing;
   a new or changed one is a new version, which the outbox queues for the destination like
   any MeasureReport (its filter must take MeasureReport).

An org unit that already has a report for the period is recomputed even when nothing of it
is left to count (every record of the period retracted): its report falls to zeros, and
DHIS2 gets the zeros, rather than keeping counts of withdrawn visits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway import jsonio
from gateway.connectors.dhis2.mapping_load import BoundAggregate
from gateway.connectors.dhis2.measure import MeasureDefinition, compute_measure_report, group_by_org_unit
from gateway.connectors.dhis2.orgunits import ORG_UNIT_SYSTEM, OrgUnitResolver
from gateway.connectors.dhis2.periods import Period, period_for
from gateway.connectors.dhis2.sources import StoreResourceSource
from gateway.store import ResourceStore

__all__ = ["DATE_PARAMS", "MARGIN", "ReportRun", "periods_to_report", "write_reports"]

JsonObject = dict[str, Any]

# The search parameter dating each countable resource type (what a measure group's ``date``
# should read, e.g. Observation.effective).
DATE_PARAMS = {
    "Encounter": "date",
    "Observation": "date",
    "ServiceRequest": "authored",
    "MedicationDispense": "whenhandedover",
    "Condition": "recorded-date",
    "Procedure": "date",
}
MARGIN = timedelta(days=2)  # a visit at 00:30 +03:00 is the previous day in UTC
PAGE = 500


@dataclass(frozen=True, slots=True)
class ReportRun:
    """What one run did for one period."""

    period: str
    org_units: int
    written: int

    def __str__(self) -> str:
        return f"{self.period}: {self.org_units} org units, {self.written} reports written"


def periods_to_report(period_type: str, today: date, *, past: int, current: bool) -> list[Period]:
    """The ``past`` closed periods before ``today`` (oldest first), then the current one if asked."""
    now = period_for(period_type, today)
    found: list[Period] = [now] if current else []
    at = now
    for _ in range(past):
        at = period_for(period_type, at.start - timedelta(days=1))
        found.insert(0, at)
    return found


def _dated(source: StoreResourceSource, rtype: str, period: Period) -> Iterator[JsonObject]:
    """Resources of ``rtype`` whose date parameter falls in ``period`` (± MARGIN), paged."""
    param = DATE_PARAMS[rtype]
    low, high = (period.start - MARGIN).isoformat(), (period.end + MARGIN).isoformat()
    offset, snapshot = 0, None
    while True:
        items = [(param, f"ge{low}"), (param, f"le{high}"), ("_count", str(PAGE)), ("_offset", str(offset))]
        items += [("_total", "none")] + ([("_snapshot", str(snapshot))] if snapshot is not None else [])
        result = source.search(rtype, items)
        snapshot = result.snapshot
        for stored in result.resources:
            yield jsonio.loads(stored.content)
        if len(result.resources) < PAGE:
            return
        offset += PAGE


def _reported_org_units(source: StoreResourceSource, definition: MeasureDefinition, period: Period) -> set[str]:
    """Org units (by their DHIS2 identifier) with a stored report of this measure and period."""
    wanted = {"start": period.start.isoformat(), "end": period.end.isoformat()}
    found: set[str] = set()
    offset = 0
    while True:
        items = [
            ("period", f"ge{period.start.isoformat()}"),
            ("period", f"le{period.end.isoformat()}"),
            ("_count", str(PAGE)),
            ("_offset", str(offset)),
        ]
        result = source.search("MeasureReport", items)
        for stored in result.resources:
            report = jsonio.loads(stored.content)
            identifier = (report.get("reporter") or {}).get("identifier") or {}
            if (
                report.get("measure") == definition.spec.measure
                and report.get("period") == wanted
                and identifier.get("system") == ORG_UNIT_SYSTEM
                and identifier.get("value")
            ):
                found.add(str(identifier["value"]))
        if len(result.resources) < PAGE:
            return found
        offset += PAGE


def write_reports(
    store: ResourceStore,
    definition: MeasureDefinition,
    aggregate: BoundAggregate,
    period: Period,
) -> ReportRun:
    """Compute and store the reports of one period (synchronous: run it on a worker thread)."""
    source = StoreResourceSource(store, limit=PAGE)
    resolver = OrgUnitResolver(aggregate.org_units, source)
    candidates = [r for rtype in sorted(definition.resource_types) for r in _dated(source, rtype, period)]
    by_unit = group_by_org_unit(candidates, source=source, resolver=resolver)
    for org_unit in _reported_org_units(source, definition, period):
        by_unit.setdefault(org_unit, [])  # retracted to nothing: recomputed to zeros
    written = 0
    with store.transaction() as tx:
        for org_unit in sorted(by_unit):
            report = compute_measure_report(
                definition,
                by_unit[org_unit],
                source=source,
                resolver=resolver,
                org_unit=org_unit,
                reporter={"identifier": {"system": ORG_UNIT_SYSTEM, "value": org_unit}},
                period=period,
            )
            before = tx.read("MeasureReport", report["id"])
            after = tx.update(report, skip_unchanged=True).resource
            if before is None or before.deleted or after.version != before.version:
                written += 1
    return ReportRun(period.iso, len(by_unit), written)
