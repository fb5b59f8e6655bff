"""The versioned FHIR resource store and its change feed."""

from __future__ import annotations

from gateway.store.base import (
    ApiClient,
    Change,
    ChangeOp,
    QuarantinedRecord,
    ResourceStore,
    SearchResult,
    StoredResource,
    StoreTransaction,
    VersionConflict,
    WriteResult,
)
from gateway.store.sql import SqlStore


def open_store(url: str) -> SqlStore:
    """Open (and migrate) the store a URL names: ``sqlite:///path`` or ``postgresql://…``."""
    store: SqlStore
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        store = SQLiteStore(url[len("sqlite:///") :] or ":memory:")
    elif url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise ValueError("store URL must start with sqlite:/// or postgresql://")
    store.migrate()
    return store


__all__ = [
    "ApiClient",
    "Change",
    "ChangeOp",
    "QuarantinedRecord",
    "ResourceStore",
    "SearchResult",
    "StoreTransaction",
    "StoredResource",
    "VersionConflict",
    "WriteResult",
    "open_store",
]
