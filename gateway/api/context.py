"""What request handlers share: the process's ``Services`` plus what only HTTP needs, typed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio.to_thread
from starlette.requests import Request
from starlette.types import Scope

from gateway import jsonio
from gateway.auth import Authenticator, TokenIssuer
from gateway.ingest import IngestService
from gateway.search import QueryParser, SearchRegistry
from gateway.services import Services
from gateway.settings import Settings
from gateway.store import Store

from .write_lane import WriteLane

if TYPE_CHECKING:
    from .login_throttle import LoginThrottle
    from .rate_limit import RateLimits

T = TypeVar("T")

CAPABILITY_CACHE_SIZE = 8
BASE_URL_CACHE_SIZE = 64
#: The SMART extension naming the OAuth endpoints in a CapabilityStatement.
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


log = logging.getLogger("gateway.identity")

@dataclass(slots=True)
class AppContext:
    """Long-lived objects of one app instance (``app.state.ctx``).

    ``services`` is the composition root (``gateway.services``); ``settings``, ``store``,
    ``registry`` and ``parser`` are its fields, held here too because every request reads them.
    ``limits`` are the per-client rate limits, ``throttle`` the failed-login throttle (None when off).
    """

    services: Services
    settings: Settings
    store: Store
    registry: SearchRegistry
    parser: QueryParser
    auth: Authenticator
    tokens: TokenIssuer
    lane: WriteLane
    capability: dict[str, Any] = field(default_factory=dict)
    limits: RateLimits | None = None
    throttle: LoginThrottle | None = None
    _capability_bytes: dict[str, bytes] = field(default_factory=dict)
    #: FHIR base URLs by the scope parts they are built from (``base_url``)
    base_urls: dict[tuple[Any, ...], str] = field(default_factory=dict)

    @classmethod
    def of(cls, services: Services, auth: Authenticator, tokens: TokenIssuer,
           capability: dict[str, Any], limits: RateLimits | None = None,
           throttle: LoginThrottle | None = None) -> AppContext:
        """The context of an app over ``services``."""
        identity = services.identity
        return cls(
            lane=WriteLane(services.store, after=identity.catch_up if identity is not None else None),
            services=services,
            settings=services.settings,
            store=services.store,
            registry=services.registry,
            parser=services.parser,
            auth=auth,
            tokens=tokens,
            capability=capability,
            limits=limits,
            throttle=throttle,
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
            statement["rest"] = [dict(rest) for rest in statement.get("rest", [])]
            if statement["rest"]:
                security = dict(statement["rest"][0].get("security", {}))
                security["extension"] = [{"url": OAUTH_URIS, "extension": [
                    {"url": "token", "valueUri": token_url_for(base, self.settings)}]}]
                statement["rest"][0]["security"] = security
            cached = jsonio.dumps(statement)
            # Each entry is ~360 KB and bases come from requests (an allowed host on any port,
            # either scheme), so the oldest goes first rather than the cache growing.
            if len(self._capability_bytes) >= CAPABILITY_CACHE_SIZE:
                del self._capability_bytes[next(iter(self._capability_bytes))]
            self._capability_bytes[base] = cached
        return cached

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read of one resource: inline where the store says such reads are that cheap, else on a thread."""
        if self.store.inline_reads:
            return fn(*args)
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def query(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read whose cost grows with the data (search, history, compartment) on a worker thread.

        Even on SQLite, where a read by id is cheaper inline, a search may take long enough to
        stall every other request (and the health checks) if it ran on the event loop.
        """
        return await anyio.to_thread.run_sync(partial(fn, *args))

    async def write_unit(self, fn: Callable[[], T]) -> T:
        """Run a unit of work that is one store transaction, sharing a commit with other requests'
        (``WriteLane``: ``fn`` may run twice); the identity matcher catches up after the commit."""
        return await self.lane.run(fn)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a unit of work that writes, on a worker thread; then let the identity matcher
        catch up with what it committed (outside the write's transaction)."""
        identity = self.services.identity

        def work() -> T:
            result = fn(*args)
            if identity is not None:  # on the same thread: a second hop cost as much as the catch-up
                try:
                    identity.catch_up()
                except Exception as exc:  # the write is committed; matching catches up on the next one
                    log.error("identity catch-up failed (%s)", type(exc).__name__)
            return result

        return await anyio.to_thread.run_sync(work)


def ctx_of(request: Request) -> AppContext:
    """The app context of a request."""
    ctx: AppContext = request.app.state.ctx
    return ctx


def base_url(request: Request) -> str:
    """The FHIR base URL links are built from: ``public_base_url``, else the request's if its Host is allowed."""
    ctx = ctx_of(request)
    settings = ctx.settings
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    # Every write answers with a Location: building the request's URL each time cost ~5% of
    # a write; what decides the base is only these parts of the scope.
    scope = request.scope
    key = (scope["scheme"], _host_header(scope), scope.get("root_path", ""), scope.get("server"))
    found = ctx.base_urls.get(key)
    if found is None:
        found = _request_base_url(request, settings)
        if len(ctx.base_urls) >= BASE_URL_CACHE_SIZE:  # Host headers are the client's: bound the cache
            del ctx.base_urls[next(iter(ctx.base_urls))]
        ctx.base_urls[key] = found
    return found


def _host_header(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"host":
            return bytes(value)
    return None


def _request_base_url(request: Request, settings: Settings) -> str:
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


def token_url_for(base: str, settings: Settings) -> str:
    """The SMART token endpoint for FHIR base ``base``: ``smart.token_url``, else ``auth/token`` beside ``/fhir``."""
    if settings.smart.token_url:
        return settings.smart.token_url
    parts = urlsplit(base)
    parent = parts.path.rstrip("/").rpartition("/")[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{parent}/auth/token", "", ""))


def token_url(request: Request) -> str:
    """The token endpoint's URL as this request's client sees it (built like ``base_url``, never from a stray Host)."""
    return token_url_for(base_url(request), ctx_of(request).settings)
