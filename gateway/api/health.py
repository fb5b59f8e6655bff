"""Liveness and readiness probes (no authentication)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.api.context import ctx_of

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """The store answers; 503 otherwise."""
    try:
        await anyio.to_thread.run_sync(ctx_of(request).store.ping)
    except Exception as exc:  # any driver error means "not ready"; the type is enough to log
        return JSONResponse({"status": "unavailable", "store": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready"})
