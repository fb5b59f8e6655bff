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

    def write_page(self, rtype: str, lines: list[bytes]) -> None:
        """Append resources to ``rtype``'s files: whole runs at once, split where a limit falls."""
        current = self._open.get(rtype)
        if current is not None and current[2][0] + len(lines) <= self.max_lines:
            # The common case, the page fits the open file: one join, two writes (no per-line work).
            joined = b"\n".join(lines)
            size = len(joined) + 1
            if current[2][1] + size <= self.max_bytes:
                current[0].write(joined)
                current[0].write(b"\n")
                current[2][0] += len(lines)
                current[2][1] += size
                return
        start = 0
        while start < len(lines):
            current = self._open.get(rtype)
            if current is None or current[2][0] >= self.max_lines or current[2][1] >= self.max_bytes:
                if current is not None:
                    self._close(rtype)
                serial = self._serial[rtype] = self._serial.get(rtype, 0) + 1
                name = f"{rtype}-{serial}.ndjson"
                current = self._open[rtype] = ((self.folder / name).open("wb", buffering=1 << 16), name, [0, 0])
            handle, _, counts = current
            room_lines = self.max_lines - counts[0]
            room_bytes = self.max_bytes - counts[1]
            end, size = start, 0
            # At least one line a file, even one longer than the byte limit.
            while end < len(lines) and end - start < room_lines and (
                    size + len(lines[end]) + 1 <= room_bytes or (end == start and counts[0] == 0)):
                size += len(lines[end]) + 1
                end += 1
            if end == start:  # the file is full: the next round opens another
                counts[1] = self.max_bytes
                continue
            handle.write(b"\n".join(lines[start:end]) + b"\n")
            counts[0] += end - start
            counts[1] += size
            start = end

    def close(self) -> list[dict[str, Any]]:
        """Close every file; the manifest entries of all files written, in order."""
        for rtype in list(self._open):
            self._close(rtype)
        return self.done

    def _close(self, rtype: str) -> None:
        handle, name, counts = self._open.pop(rtype)
        handle.close()
        self.done.append({"type": rtype, "file": name, "count": counts[0]})
