"""Admin endpoints for the quarantine and the mappings (scope ``admin``).

* ``GET /admin/quarantine``: held records (``source``, ``status``, ``limit``, ``after``);
* ``GET /admin/quarantine/{qid}``: one record, with the body as received;
* ``POST /admin/quarantine/{qid}/replay``, ``POST /admin/quarantine/replay``: run held
  records again with the current mappings;
* ``POST /admin/quarantine/{qid}/discard``: give up on a record (it is kept, marked);
* ``POST /admin/mappings/reload``: recompile the mapping files after a fix; a broken
  file is refused (422 listing file:line problems) and the running mappings stay.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.audit import note_records
from gateway.api.auth import require_scope
from gateway.api.context import base_url, ctx_of
from gateway.auth import Principal
from gateway.store import QuarantinedRecord

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["Admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]
#: quarantined records are numbered by a 64-bit row id: a larger number is a 400, not a SQL overflow
_ROW_ID = 2**63 - 1
RecordNumber = Annotated[int, Path(ge=0, le=_ROW_ID)]


def _json(content: Any, status: int = 200) -> Response:
    return Response(jsonio.dumps(content), status_code=status, media_type="application/json")


def _item(held: QuarantinedRecord, *, with_body: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": held.qid,
        "source": held.source,
        "received": held.received.isoformat(),
        "content_type": held.content_type,
        "record": held.record_key,
        "status": held.status,
        "attempts": held.attempts,
        "updated": held.updated.isoformat(),
        "outcome": held.outcome,
    }
    if with_body:
        try:
            item["body"] = held.body.decode("utf-8")
        except UnicodeDecodeError:
            item["body_base64"] = base64.b64encode(held.body).decode()
    return item


@router.get("/quarantine", summary="List quarantined records")
async def list_quarantine(
    request: Request,
    principal: Admin,
    # A source's name (what the configuration allows), never free text for the store.
    source: Annotated[str | None, Query(pattern="^[A-Za-z0-9_-]{1,64}$")] = None,
    status: Annotated[str, Query(pattern="^(held|replayed|discarded|all)$")] = "held",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[int, Query(ge=0, le=_ROW_ID)] = 0,
) -> Response:
    """Quarantined records, oldest first, without their bodies."""
    ctx = ctx_of(request)
    found = await ctx.query(
        lambda: ctx.store.quarantine_list(
            source=source, status=None if status == "all" else status, limit=limit, after=after
        )
    )
    page: dict[str, Any] = {"items": [_item(held) for held in found]}
    if len(found) == limit:
        page["next_after"] = found[-1].qid
    return _json(page)


@router.get("/quarantine/{qid}", summary="Read one quarantined record")
async def read_quarantined(request: Request, qid: RecordNumber, principal: Admin) -> Response:
    """One quarantined record with the body as received."""
    ctx = ctx_of(request)
    held = await ctx.read(ctx.store.quarantine_get, qid)
    if held is None:
        return _json({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "not-found", "diagnostics": f"no quarantined record {qid}"}
        ]}, 404)  # fmt: skip
    return _json(_item(held, with_body=True))


@router.post("/quarantine/replay", summary="Replay every held record")
async def replay_all(request: Request, principal: Admin, source: str | None = None) -> Response:
    """Replay held records (of one source, or all) with the current mappings."""
    ctx = ctx_of(request)
    service = ctx.ingest
    results = await ctx.write(service.replay_all, source, base_url(request))
    note_records(request, results, ctx.settings.audit.max_entities)
    still = sum(1 for result in results if result.status == "quarantined")
    return _json(
        {"replayed": len(results) - still, "still_held": still, "results": [r.to_json() for r in results]}
    )


@router.post("/quarantine/{qid}/replay", summary="Replay one held record")
async def replay_one(request: Request, qid: RecordNumber, principal: Admin) -> Response:
    """Replay one held record; 200 if it is stored now, 422 if it failed again (still held)."""
    ctx = ctx_of(request)
    service = ctx.ingest
    result = await ctx.write(service.replay, qid, base_url(request))
    note_records(request, [result], ctx.settings.audit.max_entities)
    return _json(result.to_json(), 422 if result.status == "quarantined" else 200)


@router.post("/quarantine/{qid}/discard", summary="Discard a held record")
async def discard(request: Request, qid: RecordNumber, principal: Admin) -> Response:
    """Mark a held record discarded (it is kept for the record)."""
    ctx = ctx_of(request)
    service = ctx.ingest
    await ctx.write(service.discard, qid)
    return Response(status_code=204)


@router.post("/mappings/reload", summary="Recompile the mapping files")
async def reload_mappings(request: Request, principal: Admin) -> Response:
    """Load the mapping files again; on any problem keep the running ones and list the problems."""
    ctx = ctx_of(request)
    registry = ctx.ingest.registry
    issues = await ctx.write(registry.reload)
    if issues:
        return _json({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "invalid", "diagnostics": str(issue)} for issue in issues[:100]
        ]}, 422)  # fmt: skip
    sets = registry.sets
    return _json({"sets": sorted(sets), "mappings": sorted(m.tag for s in sets.values() for m in s.mappings)})
