"""Turning an ingest request body into records, each with the bytes to keep if it fails.

Accepted bodies: one JSON object, a JSON array of objects (``application/json`` or any
``+json`` type; a missing Content-Type means JSON) or CSV with a header line
(``text/csv``). JSON is UTF-8; CSV is UTF-8 unless its ``charset`` names another encoding
(spreadsheets save windows-1252 or latin-1). Anything else is refused as a whole with a 4xx
before a single record is touched, because it is not a record the sender could fix one
by one: not JSON, a JSON scalar, an array holding no object at all, nesting deeper than the
limit, more records than the limit, another charset or media type. An item of an array of
records that is no object, or a CSV line of the wrong width, is kept on its own
(``ReceivedRecord.problem``) and the other records are stored.

What is kept for a failed record (``ReceivedRecord.raw``): the body itself for a single
object; the item re-serialised as JSON for an array; the header plus the row as CSV for a
CSV line. Each can be replayed on its own.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from typing import Any

from gateway import jsonio
from gateway.errors import FhirError, invalid
from gateway.fhir import parse_json
from gateway.mapping import InputError, parse_csv_rows

__all__ = ["CSV", "JSON", "ReceivedRecord", "csv_row_bytes", "split_body"]

JSON = "application/json"
CSV = "text/csv"
_JSON_TYPES = frozenset({"application/json", "application/fhir+json", "text/json"})


@dataclass(frozen=True, slots=True)
class ReceivedRecord:
    """One record of a request: its position, parsed value, and bytes for the quarantine."""

    index: int
    record: Any
    raw: bytes
    content_type: str
    #: Why the bytes are no record (a CSV line of the wrong width, an array item that is no object):
    #: kept in the quarantine as they came.
    problem: str | None = None
    #: Where it was read, when not from a request (a backfill input: "exports/2019.csv: line 9"):
    #: a refusal says it, so the record can be found in the file.
    origin: str | None = None


def _media_type(content_type: str | None) -> tuple[str, str]:
    """The body's kind (``JSON`` or ``CSV``) and its charset (a Python codec name)."""
    if content_type is None or not content_type.strip():
        return JSON, "utf-8"
    media, *params = (part.strip() for part in content_type.split(";"))
    media = media.lower()
    charset = "utf-8"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = _codec(value.strip().strip('"'))
    if media in _JSON_TYPES or media.endswith("+json"):
        if charset not in ("utf-8", "ascii"):  # RFC 8259: JSON exchanged between systems is UTF-8
            raise FhirError(f"charset {charset!r} is not supported for JSON; send UTF-8", status=415,
                            code="not-supported")  # fmt: skip
        return JSON, charset
    if media in ("text/csv", "application/csv"):
        # Spreadsheets save CSV in the machine's code page (windows-1252, latin-1): read it as named.
        return CSV, charset
    raise FhirError(
        f"Content-Type {media[:60]!r} is not supported; send application/json or text/csv",
        status=415,
        code="not-supported",
    )


def _codec(name: str) -> str:
    """The codec of a charset name, or 415 when Python knows no text encoding by that name."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = None
    if info is None or not getattr(info, "_is_text_encoding", True):
        raise FhirError(f"charset {name[:20]!r} is not known; send UTF-8 or name the file's encoding",
                        status=415, code="not-supported")  # fmt: skip
    return info.name


def split_body(
    body: bytes, content_type: str | None, *, max_depth: int = 64, max_records: int = 1000
) -> list[ReceivedRecord]:
    """The records in a request body; raises a 4xx ``FhirError`` for a body that is not records."""
    media, charset = _media_type(content_type)
    if media == CSV:
        records = _csv_records(body, charset)
    else:
        records = _json_records(body, max_depth)
    if not records:
        raise invalid("the request holds no records", code="required")
    if len(records) > max_records:
        raise FhirError(
            f"{len(records)} records in one request; send at most {max_records} per request",
            status=413,
            code="too-costly",
        )
    return records


def _json_records(body: bytes, max_depth: int) -> list[ReceivedRecord]:
    data = parse_json(body, max_depth=max_depth)
    if isinstance(data, dict):
        return [ReceivedRecord(0, data, body, JSON)]
    if not isinstance(data, list):
        raise invalid("send a JSON object (one record) or an array of objects", code="structure")
    if data and not any(isinstance(item, dict) for item in data):
        raise invalid("send a JSON object (one record) or an array of objects", ["$[0]"], code="structure")
    # Among records, an item that is none (a number, a string) is kept on its own, as it came,
    # like a CSV line of the wrong width: the others are stored. Its reason says what it is, not
    # where (the answer's index does): the same bytes anywhere are one held record, whose entry
    # keeps the reason of the last one, and each answer must say what the entry holds.
    return [
        ReceivedRecord(index, item, jsonio.dumps(item), JSON,
                       None if isinstance(item, dict) else f"the array item is {_json_kind(item)}, not a JSON object")
        for index, item in enumerate(data)
    ]  # fmt: skip


def _json_kind(item: Any) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "true or false"
    if isinstance(item, str):
        return "a text"
    if isinstance(item, list):
        return "an array"
    return "a number"


def _csv_records(body: bytes, charset: str) -> list[ReceivedRecord]:
    # What is kept of a failed line is UTF-8 whatever came (``_csv_line_bytes``): replayable as is.
    try:
        header, rows = parse_csv_rows(body, charset)
    except InputError as exc:
        raise invalid(str(exc), code="structure") from exc
    # A line of the wrong width is one bad record, quarantined with its line: the others go on.
    return [
        ReceivedRecord(index, row.record, _csv_line_bytes(header, row.cells), CSV,
                       None if row.problem is None else f"the CSV line {row.problem}")  # where: the index
        for index, row in enumerate(rows)
    ]  # fmt: skip


def csv_row_bytes(header: list[str], row: dict[str, str]) -> bytes:
    """One CSV row kept on its own: the header line, then the row (replayable alone)."""
    return _csv_line_bytes(header, [row[name] for name in header])


def _csv_line_bytes(header: list[str], cells: list[str]) -> bytes:
    """The header line, then one line of cells, as CSV."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerow(cells)
    return buffer.getvalue().encode("utf-8")
