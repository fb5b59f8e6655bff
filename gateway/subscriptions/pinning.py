"""Connections to subscription endpoints go to the addresses the endpoint guard judged.

``EndpointGuard.send_refusal`` resolves an endpoint's name before each send, but httpx would
then look the name up again to connect: a resolver answering differently in between (DNS
rebinding with a zero TTL) could still steer the connection to the metadata service. Here the
transport's network backend does the one lookup itself, judges every address it got, and
connects to those very addresses, by number; TLS still verifies the certificate against the
name (httpcore passes the URL's host as ``server_hostname``, not the address connected to).

httpx offers no network-backend option, so ``pin_transport`` wraps the one of its transport's
connection pool (httpcore's, ``gateway.connectors.wrap_network_backend``), as the delivery
fencing does. A transport of another kind (a test's mock, an ASGI app) is left as it is: it
opens no connections of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpcore

from gateway.connectors import wrap_network_backend
from gateway.errors import ConnectorError

if TYPE_CHECKING:
    from gateway.subscriptions.endpoints import EndpointGuard

__all__ = ["EndpointRefused", "pin_client", "pin_transport"]


class EndpointRefused(ConnectorError):
    """The endpoint's host resolved, at connect time, to an address subscriptions may not notify."""


class _PinnedBackend:
    """httpcore's network backend, connecting only to addresses ``guard`` lets through."""

    def __init__(self, inner: Any, guard: EndpointGuard) -> None:
        self._inner = inner
        self._guard = guard

    async def connect_tcp(self, host: str, port: int, **options: Any) -> Any:
        """A connection to the first judged address of ``host`` that answers (``options``: httpcore's
        timeout, local_address and socket_options, passed on)."""
        try:
            addresses, refused = await self._guard.connect_addresses(host, port)
        except (OSError, UnicodeError) as exc:
            raise httpcore.ConnectError(f"the endpoint host could not be resolved ({type(exc).__name__})") from exc
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("the endpoint host could not be resolved in time") from exc
        if refused is not None:
            raise EndpointRefused(refused)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, **options)
            except httpcore.ConnectError as exc:  # the next address, as a client connecting by name would
                failure = exc
        raise failure or httpcore.ConnectError("the endpoint host has no address")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> Any:
        """A Unix-socket connection (not a subscription endpoint: httpx opens one only when told to)."""
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry backoff)."""
        await self._inner.sleep(seconds)


def pin_transport(transport: Any, guard: EndpointGuard) -> bool:
    """Make ``transport``'s connections go only where ``guard`` judged (see the module docstring);
    whether it could (False for a transport without httpcore's pool)."""
    return wrap_network_backend(
        transport, lambda backend: backend if isinstance(backend, _PinnedBackend) else _PinnedBackend(backend, guard)
    )


def pin_client(client: Any, guard: EndpointGuard) -> bool:
    """``pin_transport`` on ``client``'s transport (httpx keeps it as ``_transport``)."""
    return pin_transport(getattr(client, "_transport", None), guard)
