"""Console page of patient identity: review pairs with the evidence per field, accept or reject.

Decisions go through ``gateway.identity`` as ``/admin/identity/*`` and ``gateway identity
review`` do (a Provenance naming the console's client, and the audit record of the request).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.audit import note_of
from gateway.api.context import ctx_of
from gateway.identity import STATUSES, IdentityDecisionError, IdentityEngine, accept, list_pairs, reject

from .web import PREFIX, ConsoleError, checked_form, console_of, display_name, login, page, redirect

PAGE_SIZE = 100
_SHOWN = (*STATUSES, "all")


def _engine(request: Request) -> IdentityEngine:
    engine = ctx_of(request).services.identity
    if engine is None:
        raise ConsoleError(400, "Patient identity is not enabled on this gateway (identity.enabled).")
    return engine


async def reviews(request: Request) -> Response:
    """Review pairs of one status, best score first, each field's level and both records' values."""
    await login(request)
    engine = _engine(request)
    status = request.query_params.get("status") or "pending"
    if status not in _SHOWN:
        status = "pending"
    pairs = await ctx_of(request).query(list_pairs, engine.store, engine.rules, status, PAGE_SIZE)
    return page(request, "identity.html", pairs=pairs, status=status, statuses=_SHOWN,
                notice=request.query_params.get("notice"))


async def review_action(request: Request) -> Response:
    """``POST …/identity/reviews/{task}/accept`` (link the pair) or ``…/reject`` (keep it apart)."""
    session = await login(request)
    await checked_form(request, console_of(request))
    engine = _engine(request)
    action = request.path_params["action"]
    decide = accept if action == "accept" else reject
    who = display_name(session.subject or "")
    try:
        decision = await ctx_of(request).write(decide, engine.store, engine.rules, request.path_params["task"], who)
    except IdentityDecisionError as exc:
        raise ConsoleError(exc.status, str(exc)) from exc
    record = note_of(request)
    if record is not None:
        for pid in decision.patients:
            record.touched("Patient", pid)
        record.touched("Provenance", decision.provenance)
    return redirect(request, f"{PREFIX}/identity/reviews?notice=identity-{action}")
