"""Per-client data policies: which Patients (and whose data) a client may see at all.

Scopes say which resource *types* a client may use; a data policy narrows the *rows*.
A policy names any of:

* ``organizations``: Organizations whose subtree (``Organization.partOf``, any depth)
  manages the Patient (``Patient.managingOrganization``), e.g. a district and its
  health centres;
* ``districts``: names matched against every part of the Patient's addresses
  (``Patient.address``: district, city, state, …), case- and accent-insensitively;
* ``patients``: Patients by id (one person's compartment, e.g. a patient-facing app);

and a Patient is visible when it matches any of them. A resource of a type that can
refer to a Patient (Observation, Encounter, Task, … as the search registry's reference
targets say) is visible when one of its indexed references points at a visible Patient;
types that cannot refer to a Patient (Organization, Location, Practitioner, …) are not
restricted. ``deidentify`` strips identifying elements from every resource the client is
given (``gateway.fhir.deidentify``).

The check is SQL (``gateway.search.sql``): the store adds it to every query it runs for
the client, so reads, searches, includes, chains, ``_has``, history and ``$everything``
all pass through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError
from gateway.search.extract import normalise

#: ``meta.tag`` of a golden Patient: the gateway's record of one person, built from the source
#: Patients linked to it (``gateway.identity``); each source Patient has a kept ``refer`` link to it.
#: A policy that limits rows never shows one (see ``gateway.search.policy_sql``).
GOLDEN_TAG_SYSTEM = "urn:chw-gateway:identity"
GOLDEN_TAG_CODE = "golden"

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
_KEYS = ("organizations", "districts", "patients", "deidentify")
_MAX_ENTRIES = 100


class PolicyError(ConfigError, ValueError):
    """A data policy that cannot be understood (names the key at fault)."""


@dataclass(frozen=True, slots=True)
class DataPolicy:
    """What rows a client may see beyond its scopes (see the module docstring)."""

    organizations: tuple[str, ...] = ()  # Organization ids (subtree roots)
    districts: tuple[str, ...] = ()  # as configured; matched normalised
    patients: tuple[str, ...] = ()  # Patient ids
    deidentify: bool = False

    @property
    def limits_rows(self) -> bool:
        """Whether the policy hides some Patients (and their data) from the client."""
        return bool(self.organizations or self.districts or self.patients)

    @property
    def district_keys(self) -> tuple[str, ...]:
        """The districts as the string index stores them."""
        return tuple(sorted({normalise(d) for d in self.districts}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DataPolicy:
        """Read a policy from its JSON form (``{"organizations": ["Organization/x"], …}``)."""
        if not isinstance(data, Mapping):
            raise PolicyError("a data policy is an object with organizations, districts, patients, deidentify")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise PolicyError(f"unknown data policy key {unknown[0]!r} (use {', '.join(_KEYS)})")
        deidentify = data.get("deidentify", False)
        if not isinstance(deidentify, bool):
            raise PolicyError("deidentify: must be true or false")
        return cls(
            organizations=_references(data.get("organizations", []), "organizations", "Organization"),
            districts=_names(data.get("districts", []), "districts"),
            patients=_references(data.get("patients", []), "patients", "Patient"),
            deidentify=deidentify,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``from_json`` reads (empty parts left out)."""
        out: dict[str, Any] = {}
        if self.organizations:
            out["organizations"] = [f"Organization/{i}" for i in self.organizations]
        if self.districts:
            out["districts"] = list(self.districts)
        if self.patients:
            out["patients"] = [f"Patient/{i}" for i in self.patients]
        if self.deidentify:
            out["deidentify"] = True
        return out

    def describe(self) -> str:
        """One line for tables: what the policy limits."""
        parts = [f"org {', '.join(self.organizations)}" if self.organizations else "",
                 f"district {', '.join(self.districts)}" if self.districts else "",
                 f"patients {', '.join(self.patients)}" if self.patients else "",
                 "de-identified" if self.deidentify else ""]
        return "; ".join(p for p in parts if p) or "-"


def _list(value: Any, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, list):
        raise PolicyError(f"{key}: must be a list")
    if len(value) > _MAX_ENTRIES:
        raise PolicyError(f"{key}: at most {_MAX_ENTRIES} entries")
    if not all(isinstance(item, str) and item.strip() for item in value):
        raise PolicyError(f"{key}: entries must be non-empty strings")
    return [item.strip() for item in value]


def _references(value: Any, key: str, rtype: str) -> tuple[str, ...]:
    ids: list[str] = []
    for item in _list(value, key):
        prefix, slash, rid = item.partition("/")
        if not slash or prefix != rtype or not rid or len(rid) > 64 or not set(rid) <= _ID_CHARS:
            raise PolicyError(f"{key}: {item[:80]!r} is not a {rtype} reference like {rtype}/abc")
        ids.append(rid)
    return tuple(dict.fromkeys(ids))


def _names(value: Any, key: str) -> tuple[str, ...]:
    names = _list(value, key)
    if any(len(name) > 200 for name in names):
        raise PolicyError(f"{key}: names are at most 200 characters")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class RowFilter:
    """A data policy bound to the types it restricts (those that can refer to a Patient)."""

    policy: DataPolicy
    # Restricted types and their reference parameters that can point at a Patient
    # (``SearchRegistry.patient_linked``); types not here are not restricted.
    links: Mapping[str, tuple[str, ...]]
    # The policy's Organizations and everything below them, once the store has looked them up
    # for the request at hand (``resolved``); None: the SQL walks the tree itself.
    subtree: tuple[str, ...] | None = None

    def resolved(self, subtree: tuple[str, ...]) -> RowFilter:
        """This filter with the Organization subtree looked up."""
        return RowFilter(self.policy, self.links, subtree)

    @property
    def restricted(self) -> frozenset[str]:
        """The types whose rows are filtered."""
        return frozenset(self.links)

    def applies_to(self, rtype: str) -> bool:
        """Whether rows of ``rtype`` are filtered (else every row of it is visible)."""
        return rtype in self.links
