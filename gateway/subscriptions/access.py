"""What a subscription's owner may learn: its scopes (as granted when it subscribed, and as its
client holds them now) and its data policy, looked up afresh for every batch of changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.auth import Principal
from gateway.search import DataPolicy, PolicyError, RowFilter, SearchAccess, SearchRegistry
from gateway.store import ClientRegistry, SubscriptionRecord

#: The principal of the configured admin token (it has no client row).
ADMIN_TOKEN = "admin-token"
_NOTHING = DataPolicy(patients=("",))  # as the authenticator: a policy nobody can read shows nothing


@dataclass(frozen=True, slots=True)
class OwnerAccess:
    """An owner's permissions for one batch: ``can_read`` per type, ``policy`` for rows."""

    granted: Principal  # the scopes the subscription was created with
    current: Principal  # the client as it is now
    policy: RowFilter | None

    def can_read(self, resource_type: str) -> bool:
        """Both the subscribing token and the client today may read ``resource_type``."""
        return self.granted.can(resource_type, "r") and self.current.can(resource_type, "r")

    def matching(self, resource_type: str) -> SearchAccess:
        """What a match of ``resource_type`` changes may look at for the owner, as the subscribing
        token and the client today both allow: that type with ``r``, every type a chain or ``_has``
        looks into with ``s``, rows its data policy shows, and nothing that policy strips (the
        criteria and filters were checked when it subscribed; scopes and policies change since)."""

        def can(rtype: str, letter: str) -> bool:
            return all((rtype == resource_type and p.can(rtype, "r")) or p.can(rtype, letter)
                       for p in (self.granted, self.current))

        return SearchAccess(can, self.policy, deidentified=self.current.deidentified)


def owner_access(
    clients: ClientRegistry, record: SubscriptionRecord, policies: Mapping[str, DataPolicy],
    registry: SearchRegistry, now: datetime,
) -> OwnerAccess | None:
    """The owner's access now; None when the owner can no longer authenticate (revoked, disabled, gone)."""
    granted = Principal.of(record.owner, record.scopes)
    client = clients.client_by_name(record.owner)
    if record.owner == ADMIN_TOKEN:
        # A client row of that name (registered before the name was reserved) is not the admin token:
        # whose subscription this is cannot be told, so it hears nothing.
        return OwnerAccess(granted, granted, None) if client is None else None
    if client is None or not client.active(now):
        return None
    policy = policies.get(client.name)
    if policy is None and client.policy is not None:
        try:
            policy = DataPolicy.from_json(client.policy)
        except PolicyError:
            policy = _NOTHING  # fail closed, as the API does for a policy it cannot read
    current = Principal.of(client.name, client.scopes, policy)
    rows = RowFilter(policy, registry.patient_linked()) if policy is not None and policy.limits_rows else None
    return OwnerAccess(granted, current, rows)
