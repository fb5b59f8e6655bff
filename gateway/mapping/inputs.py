"""Reading source records from bytes or files: one JSON object, a JSON array, or CSV.

CSV rows become records whose keys are the header names and whose values are text, exactly
as the ingest endpoint hands them to the engine (``text/csv``). Blank lines are skipped; a
UTF-8 byte-order mark is ignored (Excel writes one).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import RequestError

__all__ = ["InputError", "parse_csv", "parse_json_records", "read_records"]


class InputError(RequestError):
    """The bytes are not records in the expected format."""


def parse_csv(data: bytes) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV document with a header line, as dicts."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"CSV is not UTF-8 (byte {exc.start})") from exc
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(name.strip() for name in header):
            raise InputError("CSV has no header line")
        names = [name.strip() for name in header]
        if len(set(names)) != len(names):
            raise InputError("CSV header repeats a column name")
        rows: list[dict[str, str]] = []
        for line_number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != len(names):
                raise InputError(f"CSV line {line_number} has {len(row)} cells, the header {len(names)}")
            rows.append(dict(zip(names, row, strict=True)))
    except csv.Error as exc:
        raise InputError(f"malformed CSV: {exc}") from exc
    return rows


def parse_json_records(data: bytes) -> list[Any]:
    """One JSON object → one record; a JSON array → its items (each should be an object)."""
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from exc
    return parsed if isinstance(parsed, list) else [parsed]


def read_records(path: Path) -> tuple[list[Any], bool]:
    """Records in a ``.json`` or ``.csv`` file, and whether the file held a list of them."""
    data = path.read_bytes()
    if path.suffix.lower() == ".csv":
        return list(parse_csv(data)), True
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from exc
    if isinstance(parsed, list):
        return parsed, True
    return [parsed], False
