"""``IndexedRoutes``: an ordered list of Starlette routes matched through an index of path shapes.

Starlette (and FastAPI) try each route in turn. The FHIR API's ~40 routes all start with
``/fhir``, so a write tried about 30 regular expressions before its own (~6% of the gateway's
CPU under the CRUD mix). Here the routes are grouped by the number of segments of their path
and its first segment after the prefix (a literal such as ``Subscription``, or a parameter
such as ``{rtype}``); a request tries, in the original order, only the routes of its own
group. The first full match wins, as in Starlette, and a path that matched only by its
shape (wrong method) answers as that route does (405). A route whose parameter would take an
operation name (``{rid}`` taking ``$match``) does not match: no type, id or version starts with
``$``, so ``GET /fhir/Patient/$match`` is 405 (the operation takes POST), not a read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette._utils import get_route_path
from starlette.convertors import PathConvertor
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

__all__ = ["IndexedRoutes"]

_SELECTED = "gateway.indexed_route"
_ALLOWED = "gateway.allowed_methods"


def _shape(path: str, prefix: str) -> tuple[int, str] | None:
    """(segments, first segment after the prefix) of a request path, or None outside the prefix."""
    if not path.startswith(prefix) or (len(path) > len(prefix) and path[len(prefix)] != "/"):
        return None
    rest = path[len(prefix) :]
    first = rest[1:].split("/", 1)[0] if rest else ""
    return rest.count("/"), first


def _operation_as_parameter(child: Scope) -> bool:
    """Whether a route took an operation name (``$match``, ``$export``) as a type, id or version:
    none of those may start with ``$``, so the path is another route's, or none."""
    return any(isinstance(value, str) and value.startswith("$") for value in child.get("path_params", {}).values())


def _reserved(child: Scope) -> bool:
    """Whether a path parameter holds a word of the API's own (``_history``, ``_search``)."""
    return any(str(value)[:1] in "_" for value in child.get("path_params", {}).values())


class IndexedRoutes(BaseRoute):
    """Routes under one path prefix, matched in order among those of the request path's shape."""

    def __init__(self, prefix: str, routes: Sequence[Route]) -> None:
        self.prefix = prefix.rstrip("/")
        self.routes = list(routes)
        self._literal: dict[tuple[int, str], list[Route]] = {}
        self._generic: dict[int, list[Route]] = {}
        shapes = []
        for route in self.routes:
            path = route.path_format
            shape = _shape(path, self.prefix)
            if shape is None or any(isinstance(c, PathConvertor) for c in route.param_convertors.values()):
                raise ValueError(f"{path}: not under {self.prefix}, or of no fixed depth")
            depth, first = shape
            shapes.append((route, depth, None if "{" in first else first))
        literals = {(depth, first) for _, depth, first in shapes if first is not None}
        for depth in {depth for _, depth, _ in shapes}:
            self._generic[depth] = [route for route, d, first in shapes if d == depth and first is None]
        for depth, literal in literals:
            # A literal that cannot be a resource type (metadata, _history, $export) is the server's
            # own: a parameter route ({rtype}) does not take it, so POST /fhir/metadata is 405.
            reserved = not literal[:1].isupper()
            self._literal[depth, literal] = [
                route for route, d, first in shapes
                if d == depth and (first == literal or (first is None and not reserved))
            ]  # fmt: skip

    def candidates(self, path: str) -> list[Route]:
        """The routes a path could match, in their order."""
        shape = _shape(path, self.prefix)
        if shape is None:
            return []
        return self._literal.get(shape) or self._generic.get(shape[0], [])

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """The first route of the path's shape that matches fully, else the first that matches but for the method."""
        if scope["type"] != "http":
            return Match.NONE, {}
        # Two passes in one: routes whose parameters took a word of the API's own (`_history`,
        # `_search`: ids never start with _) count only when no other route has the path.
        # So PUT /fhir/Patient/_history is 405 (that URL takes GET), not PUT's "bad id".
        full: dict[bool, tuple[Route, Scope]] = {}
        partial: dict[bool, tuple[Route, Scope]] = {}
        allowed: dict[bool, set[str]] = {False: set(), True: set()}
        for route in self.candidates(get_route_path(scope)):
            match, child = route.matches(scope)
            if match is Match.NONE:
                continue
            if _operation_as_parameter(child):
                continue  # GET /fhir/Patient/$match is not a read of id "$match": 405 (or 404), not 400
            weak = _reserved(child)
            if match is Match.FULL:
                if not weak:
                    return match, {**child, _SELECTED: route}
                full.setdefault(weak, (route, child))
            else:
                allowed[weak] |= route.methods or set()
                partial.setdefault(weak, (route, child))
        if False not in partial and True in full:
            route, child = full[True]
            return Match.FULL, {**child, _SELECTED: route}
        for weak in (False, True):
            if weak in partial:
                # 405's Allow lists every method the URL takes (RFC 9110), not only the first route's.
                route, child = partial[weak]
                return Match.PARTIAL, {**child, _SELECTED: route, _ALLOWED: allowed[weak]}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route ``matches`` selected (for a method no route of the URL takes: 405 with Allow)."""
        route: Any = scope[_SELECTED]
        allowed = scope.get(_ALLOWED)
        if allowed is not None and scope["method"] not in route.methods:
            raise HTTPException(405, headers={"Allow": ", ".join(sorted(allowed))})
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> Any:
        """The URL of a named route among these."""
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                continue
        raise NoMatchFound(name, path_params)
