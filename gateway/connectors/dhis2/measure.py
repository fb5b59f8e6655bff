"""The monthly CHW report: counts over stored FHIR data, as an IHE mADX-style MeasureReport.

A ``dhis2-measure`` file (``mappings/dhis2/chw-monthly-measure.yaml``) lists groups; each
counts resources of one type that match a FHIRPath ``where``, dated in the period and
located (through their Encounter's location, or their own) in the org unit being reported.
Stratified groups split the count by the patient's age on that date (mADX: one
``stratifier`` whose strata carry the category option codes). The MeasureReport has a
deterministic id per (measure, org unit, period), so recomputing updates it in place, and
it is validated with ``fhir.resources`` (R4B) once built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pydantic
from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ConfigDict, Field

from gateway.connectors.dhis2.orgunits import OrgUnitResolver
from gateway.connectors.dhis2.periods import Period
from gateway.connectors.dhis2.sources import ResourceSource, is_retracted, reference_of
from gateway.mapping import (
    CompileContext,
    CompileError,
    Expression,
    LoadIssue,
    MappingError,
    MappingLoadError,
    Scope,
    YamlSyntaxError,
    compile_expression,
    format_path,
    read_yaml,
)

__all__ = ["MeasureDefinition", "compute_measure_report", "group_by_org_unit", "load_measure", "report_id"]

JsonObject = dict[str, Any]
_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
_SCOPE = Scope(frozenset())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Stratum(_Strict):
    """An age band: ``from_months`` ≤ age < ``below_months``."""

    code: str
    from_months: int = 0
    below_months: int | None = None


class StratifierSpec(_Strict):
    """The age-group stratifier."""

    code: str
    strata: list[Stratum] = Field(min_length=1)


class GroupSpec(_Strict):
    """One counted indicator."""

    code: str
    resource: Literal[
        "Encounter", "Observation", "ServiceRequest", "MedicationDispense", "Condition", "Procedure"
    ]
    where: str
    date: str
    distinct: str | None = Field(None, description="count distinct values of this expression instead")
    stratified: bool = True


class MeasureSpec(_Strict):
    """A ``dhis2-measure`` file."""

    kind: Literal["dhis2-measure"]
    measure: str
    stratifier: StratifierSpec | None = None
    groups: list[GroupSpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class _Group:
    spec: GroupSpec
    where: Expression
    date: Expression
    distinct: Expression | None


@dataclass(frozen=True, slots=True)
class MeasureDefinition:
    """A loaded, compiled measure definition."""

    spec: MeasureSpec
    groups: tuple[_Group, ...]

    @property
    def resource_types(self) -> set[str]:
        """The resource types the groups count."""
        return {group.spec.resource for group in self.groups}


def load_measure(path: Path) -> MeasureDefinition:
    """Load and compile a measure file; ``MappingLoadError`` names file and line of each problem."""
    issues: list[LoadIssue] = []
    try:
        doc = read_yaml(path)
    except YamlSyntaxError as exc:
        raise MappingLoadError([LoadIssue(str(path), exc.line, "", exc.message)]) from exc
    try:
        spec = MeasureSpec.model_validate(doc.data)
    except pydantic.ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = doc.data_path(error["loc"])
            issues.append(LoadIssue(str(path), doc.line_of(where), format_path(where), error["msg"]))
        raise MappingLoadError(issues) from exc
    groups: list[_Group] = []
    for index, group in enumerate(spec.groups):
        compiled: list[Expression | None] = []
        for name in ("where", "date", "distinct"):
            text = getattr(group, name)
            if text is None:
                compiled.append(None)
                continue
            try:
                compiled.append(compile_expression(text, CompileContext(system="dhis2"), _SCOPE))
            except CompileError as exc:
                where = ("groups", index, name)
                issues.append(LoadIssue(str(path), doc.line_of(where), format_path(where), str(exc)))
                compiled.append(None)
        where_expr, date_expr, distinct = compiled
        if where_expr is not None and date_expr is not None:
            groups.append(_Group(group, where_expr, date_expr, distinct))
    if issues:
        raise MappingLoadError(issues)
    return MeasureDefinition(spec, tuple(groups))


def report_id(measure: str, org_unit_ref: str, period: Period) -> str:
    """A deterministic MeasureReport id for (measure, org unit, period)."""
    digest = hashlib.sha256(f"{measure}|{org_unit_ref}|{period.iso}".encode()).hexdigest()
    return f"chw-report-{digest[:32]}"


def _coding(token: str) -> JsonObject:
    system, _, code = token.rpartition("|")
    return {"system": system, "code": code} if system else {"code": code}


def _values(expr: Expression, resource: JsonObject) -> list[Any]:
    try:
        return expr.run(resource, {})
    except MappingError:
        return []


def _age_months(birth: str, on: date) -> int | None:
    try:
        born = date.fromisoformat(birth[:10]) if len(birth) >= 10 else date(int(birth[:4]), 7, 1)
    except ValueError:
        return None
    months = (on.year - born.year) * 12 + on.month - born.month - (1 if on.day < born.day else 0)
    return months if months >= 0 else None


class _Counter:
    def __init__(self, source: ResourceSource, resolver: OrgUnitResolver) -> None:
        self.source = source
        self.resolver = resolver
        self._org_cache: dict[str, str | None] = {}

    def org_unit_of(self, resource: JsonObject) -> str | None:
        if resource.get("resourceType") == "Encounter":
            encounter: JsonObject | None = resource
        else:
            ref = reference_of(resource.get("encounter") or resource.get("context"))
            encounter = self.source.get("Encounter", ref.partition("/")[2]) if ref else None
        if encounter is None:
            return None
        key = f"Encounter/{encounter.get('id')}"
        if key not in self._org_cache:
            locations = [reference_of(item.get("location")) for item in encounter.get("location") or []]
            candidates = [ref for ref in [*locations, reference_of(encounter.get("serviceProvider"))] if ref]
            self._org_cache[key] = next(
                (found for ref in candidates if (found := self.resolver.resolve(ref))), None
            )
        return self._org_cache[key]

    def age_months(self, resource: JsonObject, on: date) -> int | None:
        ref = reference_of(resource.get("subject") or resource.get("patient"))
        patient = (
            self.source.get("Patient", ref.partition("/")[2]) if ref and ref.startswith("Patient/") else None
        )
        birth = (patient or {}).get("birthDate")
        return _age_months(birth, on) if isinstance(birth, str) else None


def group_by_org_unit(
    resources: Iterable[JsonObject], *, source: ResourceSource, resolver: OrgUnitResolver
) -> dict[str, list[JsonObject]]:
    """Resources by the org unit their Encounter's place resolves to (the others are left out)."""
    counter = _Counter(source, resolver)
    groups: dict[str, list[JsonObject]] = {}
    for resource in resources:
        org_unit = counter.org_unit_of(resource)
        if org_unit is not None:
            groups.setdefault(org_unit, []).append(resource)
    return groups


