"""Reading CSV documents: delimiters as spreadsheets write them, and what a non-UTF-8 file says."""

from __future__ import annotations

import pytest

from gateway.mapping import InputError, csv_delimiter, parse_csv_rows


@pytest.mark.parametrize(
    ("header", "delimiter"),
    [("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a;b,c", ","), ("single", ","),
     # a comma inside a quoted column name is no delimiter (Excel in a decimal-comma locale)
     ('"Nom, prénom";id;"Poids (kg, arrondi)"', ";"), ('"a ""b, c""";d', ";"), ('"a;b",c', ",")],
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


def test_trailing_columns_without_a_name_are_not_columns() -> None:
    # Excel saves ";" after a header whose last columns were once formatted, and from line 17 on
    # it leaves out the separators of empty trailing cells: neither makes a row the wrong width.
    data = "\ufeffid;visit_date;weight_kg;;\r\nF-1;05/03/2024;61,5;;\r\n\r\nF-2;06/03/2024;58\r\n".encode()
    names, rows = parse_csv_rows(data)
    assert names == ["id", "visit_date", "weight_kg"]
    assert [(row.problem, row.record) for row in rows] == [
        (None, {"id": "F-1", "visit_date": "05/03/2024", "weight_kg": "61,5"}),
        (None, {"id": "F-2", "visit_date": "06/03/2024", "weight_kg": "58"}),
    ]


def test_a_value_under_a_column_without_a_name_is_not_dropped() -> None:
    _, rows = parse_csv_rows(b"id;weight_kg;\r\nF-1;61;\r\nF-2;58;see note\r\nF-3\r\n")
    assert [(row.line, row.problem) for row in rows] == [
        (2, None),
        (3, "has a value in column 3, which the header does not name"),
        (4, "has 1 cells, the header 2"),
    ]


def test_a_repeated_column_name_is_named() -> None:
    with pytest.raises(InputError, match="CSV header repeats the column name 'weight_kg'"):
        parse_csv_rows(b"id;weight_kg;weight_kg\r\nF-1;61;62\r\n")


def test_a_quoted_comma_in_a_semicolon_header_does_not_break_the_file() -> None:
    names, rows = parse_csv_rows('\ufeff"Nom, prénom";id;poids_kg\r\n"Uwase, Aline";K-1;12,5\r\n'.encode())
    assert names == ["Nom, prénom", "id", "poids_kg"]
    assert rows[0].record == {"Nom, prénom": "Uwase, Aline", "id": "K-1", "poids_kg": "12,5"}


def test_a_malformed_csv_names_the_line() -> None:
    with pytest.raises(InputError, match=r"malformed CSV at line 3: ';' expected after '\"'"):
        parse_csv_rows(b'id;note\r\nF-1;ok\r\nF-2;"quoted" then more\r\nF-3;ok\r\n')
