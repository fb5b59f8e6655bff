"""MeasureReport (IHE mADX style) → DHIS2 data value set.

The report's ``measure`` selects the mapping; ``period`` must be exactly one period of the
data set's period type (``202405`` for May 2024 in a Monthly data set); ``reporter`` (or
``subject``) resolves to the org unit through the identifier table. Each group whose code
the mapping lists becomes one data element: its strata (of the configured stratifier) give
one value per category option combo, or the group total goes to the ``total`` COC.

Each data value remembers where in the report it came from (``ValueOrigin``), so a value
DHIS2 refuses can be dead-lettered alone: ``narrow`` cuts the report down to that one
group, code and stratum, and replaying the narrowed report sends that value only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gateway.connectors.dhis2.mapping_load import BoundAggregate
from gateway.connectors.dhis2.orgunits import OrgUnitResolver
from gateway.connectors.dhis2.periods import PeriodError, period_for
from gateway.connectors.dhis2.sources import reference_of
from gateway.connectors.dhis2.tracker_transform import Dhis2MappingError
from gateway.connectors.dhis2.values import ValueConversionError, to_dhis2_value

__all__ = ["AggregatePlan", "ValueOrigin", "measure_report_to_data_value_set", "narrow"]

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ValueOrigin:
    """Where one data value came from: a group (by index and mapped code) and a stratum or its total."""

    group: int
    code: tuple[str, str]  # (system, code) of the group code the mapping matched
    stratifier: int | None = None  # None: the group total
    stratum: int | None = None


@dataclass(frozen=True, slots=True)
class AggregatePlan:
    """The data value set for one MeasureReport (``payload`` None: nothing to send).

    ``origins[i]`` is where ``payload["dataValues"][i]`` came from.
    """

    payload: JsonObject | None
    note: str | None = None
    origins: tuple[ValueOrigin, ...] = ()


def _token(coding: Any) -> tuple[str, str] | None:
    if not isinstance(coding, dict) or "code" not in coding:
        return None
    return str(coding.get("system", "")), str(coding["code"])


def _tokens(concept: Any) -> list[tuple[str, str]]:
    concepts = concept if isinstance(concept, list) else [concept]
    return [t for c in concepts if isinstance(c, dict) for t in map(_token, c.get("coding") or []) if t]


def _score(item: JsonObject) -> Any:
    score = (item.get("measureScore") or {}).get("value")
    if score is None:
        populations = item.get("population") or []
        score = populations[0].get("count") if populations and isinstance(populations[0], dict) else None
    return score


def measure_report_to_data_value_set(
    report: JsonObject, mapping: BoundAggregate, resolver: OrgUnitResolver
) -> AggregatePlan:
    """Build the ``/api/dataValueSets`` payload of a MeasureReport."""
    ref = f"MeasureReport/{report.get('id')}"
    if report.get("measure") != mapping.measure:
        return AggregatePlan(None, f"measure {report.get('measure')!r} is not mapped to DHIS2")
    if report.get("status") != "complete":
        return AggregatePlan(None, "only complete MeasureReports are sent")
    span = report.get("period") or {}
    try:
        start, end = (
            date.fromisoformat(str(span.get("start"))[:10]),
            date.fromisoformat(str(span.get("end"))[:10]),
        )
        period = period_for(mapping.period_type, start)
    except (ValueError, PeriodError) as exc:
        raise Dhis2MappingError("E7611", "the report period is not a valid date range", ref) from exc
    if (period.start, period.end) != (start, end):
        raise Dhis2MappingError("E7632", f"the report period is not one {mapping.period_type} period", ref)
    org_unit = None
    for field in ("reporter", "subject"):
        target = reference_of(report.get(field))
        org_unit = resolver.resolve(target) if target else None
        if org_unit is None and isinstance(report.get(field), dict):
            org_unit = resolver.by_identifiers([report[field].get("identifier")])
        if org_unit is not None:
            break
    if org_unit is None:
        raise Dhis2MappingError("E7612", "the reporter is not an org unit in the identifier table", ref)
    values: list[JsonObject] = []
    origins: list[ValueOrigin] = []
    for at_group, group in enumerate(report.get("group") or []):
        for token in _tokens(group.get("code")):
            rule = mapping.groups.get(token)
            if rule is None:
                continue
            element, value_type, stratifier, strata, total = rule
            if stratifier is not None:
                for at_strat, strat in enumerate(group.get("stratifier") or []):
                    if stratifier not in _tokens(strat.get("code")):
                        continue
                    for at_stratum, stratum in enumerate(strat.get("stratum") or []):
                        codes = [code for _, code in _tokens(stratum.get("value"))]
                        coc = next((strata[c] for c in codes if c in strata), None)
                        if coc is not None and _score(stratum) is not None:
                            values.append(_value(element, coc, _score(stratum), value_type, ref))
                            origins.append(ValueOrigin(at_group, token, at_strat, at_stratum))
            if total is not None and _score(group) is not None:
                values.append(_value(element, total, _score(group), value_type, ref))
                origins.append(ValueOrigin(at_group, token))
    payload: JsonObject = {
        "dataSet": mapping.data_set,
        "period": period.iso,
        "orgUnit": org_unit,
        "dataValues": values,
    }
    if mapping.attribute_option_combo:
        payload["attributeOptionCombo"] = mapping.attribute_option_combo
    if mapping.complete:
        stamp = report.get("date")
        payload["completeDate"] = (
            str(stamp)[:10] if isinstance(stamp, str) else (end + timedelta(days=1)).isoformat()
        )
    return AggregatePlan(payload, origins=tuple(origins))


def narrow(report: JsonObject, origin: ValueOrigin) -> JsonObject:
    """``report`` cut down to the one value ``origin`` names (what replaying that value sends)."""
    group = dict(report["group"][origin.group])
    system, code = origin.code
    coding = {"system": system, "code": code} if system else {"code": code}
    group["code"] = {"coding": [coding]}
    if origin.stratifier is None or origin.stratum is None:
        group.pop("stratifier", None)
    else:
        strat = dict(group["stratifier"][origin.stratifier])
        strat["stratum"] = [strat["stratum"][origin.stratum]]
        group["stratifier"] = [strat]
        # Without the group's own score only the stratum is sent, not the total too.
        group.pop("measureScore", None)
        group.pop("population", None)
    return {**report, "group": [group]}


def _value(element: str, coc: str, score: Any, value_type: str, ref: str) -> JsonObject:
    try:
        text = to_dhis2_value(score, value_type)
    except ValueConversionError as exc:
        raise Dhis2MappingError("E7619", f"value for `{element}` is not valid: `{exc.key}`", ref) from exc
    return {"dataElement": element, "categoryOptionCombo": coc, "value": text}