def _reporter_key(reporter: JsonObject) -> str:
    """What identifies a reporter Reference: its reference, else its identifier's system|value."""
    if isinstance(reporter.get("reference"), str):
        return str(reporter["reference"])
    identifier = reporter.get("identifier") or {}
    return f"{identifier.get('system', '')}|{identifier.get('value', '')}"


def compute_measure_report(
    definition: MeasureDefinition,
    resources: Iterable[JsonObject],
    *,
    source: ResourceSource,
    resolver: OrgUnitResolver,
    org_unit: str,
    reporter: str | JsonObject,
    period: Period,
) -> JsonObject:
    """Count ``resources`` for one org unit (UID) and period.

    ``reporter`` is the org unit as a FHIR Reference: a Location reference string, or a
    Reference dict (e.g. by the DHIS2 org-unit identifier); the report id derives from it.
    """
    reporter_ref: JsonObject = {"reference": reporter} if isinstance(reporter, str) else dict(reporter)
    counter = _Counter(source, resolver)
    pools: dict[str, list[JsonObject]] = {}
    for resource in resources:
        if is_retracted(resource):
            continue
        pools.setdefault(str(resource.get("resourceType")), []).append(resource)
    stratifier = definition.spec.stratifier
    groups: list[JsonObject] = []
    for group in definition.groups:
        counted: dict[str, set[str]] = {}
        for resource in pools.get(group.spec.resource, []):
            if not all(value is True for value in _values(group.where, resource)) or not _values(
                group.where, resource
            ):
                continue
            dates = _values(group.date, resource)
            on = _date(dates[0]) if dates else None
            if (
                on is None
                or not period.start <= on <= period.end
                or counter.org_unit_of(resource) != org_unit
            ):
                continue
            key = (
                str(_values(group.distinct, resource)[:1] or resource["id"])
                if group.distinct
                else resource["id"]
            )
            band = "total"
            if stratifier is not None and group.spec.stratified:
                months = counter.age_months(resource, on)
                band = next(
                    (
                        s.code
                        for s in stratifier.strata
                        if months is not None
                        and s.from_months <= months
                        and (s.below_months is None or months < s.below_months)
                    ),
                    "unknown",
                )
            counted.setdefault(band, set()).add(str(key))
        total = len(set().union(*counted.values())) if counted else 0
        item: JsonObject = {
            "code": {"coding": [_coding(group.spec.code)]},
            "population": [
                {"code": {"coding": [{"system": _POPULATION, "code": "initial-population"}]}, "count": total}
            ],
            "measureScore": {"value": total},
        }
        if stratifier is not None and group.spec.stratified:
            item["stratifier"] = [
                {
                    "code": [{"coding": [_coding(stratifier.code)]}],
                    "stratum": [
                        {
                            "value": {"coding": [_coding(f"{stratifier.code.rpartition('|')[0]}|{s.code}")]},
                            "measureScore": {"value": len(counted.get(s.code, ()))},
                        }
                        for s in stratifier.strata
                    ],
                }
            ]
        groups.append(item)
    report: JsonObject = {
        "resourceType": "MeasureReport",
        "id": report_id(definition.spec.measure, _reporter_key(reporter_ref), period),
        "status": "complete",
        "type": "summary",
        "measure": definition.spec.measure,
        "reporter": reporter_ref,
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "group": groups,
    }
    get_fhir_model_class("MeasureReport").model_validate(report)
    return report


def _date(value: Any) -> date | None:
    text = str(value)
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None
