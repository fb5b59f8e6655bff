"""DHIS2 UIDs: the format check and deterministic UIDs derived from FHIR resource identity.

A DHIS2 UID is 11 characters, ``^[a-zA-Z][a-zA-Z0-9]{10}$`` (dhis2-core ``CodeGenerator``).
The gateway never asks DHIS2 for UIDs: it derives them from the FHIR identity of the
source resource, so a retry or a replay with ``importStrategy=CREATE_AND_UPDATE`` updates
the object it created the first time instead of creating a duplicate.

Derivation: SHA-256 of ``"<namespace>|<kind>|<key>"``, read as a big-endian integer, reduced
modulo ``52 * 62**10`` (the number of valid UIDs) and written in mixed radix — 52 letters
for the first character, 62 alphanumerics for the other ten. The namespace separates
deployments that share a DHIS2 instance; the kind separates the object types derived from
one resource (a tracked entity and an enrollment from the same Patient differ).

>>> derive_uid("demo", "TRACKED_ENTITY", "Patient/123")
'W7zceR2e4Z2'
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["UID_PATTERN", "derive_uid", "is_valid_uid", "resource_key"]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ALPHANUMERIC = "0123456789" + _LETTERS
_SPACE = len(_LETTERS) * len(_ALPHANUMERIC) ** 10

UID_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9]{10}\Z")


def is_valid_uid(value: str) -> bool:
    """True when ``value`` has the shape DHIS2 accepts as a UID."""
    return bool(UID_PATTERN.match(value))


def resource_key(resource_type: str, resource_id: str) -> str:
    """The identity string of a FHIR resource (``Type/id``) used as derivation key."""
    if not resource_type or not resource_id:
        raise ValueError("a resource key needs a type and an id")
    return f"{resource_type}/{resource_id}"


def derive_uid(namespace: str, kind: str, key: str) -> str:
    """A stable DHIS2 UID for (namespace, kind, key); same inputs, same UID, forever."""
    if "|" in namespace or "|" in kind:
        # The separator must stay unambiguous or two different inputs could collide.
        raise ValueError("namespace and kind must not contain '|'")
    digest = hashlib.sha256(f"{namespace}|{kind}|{key}".encode()).digest()
    number = int.from_bytes(digest, "big") % _SPACE
    tail: list[str] = []
    for _ in range(10):
        number, digit = divmod(number, len(_ALPHANUMERIC))
        tail.append(_ALPHANUMERIC[digit])
    first = _LETTERS[number]
    return first + "".join(reversed(tail))
