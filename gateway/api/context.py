"""What request handlers share: the process's ``Services`` plus what only HTTP needs, typed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
import orjson
from starlette.requests import Request

from gateway.auth import Authenticator
from gateway.ingest import IngestService
from gateway.search import QueryParser, SearchRegistry
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import Store

if TYPE_CHECKING:
    from .rate_limit import RateLimits

T = TypeVar("T")

CAPABILITY_CACHE_SIZE = 8


@dataclass(slots=True)
class AppContext:
    """Long-lived objects of one app instance (``app.state.ctx``).

    ``services`` is the composition root (``gateway.services``); ``settings``, ``store``,
    ``registry`` and ``parser`` are its fields, held here too because every request reads them.
    ``limits`` are the per-client rate limits (None when off).
    """

    services: Services
    settings: Settings
    store: Store
    registry: SearchRegistry
    parser: QueryParser
    auth: Authenticator
    capability: dict[str, Any] = field(default_factory=dict)
    limits: RateLimits | None = None
    _capability_bytes: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def of(
        cls, services: Services, auth: Authenticator, capability: dict[str, Any], limits: RateLimits | None = None
    ) -> AppContext:
        """The context of an app over ``services``."""
        return cls(
            services=services,
            settings=services.settings,
            store=services.store,
            registry=services.registry,
            parser=services.parser,
            auth=auth,
            capability=capability,
            limits=limits,
        )

    @property
    def ingest(self) -> IngestService:
        """The ingest service (503 when this app was built without it)."""
        return self.services.require_ingest()

    def capability_for(self, base: str) -> bytes:
        """The CapabilityStatement as served under ``base`` (cached per base URL, a few at most)."""
        cached = self._capability_bytes.get(base)
        if cached is None:
            statement = dict(self.capability)
            statement["url"] = f"{base}/metadata"
            statement["implementation"] = {**statement.get("implementation", {}), "url": base}
            cached = orjson.dumps(statement)
            # Each entry is ~360 KB and bases come from requests (an allowed host on any port,
            # either scheme), so the oldest goes first rather than the cache growing.
            if len(self._capability_bytes) >= CAPABILITY_CACHE_SIZE:
                del self._capability_bytes[next(iter(self._capability_bytes))]
            self._capability_bytes[base] = cached
        return cached

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read-only store call: inline where the store says reads are that cheap, else on a thread."""
        if self.store.inline_reads:
            return fn(*args)
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a unit of work that writes, on a worker thread."""
        return await anyio.to_thread.run_sync(partial(fn, *args))


def ctx_of(request: Request) -> AppContext:
    """The app context of a request."""
    ctx: AppContext = request.app.state.ctx
    return ctx


def base_url(request: Request) -> str:
    """The FHIR base URL links are built from: ``public_base_url``, else the request's if its Host is allowed."""
    settings = ctx_of(request).settings
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    url = request.url
    netloc = url.netloc.lower()
    hostname = (url.hostname or "").lower()
    if any(host == netloc or host.strip("[]") == hostname for host in settings.allowed_hosts):
        return str(request.base_url).rstrip("/") + "/fhir"
    # Any other Host header is the client's word alone: links built from it would point
    # wherever the client likes (cache poisoning, phishing), so they name where the
    # gateway listens instead. Refusing the request would also refuse health probes and
    # could come after a write was committed.
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/fhir"
