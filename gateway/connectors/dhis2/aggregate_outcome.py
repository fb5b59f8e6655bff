"""What a data value import's ImportSummary means for the delivery job that sent it.

=======================================  ==================================================
summary                                  outcome
=======================================  ==================================================
``SUCCESS``                              Success (counts in the detail)
``ERROR`` (data-set level, nothing       Permanent ``dhis2_<code>`` with every conflict
imported)
``ERROR`` without any conflict           Retry ``dhis2_import_failed``: DHIS2 caught an
                                         exception mid-import ("The import process failed:
                                         …", a lock or database timeout), its 500 in an
                                         ImportSummary; values are keyed, resending is safe
``WARNING``, one value sent, or no       Permanent ``dhis2_<code>`` naming that value (or
conflict traceable to a value            every conflict: replaying resends the whole report)
``WARNING``, several values sent         Partial: the job is delivered (DHIS2 stored the
                                         other values) and each refused value is a dead
                                         letter of its own, ``dhis2_<code>``, whose payload
                                         is the MeasureReport narrowed to that value
=======================================  ==================================================

A refused value's detail names DHIS2's conflict (error code and message) and the value's
data element, category option combo, period and org unit, and the FHIR MeasureReport
group it came from. Replaying it re-maps the narrowed report with the current mapping
and sends that one value, so a fix in the mapping or in DHIS2 can be applied value by value.
"""

from __future__ import annotations

from typing import Any

from gateway import jsonio
from gateway.connectors.base import (
    DeliveryOutcome,
    Partial,
    Permanent,
    RecordedResponse,
    RefusedPart,
    Retry,
    Success,
)
from gateway.connectors.dhis2.aggregate_summary import AggregateSummary, Conflict
from gateway.connectors.dhis2.aggregate_transform import AggregatePlan, narrow

__all__ = ["aggregate_outcome", "recorded"]

JsonObject = dict[str, Any]


def recorded(status: int, body: Any) -> RecordedResponse:
    """A JSON body kept with a dead letter (bounded)."""
    text = jsonio.dumps(body).decode()
    return RecordedResponse(status=status, headers={"content-type": "application/json"}, body=text[:65536])


def _conflict_json(conflict: Conflict) -> JsonObject:
    found: JsonObject = {"errorCode": conflict.code, "value": conflict.message, "object": conflict.object}
    if conflict.property is not None:
        found["property"] = conflict.property
    found["indexes"] = list(conflict.indexes)
    return {k: v for k, v in found.items() if v is not None}


def _describe(payload: JsonObject, index: int) -> str:
    value = payload["dataValues"][index]
    return (
        f"dataElement {value.get('dataElement')}, categoryOptionCombo {value.get('categoryOptionCombo')}, "
        f"period {value.get('period', payload.get('period'))}, orgUnit {value.get('orgUnit', payload.get('orgUnit'))}"
    )


def aggregate_outcome(
    job_ref: str, report: JsonObject, plan: AggregatePlan, summary: AggregateSummary, status: int, body: Any
) -> DeliveryOutcome:
    """The outcome of sending ``plan`` (made from ``report``), given DHIS2's parsed answer."""
    payload = plan.payload
    assert payload is not None
    values = payload["dataValues"]
    counts = f"{summary.imported} imported, {summary.updated} updated, {summary.ignored} ignored"
    if summary.status == "SUCCESS":
        return Success(detail=f"{payload['dataSet']} {payload['period']} {payload['orgUnit']}: {counts}")
    if summary.aborted and not summary.conflicts:
        return Retry(delay=None, reason="dhis2_import_failed")
    traced = sorted(i for i in summary.rejected if i < len(values))
    if summary.aborted or not traced:
        code = next((c.code for c in summary.conflicts if c.code), "import_error" if summary.aborted else "conflict")
        reasons = "; ".join(c.message for c in summary.conflicts) or "import aborted"
        return Permanent(
            reason=f"dhis2_{code}", response=recorded(status, body), detail=f"{reasons} [FHIR {job_ref}]"
        )
    refused: list[RefusedPart] = []
    for index in traced:
        conflicts = summary.conflicts_for(index)
        code = next((c.code for c in conflicts if c.code), "conflict")
        why = "; ".join(f"{c.code or ''} {c.message}".strip() for c in conflicts) or "rejected"
        origin = plan.origins[index]
        group = "|".join(part for part in origin.code if part)
        detail = f"{why} [{_describe(payload, index)}; value #{index} of FHIR {job_ref} group {group}]"
        answer: JsonObject = {
            "status": summary.status,
            "conflicts": [_conflict_json(c) for c in conflicts],
            "dataValue": values[index],
            **{k: payload[k] for k in ("dataSet", "period", "orgUnit") if k in payload},
        }
        refused.append(
            RefusedPart(
                part=f"v{index}",
                payload=jsonio.dumps(narrow(report, origin)),
                reason=f"dhis2_{code}",
                detail=detail,
                response=recorded(status, answer),
            )
        )
    if len(values) == 1:  # the job is this one value (e.g. a replayed part): its own dead letter
        (only,) = refused
        return Permanent(reason=only.reason, detail=only.detail, response=only.response)
    accepted = len(values) - len(refused)
    return Partial(tuple(refused), detail=f"{accepted} of {len(values)} values stored ({counts})")
