"""The outcome context of a referral Task: the Task and the resources it references, from the store."""

from __future__ import annotations

from typing import Any

from gateway import jsonio
from gateway.store import ResourceStore

__all__ = ["outcome_context", "reference_parts", "with_origin"]

_ORIGIN_HISTORY = 50  # versions of a Task read back to find the one its source wrote
_FROM_ORIGIN = ("focus", "basedOn", "requester", "restriction", "owner", "authoredOn")


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
        if name == "request" and (resource or {}).get("resourceType") != "ServiceRequest":
            continue  # a Task whose focus is no referral (an identity review's is a Patient)
        if resource is not None:
            context[name] = resource
    outputs = [_read(store, output.get("valueReference")) for output in task.get("output") or ()
               if isinstance(output, dict)]  # fmt: skip
    kept = [resource for resource in outputs if resource is not None]
    if kept:
        context["outputs"] = kept
    return context


def with_origin(store: ResourceStore, task: dict[str, Any]) -> dict[str, Any] | None:
    """``task`` completed from its newest stored version that names its source (``meta.source``),
    or None when the store holds no such version.

    An EMR that keeps the Task in its own terms (OpenMRS: its patient uuid in ``for``, no
    ``focus`` on its read-only ServiceRequest, no ``requester`` Practitioner, its own identifier)
    PUTs it back so: which app, patient, CHW and record the referral was is what the source's
    version says. What the facility wrote (status, reasons, outputs) stays as it is.
    """
    rid = task.get("id")
    if not isinstance(rid, str) or not rid:
        return None
    versions, _ = store.history("Task", rid, count=_ORIGIN_HISTORY)
    origin: dict[str, Any] | None = None
    for version in versions:
        body = None if version.deleted else jsonio.loads(version.content)
        if isinstance(body, dict) and (body.get("meta") or {}).get("source"):
            origin = body
            break
    if origin is None:
        return None
    merged = dict(task)
    meta = dict(task.get("meta") or {})
    meta.setdefault("source", origin["meta"]["source"])
    merged["meta"] = meta
    for key in _FROM_ORIGIN:
        if key not in merged and key in origin:
            merged[key] = origin[key]
    if "for" in origin and _read(store, task.get("for")) is None:
        merged["for"] = origin["for"]
    systems = {i.get("system") for i in task.get("identifier") or [] if isinstance(i, dict)}
    extra = [i for i in origin.get("identifier") or [] if isinstance(i, dict) and i.get("system") not in systems]
    if extra:
        merged["identifier"] = [*(task.get("identifier") or []), *extra]
    return merged
