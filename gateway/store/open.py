"""Opening a store from its URL: the one place that picks the backend."""

from __future__ import annotations

from urllib.parse import parse_qsl

from gateway.store.base import Store
from gateway.store.sql import SqlStore

__all__ = ["open_store"]


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
    try:
        store.migrate()
    except BaseException:
        store.close()  # e.g. a schema newer than this gateway's: nothing is left open
        raise
    return store
