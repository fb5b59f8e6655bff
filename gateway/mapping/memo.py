"""Compiled mapping folders remembered by content, so an unchanged folder compiles once per process.

Compiling the bundled sets takes about a second (YAML parsing, FHIRPath parsing, the static
checks against golden inputs and form definitions). A reload whose files did not change, a
second app in one process, or ``config check`` after ``serve`` would otherwise pay it again.
The key is the folder's content itself (every file's relative path and a digest of its bytes),
not modification times, whose granularity can miss a rewrite of the same size.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TypeVar

__all__ = ["FolderMemo", "folder_digest"]

T = TypeVar("T")


def folder_digest(root: Path) -> str:
    """A digest of every file under ``root``: relative paths and contents, in a stable order."""
    digest = hashlib.blake2b(digest_size=20)
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        digest.update(path.relative_to(root).as_posix().encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
        try:
            digest.update(hashlib.blake2b(path.read_bytes(), digest_size=20).digest())
        except OSError:
            digest.update(b"unreadable")
    return digest.hexdigest()


class FolderMemo:
    """The last few results of ``build(root)``, each kept while the folder's content is unchanged."""

    def __init__(self, size: int = 8) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str, str, Hashable], object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, root: Path, variant: Hashable, build: Callable[[], T]) -> T:
        """``build()``'s result for ``root`` as it is now; built again only when a file changed."""
        # The path as given too: the compiled result names files the way the caller spelled them.
        key = (str(root), str(root.resolve()), folder_digest(root), variant)
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]  # type: ignore[return-value]
        result = build()  # outside the lock: two threads may both compile; either result is right
        with self._lock:
            self._entries[key] = result
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return result

    def clear(self) -> None:
        """Forget everything (tests that patch what compiling reads)."""
        with self._lock:
            self._entries.clear()
