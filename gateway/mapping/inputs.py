"""Reading source records from bytes or files: one JSON object, a JSON array, or CSV.

CSV rows become records whose keys are the header names and whose values are text, exactly
as the ingest endpoint hands them to the engine (``text/csv``). Blank lines are skipped; a
UTF-8 byte-order mark is ignored (Excel writes one).
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway import jsonio
from gateway.errors import RequestError

__all__ = [
    "CsvRow", "InputError", "csv_columns", "csv_delimiter", "csv_row_problem", "parse_csv", "parse_csv_rows",
    "parse_json_records", "read_records",
]


class InputError(RequestError):
    """The bytes are not records in the expected format."""


_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def csv_delimiter(header_line: str) -> str:
    """The delimiter a CSV document's header line uses: a comma, else a semicolon (spreadsheets
    in locales whose decimal mark is a comma save CSV that way), else a tab. Quoted column names
    are left out: a comma in ``"Nom, prénom"`` is no delimiter."""
    header_line = _QUOTED.sub("", header_line)
    if "," in header_line:
        return ","
    if ";" in header_line:
        return ";"
    return "\t" if "\t" in header_line else ","


def csv_columns(header: list[str]) -> list[str]:
    """The column names of a CSV header line. Trailing cells without a name are no columns: a
    spreadsheet saves them after columns that were once formatted (``id;date;;``)."""
    names = [name.strip() for name in header]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise InputError("CSV has no header line")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"the CSV header repeats the column name {name!r}")
        seen.add(name)
    return names


def csv_row_problem(row: list[str], names: list[str]) -> str | None:
    """Why a data line's cells are not a record of the header's ``names``, or ``None``. Cells past the
    named columns may be there or not (Excel leaves out the separators of empty trailing cells from
    line 17 on) but must be blank: a value under no name would be dropped."""
    if len(row) < len(names):
        return f"{len(row)} cells, the header {len(names)}"
    for column, cell in enumerate(row[len(names) :], start=len(names) + 1):
        if cell.strip():
            return f"a value in column {column}, which the header does not name"
    return None


def parse_csv(data: bytes) -> list[dict[str, str]]:
    """Rows of a UTF-8 CSV document with a header line, as dicts."""
    _, rows = parse_csv_rows(data)
    for row in rows:
        if row.problem is not None:
            raise InputError(f"CSV line {row.line} {row.problem}")
    return [row.record for row in rows]


@dataclass(frozen=True, slots=True)
class CsvRow:
    """One data line of a CSV document: its cells as a record, or why they are not one."""

    line: int  # 1-based, the header being line 1
    cells: list[str]
    record: dict[str, str]  # empty when ``problem`` says why there is none
    problem: str | None = None


def parse_csv_rows(data: bytes, encoding: str = "utf-8") -> tuple[list[str], list[CsvRow]]:
    """The header and every data line of a CSV document in ``encoding`` (UTF-8 unless its sender
    named another; comma-, semicolon- or tab-separated, as its header line shows); a line of the
    wrong width is a row with a ``problem`` (to be kept on its own), not the end of the document."""
    utf8 = codecs.lookup(encoding).name == "utf-8"
    try:
        text = data.decode("utf-8-sig" if utf8 else encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        name = "UTF-8" if utf8 else encoding
        raise InputError(
            f"CSV is not {name}: line {line} holds a byte that is not {name}"
            f" (offset {exc.start} in the file); save the file as UTF-8"
            + (" (or send it with its charset, e.g. text/csv; charset=windows-1252)" if utf8 else "")
        ) from exc
    end = text.find("\n")  # the header line, without copying the rest of the document
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=csv_delimiter(text[:end] if end >= 0 else text),
                        strict=True)  # fmt: skip
    try:
        names = csv_columns(next(reader, []))
        rows: list[CsvRow] = []
        for line_number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if (problem := csv_row_problem(row, names)) is not None:
                rows.append(CsvRow(line_number, row, {}, f"has {problem}"))
            else:
                rows.append(CsvRow(line_number, row, dict(zip(names, row[: len(names)], strict=True))))
    except csv.Error as exc:
        raise InputError(f"malformed CSV at line {reader.line_num}: {exc}") from exc
    return names, rows


def parse_json_records(data: bytes) -> list[Any]:
    """One JSON object → one record; a JSON array → its items (each should be an object)."""
    try:
        parsed = jsonio.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from exc
    return parsed if isinstance(parsed, list) else [parsed]


def read_records(path: Path) -> tuple[list[Any], bool]:
    """Records in a ``.json`` or ``.csv`` file, and whether the file held a list of them."""
    data = path.read_bytes()
    if path.suffix.lower() == ".csv":
        return list(parse_csv(data)), True
    try:
        parsed = jsonio.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON: {exc}") from exc
    if isinstance(parsed, list):
        return parsed, True
    return [parsed], False
