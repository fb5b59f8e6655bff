"""Deterministic UIDs, DHIS2 value-type checks and conversions, period identifiers."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.connectors.dhis2.periods import PERIOD_TYPES, PeriodError, parse_period, period_for
from gateway.connectors.dhis2.uids import derive_uid, is_valid_uid, resource_key
from gateway.connectors.dhis2.values import ValueConversionError, ValueType, check_value, to_dhis2_value


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=80))
def test_derived_uids_are_valid_and_stable(kind: str, key: str) -> None:
    kind = kind.replace("|", "")
    if not kind:
        return
    uid = derive_uid("ns", kind, key)
    assert is_valid_uid(uid)
    assert derive_uid("ns", kind, key) == uid


def test_uids_separate_kinds_namespaces_and_resources() -> None:
    key = resource_key("Patient", "123")
    uids = {
        derive_uid("a", "TRACKED_ENTITY", key),
        derive_uid("b", "TRACKED_ENTITY", key),
        derive_uid("a", "ENROLLMENT", key),
        derive_uid("a", "TRACKED_ENTITY", resource_key("Patient", "124")),
    }
    assert len(uids) == 4
    assert derive_uid("demo", "TRACKED_ENTITY", "Patient/123") == "W7zceR2e4Z2"  # pinned: replays must match
    with pytest.raises(ValueError):
        derive_uid("a|b", "X", "k")
    assert not is_valid_uid("1abcdefghij") and not is_valid_uid("abc")


@pytest.mark.parametrize(
    ("value_type", "good", "bad", "key"),
    [
        (
            "NUMBER",
            ["0", "-0.5", "12.30", "250"],
            ["01", "+1", "1e3", "1.", ".5", "abc"],
            "value_not_numeric",
        ),
        ("INTEGER", ["0", "-7", "2147483647"], ["1.0", "2147483648", "007"], "value_not_integer"),
        ("INTEGER_POSITIVE", ["1", "42"], ["0", "-1"], "value_not_positive_integer"),
        ("INTEGER_NEGATIVE", ["-1"], ["0", "1"], "value_not_negative_integer"),
        ("INTEGER_ZERO_OR_POSITIVE", ["0", "9"], ["-1", "1.5"], "value_not_zero_or_positive_integer"),
        ("PERCENTAGE", ["0", "100"], ["101", "-1", "50.5"], "value_not_percentage"),
        ("UNIT_INTERVAL", ["0", "0.25", "1"], ["1.01", "-0.1"], "value_not_unit_interval"),
        ("BOOLEAN", ["true", "FALSE"], ["yes", "1"], "value_not_bool"),
        ("TRUE_ONLY", ["true"], ["false"], "value_not_true_only"),
        ("DATE", ["2024-02-29"], ["2023-02-29", "2024-5-1", "20240501"], "value_not_valid_date"),
        (
            "DATETIME",
            ["2024-05-01T10:00:00.000", "2024-05-01 10:00:00+0200"],
            ["2024-05-01T25:00"],
            "value_not_valid_datetime",
        ),
        ("TIME", ["9:30", "23:59"], ["24:00", "9.30"], "value_not_valid_time"),
        ("LETTER", ["a"], ["ab", "1"], "value_not_valid_letter"),
        ("COORDINATE", ["[36.8,-1.28]"], ["[200,0]", "36.8,-1.28"], "value_not_coordinate"),
        ("PHONE_NUMBER", ["+254 700 000000"], ["12", "call me"], "value_not_valid_phone_number"),
        ("URL", ["https://dhis2.org"], ["dhis2.org", "http://[::1/x"], "value_not_url"),
    ],
)
def test_value_checks_follow_dhis2(value_type: str, good: list[str], bad: list[str], key: str) -> None:
    assert [check_value(v, value_type) for v in good] == [None] * len(good)
    assert [check_value(v, value_type) for v in bad] == [key] * len(bad)


def test_blank_values_skip_checks_and_text_accepts_anything() -> None:
    assert check_value("", "NUMBER") is None and check_value(None, "DATE") is None
    assert check_value("anything at all", "TEXT") is None


@pytest.mark.parametrize(
    ("value", "value_type", "expected"),
    [
        (True, "BOOLEAN", "true"),
        ("True", "BOOLEAN", "true"),
        (11.5, "NUMBER", "11.5"),
        (1e-05, "NUMBER", "0.00001"),
        (Decimal("11.50"), "NUMBER", "11.5"),
        (3.0, "INTEGER_POSITIVE", "3"),
        ("2024-05-01T10:00:00+03:00", "DATE", "2024-05-01"),
        (date(2024, 5, 1), "DATE", "2024-05-01"),
        ("2024-05-01T10:00:00+03:00", "DATETIME", "2024-05-01T10:00:00.000"),
        (datetime(2024, 5, 1, 10, 0), "DATETIME", "2024-05-01T10:00:00.000"),
        ("POSITIVE", "TEXT", "POSITIVE"),
    ],
)
def test_conversions(value: object, value_type: str, expected: str) -> None:
    assert to_dhis2_value(value, value_type) == expected


@pytest.mark.parametrize(
    ("value", "value_type", "key"),
    [
        (2.5, "INTEGER", "value_not_integer"),
        (-1, "INTEGER_ZERO_OR_POSITIVE", "value_not_zero_or_positive_integer"),
        ("2024-05", "DATE", "value_not_valid_date"),
        ("maybe", "BOOLEAN", "value_not_bool"),
        (True, "NUMBER", "value_not_numeric"),
        (None, "TEXT", "value_missing"),
    ],
)
def test_conversions_refuse_what_dhis2_would(value: object, value_type: str, key: str) -> None:
    with pytest.raises(ValueConversionError) as caught:
        to_dhis2_value(value, value_type)
    assert caught.value.key == key


@given(st.one_of(st.integers(-(2**31), 2**31 - 1), st.floats(-1e9, 1e9, allow_nan=False)))
def test_converted_numbers_pass_dhis2s_check_or_are_refused(number: float) -> None:
    try:
        text = to_dhis2_value(number, ValueType.NUMBER)
    except ValueConversionError as exc:  # e.g. 1e-237 needs more than DHIS2's 250 characters
        assert exc.key == "value_not_numeric" and 0 < abs(number) < 1e-200
    else:
        assert check_value(text, ValueType.NUMBER) is None


@pytest.mark.parametrize(
    ("text", "period_type", "start", "end"),
    [
        ("20240131", "Daily", date(2024, 1, 31), date(2024, 1, 31)),
        ("2024W1", "Weekly", date(2024, 1, 1), date(2024, 1, 7)),
        ("2020W53", "Weekly", date(2020, 12, 28), date(2021, 1, 3)),
        ("2024SunW8", "WeeklySunday", date(2024, 2, 18), date(2024, 2, 24)),
        ("2024BiW1", "BiWeekly", date(2024, 1, 1), date(2024, 1, 14)),
        ("202405", "Monthly", date(2024, 5, 1), date(2024, 5, 31)),
        ("2024-05", "Monthly", date(2024, 5, 1), date(2024, 5, 31)),
        ("202401B", "BiMonthly", date(2024, 1, 1), date(2024, 2, 29)),
        # yyyyMMB counts bi-months, not months (dhis2-core BiMonthlyPeriodType: "%d%02dB" of
        # (month + 1) / 2; DateUnitPeriodTypeParser: start month (MM * 2) - 1, MM in 1..6).
        ("202402B", "BiMonthly", date(2024, 3, 1), date(2024, 4, 30)),
        ("202406B", "BiMonthly", date(2024, 11, 1), date(2024, 12, 31)),
        ("2024Q1", "Quarterly", date(2024, 1, 1), date(2024, 3, 31)),
        ("2025NovQ1", "QuarterlyNov", date(2024, 11, 1), date(2025, 1, 31)),
        ("2024S2", "SixMonthly", date(2024, 7, 1), date(2024, 12, 31)),
        ("2024AprilS1", "SixMonthlyApril", date(2024, 4, 1), date(2024, 9, 30)),
        ("2024", "Yearly", date(2024, 1, 1), date(2024, 12, 31)),
        ("2024April", "FinancialApril", date(2024, 4, 1), date(2025, 3, 31)),
        ("2025Nov", "FinancialNov", date(2024, 11, 1), date(2025, 10, 31)),
    ],
)
def test_periods_parse(text: str, period_type: str, start: date, end: date) -> None:
    period = parse_period(text)
    assert (period.period_type, period.start, period.end) == (period_type, start, end)


@pytest.mark.parametrize(
    "text", ["2021W53", "202413", "202400B", "202407B", "202411B", "2024Q5", "24Q1", "2024-13-01"]
)
def test_impossible_periods_are_refused(text: str) -> None:
    with pytest.raises(PeriodError):
        parse_period(text)


@pytest.mark.parametrize(
    ("day", "iso"),
    [(date(2026, 1, 31), "202601B"), (date(2026, 4, 2), "202602B"), (date(2026, 9, 30), "202605B"),
     (date(2026, 11, 5), "202606B"), (date(2026, 12, 31), "202606B")],
)  # fmt: skip
def test_bi_months_are_numbered_one_to_six_as_dhis2_names_them(day: date, iso: str) -> None:
    # A report for November-December 2026 sent as 202611B would be refused by DHIS2 (no 11th
    # bi-month), and one for March-April as 202603B would land in May-June.
    assert period_for("BiMonthly", day).iso == iso


@given(st.sampled_from(sorted(PERIOD_TYPES)), st.dates(date(1990, 1, 1), date(2090, 12, 31)))
def test_period_for_contains_the_day_and_round_trips(period_type: str, day: date) -> None:
    period = period_for(period_type, day)
    assert period.start <= day <= period.end and period.period_type == period_type
    assert parse_period(period.iso) == period
    following = period_for(period_type, period.end + timedelta(days=1))
    if period_type == "BiWeekly" and following.start.year > period.start.year and period.iso.endswith("BiW27"):
        # As in DHIS2, bi-week 27 of a 53-week year is week 53 plus the next year's week 1,
        # which also starts that year's bi-week 1: the two overlap by a week.
        assert following.start == period.end - timedelta(days=6)
    else:
        assert following.start == period.end + timedelta(days=1)


def test_bi_week_27_of_a_53_week_year_overlaps_the_next_bi_week_1_as_in_dhis2() -> None:
    last = parse_period("2043BiW27")
    assert (last.start, last.end) == (date(2043, 12, 28), date(2044, 1, 10))
    first = parse_period("2044BiW1")
    assert (first.start, first.end) == (date(2044, 1, 4), date(2044, 1, 17))
    assert period_for("BiWeekly", date(2043, 12, 30)).iso == "2043BiW27"
    assert period_for("BiWeekly", date(2044, 1, 5)).iso == "2044BiW1"  # the week both cover: the new year's
