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

from collections.abc import Iterable, Mapping
from typing import Any

from gateway import jsonio
from gateway.store import ResourceStore, StoredResource

__all__ = ["keep_task_progress", "stored_tasks"]

PROGRESS = ("status", "statusReason", "businessStatus", "output", "lastModified", "executionPeriod")
_WAITING = frozenset({"draft", "requested"})
_TAKEN_BACK = frozenset({"cancelled", "entered-in-error"})


def stored_tasks(store: ResourceStore, bundles: Iterable[list[dict[str, Any]]]) -> dict[str, StoredResource]:
    """The stored versions of the waiting Tasks these Bundles' entries map, by id: one read for all
    (a read a record cost a round trip to the database on the request's thread)."""
    ids = [resource["id"] for entries in bundles for resource in _waiting_tasks(entries)]
    return {stored.id: stored for stored in store.read_many([("Task", rid) for rid in ids])} if ids else {}


def keep_task_progress(
    store: ResourceStore, entries: list[dict[str, Any]], stored: Mapping[str, StoredResource] | None = None
) -> None:
    """Copy the stored progress into each mapped Task still ``requested`` (in place).

    ``stored``: the Tasks ``stored_tasks`` read for these entries (a Task missing there is not
    stored); None reads each one here.
    """
    for resource in _waiting_tasks(entries):
        found = store.read("Task", resource["id"]) if stored is None else stored.get(resource["id"])
        if found is None or found.deleted:
            continue
        _keep(resource, found)


def _waiting_tasks(entries: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    """The mapped Tasks still waiting (whose progress a stored version may hold)."""
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Task":
            continue
        if resource.get("status") in _WAITING and isinstance(resource.get("id"), str):
            yield resource


def _keep(resource: dict[str, Any], stored: StoredResource) -> None:
    """Copy the progress elements of ``stored`` into ``resource``, unless it holds none."""
    current: dict[str, Any] = jsonio.loads(stored.content)
    status = current.get("status")
    if status in _TAKEN_BACK or (status in _WAITING and not any(key in current for key in PROGRESS[1:])):
        return
    for key in PROGRESS:
        if key in current:
            resource[key] = current[key]
        else:
            resource.pop(key, None)
