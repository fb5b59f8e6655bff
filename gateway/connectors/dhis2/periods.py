"""DHIS2 ISO period identifiers: parse them, and name the period that covers a date.

Formats (dhis2-core ``PeriodTypeEnum``; DHIS2 docs ``overview.md``): ``20240131`` daily,
``2024W5`` ISO week, ``2024WedW5`` weeks starting on another day, ``2024BiW3``, ``202401``
monthly, ``202401B`` bi-monthly (to ``202406B``), ``2024Q1``, ``2024NovQ1``, ``2024S1``, ``2024AprilS1``,
``2024NovS1``, ``2024`` yearly and the financial years ``2024April`` … ``2024Nov``.

Week numbering follows ISO 8601 generalised to the week's start day: week 1 is the first
week with at least four of its days in the year.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from gateway.errors import ConnectorError

__all__ = ["PERIOD_TYPES", "Period", "PeriodError", "parse_period", "period_for"]


class PeriodError(ConnectorError):
    """Text that is not a DHIS2 period identifier, or a period type DHIS2 does not know."""


@dataclass(frozen=True, slots=True)
class Period:
    """One DHIS2 period: its identifier, type and first/last day (inclusive)."""

    iso: str
    period_type: str
    start: date
    end: date


_WEEK_STARTS = {"": 0, "Wed": 2, "Thu": 3, "Sat": 5, "Sun": 6}
_WEEKLY_TYPES = {
    "": "Weekly",
    "Wed": "WeeklyWednesday",
    "Thu": "WeeklyThursday",
    "Sat": "WeeklySaturday",
    "Sun": "WeeklySunday",
}
_FINANCIAL = {"April": 4, "July": 7, "Sep": 9, "Oct": 10, "Nov": 11}
_FINANCIAL_TYPES = {
    "April": "FinancialApril",
    "July": "FinancialJuly",
    "Sep": "FinancialSep",
    "Oct": "FinancialOct",
    "Nov": "FinancialNov",
}

PERIOD_TYPES = frozenset(
    {
        "Daily",
        "BiWeekly",
        "Monthly",
        "BiMonthly",
        "Quarterly",
        "QuarterlyNov",
        "SixMonthly",
        "SixMonthlyApril",
        "SixMonthlyNov",
        "Yearly",
    }
    | set(_WEEKLY_TYPES.values())
    | set(_FINANCIAL_TYPES.values())
)


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _month_span(year: int, month: int, months: int) -> tuple[date, date]:
    start = date(year, month, 1)
    return start, _add_months(start, months) - timedelta(days=1)


def _week_one(year: int, weekday: int) -> date:
    # The first week with four or more days in ``year`` holds the 4th day of the year
    # counted from the start day; for ISO (Monday) that is January 4th.
    anchor = date(year, 1, 4)
    return anchor - timedelta(days=(anchor.weekday() - weekday) % 7)


def _weeks_in_year(year: int, weekday: int) -> int:
    return (_week_one(year + 1, weekday) - _week_one(year, weekday)).days // 7


_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^(\d{4})(\d{2})(\d{2})$"), "daily"),
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), "daily"),
    (re.compile(r"^(\d{4})(|Wed|Thu|Sat|Sun)W([1-9]\d?)$"), "weekly"),
    (re.compile(r"^(\d{4})BiW([1-9]\d?)$"), "biweekly"),
    (re.compile(r"^(\d{4})(\d{2})$"), "monthly"),
    (re.compile(r"^(\d{4})-(\d{2})$"), "monthly"),
    (re.compile(r"^(\d{4})(\d{2})B$"), "bimonthly"),
    (re.compile(r"^(\d{4})(|Nov)Q([1-4])$"), "quarterly"),
    (re.compile(r"^(\d{4})(|April|Nov)S([12])$"), "sixmonthly"),
    (re.compile(r"^(\d{4})$"), "yearly"),
    (re.compile(r"^(\d{4})(April|July|Sep|Oct|Nov)$"), "financial"),
]


def _build(kind: str, groups: tuple[str, ...], text: str) -> Period:
    year = int(groups[0])
    if kind == "daily":
        day = date(year, int(groups[1]), int(groups[2]))
        return Period(text, "Daily", day, day)
    if kind == "weekly":
        weekday = _WEEK_STARTS[groups[1]]
        week = int(groups[2])
        if week > _weeks_in_year(year, weekday):
            raise PeriodError(f"week {week} does not exist in {year}")
        start = _week_one(year, weekday) + timedelta(weeks=week - 1)
        return Period(text, _WEEKLY_TYPES[groups[1]], start, start + timedelta(days=6))
    if kind == "biweekly":
        number = int(groups[1])
        if 2 * number - 1 > _weeks_in_year(year, 0):
            raise PeriodError(f"bi-week {number} does not exist in {year}")
        start = _week_one(year, 0) + timedelta(weeks=2 * (number - 1))
        return Period(text, "BiWeekly", start, start + timedelta(days=13))
    if kind == "monthly":
        start, end = _month_span(year, int(groups[1]), 1)
        return Period(text, "Monthly", start, end)
    if kind == "bimonthly":
        # ``yyyyMMB`` numbers the bi-month (01 = January-February … 06 = November-December),
        # not its first month: dhis2-core reads MM as the start month (MM * 2) - 1, MM in 1..6.
        number = int(groups[1])
        if not 1 <= number <= 6:
            raise PeriodError("a year has bi-months 01 to 06")
        start, end = _month_span(year, 2 * number - 1, 2)
        return Period(text, "BiMonthly", start, end)
    if kind == "quarterly":
        offset = -2 if groups[1] == "Nov" else 0  # NovQ1 = November of the previous year
        start = _add_months(date(year, 1, 1), offset + 3 * (int(groups[2]) - 1))
        end = _add_months(start, 3) - timedelta(days=1)
        return Period(text, "QuarterlyNov" if groups[1] else "Quarterly", start, end)
    if kind == "sixmonthly":
        first = {"": 1, "April": 4, "Nov": -1}[groups[1]]
        start = _add_months(date(year, 1, 1), first - 1 + 6 * (int(groups[2]) - 1))
        end = _add_months(start, 6) - timedelta(days=1)
        return Period(text, "SixMonthly" + groups[1], start, end)
    if kind == "yearly":
        return Period(text, "Yearly", date(year, 1, 1), date(year, 12, 31))
    # November financial years are named after the year they end in (2025Nov starts Nov 2024),
    # like the November quarters and six-months; the others after the year they start in.
    first_year = year - 1 if groups[1] == "Nov" else year
    start, end = _month_span(first_year, _FINANCIAL[groups[1]], 12)
    return Period(text, _FINANCIAL_TYPES[groups[1]], start, end)


def parse_period(text: str) -> Period:
    """Parse a DHIS2 period identifier; raise ``PeriodError`` for anything DHIS2 would reject."""
    for pattern, kind in _PATTERNS:
        match = pattern.match(text)
        if match is None:
            continue
        try:
            return _build(kind, match.groups(), text)
        except (ValueError, PeriodError) as exc:  # impossible calendar dates and week numbers
            raise PeriodError(f"not a valid period: {text!r}") from exc
    raise PeriodError(f"not a valid period: {text!r}")


def _weekly_id(day: date, weekday: int, prefix: str) -> str:
    # The week belongs to the year that holds its 4th day (ISO rule, any start day).
    start = day - timedelta(days=(day.weekday() - weekday) % 7)
    year = (start + timedelta(days=3)).year
    week = (start - _week_one(year, weekday)).days // 7 + 1
    return f"{year}{prefix}W{week}"


def period_for(period_type: str, day: date) -> Period:
    """The period of ``period_type`` that contains ``day``."""
    if period_type not in PERIOD_TYPES:
        raise PeriodError(f"unknown period type: {period_type!r}")
    if period_type == "Daily":
        text = day.strftime("%Y%m%d")
    elif period_type.startswith("Weekly"):
        prefix = next(k for k, v in _WEEKLY_TYPES.items() if v == period_type)
        text = _weekly_id(day, _WEEK_STARTS[prefix], prefix)
    elif period_type == "BiWeekly":
        week_text = _weekly_id(day, 0, "")
        year, week = week_text.split("W")
        text = f"{year}BiW{(int(week) + 1) // 2}"
    elif period_type == "Monthly":
        text = day.strftime("%Y%m")
    elif period_type == "BiMonthly":
        text = f"{day.year}{(day.month + 1) // 2:02d}B"
    elif period_type == "Quarterly":
        text = f"{day.year}Q{(day.month - 1) // 3 + 1}"
    elif period_type == "QuarterlyNov":
        shifted = _add_months(day.replace(day=1), 2)
        text = f"{shifted.year}NovQ{(shifted.month - 1) // 3 + 1}"
    elif period_type.startswith("SixMonthly"):
        suffix = period_type.removeprefix("SixMonthly")
        shift = {"": 0, "April": -3, "Nov": 2}[suffix]
        shifted = _add_months(day.replace(day=1), shift)
        text = f"{shifted.year}{suffix}S{(shifted.month - 1) // 6 + 1}"
    elif period_type == "Yearly":
        text = str(day.year)
    else:
        suffix = next(k for k, v in _FINANCIAL_TYPES.items() if v == period_type)
        start_year = day.year if day.month >= _FINANCIAL[suffix] else day.year - 1
        text = f"{start_year + 1 if suffix == 'Nov' else start_year}{suffix}"
    period = parse_period(text)
    if not period.start <= day <= period.end:  # pragma: no cover - guards the arithmetic above
        raise AssertionError(f"{text} does not contain {day}")
    return period
