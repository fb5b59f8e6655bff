"""``POST /admin/reload`` (scope ``admin``): read the configuration file's sources and the mapping
sets again and put them in use without a restart (``gateway.reload``).

200 with what is now in use (and ``restart_required``: settings changed in the file that only a
restart applies); 422 with an OperationOutcome listing every problem as ``file:line`` when
anything is invalid, in which case nothing changed.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import Response

from gateway import jsonio
from gateway.api.auth import require_scope
from gateway.api.context import ctx_of
from gateway.api.negotiation import fhir_response
from gateway.auth import Principal

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["Admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.post("/reload", summary="Reload the sources, mapping sets and pull schedules")
async def reload_configuration(request: Request, principal: Admin) -> Response:
    """Apply the configuration file's sources and the mapping sets, all or nothing."""
    services = ctx_of(request).services
    services.require_ingest()
    assert services.reloader is not None  # set when the services started, before any request
    result = await services.reloader.reload_and_log("POST /admin/reload")
    if not result.applied:
        return fhir_response(result.outcome(), status=422)
    return Response(jsonio.dumps(result.to_json()), media_type="application/json")
