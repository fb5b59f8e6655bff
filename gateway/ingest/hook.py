"""The lifespan hook that sets up ingest inside the API app (``create_app(hooks=[…])``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio.to_thread
from fastapi import FastAPI
from starlette.requests import Request

from gateway.api.context import AppContext, ctx_of
from gateway.errors import FhirError
from gateway.ingest.registry import MappingRegistry
from gateway.ingest.service import IngestService

__all__ = ["EXTRA_KEY", "ingest_hook", "ingest_service"]

EXTRA_KEY = "ingest"


async def ingest_hook(app: FastAPI, ctx: AppContext) -> Callable[[], Awaitable[None]] | None:
    """Compile the mappings and build the ingest service; refuses to start on bad mappings."""
    registry = MappingRegistry(ctx.settings.mappings_dir, ctx.settings.sources)
    service = IngestService(ctx.store, ctx.parser, registry)
    ctx.extras[EXTRA_KEY] = service

    async def close() -> None:
        await anyio.to_thread.run_sync(service.close)

    return close


def ingest_service(request: Request) -> IngestService:
    """The app's ingest service (503 if the app was built without the ingest hook)."""
    service = ctx_of(request).extras.get(EXTRA_KEY)
    if not isinstance(service, IngestService):
        raise FhirError("ingest is not enabled on this server", status=503, code="not-supported")
    return service
