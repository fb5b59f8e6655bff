"""The FHIR API's FastAPI routes served as plain Starlette routes (``gateway.api.plain_routes``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from gateway.api.access_log import TemplateRoute
from gateway.api.app import FHIR_ROUTERS, create_app
from gateway.api.plain_routes import plain_routes
from gateway.api.route_index import IndexedRoutes
from gateway.settings import Settings


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_every_fhir_route_is_matched_by_its_plain_route_before_any_fastapi_route(tmp_path: Path) -> None:
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path}/p.db"))
    for router in FHIR_ROUTERS:
        for route in router.routes:
            method = sorted(route.methods)[0]  # type: ignore[attr-defined]
            path = route.path.replace("{rtype}", "Observation").replace("{rid}", "o1").replace("{vid}", "2")  # type: ignore[attr-defined]
            scope = _scope(method, path)
            first = next(r for r in app.router.routes if r.matches(scope)[0] is Match.FULL)
            assert isinstance(first, IndexedRoutes), (method, path, first)
            selected = first.matches(scope)[1]["route"]
            assert isinstance(selected, TemplateRoute), (method, path, selected)
            if not path.startswith("/fhir/Patient/"):  # $match, $everything: their own paths
                assert selected.endpoint.__name__ == route.endpoint.__name__, (method, path)  # type: ignore[attr-defined]


def test_an_endpoint_that_needs_fastapi_is_refused_by_name() -> None:
    router = APIRouter(prefix="/fhir")

    @router.get("/{rtype}")
    async def search(request: Request, rtype: str, count: int = Query(10)) -> Response:
        return Response()

    with pytest.raises(TypeError, match="parameter 'count' of search needs FastAPI"):
        plain_routes(router)

    returns = APIRouter()

    @returns.get("/x")
    async def listing(request: Request) -> dict[str, int]:
        return {}

    with pytest.raises(TypeError, match="listing must return a Response"):
        plain_routes(returns)


async def test_a_plain_route_passes_the_path_parameters_by_name() -> None:
    router = APIRouter(prefix="/fhir")

    @router.get("/{rtype}/{rid}/_history/{vid}")
    async def vread(request: Request, vid: str, rtype: str, rid: str) -> Response:
        return JSONResponse([rtype, rid, vid])

    (route,) = plain_routes(router)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {**_scope("GET", "/fhir/Patient/p1/_history/3"), "query_string": b"", "server": ("t", 80), "scheme": "http"}
    match, child = route.matches(scope)
    assert match is Match.FULL
    await route.handle({**scope, **child}, receive, send)  # type: ignore[arg-type]
    assert sent[-1]["body"] == b'["Patient","p1","3"]'
