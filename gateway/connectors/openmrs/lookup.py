"""Finding at OpenMRS what an unconfirmed create may have made (its answer was lost).

OpenMRS assigns ids, so a create sent again after a lost answer would make a second copy.
Before re-creating, the connector searches for the first one by what identifies it:

=============  ===========================================  ===============================
type           search                                       a candidate is ours when
=============  ===========================================  ===============================
Patient        ``identifier=<value>`` per identifier        it has that identifier value
Encounter      ``subject``, ``type``, ``date`` (the day)    same type and start
Observation    ``subject``, ``code``, ``date`` (the day)    same code, time and encounter
Task           ``patient``                                  same status and authoredOn
=============  ===========================================  ===============================

Other types have no such search: they are created again (and may be duplicated).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

Json = dict[str, Any]
Search = list[tuple[str, str | int | float | bool | None]]


def searches(rtype: str, body: Json) -> list[Search]:
    """The searches that would find ``body`` at OpenMRS (empty: it cannot be looked for)."""
    subject = _ref(body.get("subject") or body.get("for"))
    if rtype == "Patient":
        return [[("identifier", item["value"])] for item in body.get("identifier") or [] if item.get("value")]
    if rtype == "Encounter" and subject:
        start = str((body.get("period") or {}).get("start") or "")
        code = _first_code(body.get("type"))
        return [[("subject", subject), ("type", code), ("date", start[:10])]] if start and code else []
    if rtype == "Observation" and subject:
        when = str(body.get("effectiveDateTime") or "")
        coding: Json = next(iter((body.get("code") or {}).get("coding") or []), {})
        token = f"{coding.get('system')}|{coding.get('code')}" if coding.get("system") else str(coding.get("code"))
        return [[("subject", subject), ("code", token), ("date", when[:10])]] if when and coding.get("code") else []
    if rtype == "Task" and subject:
        return [[("patient", subject)]]
    return []


def is_ours(rtype: str, body: Json, candidate: Json) -> bool:
    """True when ``candidate`` (as OpenMRS returns it) is the object ``body`` created."""
    matcher = _MATCHERS.get(rtype)
    return matcher is not None and matcher(body, candidate)


def _patient(body: Json, candidate: Json) -> bool:
    ours = {item.get("value") for item in body.get("identifier") or []}
    return any(item.get("value") in ours for item in candidate.get("identifier") or [])


def _encounter(body: Json, candidate: Json) -> bool:
    return _first_code(candidate.get("type")) == _first_code(body.get("type")) and _same_time(
        (candidate.get("period") or {}).get("start"), (body.get("period") or {}).get("start")
    )


def _observation(body: Json, candidate: Json) -> bool:
    codes = {(c.get("system"), c.get("code")) for c in (candidate.get("code") or {}).get("coding") or []}
    mine = {(c.get("system"), c.get("code")) for c in (body.get("code") or {}).get("coding") or []}
    return (
        bool(codes & mine)
        and _same_time(candidate.get("effectiveDateTime"), body.get("effectiveDateTime"))
        and _ref(candidate.get("encounter")) == _ref(body.get("encounter"))
    )


def _task(body: Json, candidate: Json) -> bool:
    return candidate.get("status") == body.get("status") and _same_time(
        candidate.get("authoredOn"), body.get("authoredOn")
    )


_MATCHERS: dict[str, Callable[[Json, Json], bool]] = {
    "Patient": _patient, "Encounter": _encounter, "Observation": _observation, "Task": _task,
}  # fmt: skip


def _ref(value: Any) -> str | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    return ref if isinstance(ref, str) else None


def _first_code(concepts: Any) -> str | None:
    for concept in concepts if isinstance(concepts, list) else [concepts or {}]:
        for coding in concept.get("coding") or []:
            if coding.get("code"):
                return str(coding["code"])
    return None


def _same_time(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is right
    try:
        return datetime.fromisoformat(str(left).replace("Z", "+00:00")) == datetime.fromisoformat(
            str(right).replace("Z", "+00:00")
        )
    except ValueError:
        return str(left) == str(right)
