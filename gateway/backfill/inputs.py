"""What a backfill reads: files, directories and URLs, each an ``Input`` with a stable identity.

An input's identity is what its saved position is filed under: for a file, a hash of its
size and first 64 KiB (so a moved or renamed export keeps its position, and a different
export under the same name does not inherit one); for a URL, the URL with the ETag or
length the server announces. A large JSON-lines file can be cut into byte ranges that
start at line starts (``split``), one per worker process, each with its own position.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from gateway.errors import ConfigError

__all__ = ["FORMATS", "BackfillInputError", "Input", "expand", "split", "url_input"]

#: The formats a backfill reads, by file suffix (``.json`` covers a JSON array, CommCare's Form API
#: page ``{"objects": [...]}`` and ODK Central's OData ``{"value": [...]}``; ``.zip`` the files inside).
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".zip": "zip"}
_HEAD = 64 * 1024


class BackfillInputError(ConfigError):
    """An input of a backfill cannot be read: missing, of an unknown format, or broken (names file and place)."""


@dataclass(frozen=True, slots=True)
class Input:
    """One file, URL or byte range of a JSON-lines file to backfill."""

    name: str  # the path or URL as given, for messages
    identity: str  # what its position is saved under (see the module docstring)
    format: str  # one of FORMATS' values
    size: int | None  # bytes to read (the range's length), for the progress bar; None if unknown
    start: int = 0  # a range of a JSON-lines file: its first byte (a line start) ...
    end: int | None = None  # ... and the byte after its last line

    @property
    def is_url(self) -> bool:
        """Whether the input is read over HTTP."""
        return self.name.startswith(("http://", "https://"))

    @property
    def key(self) -> str:
        """The position's key: the identity, and the range for a part of a file."""
        return self.identity if self.end is None else f"{self.identity}@{self.start}-{self.end}"


def expand(paths: list[str], fmt: str | None = None) -> list[Input]:
    """The inputs named on the command line, in order: a directory gives its files (sorted, recursively)."""
    inputs: list[Input] = []
    for given in paths:
        if given.startswith(("http://", "https://")):
            inputs.append(url_input(given, fmt))
            continue
        path = Path(given)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FORMATS)
            if not files:
                raise BackfillInputError(f"{given}: no {', '.join(FORMATS)} file in this directory")
            inputs.extend(file_input(p, fmt) for p in files)
        elif path.is_file():
            inputs.append(file_input(path, fmt))
        else:
            raise BackfillInputError(f"{given}: no such file or directory")
    return inputs


def file_input(path: Path, fmt: str | None = None) -> Input:
    """A local file as an input (its format from ``fmt`` or its suffix)."""
    found = fmt or FORMATS.get(path.suffix.lower())
    if found is None:
        raise BackfillInputError(f"{path}: unknown format (name it {', '.join(FORMATS)} or pass --format)")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_HEAD)
    digest = hashlib.sha256(f"{size}:".encode() + head).hexdigest()[:32]
    return Input(str(path), f"file:{digest}", found, size)


def url_input(url: str, fmt: str | None = None) -> Input:
    """A URL as an input: its format from ``fmt`` or the path's suffix; identity from a HEAD request."""
    suffix = os.path.splitext(httpx.URL(url).path)[1].lower()
    found = fmt or FORMATS.get(suffix)
    if found is None or found == "zip":
        raise BackfillInputError(f"{url}: unknown format for a URL (pass --format jsonl, json or csv)")
    try:
        head = httpx.head(url, follow_redirects=True, timeout=30.0)
    except httpx.HTTPError as exc:
        raise BackfillInputError(f"{url}: cannot be reached ({type(exc).__name__})") from exc
    length = head.headers.get("content-length")
    version = head.headers.get("etag") or length or ""
    digest = hashlib.sha256(f"{url}\n{version}".encode()).hexdigest()[:32]
    return Input(url, f"url:{digest}", found, int(length) if length and length.isdigit() else None)


def split(item: Input, parts: int) -> list[Input]:
    """A local JSON-lines file cut into up to ``parts`` byte ranges, each starting at a line start."""
    if item.format != "jsonl" or item.is_url or item.size is None or parts < 2:
        return [item]
    cuts = [0]
    with open(item.name, "rb") as f:
        for n in range(1, parts):
            f.seek(max(item.size * n // parts, cuts[-1]))
            if f.tell() > 0:
                f.seek(f.tell() - 1)
                f.readline()  # to the start of the next line (stays put if already at one)
            if f.tell() > cuts[-1] and f.tell() < item.size:
                cuts.append(f.tell())
    cuts.append(item.size)
    return [replace(item, start=a, end=b, size=b - a) for a, b in zip(cuts, cuts[1:], strict=False)]
