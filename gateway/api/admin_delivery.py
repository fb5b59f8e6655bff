"""Admin endpoints for delivery (scope ``admin``); errors are OperationOutcomes.

* ``GET /admin/destinations``: per destination depth, oldest pending age, in flight,
  retrying, dead, delivered/min, circuit state, paused, delivery lag (changes and
  seconds) and live workers with their last heartbeat; and the workers heard from;
* ``GET /admin/workers``: worker processes with their last heartbeat and whether live;
* ``POST /admin/destinations/{name}/pause`` and ``/resume``;
* ``GET /admin/dead-letters``: filter by ``destination``, ``reason`` (exact, or a prefix
  ending in ``*``), ``since``/``until`` (ISO 8601), ``limit``; newest first; the dead jobs
  refused for one destination object are one letter (``group``, with its ``jobs`` and
  ``resources``);
* ``GET /admin/dead-letters/{id}``: the dead letter holding job ``id``, with detail,
  request and response;
* ``POST /admin/dead-letters/{id}/replay``: send it again (every job of its group;
  ``replayed`` counts jobs);
* ``POST /admin/dead-letters/replay``: send a filtered set again (``all=true`` for all);
* ``POST /admin/dead-letters/purge``: delete a filtered set and its payloads.

The delivery service itself is built by the composition root (``gateway.services``);
without it (an app whose ``ServicePlan`` has no delivery) these routes answer 503.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.auth import require_scope
from gateway.api.context import ctx_of
from gateway.delivery import DeadLetterFilter, DeliveryAdmin, QueueError, dead_letter_detail, dead_letter_summary
from gateway.errors import FhirError, invalid

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["Delivery"], dependencies=[Depends(require_scope("admin"))])


def _admin(request: Request) -> DeliveryAdmin:
    return ctx_of(request).services.require_delivery().admin


AdminDep = Annotated[DeliveryAdmin, Depends(_admin)]
Destination = Annotated[str | None, Query(description="destination name")]
Reason = Annotated[str | None, Query(description="reason code, or a prefix ending in *")]
Since = Annotated[datetime | None, Query(description="died at or after (ISO 8601)")]
Until = Annotated[datetime | None, Query(description="died before (ISO 8601)")]


def _json(content: Any) -> Response:
    return Response(jsonio.dumps(content), media_type="application/json")


def _filter(
    destination: str | None, reason: str | None, since: datetime | None, until: datetime | None
) -> DeadLetterFilter:
    def epoch(when: datetime | None, name: str) -> float | None:
        if when is None:
            return None
        try:  # no zone: the server's local time, which at the ends of the calendar may not exist in UTC
            return (when if when.tzinfo else when.astimezone()).timestamp()
        except (ValueError, OverflowError) as exc:
            raise invalid(f"{name} is outside the calendar in the server's time zone; give a zone (Z or"
                          " +hh:mm)", [f"query.{name}"]) from exc

    return DeadLetterFilter(destination, reason, epoch(since, "since"), epoch(until, "until"))


async def _guard(action: Awaitable[Any]) -> Any:
    try:
        return await action
    except QueueError as exc:
        raise FhirError(
            f"the delivery queue is unavailable ({type(exc).__name__})", status=503, code="transient"
        ) from exc


@router.get("/destinations", summary="Delivery status per destination")
async def destinations(admin: AdminDep) -> Response:
    """Per destination: queue depth and age, in flight, retrying, dead, rate, circuit, paused, lag, workers."""
    rows = await _guard(admin.status())
    workers = await _guard(admin.workers())
    return _json({"destinations": [row.as_json() for row in rows], "workers": [w.as_json() for w in workers]})


@router.get("/workers", summary="Delivery workers and their heartbeats")
async def workers(admin: AdminDep) -> Response:
    """Worker processes heard from in the last day: destinations, last heartbeat, live or not."""
    rows = await _guard(admin.workers())
    return _json({"workers": [row.as_json() for row in rows]})


@router.post("/destinations/{name}/pause", summary="Pause delivery to a destination")
async def pause(name: str, admin: AdminDep) -> Response:
    """Stop claiming jobs for ``name``; changes keep queueing."""
    await _guard(admin.pause(name))
    return _json({"name": name, "paused": True})


@router.post("/destinations/{name}/resume", summary="Resume delivery to a destination")
async def resume(name: str, admin: AdminDep) -> Response:
    """Deliver to ``name`` again."""
    await _guard(admin.resume(name))
    return _json({"name": name, "paused": False})


@router.get("/dead-letters", summary="List dead letters")
async def dead_letters(
    admin: AdminDep,
    destination: Destination = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Dead letters matching the filters, newest first, without payloads."""
    letters = await _guard(admin.dead_letters(_filter(destination, reason, since, until), limit=limit))
    return _json({"dead_letters": [dead_letter_summary(letter) for letter in letters]})


@router.post("/dead-letters/replay", summary="Replay a filtered set of dead letters")
async def replay_matching(
    admin: AdminDep,
    destination: Destination = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    all: Annotated[bool, Query(description="replay every dead letter")] = False,  # noqa: A002
) -> Response:
    """Send every matching dead letter again; a filter or ``all=true`` is required."""
    _require_selection(all, destination, reason, since, until)
    count = await _guard(admin.replay_matching(_filter(destination, reason, since, until)))
    return _json({"replayed": count})


@router.post("/dead-letters/purge", summary="Delete a filtered set of dead letters")
async def purge_matching(
    admin: AdminDep,
    destination: Destination = None,
    reason: Reason = None,
    since: Since = None,
    until: Until = None,
    all: Annotated[bool, Query(description="purge every dead letter")] = False,  # noqa: A002
) -> Response:
    """Delete matching dead letters and their payloads; a filter or ``all=true`` is required."""
    _require_selection(all, destination, reason, since, until)
    count = await _guard(admin.purge_matching(_filter(destination, reason, since, until)))
    return _json({"purged": count})


def _require_selection(everything: bool, *filters: object) -> None:
    if not everything and all(value is None for value in filters):
        raise FhirError("give destination/reason/since/until, or all=true", status=400, code="required")


@router.get("/dead-letters/{job_id}", summary="One dead letter")
async def dead_letter(job_id: str, admin: AdminDep) -> Response:
    """A dead letter with its detail (traceback), the request sent and the response."""
    letter = await _guard(admin.dead_letter(job_id))
    return _json(dead_letter_detail(letter))


@router.post("/dead-letters/{job_id}/replay", summary="Replay one dead letter")
async def replay(job_id: str, admin: AdminDep) -> Response:
    """Send one dead letter (every job of its group) again, behind its patient's pending jobs."""
    count = await _guard(admin.replay(job_id))
    return _json({"replayed": count})
