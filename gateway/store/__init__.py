"""The versioned FHIR resource store and its change feed.

Other packages import from here: the protocols they type against (``ResourceStore``,
``ChangeFeed``, ``ClientRegistry``, ``QuarantineStore``, ``Store``), the values they pass
around, and ``open_store``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from gateway.store.base import (
    ApiClient,
    Change,
    ChangeFeed,
    ChangeOp,
    ClientRegistry,
    PreparedWrite,
    QuarantinedRecord,
    QuarantineStore,
    ResourceStore,
    SearchResult,
    Store,
    StoredResource,
    StoreTransaction,
    VersionConflict,
    WriteResult,
)
from gateway.store.rows import KEPT_IDENTIFIER_TYPE
from gateway.store.sql import SqlStore


def open_store(url: str) -> Store:
    """Open (and migrate) the store a URL names: ``sqlite:///path[?synchronous=normal]`` or ``postgresql://…``."""
    store: SqlStore
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        path, _, query = url[len("sqlite:///") :].partition("?")
        options = dict(parse_qsl(query))
        synchronous = options.pop("synchronous", "full").upper()
        if options or synchronous not in ("FULL", "NORMAL"):
            raise ValueError("sqlite store URLs take one option: ?synchronous=full|normal")
        store = SQLiteStore(path or ":memory:", synchronous=synchronous)
    elif url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise ValueError("store URL must start with sqlite:/// or postgresql://")
    store.migrate()
    return store


__all__ = [
    "KEPT_IDENTIFIER_TYPE",
    "ApiClient",
    "Change",
    "ChangeFeed",
    "ChangeOp",
    "ClientRegistry",
    "PreparedWrite",
    "QuarantineStore",
    "QuarantinedRecord",
    "ResourceStore",
    "SearchResult",
    "Store",
    "StoreTransaction",
    "StoredResource",
    "VersionConflict",
    "WriteResult",
    "open_store",
]
