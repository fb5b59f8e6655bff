"""A stored subscription as the gateway serves it, and what it asks for."""

from __future__ import annotations

from typing import Any

from gateway.search import format_instant
from gateway.store import SubscriptionRecord
from gateway.subscriptions.bundles import StatusView
from gateway.subscriptions.spec import SubscriptionSpec, read_spec


def spec_of(record: SubscriptionRecord) -> SubscriptionSpec:
    """What a stored subscription asks for (its content was checked when it was written)."""
    return read_spec(record.content, None)


def view_of(record: SubscriptionRecord) -> StatusView:
    """The status a notification or ``$status`` reports for ``record``."""
    spec = spec_of(record)
    return StatusView(sid=record.sid, topic="" if spec.classic else spec.topic.url, status=record.status,
                      events=record.events, content=spec.content, error=record.error)


def resource_of(record: SubscriptionRecord) -> dict[str, Any]:
    """The R4 Subscription as a client reads it: its content with the server's id, status and error."""
    resource: dict[str, Any] = {**record.content, "resourceType": "Subscription", "id": record.sid,
                                "status": record.status}
    # The client's meta (the backport profile it declared, tags) stays; the server owns lastUpdated.
    kept = record.content.get("meta")
    meta = {k: v for k, v in kept.items() if k not in ("lastUpdated", "versionId")} if isinstance(kept, dict) else {}
    resource["meta"] = {**meta, "lastUpdated": format_instant(record.updated.timestamp())}
    resource.pop("error", None)
    if record.status == "error" and record.error:
        resource["error"] = record.error
    return resource
