"""The access log: one JSON line per HTTP request on the ``gateway.access`` logger, and request ids.

A line holds the time the request arrived (UTC), its id, the method, the route template
(``/fhir/{rtype}/{rid}``, never the path as sent), the resource type when the route has one,
the status, the duration, the response size, the client's name and address. Never the
query string, headers, tokens or bodies: those can hold patient data or secrets.

Every response carries ``X-Request-ID``: the client's own when it is a plain token of at
most 64 characters (letters, digits, ``.``, ``_``, ``-``), else a fresh random one.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import jsonio
from gateway.ids import random_hex
from gateway.r4 import RESOURCE_TYPES

from .request_state import principal_of, set_request_id

__all__ = ["ACCESS_LOGGER", "AccessLogMiddleware", "TemplateRoute", "configure_access_log"]

ACCESS_LOGGER = "gateway.access"
log = logging.getLogger(ACCESS_LOGGER)

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def _request_id(scope: Scope) -> str:
    value: bytes
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if _REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return random_hex(16)


class AccessLogMiddleware:
    """Pure ASGI middleware: gives each request an id, echoes it, and logs the request's line."""

    def __init__(self, app: ASGIApp, *, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, adding ``X-Request-ID`` to the response and logging its line."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        set_request_id(scope, request_id)
        header = (b"x-request-id", request_id.encode("ascii"))
        status = 0
        size = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), header]}
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        if not (self.enabled and log.isEnabledFor(logging.INFO)):
            await self.app(scope, receive, send_with_id)
            return
        arrived = time.time()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except BaseException:
            # The server's error handler, outside this middleware, answers 500.
            status = status or 500
            raise
        finally:
            line = access_line(scope, request_id, arrived, time.perf_counter() - start, status, size)
            # Handed to the logger's handlers as ``log.info`` would, minus finding the caller's
            # file and line (a walk up the stack), which says nothing here: it costs a read ~5 µs.
            log.handle(log.makeRecord(ACCESS_LOGGER, logging.INFO, __file__, 0, line, (), None))


def access_line(scope: Scope, request_id: str, arrived: float, seconds: float, status: int, size: int) -> str:
    """The JSON access log line of a finished request."""
    route = scope.get("route")
    rtype = scope.get("path_params", {}).get("rtype")
    principal = principal_of(scope)
    client = scope.get("client")
    line: dict[str, Any] = {
        "time": _utc_stamp(arrived),
        "request_id": request_id,
        "method": scope["method"][:16],
        "route": getattr(route, "path", None),
        # Only a real type: a path segment that is not one is whatever the client typed.
        "type": rtype if rtype in RESOURCE_TYPES else None,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
        "bytes": size,
        "client": principal.name if principal is not None else None,
        "ip": client[0] if client else None,
    }
    return jsonio.dumps(line).decode()


_second: list[Any] = [None, ""]  # the last second stamped, and its text: most lines share one


def _utc_stamp(when: float) -> str:
    """``2026-12-04T21:35:17.135Z``."""
    second, millisecond = divmod(int(when * 1000), 1000)
    if _second[0] != second:
        _second[:] = [second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")]
    return f"{_second[1]}.{millisecond:03d}Z"


class TemplateRoute(Route):
    """A plain Starlette route that records itself in the scope, as FastAPI's routes do, for the log's template."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Starlette's match, plus ``route`` in the child scope."""
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def configure_access_log(stream: TextIO | None = None) -> None:
    """Write ``gateway.access`` lines bare (one JSON object a line) to ``stream`` (stderr).

    The logger stops propagating, so the root logger's format (``time LEVEL name: message``)
    stays as it is for every other logger and does not wrap the JSON.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
