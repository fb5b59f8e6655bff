"""A gateway under test on loopback, and HTTP clients that fail any response breaking the FHIR rules.

Every response a robustness test receives passes ``tests.support.fhir_responses.check_response``:
never a 5xx, an OperationOutcome as ``application/fhir+json`` on every error, and every
resource body valid against the R4 JSON schema. ``raw_request`` sends bytes exactly as
given (paths and query strings httpx would otherwise re-encode).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.api.app import create_app
from gateway.auth.tokens import hash_token, new_token
from gateway.settings import Settings
from gateway.store import ApiClient, open_store
from tests.support.fhir_responses import check_response, oracle_hook
from tests.support.gateway_app import ALL_SCOPES, MACHINE_SPEED_LIMITS
from tests.support.live_server import LiveServer

_TIMEOUT = httpx.Timeout(30.0)
ResponseHook = Callable[[httpx.Response], None]


@dataclass(frozen=True, slots=True)
class Gateway:
    """A running gateway: FHIR base URL (no trailing slash), a token allowed everything, its store,
    and the tokens of the scoped clients ``serve`` was asked for (by client name)."""

    base: str
    token: str
    store_url: str
    tokens: Mapping[str, str] = field(default_factory=dict)

    def client(
        self, *, checked: bool = True, token: str | None = None, hooks: Sequence[ResponseHook] = (), **headers: str
    ) -> httpx.Client:
        """A client for ``[base]`` (with ``token``, default the all-powerful one); ``checked``
        installs the response oracles, ``hooks`` more response checks."""
        response_hooks = [*([oracle_hook()] if checked else []), *hooks]
        return httpx.Client(
            base_url=self.base,
            headers={"Authorization": f"Bearer {token or self.token}", **headers},
            event_hooks={"response": response_hooks} if response_hooks else {},
            timeout=_TIMEOUT,
        )


@contextmanager
def serve(
    directory: Path, store_url: str, *, clients: Mapping[str, tuple[str, ...]] | None = None, **overrides: Any
) -> Iterator[Gateway]:
    """Build a gateway on ``store_url`` (``overrides``: other Settings fields) and run it on a free loopback port;
    ``clients`` (name -> scopes) are registered too, their tokens in ``Gateway.tokens``.

    The store is opened (and migrated) once and handed to the app. Opening an already
    migrated PostgreSQL schema a second time fails now and then (a NOTICE from ``CREATE
    TABLE IF NOT EXISTS`` misaligns psycopg's pipeline results; reported to the store's
    owners) — these tests are about requests, not start-up, so they do not open it twice.
    """
    directory.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {"queue_url": f"sqlite:///{directory / 'queue.db'}", "rate_limit": MACHINE_SPEED_LIMITS}
    settings = Settings(store_url=store_url, **{**values, **overrides})
    store = open_store(store_url)
    try:
        token = new_token()
        store.save_client(ApiClient("robustness", ALL_SCOPES, datetime.now(UTC)), hash_token(token))
        tokens = {}
        for name, scopes in (clients or {}).items():
            tokens[name] = new_token()
            store.save_client(ApiClient(name, scopes, datetime.now(UTC)), hash_token(tokens[name]))
        with LiveServer(create_app(settings, store=store)) as server:
            yield Gateway(base=f"{server.url}/fhir", token=token, store_url=store_url, tokens=tokens)
    finally:
        store.close()


def raw_request(
    client: httpx.Client,
    method: str,
    target: bytes,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    content: bytes | None = None,
) -> httpx.Response:
    """Send ``target`` (path and query under ``[base]``, e.g. ``b"/Patient?x=%ff"``) byte for byte."""
    base = urlsplit(str(client.base_url).rstrip("/"))
    url = httpx.URL(
        scheme=base.scheme, host=base.hostname or "", port=base.port, raw_path=base.path.encode() + target
    )
    merged = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in client.headers.multi_items()]
    names = {k.lower() for k, _ in headers or []}
    request = httpx.Request(
        method,
        url,
        headers=[(k, v) for k, v in merged if k.lower() not in names] + list(headers or []),
        content=content,
    )
    response = client.send(request)
    response.read()
    return response


def history_total(client: httpx.Client) -> int:
    """How many resource versions the store holds (every REST write adds two, with its Provenance):
    a probe for "nothing changed"."""
    response = client.get("/_history", params={"_count": "0"})
    assert response.status_code == 200, response.text
    total: int = response.json()["total"]
    return total


def local(url: str) -> str:
    """``url`` (absolute, as the gateway wrote it) relative to ``[base]``.

    Forwarded headers may make the gateway write another scheme or host than the test
    talks to; the path under ``/fhir`` is what identifies the target.
    """
    parts = urlsplit(url)
    path = parts.path.split("/fhir", 1)[1] if "/fhir" in parts.path else parts.path
    return path + (f"?{parts.query}" if parts.query else "")


def checked(response: httpx.Response) -> Any:
    """Apply the oracles to a response received without the hook; return its JSON body."""
    return check_response(response)
