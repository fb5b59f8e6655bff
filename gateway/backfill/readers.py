"""Reading an input record by record, with bounded memory, from where its saved position says.

Every reader is a generator of ``Item``: the record, the bytes to keep if it is quarantined,
where it is (``line 12``, ``item 3``, ``row 40``, for messages), and how many bytes of the input
have been read. A JSON-lines file is read from a byte offset (``resume.offset``); the other
formats are parsed from their start and the first ``resume.records`` records skipped (parsed,
not ingested). A JSON array or object is parsed incrementally (ijson): only one record is in
memory at a time, whatever the file's size. A line that is not JSON, or a CSV row of the wrong
width, is an ``Item`` with ``problem`` set (quarantined, naming the line), not the end of the input;
JSON broken beyond a record (an unclosed array) ends it with ``BackfillInputError``.
"""

from __future__ import annotations

import csv
import io
import itertools
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import httpx
import ijson
import orjson

from gateway import jsonio
from gateway.backfill.inputs import FORMATS, BackfillInputError, Input
from gateway.ingest import CSV, JSON, csv_row_bytes
from gateway.mapping import InputError, csv_columns, csv_delimiter, csv_row_problem

__all__ = ["Item", "Resume", "read"]

#: The arrays that hold the records of a JSON object: CommCare's Form/Case API page, ODK Central's OData.
RECORD_ARRAYS = ("objects", "value")

_Counter = Callable[[], int]  # the bytes of the input read so far


@dataclass(frozen=True, slots=True)
class Resume:
    """Where to start reading an input again."""

    records: int = 0  # records of the input already handled
    offset: int | None = None  # for a JSON-lines input: the byte after the last handled line


@dataclass(frozen=True, slots=True)
class Item:
    """One record read (or a broken one: ``problem`` says why)."""

    record: Any
    raw: bytes
    content_type: str
    place: str  # "line 12", "item 3", "row 40" (member of a zip: "a.csv row 40")
    read: int  # bytes of the input read so far (for progress; approximate for buffered formats)
    offset: int | None = None  # JSON lines: the byte after this line (the position to resume at)
    problem: str | None = None


def read(item: Input, resume: Resume) -> Iterator[Item]:
    """The records of ``item`` after ``resume``; see the module docstring."""
    with _opened(item) as (stream, counted):
        if item.format == "jsonl":
            yield from _jsonl(stream, item, resume, counted)
        elif item.format == "zip":
            yield from _skip(_zip(stream, item.name, counted), resume.records)
        else:
            yield from _skip(_parsed(item.format, stream, item.name, "", counted), resume.records)


class _Counted(io.RawIOBase):
    """A readable stream over chunks (an HTTP body), counting the bytes handed out."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""
        self.count = 0

    def readable(self) -> bool:
        """Always: this stream only reads."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the next chunk(s)."""
        while not self._left:
            self._left = next(self._chunks, b"")
            if not self._left:
                return 0
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        self.count += n
        return n


@contextmanager
def _opened(item: Input) -> Iterator[tuple[IO[bytes], _Counter]]:
    if not item.is_url:
        with open(item.name, "rb") as f:
            yield f, f.tell
        return
    try:
        with httpx.stream("GET", item.name, follow_redirects=True, timeout=60.0) as response:
            if response.status_code >= 400:
                raise BackfillInputError(f"{item.name}: the server answered {response.status_code}")
            raw = _Counted(response.iter_bytes(256 * 1024))
            yield io.BufferedReader(raw, 256 * 1024), lambda: raw.count
    except httpx.HTTPError as exc:
        raise BackfillInputError(f"{item.name}: download failed ({type(exc).__name__})") from exc


def _skip(items: Iterator[Item], records: int) -> Iterator[Item]:
    for n, found in enumerate(items):
        if n >= records:
            yield found


