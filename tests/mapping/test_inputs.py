"""Reading CSV documents: delimiters as spreadsheets write them, and what a non-UTF-8 file says."""

from __future__ import annotations

import pytest

from gateway.mapping import InputError, csv_delimiter, parse_csv_rows


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a;b,c", ","), ("single", ",")],
)
def test_the_header_line_tells_the_delimiter(header: str, delimiter: str) -> None:
    assert csv_delimiter(header) == delimiter


def test_a_semicolon_file_with_decimal_commas_keeps_them_in_their_cells() -> None:
    names, rows = parse_csv_rows(b"child;muac_cm;note\r\n48213;11,4;\"a; b\"\r\n")
    assert names == ["child", "muac_cm", "note"]
    assert rows[0].record == {"child": "48213", "muac_cm": "11,4", "note": "a; b"}


def test_a_file_that_is_not_utf8_names_the_line() -> None:
    with pytest.raises(InputError, match=r"line 3 holds a byte that is not UTF-8 \(offset 10 in the file\)"):
        parse_csv_rows(b"a,b\n1,2\n3," + "é".encode("latin-1") + b"\n")
