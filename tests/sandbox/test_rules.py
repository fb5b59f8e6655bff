"""The sandbox's own value-type, UID and period rules: DHIS2's documented table, and a second opinion.

The sandbox writes these rules itself (shared/dhis2 README §3.5, §5, §7) instead of borrowing the
connector's, so each is pinned here against the documentation, then compared with the
connector's implementation: two independent readings that disagree point at a bug in one.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from dhis2_sandbox.periods import InvalidPeriod, period_containing, read_period
from dhis2_sandbox.valuetypes import is_uid, normalise_boolean, value_problem
from gateway.connectors.dhis2 import check_value, is_valid_uid, parse_period, period_for
from gateway.connectors.dhis2.periods import PERIOD_TYPES
from gateway.connectors.dhis2.values import ValueType


@pytest.mark.parametrize(
    ("value_type", "accepted", "refused", "key"),
    [
        ("NUMBER", ["0", "-0", "12", "-1.50", "3.25"], ["01", "+1", "1e3", "1.", ".5", "NaN", "1" * 250],
         "value_not_numeric"),
        ("INTEGER", ["0", "-7", "2147483647", "-2147483648"], ["1.0", "01", "2147483648", "-0"], "value_not_integer"),
        ("INTEGER_POSITIVE", ["1", "42"], ["0", "-1", "+1"], "value_not_positive_integer"),
        ("INTEGER_NEGATIVE", ["-1"], ["0", "1"], "value_not_negative_integer"),
        ("INTEGER_ZERO_OR_POSITIVE", ["0", "5"], ["-1", "00"], "value_not_zero_or_positive_integer"),
        ("PERCENTAGE", ["0", "100"], ["101", "-1", "50.5"], "value_not_percentage"),
        ("UNIT_INTERVAL", ["0", "0.5", "1"], ["1.01", "-0.1"], "value_not_unit_interval"),
        ("BOOLEAN", ["true", "FALSE"], ["1", "yes"], "value_not_bool"),
        ("TRUE_ONLY", ["true", "True"], ["false"], "value_not_true_only"),
        ("DATE", ["2024-02-29"], ["2023-02-29", "2024-1-01", "20240101"], "value_not_valid_date"),
        ("DATETIME", ["2024-05-02T10:00:00.000", "2024-05-02 10:00:00Z", "2024-05-02T10:00:00+03:00"],
         ["2024-05-02", "2024-05-02T24:00:00"], "value_not_valid_datetime"),
        ("AGE", ["2022-11-03", "2022-11-03T00:00:00.000"], ["3 years"], "value_not_valid_date"),
        ("LETTER", ["a", "é"], ["ab", "1"], "value_not_valid_letter"),
        ("COORDINATE", ["[36.8,-1.3]", "[ 1 , 2 ]"], ["[200,0]", "36.8,-1.3"], "value_not_coordinate"),
        ("URL", ["http://x.org/a", "ftp://h"], ["mailto:x", "https://"], "value_not_url"),
        ("PHONE_NUMBER", ["+254 700 000000"], ["12345", "call me"], "value_not_valid_phone_number"),
    ],
)  # fmt: skip
def test_value_types_follow_the_documented_table(
    value_type: str, accepted: list[str], refused: list[str], key: str
) -> None:
    assert [value_problem(v, value_type) for v in accepted] == [None] * len(accepted)
    assert [value_problem(v, value_type) for v in refused] == [key] * len(refused)


def test_blank_values_are_not_checked_and_long_ones_are_refused() -> None:
    assert value_problem(None, "NUMBER") is None and value_problem("  ", "INTEGER") is None
    assert value_problem("x" * 50_001, "TEXT") == "value_length_greater_than_max_length"
    assert value_problem("anything", "TEXT") is None
    assert [normalise_boolean(v, "BOOLEAN") for v in ("1", "t", "True", "0", "F")] == ["true"] * 3 + ["false"] * 2
    assert normalise_boolean("1", "INTEGER") == "1"


def test_uids_have_dhis2s_shape() -> None:
    assert is_uid("Abcdefghij1") and is_uid("zZ012345678")
    assert not any(is_uid(v) for v in ("1bcdefghij1", "Abcdefghij", "Abcdefghij12", "Abcdefghi_1", "Äbcdefghij1"))
    assert not is_uid("Abcdefghij1\n") and not is_uid(None)


@pytest.mark.parametrize(
    ("text", "period_type", "start", "end"),
    [
        ("20240131", "Daily", "2024-01-31", "2024-01-31"),
        ("2024-01-31", "Daily", "2024-01-31", "2024-01-31"),
        ("2024W1", "Weekly", "2024-01-01", "2024-01-07"),
        ("2020W53", "Weekly", "2020-12-28", "2021-01-03"),
        ("2024SunW8", "WeeklySunday", "2024-02-18", "2024-02-24"),
        ("2024BiW1", "BiWeekly", "2024-01-01", "2024-01-14"),
        ("202401", "Monthly", "2024-01-01", "2024-01-31"),
        ("2024-02", "Monthly", "2024-02-01", "2024-02-29"),
        ("202401B", "BiMonthly", "2024-01-01", "2024-02-29"),
        ("202402B", "BiMonthly", "2024-03-01", "2024-04-30"),  # yyyyMMB counts bi-months (1..6)
        ("202406B", "BiMonthly", "2024-11-01", "2024-12-31"),
        ("2024Q1", "Quarterly", "2024-01-01", "2024-03-31"),
        ("2024NovQ1", "QuarterlyNov", "2023-11-01", "2024-01-31"),
        ("2024S2", "SixMonthly", "2024-07-01", "2024-12-31"),
        ("2024AprilS1", "SixMonthlyApril", "2024-04-01", "2024-09-30"),
        ("2024NovS1", "SixMonthlyNov", "2023-11-01", "2024-04-30"),
        ("2024", "Yearly", "2024-01-01", "2024-12-31"),
        ("2024April", "FinancialApril", "2024-04-01", "2025-03-31"),
        ("2025Nov", "FinancialNov", "2024-11-01", "2025-10-31"),
    ],
)
def test_periods_follow_the_documented_formats(text: str, period_type: str, start: str, end: str) -> None:
    period = read_period(text)
    assert (period.iso, period.period_type, period.start.isoformat(), period.end.isoformat()) == (
        text, period_type, start, end
    )  # fmt: skip


@pytest.mark.parametrize("text", ["2024W53", "2024W0", "202413", "2024-13", "2024-0101", "202400B", "202407B",
                                  "202411B", "2024Q5", "24", "2024-1", "20240230", "2024BiW28", "2024Jan"])  # fmt: skip
def test_impossible_periods_are_refused(text: str) -> None:
    with pytest.raises(InvalidPeriod):
        read_period(text)


# -- a second opinion: the connector reads the same documents with code of its own


def test_values_agree_with_the_connector() -> None:
    samples = ["", "0", "-0", "00", "01", "1", "-1", "+1", "1.5", "-1.50", "1e3", ".5", "NaN", "2147483648", "100",
               "101", "true", "TRUE", "t", "2024-02-29", "2023-02-29", "2024-05-02T10:00", "2024-05-02T25:00",
               "9:30", "24:00", "a", "ab", "a@b.co", "a@b", "[36.8,-1.3]", "[200,0]", "http://x.org", "https://",
               "+254 700 000000", "1" * 250]  # fmt: skip
    differ = [
        (vtype.value, value)
        for vtype in ValueType
        for value in samples
        if check_value(value, vtype) != value_problem(value, vtype.value)
    ]
    assert differ == []


def test_where_the_readings_differed_both_follow_dhis2() -> None:
    # Found by this comparison (issue 12): Python's \\d and $ are wider than Java's. DHIS2
    # refuses non-ASCII digits and a UID with a trailing newline; so do both readings now.
    assert value_problem("1٢", "INTEGER") == "value_not_integer" and check_value("1٢", "INTEGER") is not None
    assert not is_uid("Abcdefghij1\n") and not is_valid_uid("Abcdefghij1\n")


def test_periods_agree_with_the_connector_day_by_day() -> None:
    day, differ = date(2019, 12, 1), []
    while day < date(2027, 2, 1):
        for period_type in sorted(PERIOD_TYPES):
            theirs, ours = period_for(period_type, day), period_containing(period_type, day)
            if (theirs.iso, theirs.period_type, theirs.start, theirs.end) != (
                ours.iso, ours.period_type, ours.start, ours.end
            ):  # fmt: skip
                differ.append((period_type, day))
            if read_period(theirs.iso) != ours:
                differ.append((period_type, day))
        day += timedelta(days=1)
    assert differ == []
    assert parse_period("2026W53").end == read_period("2026W53").end
