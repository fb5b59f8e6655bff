"""Where a subscription's handshake and notifications may go: the address ranges refused (SSRF).

A client names the endpoint, so without care it could point the gateway at the cloud's
metadata service or other addresses nobody should be sent requests to. Refused always:
link-local (169.254.0.0/16 with the metadata address, fe80::/10, AWS's fd00:ec2::254),
unspecified (0.0.0.0/8, ::), multicast and broadcast, also inside IPv6 (IPv4-mapped,
IPv4-compatible, NAT64). With ``block_private_networks`` also loopback and private networks
(RFC 1918, 100.64.0.0/10, ULA). A host listed exactly in ``endpoint_hosts`` is exempt.

A host is read as the OS reads it (``inet_aton``: ``2852039166``, ``0xA9FEA9FE`` and
``0251.0376.0251.0376`` are all 169.254.169.254). ``refusal`` judges what the URL spells, at
create and update; ``send_refusal`` also resolves a name right before each send (the handshake,
every notification), so a name that later resolves to a refused address (DNS rebinding) gets
nothing, and ``connect_addresses`` is what the transport's connections use
(``gateway.subscriptions.pinning``): they go to the very addresses judged, so a resolver
answering differently between the check and the connection is caught too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import httpx

from gateway.subscriptions.config import SubscriptionSettings

__all__ = ["EndpointGuard", "Resolver", "address_refusal", "literal_address", "resolve_host"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port)`` to the addresses a connection to it may reach.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_net = ipaddress.ip_network
_ALWAYS = (
    ("link-local", (_net("169.254.0.0/16"), _net("fe80::/10"), _net("fd00:ec2::254/128"))),
    ("unspecified", (_net("0.0.0.0/8"), _net("::/128"))),
    ("multicast", (_net("224.0.0.0/4"), _net("ff00::/8"))),
    ("broadcast", (_net("255.255.255.255/32"),)),
)
_PRIVATE = (
    ("loopback", (_net("127.0.0.0/8"), _net("::1/128"))),
    ("private", (_net("10.0.0.0/8"), _net("172.16.0.0/12"), _net("192.168.0.0/16"), _net("100.64.0.0/10"),
                 _net("fc00::/7"), _net("fec0::/10"))),
)
_NAT64 = _net("64:ff9b::/96")
_RESOLVE_SECONDS = 10.0


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches it by (mapped, compatible, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (ip.packed[:12] == bytes(12) and int(ip) > 1):
        return ipaddress.IPv4Address(ip.packed[12:])
    return None


def address_refusal(ip: Address, *, block_private: bool = False) -> str | None:
    """The kind of address ``ip`` is when subscriptions may not notify it (``link-local``, ...), else None."""
    if isinstance(ip, ipaddress.IPv6Address):
        ip = ipaddress.IPv6Address(ip.packed)  # without a %zone
        ip = _embedded_v4(ip) or ip
    for kind, networks in _ALWAYS + (_PRIVATE if block_private else ()):
        if any(ip in network for network in networks):
            return kind
    return None


def _ip_literal(host: str) -> Address | None:
    """The address ``host`` spells as the OS would read it (any IPv4 form ``inet_aton`` takes), or None."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0].removesuffix(".")  # a zone (%25eth0 in a URL); a root-label dot
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if ":" in text or not text:
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


def literal_address(host: str) -> Address | None:
    """The address ``host`` stands for without a lookup: an IP literal in any spelling, or loopback for
    ``localhost`` (RFC 6761); None for other names."""
    ip = _ip_literal(host)
    if ip is None and (host.lower().rstrip(".") == "localhost" or host.lower().rstrip(".").endswith(".localhost")):
        return ipaddress.IPv4Address("127.0.0.1")
    return ip


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses the OS resolves ``host`` to (what a connection to it would try)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _hosts(url: str) -> tuple[set[str], int]:
    """The URL's host as urllib and as httpx read it (they may differ on odd URLs), and its port."""
    hosts: set[str] = set()
    port = 443 if url.lower().startswith("https:") else 80
    try:
        hosts.add(urlsplit(url).hostname or "")
    except ValueError:
        pass
    try:
        parsed = httpx.URL(url)
        hosts.add(parsed.host)
        port = parsed.port or port
    except (httpx.InvalidURL, TypeError, ValueError):
        pass
    return {host for host in hosts if host}, port


class EndpointGuard:
    """Judges subscription endpoints by ``settings`` (see the module docstring)."""

    def __init__(self, settings: SubscriptionSettings, resolve: Resolver | None = None) -> None:
        self.settings = settings
        self._resolve = resolve

    def refusal(self, url: str) -> str | None:
        """Why ``url`` may not be an endpoint, judged by what it spells; None when it may."""
        hosts, _ = _hosts(url)
        for host in hosts:
            if self.settings.endpoint_listed(host):
                continue
            ip = literal_address(host)
            kind = address_refusal(ip, block_private=self.settings.block_private_networks) if ip else None
            if kind is not None:
                return f"the endpoint host {host[:100]!r} is a {kind} address, which subscriptions may not notify"
        return None

    async def send_refusal(self, url: str) -> str | None:
        """Why nothing may be sent to ``url`` now: what it spells, or where its host resolves; None when it may."""
        spelled = self.refusal(url)
        if spelled is not None:
            return spelled
        hosts, port = _hosts(url)
        for host in hosts:
            if self.settings.endpoint_listed(host) or _ip_literal(host) is not None:
                continue
            try:
                _, refused = await self.connect_addresses(host, port)
            except (OSError, TimeoutError, UnicodeError):
                continue  # the send fails by itself, as a connection error
            if refused is not None:
                return refused
        return None

    async def connect_addresses(self, host: str, port: int) -> tuple[list[str], str | None]:
        """The addresses a connection to ``host`` may go to, by number (a listed host: its name), or
        why none may: one address of a name refused refuses the name. Resolving errors are raised."""
        if self.settings.endpoint_listed(host):
            return [host], None
        literal = _ip_literal(host)  # ``localhost`` too is looked up, as the OS would
        found: list[Address] = []
        if literal is not None:
            found.append(literal)
        else:
            resolve = self._resolve or resolve_host
            for text in await asyncio.wait_for(resolve(host, port), _RESOLVE_SECONDS):
                try:
                    found.append(ipaddress.ip_address(text))
                except ValueError:
                    continue
        for ip in found:
            kind = address_refusal(ip, block_private=self.settings.block_private_networks)
            if kind is not None:
                spelled = "is" if literal is not None else "resolves to"
                return [], f"the endpoint host {spelled} a {kind} address, which subscriptions may not notify"
        return list(dict.fromkeys(str(ip) for ip in found)), None
