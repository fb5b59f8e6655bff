"""The outcome context of a referral Task: the Task and the resources it references, from the store."""

from __future__ import annotations

from typing import Any

from gateway import jsonio
from gateway.store import ResourceStore

__all__ = ["outcome_context", "reference_parts"]


def reference_parts(value: Any) -> tuple[str, str] | None:
    """``(type, id)`` of a relative Reference (``{"reference": "Type/id"}``), else None."""
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str) or reference.count("/") != 1:
        return None
    rtype, rid = reference.split("/")
    return (rtype, rid) if rtype and rid else None


def _read(store: ResourceStore, value: Any) -> dict[str, Any] | None:
    parts = reference_parts(value)
    if parts is None:
        return None
    found = store.read(*parts)
    if found is None or found.deleted:
        return None
    resource: dict[str, Any] = jsonio.loads(found.content)
    return resource


def outcome_context(store: ResourceStore, task: dict[str, Any]) -> dict[str, Any]:
    """``{"task", "request", "patient", "requester", "outputs"}`` (absent parts left out)."""
    context: dict[str, Any] = {"task": task}
    based_on = task.get("basedOn")
    request_ref = task.get("focus") or (based_on[0] if isinstance(based_on, list) and based_on else None)
    for name, value in (("request", request_ref), ("patient", task.get("for")), ("requester", task.get("requester"))):
        resource = _read(store, value)
        if resource is not None:
            context[name] = resource
    outputs = [_read(store, output.get("valueReference")) for output in task.get("output") or ()
               if isinstance(output, dict)]  # fmt: skip
    kept = [resource for resource in outputs if resource is not None]
    if kept:
        context["outputs"] = kept
    return context
