"""Where the transformation reads the resources around the one being delivered.

An Encounter's event needs the Observations, MedicationDispenses and ServiceRequests that
reference it; a tracked entity needs its Patient and the Location hierarchy of its
household. ``ResourceSource`` is that seam: ``ResourceBundle`` holds resources in memory
(tests, Bundles), ``StoreResourceSource`` reads the gateway's store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from gateway import jsonio

__all__ = ["ResourceBundle", "ResourceSource", "StoreResourceSource", "is_retracted", "reference_of"]

JsonObject = dict[str, Any]

# Search parameter → the element holding the reference, for the in-memory look-up.
_PARAM_PATHS: dict[str, tuple[str, ...]] = {
    "encounter": ("encounter",),
    "context": ("context",),
    "patient": ("subject", "patient"),
    "subject": ("subject",),
    "part-of": ("partOf",),
}


class ResourceSource(Protocol):
    """Read access to stored FHIR resources."""

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The current version of a resource, or None (unknown or deleted)."""
        ...

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        """Resources of ``resource_type`` whose ``param`` reference is ``reference`` (``Type/id``)."""
        ...

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The last live version of a deleted resource (None: never stored, or not deleted)."""
        ...


class BatchSource:
    """A ``ResourceSource`` that remembers its answers for one batch of jobs.

    The jobs of one visit (its Encounter, each Observation, MedicationDispense …) all plan the
    same tracked entity, enrollment and event, so without it a batch reads the same Patient,
    places and related resources once per job. Live for one batch only: the next batch reads
    the store again. Callers never change the resources they read (plans build new objects).
    """

    def __init__(self, source: ResourceSource) -> None:
        self._source = source
        self._gets: dict[tuple[str, str], JsonObject | None] = {}
        self._finds: dict[tuple[str, str, str], list[JsonObject]] = {}
        self._deleted: dict[tuple[str, str], JsonObject | None] = {}

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The current version of a resource, read once per batch."""
        key = (resource_type, resource_id)
        if key not in self._gets:
            self._gets[key] = self._source.get(resource_type, resource_id)
        return self._gets[key]

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        """A search, run once per batch (a new list each call)."""
        key = (resource_type, param, reference)
        if key not in self._finds:
            self._finds[key] = self._source.find(resource_type, param, reference)
        return list(self._finds[key])

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The last live version of a deleted resource, read once per batch."""
        key = (resource_type, resource_id)
        if key not in self._deleted:
            self._deleted[key] = self._source.was_deleted(resource_type, resource_id)
        return self._deleted[key]


# Statuses that take a recorded fact back (FHIR R4 status value sets): such resources count as absent.
RETRACTED_STATUSES = frozenset({"entered-in-error", "cancelled", "revoked", "declined", "not-done"})


def is_retracted(resource: Mapping[str, Any]) -> bool:
    """True for a resource voided by its status, or a Condition by its verificationStatus."""
    if resource.get("status") in RETRACTED_STATUSES:
        return True
    verification = resource.get("verificationStatus")
    codings = verification.get("coding") if isinstance(verification, Mapping) else None
    return any(isinstance(c, Mapping) and c.get("code") == "entered-in-error" for c in codings or ())


def reference_of(value: Any) -> str | None:
    """``Type/id`` from a Reference (or a reference string); None for other shapes."""
    text = value.get("reference") if isinstance(value, Mapping) else value
    if not isinstance(text, str) or "/" not in text:
        return None
    parts = text.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":  # Type/id/_history/version
        parts = parts[:-2]
    return f"{parts[-2]}/{parts[-1]}"


def _refs(resource: JsonObject, path: str) -> list[str]:
    value = resource.get(path)
    items = value if isinstance(value, list) else [value]
    return [ref for item in items if (ref := reference_of(item)) is not None]


class ResourceBundle:
    """Resources held in memory (e.g. the entries of a Bundle)."""

    def __init__(self, resources: Iterable[JsonObject] = ()) -> None:
        self._by_ref: dict[str, JsonObject] = {}
        self._deleted: dict[str, JsonObject] = {}
        self._index: dict[tuple[str, str, str], list[str]] | None = None
        for resource in resources:
            self.add(resource)

    def add(self, resource: JsonObject) -> None:
        """Add or replace a resource."""
        ref = f"{resource['resourceType']}/{resource['id']}"
        self._by_ref[ref] = resource
        self._deleted.pop(ref, None)
        self._index = None

    def remove(self, resource_type: str, resource_id: str) -> None:
        """Delete a resource (its last version stays readable through ``was_deleted``)."""
        ref = f"{resource_type}/{resource_id}"
        if ref in self._by_ref:
            self._deleted[ref] = self._by_ref.pop(ref)
            self._index = None

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The last version of a removed resource."""
        return self._deleted.get(f"{resource_type}/{resource_id}")

    def _indexed(self) -> dict[tuple[str, str, str], list[str]]:
        if self._index is None:
            index: dict[tuple[str, str, str], list[str]] = {}
            for key, resource in self._by_ref.items():
                for path in {p for paths in _PARAM_PATHS.values() for p in paths}:
                    for ref in _refs(resource, path):
                        index.setdefault((resource["resourceType"], path, ref), []).append(key)
            self._index = index
        return self._index

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The resource ``Type/id``."""
        return self._by_ref.get(f"{resource_type}/{resource_id}")

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        """Resources pointing at ``reference`` through ``param``."""
        paths = _PARAM_PATHS.get(param, (param,))
        if param in _PARAM_PATHS:
            index = self._indexed()
            keys = dict.fromkeys(k for p in paths for k in index.get((resource_type, p, reference), []))
            return [self._by_ref[key] for key in keys]
        return [
            resource
            for key, resource in self._by_ref.items()
            if key.startswith(resource_type + "/") and any(reference in _refs(resource, p) for p in paths)
        ]


class StoreResourceSource:
    """Resources read from the gateway's store (synchronous: call from a worker thread)."""

    def __init__(self, store: Any, parser: Any = None, *, limit: int = 1000) -> None:
        from gateway.search import QueryParser, default_registry

        self._store = store
        self._parser = parser or QueryParser(default_registry(), limit, limit)
        self._limit = limit

    def get(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The live version of ``Type/id``."""
        stored = self._store.read(resource_type, resource_id)
        if stored is None or stored.deleted:
            return None
        value: JsonObject = jsonio.loads(stored.content)
        return value

    def was_deleted(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """The version before the deletion of ``Type/id`` (None if it is live or unknown)."""
        stored = self._store.read(resource_type, resource_id)
        if stored is None or not stored.deleted:
            return None
        for version in range(stored.version - 1, 0, -1):  # deletions may repeat: the last live one
            before = self._store.vread(resource_type, resource_id, version)
            if before is not None and not before.deleted and before.content:
                value: JsonObject = jsonio.loads(before.content)
                return value
        return None

    def find(self, resource_type: str, param: str, reference: str) -> list[JsonObject]:
        """A search ``<Type>?<param>=<reference>`` (one page of up to ``limit``)."""
        result = self.search(resource_type, [(param, reference), ("_count", str(self._limit))])
        return [jsonio.loads(item.content) for item in result.resources]

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> Any:
        """Any search, as the store answers it (a ``SearchResult``, for paging with ``_snapshot``)."""
        return self._store.search(self._parser.parse(resource_type, params))
