"""``POST /ingest/{source}``: community-care records in, FHIR resources stored.

The body is one JSON object, a JSON array of objects, or CSV (``text/csv``). The answer
lists every record: the resources it wrote (type, id, version, change) or, for a record
that failed, the OperationOutcome and the quarantine id. When any record was quarantined
the status is the source's ``quarantine_status`` (202 by default, because senders such as
CHT outbound push resend forever on anything but 2xx); otherwise 200.

``DELETE /ingest/{source}/records/{record}`` says the source deleted a record whose deletion
its payloads cannot express (a deleted Kobo submission): what it produced is taken back.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.audit import note_records
from gateway.api.auth import require_scope
from gateway.api.context import base_url, ctx_of
from gateway.api.negotiation import read_body
from gateway.auth import Principal
from gateway.errors import invalid
from gateway.ingest import split_body

__all__ = ["router"]

router = APIRouter(tags=["Ingest"])

#: Records per request; a larger CSV must be split (it would hold one worker too long).
MAX_RECORDS = 1000
MAX_RECORD_KEY = 256
Sender = Annotated[Principal, Depends(require_scope("ingest:{source}"))]


@router.post("/ingest/{source}", summary="Ingest community-care records")
async def ingest(request: Request, source: str, principal: Sender) -> Response:
    """Map, validate and store each record; quarantine the ones that fail."""
    ctx = ctx_of(request)
    service = ctx.ingest
    config = service.registry.source(source)
    body = await read_body(request, ctx.settings.max_body_bytes)
    records = split_body(
        body,
        request.headers.get("content-type"),
        max_depth=ctx.settings.max_json_depth,
        max_records=MAX_RECORDS,
    )
    report = await ctx.write(service.ingest, config.name, records, base_url(request))
    note_records(request, report.results, ctx.settings.audit.max_entities)
    status = config.quarantine_status if report.quarantined else 200
    return Response(jsonio.dumps(report.to_json()), status_code=status, media_type="application/json")


@router.delete("/ingest/{source}/records/{record}", summary="Take back what a deleted source record produced")
async def delete_record(request: Request, source: str, record: str, principal: Sender) -> Response:
    """Retract every resource the record produced (status change or delete, per rule)."""
    ctx = ctx_of(request)
    service = ctx.ingest
    config = service.registry.source(source)
    if not record or len(record) > MAX_RECORD_KEY:
        raise invalid(f"a record id is 1 to {MAX_RECORD_KEY} characters", ["record"])
    result = await ctx.write(service.delete_record, config.name, record)
    note_records(request, [result], ctx.settings.audit.max_entities)
    body = {"source": config.name, **result.to_json()}
    body.pop("index", None)
    return Response(jsonio.dumps(body), status_code=200, media_type="application/json")
