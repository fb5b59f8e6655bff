"""Opening a store from its URL: the one place that picks the backend."""

from __future__ import annotations

from gateway.store.base import Store
from gateway.store.sql import SqlStore
from gateway.store.urls import sqlite_options

__all__ = ["open_store"]


def open_store(url: str) -> Store:
    """Open (and migrate) the store a URL names: ``sqlite:///path[?synchronous=normal]`` or ``postgresql://…``."""
    store: SqlStore
    if url.startswith("sqlite:///"):
        from gateway.store.sqlite import SQLiteStore

        path, synchronous = sqlite_options(url)
        store = SQLiteStore(path or ":memory:", synchronous=synchronous)
    elif url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise ValueError("store URL must start with sqlite:/// or postgresql://")
    try:
        store.migrate()
    except BaseException:
        store.close()  # e.g. a schema newer than this gateway's: nothing is left open
        raise
    return store
