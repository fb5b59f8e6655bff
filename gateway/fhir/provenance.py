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
_DISPLAY = {"CREATE": "create", "UPDATE": "revise", "DELETE": "delete"}
_AUTHOR = {"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author",
           "display": "Author"}


def activity_of(res: StoredResource, created: bool) -> str:
    """The v3-DataOperation code of a write: CREATE, UPDATE or DELETE."""
    return "DELETE" if res.deleted else "CREATE" if created else "UPDATE"


def client_provenance(targets: Sequence[StoredResource], activity: str, client: str) -> dict[str, Any]:
    """A Provenance saying ``client`` did ``activity`` producing these versions."""
    return {
        "resourceType": "Provenance",
        "target": [{"reference": f"{r.type}/{r.id}/_history/{r.version}"} for r in targets],
        "recorded": format_instant(round(time.time(), 3)),
        "activity": {"coding": [{"system": _OPERATION, "code": activity, "display": _DISPLAY[activity]}]},
        "agent": [{"type": {"coding": [_AUTHOR]},
                   "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client}, "display": client}}],
    }  # fmt: skip


def record_writes(tx: StoreTransaction, written: Sequence[tuple[StoredResource, str]], client: str) -> None:
    """Store one Provenance per activity for ``written`` (version, activity) pairs, in ``tx``."""
    by_activity: dict[str, list[StoredResource]] = {}
    for res, activity in written:
        by_activity.setdefault(activity, []).append(res)
    for activity, targets in by_activity.items():
        tx.create(client_provenance(targets, activity, client))
