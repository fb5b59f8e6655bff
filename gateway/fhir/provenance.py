"""Provenance naming the API client that wrote, for REST writes and Bundle entries.

Written inside the same store transaction as the writes it describes, so a version and
the record of who made it commit (or roll back) together. One Provenance per activity
(CREATE, UPDATE, DELETE) of a transaction; its targets are the exact versions written
(``Type/id/_history/v``, a tombstone for a delete), its agent the client
(``who.identifier`` in ``CLIENT_SYSTEM``, type ``author``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from gateway.search import format_instant
from gateway.store import StoredResource, StoreTransaction

#: ``Identifier.system`` of API client names (Provenance and AuditEvent agents).
CLIENT_SYSTEM = "urn:chw-gateway:client"
_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
_DISPLAY = {"CREATE": "create", "UPDATE": "revise", "DELETE": "delete", "NULLIFY": "nullify"}
_AUTHOR = {"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author",
           "display": "Author"}


def activity_of(res: StoredResource, created: bool) -> str:
    """The v3-DataOperation code of a write: CREATE, UPDATE or DELETE."""
    return "DELETE" if res.deleted else "CREATE" if created else "UPDATE"


def client_provenance(targets: Sequence[StoredResource], activity: str, client: str) -> dict[str, Any]:
    """A Provenance saying ``client`` did ``activity`` producing these versions."""
    who = {"identifier": {"system": CLIENT_SYSTEM, "value": client}, "display": client}
    return provenance_of(targets, activity, who)


def provenance_of(
    targets: Sequence[StoredResource], activity: str, who: dict[str, Any], **more: Any
) -> dict[str, Any]:
    """A Provenance saying ``who`` (its author agent) did ``activity`` producing these versions;
    ``more`` adds elements (``reason``, ``entity``)."""
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{r.type}/{r.id}/_history/{r.version}"} for r in targets],
        "recorded": format_instant(round(time.time(), 3)),
        "activity": {"coding": [{"system": _OPERATION, "code": activity, "display": _DISPLAY[activity]}]},
        **more,
        "agent": [{"type": {"coding": [_AUTHOR]}, "who": who}],
    }


def record_writes(tx: StoreTransaction, written: Sequence[tuple[StoredResource, str]], client: str) -> None:
    """Store one Provenance per activity for ``written`` (version, activity) pairs, in ``tx``."""
    for activity, targets in _by_activity(written).items():
        tx.create(client_provenance(targets, activity, client))


def record_activities(
    tx: StoreTransaction, done: Sequence[tuple[StoredResource, str]], who: dict[str, Any], **more: Any
) -> None:
    """Store one Provenance per activity for ``done`` (version, activity) pairs by ``who``, in ``tx``."""
    for activity, targets in _by_activity(done).items():
        tx.create(provenance_of(targets, activity, who, **more))


def _by_activity(done: Sequence[tuple[StoredResource, str]]) -> dict[str, list[StoredResource]]:
    grouped: dict[str, list[StoredResource]] = {}
    for res, activity in done:
        grouped.setdefault(activity, []).append(res)
    return grouped
