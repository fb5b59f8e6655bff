"""Admin endpoints for patient identity (scope ``admin``; README "Identity").

* ``GET /admin/identity/reviews`` (``status`` pending, accepted, rejected or all; ``limit``):
  review pairs with the score and the evidence per field;
* ``GET /admin/identity/reviews/{task}``: one pair;
* ``POST /admin/identity/reviews/{task}/accept`` / ``…/reject``: link the pair / keep it apart;
* ``POST /admin/identity/unlink`` ``{"patients": [a, b]}``: reject a pair linked automatically;
* ``POST /admin/identity/merge`` ``{"survivor": a, "loser": b}``; ``POST /admin/identity/unmerge``
  ``{"patient": b}``.

Each decision answers the Provenance that records it and the versions written; the audit
trail records the request with the Patients concerned. 400 when identity is not enabled.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.audit import note_of
from gateway.api.auth import require_scope
from gateway.api.context import ctx_of
from gateway.auth import Principal
from gateway.errors import FhirError
from gateway.identity import (
    Decision,
    IdentityEngine,
    accept,
    list_pairs,
    merge_records,
    reject,
    show_pair,
    unlink,
    unmerge_record,
)

__all__ = ["router"]

router = APIRouter(prefix="/admin/identity", tags=["Admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]
_ID = r"^[A-Za-z0-9\-.]{1,64}$"


class _Merge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    survivor: str = Field(pattern=_ID)
    loser: str = Field(pattern=_ID)


class _Unmerge(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patient: str = Field(pattern=_ID)


class _Unlink(BaseModel):
    model_config = ConfigDict(extra="forbid")
    patients: list[Annotated[str, Field(pattern=_ID)]] = Field(min_length=2, max_length=2)


def _json(content: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(content), status_code=status, media_type="application/json")


def _engine(request: Request) -> IdentityEngine:
    engine = ctx_of(request).services.identity
    if engine is None:
        raise FhirError("patient identity is not enabled on this server (identity.enabled)", status=400,
                        code="not-supported")
    return engine


def _asked(request: Request, *patients: str) -> None:
    """Note the Patients a decision names before it runs, so a refused one is audited with them."""
    record = note_of(request)
    if record is not None:
        record.patients.update(patients)


def _decided(request: Request, decision: Decision) -> Response:
    record = note_of(request)
    if record is not None:
        for pid in decision.patients:
            record.touched("Patient", pid)
        record.touched("Provenance", decision.provenance)
    return _json(decision.to_json())


@router.get("/reviews", summary="List identity review pairs")
async def list_reviews(
    request: Request,
    principal: Admin,
    status: Annotated[str, Query(pattern="^(pending|accepted|rejected|all)$")] = "pending",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """Review pairs, best score first, with the evidence per field."""
    engine = _engine(request)
    pairs = await ctx_of(request).query(list_pairs, engine.store, engine.rules, status, limit)
    return _json({"items": [pair.to_json() for pair in pairs]})


@router.get("/reviews/{task}", summary="Read one identity review pair")
async def read_review(request: Request, task: str, principal: Admin) -> Response:
    """One review pair with the evidence per field."""
    engine = _engine(request)
    return _json((await ctx_of(request).query(show_pair, engine.store, engine.rules, task)).to_json())


@router.post("/reviews/{task}/accept", summary="Accept a review pair (link the records)")
async def accept_review(request: Request, task: str, principal: Admin) -> Response:
    """Link the pair: one person, one golden record."""
    engine = _engine(request)
    decision = await ctx_of(request).write(accept, engine.store, engine.rules, task, principal.name)
    return _decided(request, decision)


@router.post("/reviews/{task}/reject", summary="Reject a review pair (keep the records apart)")
async def reject_review(request: Request, task: str, principal: Admin) -> Response:
    """Keep the pair apart, unlinking it if it was linked."""
    engine = _engine(request)
    decision = await ctx_of(request).write(reject, engine.store, engine.rules, task, principal.name)
    return _decided(request, decision)


@router.post("/unlink", summary="Unlink two records linked automatically")
async def unlink_pair(request: Request, body: _Unlink, principal: Admin) -> Response:
    """Reject a pair the matcher linked on its own."""
    engine = _engine(request)
    first, second = body.patients
    _asked(request, first, second)
    decision = await ctx_of(request).write(unlink, engine.store, engine.rules, first, second, principal.name)
    return _decided(request, decision)


@router.post("/merge", summary="Merge one source Patient into another")
async def merge_patients(request: Request, body: _Merge, principal: Admin) -> Response:
    """``loser`` is replaced by ``survivor``; both stay addressable."""
    engine = _engine(request)
    _asked(request, body.survivor, body.loser)
    decision = await ctx_of(request).write(merge_records, engine.store, engine.rules, body.survivor, body.loser,
                                           principal.name)
    return _decided(request, decision)


@router.post("/unmerge", summary="Undo the merge of a Patient")
async def unmerge_patient(request: Request, body: _Unmerge, principal: Admin) -> Response:
    """Every record the merge wrote goes back to its version before the merge."""
    engine = _engine(request)
    _asked(request, body.patient)
    decision = await ctx_of(request).write(unmerge_record, engine.store, engine.rules, body.patient, principal.name)
    return _decided(request, decision)
