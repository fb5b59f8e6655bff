"""Switchable faults: what an unreliable DHIS2 behind an nginx proxy does to a client.

``FaultConfig`` is set at start and can be replaced at runtime (``PUT /sandbox/faults``).
Per request to a faulted path the injector draws once:

* ``reset_rate``: the TCP connection is reset (RST) without a response;
* ``proxy_error_rate``: nginx answers 502 Bad Gateway or 504 Gateway Time-out (HTML);
* ``error_rate``: DHIS2 itself answers 500 (a WebMessage).

``after_commit_share`` of those faults strike *after* DHIS2 processed the request: the
data is stored but the client never learns it (the "unknown outcome" that makes
deterministic UIDs and ``CREATE_AND_UPDATE`` necessary). ``latency_ms`` delays every
faulted-path request; outage windows answer every request with the window's ``mode``.
Draws come from one ``random.Random(seed)`` so a test run is reproducible.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RESET_EXTENSION", "FaultConfig", "FaultInjector", "FaultSchedule", "OutageWindow"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FaultMode = Literal["500", "502", "503", "504", "reset"]

RESET_EXTENSION = "dhis2.sandbox.reset"  # set by the sandbox server's protocol class

_NGINX_TITLES = {
    "502": "502 Bad Gateway",
    "503": "503 Service Temporarily Unavailable",
    "504": "504 Gateway Time-out",
}


class OutageWindow(BaseModel):
    """A span of time during which every faulted request fails the same way."""

    model_config = ConfigDict(frozen=True)

    start: datetime
    end: datetime
    mode: FaultMode = "502"

    @model_validator(mode="after")
    def _ordered(self) -> OutageWindow:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("outage windows need time zones")
        if self.end <= self.start:
            raise ValueError("an outage window must end after it starts")
        return self

    @classmethod
    def starting_now(cls, seconds: float, mode: FaultMode = "502") -> OutageWindow:
        """A window from now lasting ``seconds``."""
        start = datetime.now(UTC)
        return cls(start=start, end=start + timedelta(seconds=seconds), mode=mode)

    def active(self, now: datetime) -> bool:
        """True while ``now`` is inside the window."""
        return self.start <= now < self.end


class FaultConfig(BaseModel):
    """The faults the sandbox injects; the default injects none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    latency_ms: float = Field(0.0, ge=0, le=600_000)
    latency_jitter_ms: float = Field(0.0, ge=0, le=600_000)
    error_rate: float = Field(0.0, ge=0, le=1, description="DHIS2 answers 500")
    proxy_error_rate: float = Field(0.0, ge=0, le=1, description="nginx answers 502 or 504")
    reset_rate: float = Field(0.0, ge=0, le=1, description="connection reset, no response")
    after_commit_share: float = Field(0.5, ge=0, le=1, description="faults that strike after processing")
    outages: tuple[OutageWindow, ...] = ()
    seed: int | None = None
    paths: tuple[str, ...] = Field(("/api/",), description="path prefixes the faults apply to")

    @model_validator(mode="after")
    def _rates(self) -> FaultConfig:
        if self.error_rate + self.proxy_error_rate + self.reset_rate > 1.0 + 1e-9:
            raise ValueError("error_rate + proxy_error_rate + reset_rate must not exceed 1")
        return self


def _nginx_page(mode: str) -> bytes:
    title = _NGINX_TITLES[mode]
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
    ).encode()


async def _send_fault(mode: str, send: Send) -> None:
    if mode == "500":
        body = orjson.dumps(
            {
                "httpStatus": "Internal Server Error",
                "httpStatusCode": 500,
                "status": "ERROR",
                "message": "An unexpected error occurred (sandbox fault injection)",
            }
        )
        content_type = b"application/json;charset=UTF-8"
    else:
        body = _nginx_page(mode)
        content_type = b"text/html"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if mode != "500":
        headers.append((b"server", b"nginx"))
    await send({"type": "http.response.start", "status": int(mode), "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class FaultSchedule:
    """The current ``FaultConfig``, its random source and counts of what was injected."""

    def __init__(self, config: FaultConfig) -> None:
        self.stats: Counter[str] = Counter()
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        """Replace the fault configuration (and reseed the random source)."""
        self.config = config
        self._random = random.Random(config.seed)

    def add_outage(self, window: OutageWindow) -> None:
        """Add an outage window to the current configuration."""
        self.config = self.config.model_copy(update={"outages": (*self.config.outages, window)})

    def clear_outages(self) -> None:
        """Remove every outage window."""
        self.config = self.config.model_copy(update={"outages": ()})

    def applies_to(self, path: str) -> bool:
        """True if requests to ``path`` are subject to faults."""
        return path.startswith(self.config.paths)

    def latency(self) -> float:
        """Seconds to delay the next request."""
        config = self.config
        jitter = self._random.uniform(0, config.latency_jitter_ms) if config.latency_jitter_ms else 0.0
        return (config.latency_ms + jitter) / 1000

    def draw(self) -> tuple[str | None, bool]:
        """The fault for the next request (or None) and whether it strikes after processing."""
        config = self.config
        now = datetime.now(UTC)
        for window in config.outages:
            if window.active(now):
                self.stats[f"outage_{window.mode}"] += 1
                return window.mode, False
        roll = self._random.random()
        after = self._random.random() < config.after_commit_share
        if roll < config.reset_rate:
            return "reset", after
        roll -= config.reset_rate
        if roll < config.proxy_error_rate:
            return ("502" if self._random.random() < 0.5 else "504"), after
        roll -= config.proxy_error_rate
        if roll < config.error_rate:
            return "500", after
        return None, False


class FaultInjector:
    """ASGI middleware applying a ``FaultSchedule`` to every request of a faulted path."""

    def __init__(self, app: ASGIApp, schedule: FaultSchedule) -> None:
        self.app = app
        self.schedule = schedule

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request through the fault schedule."""
        schedule = self.schedule
        if scope["type"] != "http" or not schedule.applies_to(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return
        schedule.stats["requests"] += 1
        delay = schedule.latency()
        if delay:
            await asyncio.sleep(delay)
        mode, after = schedule.draw()
        if mode is None:
            await self.app(scope, receive, send)
            return
        schedule.stats[f"fault_{mode}_{'after' if after else 'before'}"] += 1
        if after:
            await self._swallow(scope, receive)
        if mode == "reset":
            await self._reset(scope, receive, send)
        else:
            await _send_fault(mode, send)

    async def _swallow(self, scope: Scope, receive: Receive) -> None:
        # The request is processed in full; its response is lost on the way back.
        async def discard(message: Message) -> None:
            return None

        await self.app(scope, receive, discard)

    async def _reset(self, scope: Scope, receive: Receive, send: Send) -> None:
        reset = scope.get("extensions", {}).get(RESET_EXTENSION)
        if reset is None:
            # Not served by the sandbox server (e.g. an in-process ASGI transport): the
            # closest thing is a proxy error, which clients cannot use either.
            await _send_fault("502", send)
            return
        reset()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