def _jsonl(stream: IO[bytes], item: Input, resume: Resume, counted: _Counter) -> Iterator[Item]:
    offset = resume.offset if resume.offset is not None else item.start
    if item.is_url:  # a download starts at its beginning: pass the records already handled
        passed = 0
        while passed < resume.records:
            line = stream.readline()
            if not line:
                return
            passed += bool(line.strip())  # blank lines are no records, as below
    elif offset:
        stream.seek(offset)
    end = item.end
    numbered = offset == 0  # from the file's start lines are numbered; elsewhere placed by byte
    line_number = 0
    for line in stream:
        if end is not None and offset >= end:
            return
        offset += len(line)
        line_number += 1
        text = line.strip()
        if not text:
            continue
        place = f"line {line_number}" if numbered else f"line at byte {offset - len(line)}"
        read_so_far = offset - item.start if not item.is_url else counted()
        try:
            record = jsonio.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Item(None, text, JSON, place, read_so_far, offset, f"not JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            yield Item(None, text, JSON, place, read_so_far, offset, "not a JSON object")
            continue
        yield Item(record, text, JSON, place, read_so_far, offset)


def _parsed(fmt: str, stream: IO[bytes], name: str, prefix: str, counted: _Counter) -> Iterator[Item]:
    if fmt == "csv":
        return _csv(stream, name, prefix, counted)
    if fmt == "json":
        return _json(stream, name, prefix, counted)
    if fmt == "jsonl":
        return _jsonl(stream, Input(name, "", "jsonl", None), Resume(), counted)
    raise BackfillInputError(f"{name}: {fmt} files cannot be read here")


def _json(stream: IO[bytes], name: str, prefix: str, counted: _Counter) -> Iterator[Item]:
    """Items of a JSON array, of the ``objects``/``value`` array of an object, or a lone object."""
    events = ijson.parse(stream, use_float=True)
    try:
        first = next(events, None)
        if first is None:
            return
        if first[1] == "start_array":
            records = ijson.items(events, "item")
        elif first[1] == "start_map":
            key = next(events)
            while key[0] != "" or key[1] != "map_key" or key[2] not in RECORD_ARRAYS:
                if key[0] == "" and key[1] == "end_map":
                    raise BackfillInputError(
                        f"{name}: a JSON object without an {' or '.join(RECORD_ARRAYS)} array of records"
                        " (a CommCare Form API page or ODK Central OData; a lone record goes to POST /ingest)"
                    )
                key = next(events)
            records = ijson.items(events, f"{key[2]}.item")
        else:
            raise BackfillInputError(f"{name}: not a JSON array or object")
        for n, record in enumerate(records, start=1):
            place = f"{prefix}item {n}"
            raw = jsonio.dumps(record)
            if not isinstance(record, dict):
                yield Item(None, raw, JSON, place, counted(), problem="not a JSON object")
            else:
                yield Item(record, raw, JSON, place, counted())
    except ijson.JSONError as exc:
        # yajl's message goes on to quote the input around the error (record data) over several
        # lines; its first line is the reason.
        reason = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise BackfillInputError(f"{name}: broken JSON after {counted()} bytes ({reason})") from exc


def _csv(stream: IO[bytes], name: str, prefix: str, counted: _Counter) -> Iterator[Item]:
    """Rows of a UTF-8 CSV file with a header line (comma-, semicolon- or tab-separated), as ``POST
    /ingest`` reads them (``parse_csv``)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader: Any = None
    try:
        first_line = text.readline()
        # The header line read on its own tells the delimiter; the reader then takes it and the rest.
        reader = csv.reader(itertools.chain([first_line], text), delimiter=csv_delimiter(first_line), strict=True)
        try:
            names = csv_columns(next(reader, []))
        except InputError as exc:
            raise BackfillInputError(f"{name}: line 1: {exc}") from exc
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            place = f"{prefix}line {reader.line_num}"
            if (problem := csv_row_problem(row, names)) is not None:
                raw = ",".join(row).encode("utf-8")
                yield Item(None, raw, CSV, place, counted(), problem=problem)
                continue
            record = dict(zip(names, row[: len(names)], strict=True))
            yield Item(record, csv_row_bytes(names, record), CSV, place, counted())
    except (csv.Error, UnicodeDecodeError) as exc:
        line = reader.line_num if reader is not None else 1
        raise BackfillInputError(f"{name}: {prefix}line {line}: malformed CSV ({exc})") from exc
    finally:
        text.detach()


def _zip(stream: IO[bytes], name: str, counted: _Counter) -> Iterator[Item]:
    """The records of each JSON-lines, JSON or CSV member of a zip (ODK Central's CSV export), by name."""
    try:
        archive = zipfile.ZipFile(stream)
    except zipfile.BadZipFile as exc:
        raise BackfillInputError(f"{name}: not a zip file") from exc
    with archive:
        members = sorted(m for m in archive.namelist() if FORMATS.get(_suffix(m)) in ("jsonl", "json", "csv"))
        if not members:
            raise BackfillInputError(f"{name}: no .jsonl, .json or .csv file in this zip")
        for member in members:
            with archive.open(member) as inner:
                yield from _parsed(FORMATS[_suffix(member)], inner, f"{name}:{member}", f"{member} ", counted)


def _suffix(member: str) -> str:
    dot = member.rfind(".")
    return member[dot:].lower() if dot >= 0 else ""

