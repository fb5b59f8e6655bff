"""A facility's progress on a referral Task survives its source record being sent again.

A referral rule always maps its Task as ``requested``. Once a facility has acted on it
through the FHIR API (accepted, completed, …), or the gateway marked it overdue, the same
record re-sent (a pull re-reading a page) or edited by the CHW must not put it back to
waiting: the Task's progress elements are taken from the stored version, so an unchanged
record writes nothing and an edit changes only what the CHW's form says. A Task the source
itself took back (``cancelled``, ``entered-in-error``) is not progress: a record that refers
again makes it ``requested`` again.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.store import ResourceStore

__all__ = ["keep_task_progress"]

PROGRESS = ("status", "statusReason", "businessStatus", "output", "lastModified", "executionPeriod")
_WAITING = frozenset({"draft", "requested"})
_TAKEN_BACK = frozenset({"cancelled", "entered-in-error"})


def keep_task_progress(store: ResourceStore, entries: list[dict[str, Any]]) -> None:
    """Copy the stored progress into each mapped Task still ``requested`` (in place)."""
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Task":
            continue
        if resource.get("status") not in _WAITING or not isinstance(resource.get("id"), str):
            continue
        stored = store.read("Task", resource["id"])
        if stored is None or stored.deleted:
            continue
        current: dict[str, Any] = orjson.loads(stored.content)
        status = current.get("status")
        if status in _TAKEN_BACK or (status in _WAITING and not any(key in current for key in PROGRESS[1:])):
            continue
        for key in PROGRESS:
            if key in current:
                resource[key] = current[key]
            else:
                resource.pop(key, None)
