"""FastAPI routes served as plain Starlette routes: the FHIR API's hot paths skip the framework's machinery.

Every FHIR endpoint takes the request and its path parameters as strings and returns a
``Response``, so FastAPI's per-request work (matching each included router twice, solving
dependencies, an exit stack per request) buys them nothing; under the CRUD mix it was about
a fifth of the gateway's Python time. ``plain_routes`` turns each route of a router into a
``TemplateRoute`` calling the same endpoint, in the same order; the FastAPI routes stay the
source of the OpenAPI document (``documented``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from .access_log import TemplateRoute

__all__ = ["plain_routes"]

Endpoint = Callable[..., Awaitable[Response]]


def plain_routes(router: APIRouter) -> list[TemplateRoute]:
    """The routes of ``router`` as plain Starlette routes, in order; a TypeError names any that cannot be."""
    routes: list[TemplateRoute] = []
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r} is not a FastAPI route")
        _check_plain(route)
        routes.append(TemplateRoute(route.path, _calling(route.endpoint), methods=sorted(route.methods or ()),
                                    name=route.name, include_in_schema=False))  # fmt: skip
    return routes


def _check_plain(route: APIRoute) -> None:
    """Fail for an endpoint that needs FastAPI: anything but the request and string path parameters."""
    hints = typing.get_type_hints(route.endpoint)
    params = inspect.signature(route.endpoint).parameters
    wanted = set(route.param_convertors)
    for name in params:
        if name == "request" and hints.get(name) is Request:
            continue
        if name in wanted and hints.get(name) is str:
            continue
        raise TypeError(f"{route.path}: parameter {name!r} of {route.endpoint.__name__} needs FastAPI")
    returned = hints.get("return")
    if not (isinstance(returned, type) and issubclass(returned, Response)):
        raise TypeError(f"{route.path}: {route.endpoint.__name__} must return a Response")


def _calling(endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint that passes the path parameters to ``endpoint`` by name."""
    names = [name for name in inspect.signature(endpoint).parameters if name != "request"]

    async def call(request: Request) -> Response:
        params: dict[str, Any] = request.path_params
        return await endpoint(request=request, **{name: params[name] for name in names})

    call.__name__ = endpoint.__name__
    call.__doc__ = endpoint.__doc__
    return call
