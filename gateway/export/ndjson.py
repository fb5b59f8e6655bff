"""NDJSON files of one export, one series per resource type, split past a size or count limit."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any


class NdjsonFiles:
    """Writes lines to ``{Type}-{n}.ndjson`` in ``folder``, starting a new file past the limits."""

    def __init__(self, folder: Path, max_bytes: int, max_lines: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.max_lines = max_lines
        self.done: list[dict[str, Any]] = []  # {"type", "file", "count"} of closed files
        self._open: dict[str, tuple[IO[bytes], str, list[int]]] = {}  # type -> (file, name, [lines, bytes])
        self._serial: dict[str, int] = {}

    def write(self, rtype: str, line: bytes) -> None:
        """Append one resource (compact JSON, no newline) to the current file of ``rtype``."""
        current = self._open.get(rtype)
        if current is not None and (current[2][0] >= self.max_lines or current[2][1] + len(line) > self.max_bytes):
            self._close(rtype)
            current = None
        if current is None:
            serial = self._serial[rtype] = self._serial.get(rtype, 0) + 1
            name = f"{rtype}-{serial}.ndjson"
            current = self._open[rtype] = ((self.folder / name).open("wb", buffering=1 << 16), name, [0, 0])
        handle, _, counts = current
        handle.write(line)
        handle.write(b"\n")
        counts[0] += 1
        counts[1] += len(line) + 1

    def close(self) -> list[dict[str, Any]]:
        """Close every file; the manifest entries of all files written, in order."""
        for rtype in list(self._open):
            self._close(rtype)
        return self.done

    def _close(self, rtype: str) -> None:
        handle, name, counts = self._open.pop(rtype)
        handle.close()
        self.done.append({"type": rtype, "file": name, "count": counts[0]})
