"""Console pages over delivery: the overview, pause/resume, and the dead letters (detail, replay, discard).

Every action goes through ``DeliveryAdmin``, the object behind ``/admin/*`` and ``gateway queue``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.context import AppContext, ctx_of
from gateway.delivery import (
    DeadLetterFilter,
    DeliveryAdmin,
    QueueError,
    UnknownDeadLetter,
    UnknownDestination,
    dead_letter_detail,
    dead_letter_summary,
)

from .web import PREFIX, ConsoleError, checked_form, console_of, login, page, redirect

_DAY = 86_400.0
#: Destination figures shown as ages (seconds) or as moments (epoch seconds); any other figure as it comes.
_AGES = ("age", "_seconds", "lag_s")
_MOMENTS = ("_until", "_at", "heartbeat")


def _admin(ctx: AppContext) -> DeliveryAdmin | None:
    return ctx.services.delivery.admin if ctx.services.delivery is not None else None


def _need_admin(ctx: AppContext) -> DeliveryAdmin:
    admin = _admin(ctx)
    if admin is None:
        raise ConsoleError(503, "Delivery is not set up in this process (no delivery queue).")
    return admin


def figure(key: str, value: Any) -> dict[str, Any]:
    """How one destination figure is shown: kind ``age``, ``when``, ``json`` or ``text``."""
    if isinstance(value, list | dict):
        return {"kind": "json", "value": jsonio.dumps(value).decode()}
    if isinstance(value, int | float) and not isinstance(value, bool):
        if key.endswith(_AGES):
            return {"kind": "age", "value": value}
        if key.endswith(_MOMENTS) and value > 1e9:
            return {"kind": "when", "value": value}
    return {"kind": "text", "value": "" if value is None else value}


async def destination_rows(ctx: AppContext) -> tuple[list[str], list[dict[str, Any]]] | None:
    """The destinations' figures as the admin API gives them (every field it carries), or None without delivery."""
    admin = _admin(ctx)
    if admin is None:
        return None
    try:
        rows = [row.as_json() for row in await admin.status()]
    except QueueError as exc:
        raise ConsoleError(503, f"The delivery queue is unavailable ({type(exc).__name__}).") from exc
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in ("name", "kind", "enabled") and key not in columns:
                columns.append(key)
    shown = [{"name": row["name"], "kind": row["kind"], "enabled": row["enabled"], "paused": bool(row.get("paused")),
              "figures": [figure(key, row.get(key)) for key in columns]} for row in rows]
    return columns, shown


async def source_counts(ctx: AppContext) -> list[dict[str, Any]]:
    """Records received per source over the last 24 hours, by outcome (every configured source listed)."""
    counts = await ctx.query(ctx.store.message_counts, time.time() - _DAY)
    by_source: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, channel, status, count in counts:
        if kind in ("received", "replayed"):
            by_source[channel][status] = by_source[channel].get(status, 0) + count
    names = list(ctx.ingest.registry.sources) if ctx.services.ingest is not None else []
    names += sorted(name for name in by_source if name not in names)
    return [{"name": name, "total": sum(by_source[name].values()), **by_source[name]} for name in names]


async def overview(request: Request) -> Response:
    """Records in per source, and per destination every figure the queue reports."""
    await login(request)
    ctx = ctx_of(request)
    return page(request, "overview.html", sources=await source_counts(ctx), destinations=await destination_rows(ctx),
                notice=request.query_params.get("notice"))


async def overview_live(request: Request) -> Response:
    """The overview's tables alone (htmx refreshes them every few seconds)."""
    await login(request)
    ctx = ctx_of(request)
    return page(request, "overview_tables.html", sources=await source_counts(ctx),
                destinations=await destination_rows(ctx))


async def pause_or_resume(request: Request) -> Response:
    """``POST …/destinations/{name}/pause`` or ``…/resume``."""
    await login(request)
    await checked_form(request, console_of(request))
    admin = _need_admin(ctx_of(request))
    name, action = request.path_params["name"], request.path_params["action"]
    try:
        await (admin.pause(name) if action == "pause" else admin.resume(name))
    except UnknownDestination as exc:
        raise ConsoleError(404, str(exc)) from exc
    return redirect(request, f"{PREFIX}?notice={'paused' if action == 'pause' else 'resumed'}")


def _filter(request: Request) -> DeadLetterFilter:
    params = request.query_params
    return DeadLetterFilter(params.get("destination") or None, params.get("reason") or None)


async def dead_letters(request: Request) -> Response:
    """Dead letters, newest first, filtered by destination and reason."""
    await login(request)
    admin = _need_admin(ctx_of(request))
    where = _filter(request)
    try:
        letters = await admin.dead_letters(where, limit=200)
    except UnknownDestination as exc:
        raise ConsoleError(404, str(exc)) from exc
    return page(request, "dead_letters.html", letters=[dead_letter_summary(letter) for letter in letters],
                where=where, destinations=sorted(admin.destinations), notice=request.query_params.get("notice"))


async def dead_letter(request: Request) -> Response:
    """One dead letter: reason, detail (traceback), the request sent, the response, and the resource."""
    await login(request)
    admin = _need_admin(ctx_of(request))
    try:
        letter = await admin.dead_letter(request.path_params["job_id"])
    except UnknownDeadLetter as exc:
        raise ConsoleError(404, str(exc)) from exc
    payload = letter.job.payload.decode("utf-8", "replace")
    try:
        payload = jsonio.dumps(jsonio.loads(letter.job.payload), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        pass
    return page(request, "dead_letter.html", letter=dead_letter_detail(letter), payload=payload)


async def dead_letter_action(request: Request) -> Response:
    """``POST …/dead-letters/{id}/replay`` (send again) or ``…/purge`` (discard)."""
    await login(request)
    await checked_form(request, console_of(request))
    admin = _need_admin(ctx_of(request))
    job_id, action = request.path_params["job_id"], request.path_params["action"]
    try:
        await (admin.replay(job_id) if action == "replay" else admin.purge(job_id))
    except UnknownDeadLetter as exc:
        raise ConsoleError(404, str(exc)) from exc
    return redirect(request, f"{PREFIX}/dead-letters?notice={'replayed' if action == 'replay' else 'discarded'}")


async def replay_matching(request: Request) -> Response:
    """Replay every dead letter of the listed filter (a destination or reason is required)."""
    await login(request)
    form = await checked_form(request, console_of(request))
    admin = _need_admin(ctx_of(request))
    destination = str(form.get("destination") or "") or None
    reason = str(form.get("reason") or "") or None
    if destination is None and reason is None:
        raise ConsoleError(400, "Pick a destination or a reason first: replaying every dead letter needs the CLI"
                                " or the admin API (all=true).")
    try:
        count = await admin.replay_matching(DeadLetterFilter(destination, reason))
    except UnknownDestination as exc:
        raise ConsoleError(404, str(exc)) from exc
    return redirect(request, f"{PREFIX}/dead-letters?notice=replayed-{count}")
