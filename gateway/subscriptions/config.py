"""The ``subscriptions`` settings section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from gateway.connectors import Duration
from gateway.delivery import DestinationConfig, RetryPolicy

#: The delivery destination that carries every subscription's notifications.
DESTINATION = "subscriptions"


class SubscriptionSettings(BaseModel):
    """Topic-based subscriptions (R5 Backport IG): limits, retries, heartbeats."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    max_per_client: int = Field(20, ge=1, le=10_000, description="live subscriptions one API client may hold")
    handshake_timeout: Duration = Field(10.0, gt=0, description="how long the handshake POST may take")
    error_after: int = Field(
        3, ge=1, le=1000, description="consecutive failed sends that move a subscription to status error"
    )
    heartbeat_check: Duration = Field(
        5.0, gt=0, description="how often due heartbeats are looked for (one process sends them)"
    )
    min_heartbeat_period: Duration = Field(10.0, gt=0, description="shortest heartbeat-period a client may ask for")
    retry: RetryPolicy = Field(
        RetryPolicy(initial_delay=5.0, max_delay=600.0, max_age=3 * 86400.0),
        description="how notifications are retried before they become dead letters",
    )
    concurrency: int = Field(8, ge=1, le=256, description="notification POSTs in flight per worker process")
    timeout: Duration = Field(30.0, gt=0, description="default time a notification POST may take")
    allow_http: bool = Field(
        True, description="accept http:// endpoints (off in production: notifications carry patient data)"
    )
    endpoint_hosts: list[str] = Field(
        default_factory=list,
        description="hosts a client's endpoint may name (`emr.example.org`, or `*.example.org` for its"
        " subdomains); empty: any host but the refused addresses. A host listed exactly is exempt from"
        " the address checks (link-local, unspecified, multicast, and block_private_networks)",
    )

    block_private_networks: bool = Field(
        False,
        description="also refuse endpoints on loopback and private networks (RFC 1918, ULA) unless endpoint_hosts"
        " lists the host exactly; link-local, metadata, multicast and unspecified addresses are always refused",
    )

    def endpoint_listed(self, host: str) -> bool:
        """Whether ``endpoint_hosts`` lists ``host`` itself (not through a ``*.`` pattern)."""
        host = host.lower().rstrip(".").strip("[]")
        return any(host == allowed.lower().rstrip(".").strip("[]") for allowed in self.endpoint_hosts)

    def endpoint_allowed(self, host: str) -> bool:
        """Whether a subscription endpoint may name ``host`` (``endpoint_hosts``; empty allows any)."""
        if not self.endpoint_hosts:
            return True
        host = host.lower().rstrip(".")
        for allowed in self.endpoint_hosts:
            allowed = allowed.lower().rstrip(".")
            if host == allowed or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False


def subscription_destination(settings: SubscriptionSettings, base_url: str) -> DestinationConfig:
    """The delivery destination carrying every notification (never coalesced: each event counts)."""
    return DestinationConfig(name=DESTINATION, kind="subscriptions", base_url=base_url, coalesce=False,
                             retry=settings.retry, concurrency=settings.concurrency, timeout=settings.timeout)
