"""Overdue referrals: a Task the facility has not acted on in time gets ``businessStatus`` overdue.

A referral Task (code ``fulfill``) still ``requested`` or ``received`` is due by the end of
its ``restriction.period.end`` (the follow-up date the CHW's form gave), else
``referral.overdue_after`` after its ``authoredOn``. Past that, the scheduled check writes a
new version with ``businessStatus`` ``urn:chw-gateway:referral-status|overdue`` and
``lastModified`` now (the status stays: the facility may still act). That version is an
ordinary change, so the return path sends it to the CHW's app like any outcome. The write
names the version it read (``If-Match``): a facility update in between wins and the Task is
looked at again next time.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

from gateway import jsonio
from gateway.clock import Clock
from gateway.connectors.referral.config import ReferralSettings
from gateway.scheduler import PeriodicTask
from gateway.search import QueryParser, default_registry
from gateway.store import ResourceStore, VersionConflict

__all__ = ["OVERDUE", "REFERRAL_STATUS_SYSTEM", "mark_overdue", "overdue_task"]

log = logging.getLogger(__name__)

REFERRAL_STATUS_SYSTEM = "urn:chw-gateway:referral-status"
OVERDUE = {"system": REFERRAL_STATUS_SYSTEM, "code": "overdue", "display": "Overdue"}
_PAGE = 200
_QUERY = [
    ("status", "requested,received"),
    ("code", "http://hl7.org/fhir/CodeSystem/task-code|fulfill"),
    ("business-status:not", f"{REFERRAL_STATUS_SYSTEM}|overdue"),
    ("_sort", "_id"),
    ("_count", str(_PAGE)),
]


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str) or len(text) < 4:
        return None
    try:
        if len(text) <= 10:  # a (partial) date: due at the end of it
            start = date.fromisoformat(text + "-01-01"[len(text) - 4 :])
            if len(text) == 4:
                return datetime(start.year + 1, 1, 1, tzinfo=UTC)
            if len(text) == 7:
                return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
            return datetime(start.year, start.month, start.day, tzinfo=UTC) + timedelta(days=1)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def due_at(task: dict[str, Any], overdue_after: float) -> datetime | None:
    """When ``task`` becomes overdue (None: it says neither a follow-up date nor when it was authored)."""
    period = (task.get("restriction") or {}).get("period") or {}
    follow_up = _instant(period.get("end"))
    if follow_up is not None:
        return follow_up
    authored = _instant(task.get("authoredOn"))
    return authored + timedelta(seconds=overdue_after) if authored is not None else None


def mark_overdue(store: ResourceStore, settings: ReferralSettings, now: float) -> int:
    """Mark every referral Task past due (runs on a worker thread); how many were marked."""
    parser = QueryParser(default_registry(), _PAGE, _PAGE)
    moment = datetime.fromtimestamp(now, tz=UTC)
    stamp = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    marked = offset = 0
    while True:
        page = store.search(parser.parse("Task", [*_QUERY, ("_offset", str(offset))])).resources
        for stored in page:
            task: dict[str, Any] = jsonio.loads(stored.content)
            due = due_at(task, settings.overdue_after)
            if due is None or due > moment:
                offset += 1  # stays in the result: step over it
                continue
            task["businessStatus"] = {"coding": [dict(OVERDUE)], "text": "Not acted on by the facility in time"}
            task["lastModified"] = stamp
            try:
                with store.transaction() as tx:
                    tx.update(task, if_match=stored.version)
            except VersionConflict:
                offset += 1  # changed meanwhile (a facility acted): looked at again next run
                continue
            marked += 1
        if len(page) < _PAGE:
            return marked


def overdue_task(store: ResourceStore, settings: ReferralSettings, clock: Clock) -> PeriodicTask:
    """The scheduled check, every ``check_interval``, by one process of those sharing the store."""

    async def run() -> str:
        marked = await asyncio.to_thread(mark_overdue, store, settings, clock.now())
        return f"referrals: {marked} marked overdue"

    return PeriodicTask("referral-overdue", settings.check_interval, run, run_at_start=True, cluster_once=True)
