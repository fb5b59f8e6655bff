"""Scopes: SMART v2 system scopes for FHIR data, plus the gateway's own.

* ``system/<Type|*>.<cruds>``: FHIR access; letters are create, read, update, delete,
  search (SMART App Launch v2). The v1 forms ``.read``, ``.write`` and ``.*`` are
  accepted too, as ``rs``, ``cud`` and ``cruds``.
* ``ingest:<source>`` / ``ingest:*``: may send records to ``/ingest/<source>``.
* ``admin``: operations (quarantine, queues, destinations), and reading the audit trail.
* ``metrics``: scraping ``GET /metrics`` and nothing else (for Prometheus).

The audit trail (``AuditEvent``) is outside the SMART scopes: only ``admin`` may read or
search it (``system/*.rs`` is not enough), and nobody creates, updates or deletes it
through the API; the gateway alone writes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.errors import RequestError
from gateway.r4 import RESOURCE_TYPES
from gateway.search import DataPolicy

_SMART = re.compile(r"^system/(?P<type>\*|[A-Z][A-Za-z]+)\.(?P<perm>[cruds]+|read|write|\*)$")
_INGEST = re.compile(r"^ingest:(\*|[A-Za-z0-9_-]{1,64})$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_OWN = ("admin", "metrics")  # the gateway's own scopes besides ingest:<source>
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
        if scope in _OWN or _INGEST.match(scope):
            continue
        parsed = parse_scope(scope)
        if parsed is None:
            raise ScopeError(
                f"unknown scope {scope!r} (use system/<Type>.<cruds>, ingest:<source>, admin or metrics)"
            )
        if parsed[0] != "*" and parsed[0] not in RESOURCE_TYPES:
            raise ScopeError(f"{scope}: {parsed[0]} is not an R4 resource type")
    return scopes


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated client and what its scopes allow."""

    name: str
    scopes: tuple[str, ...]
    _fhir: dict[str, str] = field(default_factory=dict, compare=False)
    policy: DataPolicy | None = None  # which rows it may see (None: all its scopes allow)

    @classmethod
    def of(cls, name: str, scopes: tuple[str, ...], policy: DataPolicy | None = None) -> Principal:
        """Build a principal, pre-computing its FHIR permissions."""
        fhir: dict[str, str] = {}
        for scope in scopes:
            try:
                parsed = parse_scope(scope)
            except ScopeError:
                continue
            if parsed is not None:
                fhir[parsed[0]] = "".join(sorted(set(fhir.get(parsed[0], "") + parsed[1]), key="cruds".index))
        return cls(name, scopes, fhir, policy)

    @property
    def deidentified(self) -> bool:
        """Whether its data policy strips what identifies a person from every answer."""
        return self.policy is not None and self.policy.deidentify

    @property
    def limits_rows(self) -> bool:
        """Whether its data policy hides some Patients (and their data) from it."""
        return self.policy is not None and self.policy.limits_rows

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


def grant_scopes(requested: Sequence[str], held: Sequence[str]) -> tuple[str, ...]:
    """The part of ``requested`` that ``held`` (a client's registered scopes) allows, in v2 form.

    ``system/Patient.rs`` is granted when the client holds it or ``system/*.cruds``; a request
    beyond the registration is narrowed (``system/Patient.cruds`` to what the client may do on
    Patient, ``system/*.rs`` to the read and search the client holds per type); scopes the
    gateway does not know, or that nothing held allows, are left out.
    """
    have = Principal.of("", tuple(held))
    letters: dict[str, str] = {}
    others: list[str] = []
    for scope in requested:
        try:
            parsed = parse_scope(scope)
        except ScopeError:
            continue
        if parsed is None:
            if (scope in _OWN or _INGEST.match(scope)) and have.has(scope) and scope not in others:
                others.append(scope)
            continue
        rtype, wanted = parsed
        if rtype != "*" and rtype not in RESOURCE_TYPES:
            continue
        targets = [rtype] if rtype != "*" else ["*", *(t for t in have._fhir if t != "*")]
        for target in targets:
            allowed = "".join(letter for letter in wanted if have.can(target, letter))
            if allowed:
                letters[target] = _in_order(letters.get(target, "") + allowed)
    wildcard = letters.get("*", "")
    fhir = [
        f"system/{rtype}.{rest}"
        for rtype, perm in sorted(letters.items(), key=lambda item: (item[0] != "*", item[0]))
        if (rest := perm if rtype == "*" else "".join(letter for letter in perm if letter not in wildcard))
    ]
    return (*fhir, *others)


def _in_order(letters: str) -> str:
    return "".join(sorted(set(letters), key="cruds".index))
