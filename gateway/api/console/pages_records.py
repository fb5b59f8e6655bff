"""Console pages over received records: the message log and the quarantine (detail, replay, discard).

Replay and discard go through the ingest service, as ``/admin/quarantine/*`` and ``gateway
quarantine`` do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.context import base_url, ctx_of
from gateway.errors import FhirError
from gateway.store import MessageFilter

from .web import PREFIX, ConsoleError, checked_form, console_of, login, page, redirect

PAGE_SIZE = 100
_STATUSES = ("held", "replayed", "discarded", "all")


def _moment(value: str | None, field: str) -> float | None:
    """An ISO date or date-time from the search form as epoch seconds (UTC unless it says otherwise)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConsoleError(400, f"{field}: use a date like 2026-01-31 or a date-time like 2026-01-31T08:00") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _int(value: str | None) -> int | None:
    # ASCII digits only: "²".isdigit() is True, and int() refuses it.
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 19 else None


def _plain(value: str, field: str) -> str:
    """A filter value, refused (400) if it holds a control character: no name or id does, and the
    store's text (PostgreSQL's) cannot hold a NUL."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConsoleError(400, f"{field}: a control character is no part of any name or id")
    return value


def message_filter(request: Request) -> tuple[MessageFilter, dict[str, str]]:
    """The search form's filter, and its values to show back in the form."""
    params = request.query_params
    form = {name: _plain(params.get(name, "").strip()[:200], name)
            for name in ("channel", "kind", "status", "patient", "since", "until")}
    where = MessageFilter(
        channel=form["channel"] or None,
        kind=form["kind"] or None,
        status=form["status"] or None,
        patient=form["patient"].removeprefix("Patient/") or None,
        since=_moment(form["since"], "from"),
        until=_moment(form["until"], "until"),
        before_mid=_int(params.get("before")),
    )
    return where, form


async def _lines(request: Request) -> dict[str, Any]:
    ctx = ctx_of(request)
    where, form = message_filter(request)
    lines = await ctx.query(lambda: ctx.store.message_search(where, limit=PAGE_SIZE))
    older = lines[-1].mid if len(lines) == PAGE_SIZE else None
    return {"lines": lines, "form": form, "older": older, "paged": where.before_mid is not None,
            "retention": ctx.settings.message_log.retention_days, "enabled": ctx.settings.message_log.enabled}


async def messages(request: Request) -> Response:
    """The message log: every record received and every delivery attempt, newest first, searchable."""
    await login(request)
    return page(request, "messages.html", **await _lines(request))


async def messages_live(request: Request) -> Response:
    """The message log's table alone (htmx refreshes it while the first page is shown)."""
    await login(request)
    return page(request, "messages_table.html", **await _lines(request))


async def quarantine(request: Request) -> Response:
    """Held (or replayed, discarded) records, oldest first, by source."""
    await login(request)
    ctx = ctx_of(request)
    source = _plain(request.query_params.get("source", ""), "source") or None
    status = request.query_params.get("status") or "held"
    if status not in _STATUSES:
        status = "held"
    after = _int(request.query_params.get("after")) or 0
    found = await ctx.query(lambda: ctx.store.quarantine_list(
        source=source, status=None if status == "all" else status, limit=PAGE_SIZE, after=after))
    sources = list(ctx.ingest.registry.sources) if ctx.services.ingest is not None else []
    return page(request, "quarantine.html", items=found, source=source or "", status=status, statuses=_STATUSES,
                sources=sources, next_after=found[-1].qid if len(found) == PAGE_SIZE else None,
                notice=request.query_params.get("notice"))


async def quarantined(request: Request) -> Response:
    """One held record: the body as received and why it is held."""
    await login(request)
    ctx = ctx_of(request)
    qid = _int(request.path_params["qid"])
    held = await ctx.read(ctx.store.quarantine_get, qid) if qid is not None else None
    if held is None:
        raise ConsoleError(404, f"There is no quarantined record {request.path_params['qid']}.")
    try:
        body = jsonio.dumps(jsonio.loads(held.body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        body = held.body.decode("utf-8", "replace")
    return page(request, "quarantined.html", held=held, body=body, issues=held.outcome.get("issue", []),
                notice=request.query_params.get("notice"))


async def quarantine_action(request: Request) -> Response:
    """``POST …/quarantine/{qid}/replay`` (run again with the current mappings) or ``…/discard``."""
    await login(request)
    await checked_form(request, console_of(request))
    ctx = ctx_of(request)
    qid = _int(request.path_params["qid"])
    if qid is None:
        raise ConsoleError(404, f"There is no quarantined record {request.path_params['qid']}.")
    service = ctx.ingest
    try:
        if request.path_params["action"] == "replay":
            result = await ctx.write(service.replay, qid, base_url(request))
            notice = "replay-held" if result.status == "quarantined" else "replay-stored"
        else:
            await ctx.write(service.discard, qid)
            notice = "discarded"
    except FhirError as exc:
        raise ConsoleError(exc.status, str(exc)) from exc
    return redirect(request, f"{PREFIX}/quarantine/{qid}?notice={notice}")

