"""A write transaction held open by another thread, to show what does not wait for the write lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.store import ResourceStore


@contextmanager
def write_lock_held(store: ResourceStore, resource: dict[str, Any]) -> Iterator[None]:
    """For the block, another thread holds a write transaction that wrote ``resource`` (uncommitted)."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction() as tx:
            if "id" in resource:
                tx.update(resource)
            else:
                tx.create(resource)
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10), "the write transaction did not open"
        yield
    finally:
        release.set()
        holder.join(30)
