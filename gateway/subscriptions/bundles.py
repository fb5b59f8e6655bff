"""Notification and status Bundles (Backport IG ``backport-subscription-notification-r4``).

A notification is a ``history`` Bundle whose first entry is a ``Parameters``
(``backport-subscription-status-r4``): subscription, topic, status, type,
events-since-subscription-start and, for an event, ``notification-event`` (event-number,
timestamp, focus). ``id-only`` adds one entry per focus with ``fullUrl`` and ``request``;
``full-resource`` adds the resource too; ``empty`` names no resource at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.search import format_instant

_METHODS = {"create": ("POST", "201"), "update": ("PUT", "200"), "delete": ("DELETE", "204")}


@dataclass(frozen=True, slots=True)
class Event:
    """One numbered event of one subscription."""

    number: int
    at: float  # epoch seconds of the change
    resource_type: str
    resource_id: str
    op: str
    resource: Mapping[str, Any] | None = None  # full-resource payloads only


@dataclass(frozen=True, slots=True)
class StatusView:
    """What a status Parameters says about a subscription."""

    sid: str
    topic: str  # "" for a classic criteria-based subscription (it has no topic)
    status: str
    events: int  # events-since-subscription-start
    content: str  # empty | id-only | full-resource
    error: str | None = None


def status_parameters(view: StatusView, kind: str, base: str, events: Sequence[Event] = ()) -> dict[str, Any]:
    """The ``subscription-status`` Parameters of a notification (``kind``: handshake, heartbeat,
    event-notification, query-status)."""
    subscription = {"reference": f"{base}/Subscription/{view.sid}"}
    params: list[dict[str, Any]] = [{"name": "subscription", "valueReference": subscription}]
    if view.content != "empty" and view.topic:
        params.append({"name": "topic", "valueCanonical": view.topic})
    params += [
        {"name": "status", "valueCode": view.status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(view.events)},
    ]
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": format_instant(event.at)},
        ]
        if view.content != "empty":
            focus = {"reference": f"{event.resource_type}/{event.resource_id}"}
            parts.append({"name": "focus", "valueReference": focus})
        params.append({"name": "notification-event", "part": parts})
    if view.error and view.status == "error":
        params.append({"name": "error", "valueCodeableConcept": {"text": view.error}})
    return {"resourceType": "Parameters", "parameter": params}


def notification_bundle(
    view: StatusView, kind: str, base: str, now: float, events: Sequence[Event] = ()
) -> dict[str, Any]:
    """A notification Bundle (``history``) for ``events`` (none for a handshake or heartbeat)."""
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": status_parameters(view, kind, base, events),
        "request": {"method": "GET", "url": f"{base}/Subscription/{view.sid}/$status"},
        "response": {"status": "200"},
    }]
    if view.content != "empty":
        for event in events:
            method, status = _METHODS.get(event.op, ("PUT", "200"))
            entry: dict[str, Any] = {
                "fullUrl": f"{base}/{event.resource_type}/{event.resource_id}",
                "request": {"method": method, "url": f"{event.resource_type}/{event.resource_id}"},
                "response": {"status": status},
            }
            if view.content == "full-resource" and event.resource is not None:
                entry["resource"] = dict(event.resource)
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history",
            "timestamp": format_instant(now), "entry": entries}


def status_bundle(views: Sequence[StatusView], base: str, now: float) -> dict[str, Any]:
    """The answer of ``$status``: a ``searchset`` Bundle of one status Parameters per subscription."""
    return {
        "resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset", "timestamp": format_instant(now),
        "total": len(views),
        "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status_parameters(view, "query-status", base),
                   "search": {"mode": "match"}} for view in views],
    }
