"""Scopes: SMART v2 system scopes for FHIR data, plus the gateway's own.

* ``system/<Type|*>.<cruds>``: FHIR access; letters are create, read, update, delete,
  search (SMART App Launch v2). The v1 forms ``.read``, ``.write`` and ``.*`` are
  accepted too, as ``rs``, ``cud`` and ``cruds``.
* ``ingest:<source>`` / ``ingest:*``: may send records to ``/ingest/<source>``.
* ``admin``: operations (quarantine, queues, destinations), and reading the audit trail.

The audit trail (``AuditEvent``) is outside the SMART scopes: only ``admin`` may read or
search it (``system/*.rs`` is not enough), and nobody creates, updates or deletes it
through the API; the gateway alone writes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.errors import RequestError
from gateway.r4 import RESOURCE_TYPES

_SMART = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[cruds]+|read|write|\*)$")
_INGEST = re.compile(r"^ingest:(\*|[A-Za-z0-9_-]{1,64})$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
AUDIT_TYPE = "AuditEvent"


class ScopeError(RequestError):
    """A scope string the gateway does not understand."""


def parse_scope(scope: str) -> tuple[str, str] | None:
    """``system/Patient.rs`` → ``("Patient", "rs")``; None for a non-FHIR scope."""
    match = _SMART.match(scope)
    if match is None:
        return None
    perm = match.group("perm")
    letters = _V1.get(perm, perm)
    if perm not in _V1 and list(letters) != sorted(set(letters), key="cruds".index):
        raise ScopeError(f"{scope}: permission letters must be a subset of cruds, in that order")
    return match.group("type"), letters


def validate_scopes(scopes: list[str]) -> list[str]:
    """Check every scope, raising ``ScopeError`` naming the first bad one."""
    if not scopes:
        raise ScopeError("at least one scope is required")
    for scope in scopes:
        if scope == "admin" or _INGEST.match(scope):
            continue
        parsed = parse_scope(scope)
        if parsed is None:
            raise ScopeError(f"unknown scope {scope!r} (use system/<Type>.<cruds>, ingest:<source> or admin)")
        if parsed[0] != "*" and parsed[0] not in RESOURCE_TYPES:
            raise ScopeError(f"{scope}: {parsed[0]} is not an R4 resource type")
    return scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client and what its scopes allow."""

    name: str
    scopes: tuple[str, ...]
    _fhir: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, name: str, scopes: tuple[str, ...]) -> Principal:
        """Build a principal, pre-computing its FHIR permissions."""
        fhir: dict[str, str] = {}
        for scope in scopes:
            try:
                parsed = parse_scope(scope)
            except ScopeError:
                continue
            if parsed is not None:
                fhir[parsed[0]] = "".join(sorted(set(fhir.get(parsed[0], "") + parsed[1]), key="cruds".index))
        return cls(name, scopes, fhir)

    def can(self, rtype: str, letter: str) -> bool:
        """May this client do ``letter`` (one of c r u d s) on ``rtype``?"""
        if rtype == AUDIT_TYPE:
            return letter in ("r", "s") and "admin" in self.scopes
        return letter in self._fhir.get(rtype, "") or letter in self._fhir.get("*", "")

    def has(self, scope: str) -> bool:
        """Does this client hold a non-FHIR scope (``admin``, ``ingest:x``)?"""
        if scope in self.scopes:
            return True
        return scope.startswith("ingest:") and "ingest:*" in self.scopes
