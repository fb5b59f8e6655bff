"""``POST /ingest/{source}``: community-care records in, FHIR resources stored.

The body is one JSON object, a JSON array of objects, or CSV (``text/csv``). The answer
lists every record: the resources it wrote (type, id, version, change) or, for a record
that failed, the OperationOutcome and the quarantine id. When any record was quarantined
the status is the source's ``quarantine_status`` (202 by default, because senders such as
CHT outbound push resend forever on anything but 2xx); otherwise 200.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.audit import note_records
from gateway.api.auth import require_scope
from gateway.api.context import base_url, ctx_of
from gateway.api.negotiation import read_body
from gateway.auth import Principal
from gateway.ingest import split_body

__all__ = ["router"]

router = APIRouter(tags=["Ingest"])

#: Records per request; a larger CSV must be split (it would hold one worker too long).
MAX_RECORDS = 1000
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
    return Response(orjson.dumps(report.to_json()), status_code=status, media_type="application/json")
