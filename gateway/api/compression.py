"""Response compression: gzip for large answers to clients that accept it.

CHW supervisors' tablets and district servers reach the gateway over metered, slow rural
links; FHIR JSON shrinks 5-20x under gzip (a search page of 20 Observations, a
CapabilityStatement, an NDJSON export file). Starlette's ``GZipResponder`` does the work
(streamed bodies compressed chunk by chunk, large chunks off the event loop, ``206`` and
``text/event-stream`` answers left alone); this middleware only decides whether to use it,
so a request without ``Accept-Encoding: gzip`` (the CHW apps' small writes, most partner
reads) passes through without any extra layer. ``Accept-Encoding`` is read as RFC 9110
12.5.3 writes it: ``gzip;q=0`` refuses gzip, and ``*`` accepts it unless gzip is listed.
"""

from __future__ import annotations

from starlette.middleware.gzip import GZipResponder
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["CompressionMiddleware", "accepts_gzip"]

#: zlib's default level: nearly level 9's ratio on JSON at about half its CPU.
_LEVEL = 6


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` value lets the answer be gzip-encoded."""
    star: bool | None = None
    for item in header.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0  # a malformed weight is no consent to compress
        if coding == "*":
            star = weight > 0
        else:
            return weight > 0
    return bool(star)


class CompressionMiddleware:
    """Pure ASGI middleware: gzip answers of ``minimum_size`` bytes or more when the client accepts it."""

    def __init__(self, app: ASGIApp, *, minimum_size: int) -> None:
        self.app = app
        self.minimum_size = minimum_size

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to Starlette's gzip responder, or straight to the app."""
        if scope["type"] == "http":
            # Repeated header lines are one comma-separated list (RFC 9110 5.3).
            offered = [value for name, value in scope["headers"] if name == b"accept-encoding"]
            if offered and accepts_gzip(b",".join(offered).decode("latin-1")):
                responder = GZipResponder(self.app, self.minimum_size, compresslevel=_LEVEL)
                await responder(scope, receive, send)
                return
        await self.app(scope, receive, send)
