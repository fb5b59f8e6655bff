"""DHIS2 ISO periods as the sandbox reads them, written from DHIS2's period format table.

Source: shared/dhis2 README §3.5 (DHIS2 docs ``overview.md``, dhis2-core ``PeriodTypeEnum``).
Written apart from the gateway's connector on purpose: the sandbox is the judge of what the
connector sends, so the two must not share a mistake.

Weeks of every start day follow the ISO 8601 rule: a week belongs to the year that holds its
fourth day, so week 1 of year Y is the first week that starts on or after 29 December of Y-1.
Bi-weeks pair ISO weeks (BiW1 = W1 + W2). Periods that start in another month are named after
the year they start in, except the November ones (NovQ1, NovS1, Nov financial year), which are
named after the year they mostly fall in (2024NovQ1 starts in November 2023).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from dhis2_sandbox.errors import SandboxError

__all__ = ["InvalidPeriod", "Period", "period_containing", "read_period"]


class InvalidPeriod(SandboxError):
    """Text DHIS2 would not accept as a period identifier."""


@dataclass(frozen=True, slots=True)
class Period:
    """A period: the identifier as sent, its type and its first and last day."""

    iso: str
    period_type: str
    start: date
    end: date


_WEEK_DAYS = {"": ("Weekly", 0), "Wed": ("WeeklyWednesday", 2), "Thu": ("WeeklyThursday", 3),
              "Sat": ("WeeklySaturday", 5), "Sun": ("WeeklySunday", 6)}  # fmt: skip
_FINANCIAL_MONTHS = {"April": 4, "July": 7, "Sep": 9, "Oct": 10, "Nov": 11}
_FINANCIAL_NAMES = {"April": "FinancialApril", "July": "FinancialJuly", "Sep": "FinancialSep",
                    "Oct": "FinancialOct", "Nov": "FinancialNov"}  # fmt: skip
_SIX_MONTH_FIRST = {"": 1, "April": 4, "Nov": 11}  # first month of S1; Nov's S1 starts the year before


def _month_start(year: int, month: int) -> date:
    """First day of ``month`` (any integer, carried into the year)."""
    year += (month - 1) // 12
    return date(year, (month - 1) % 12 + 1, 1)


def _months(year: int, month: int, count: int) -> tuple[date, date]:
    return _month_start(year, month), _month_start(year, month + count) - timedelta(days=1)


def _first_week_start(year: int, weekday: int) -> date:
    day = date(year - 1, 12, 29)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return day


def _week(year: int, number: int, weekday: int) -> tuple[date, date]:
    start = _first_week_start(year, weekday) + timedelta(days=7 * (number - 1))
    if number < 1 or start >= _first_week_start(year + 1, weekday):
        raise InvalidPeriod(f"{year} has no week {number}")
    return start, start + timedelta(days=6)


def _daily(m: re.Match[str]) -> tuple[str, date, date]:
    day = date(int(m["y"]), int(m["m"]), int(m["d"]))
    return "Daily", day, day


def _weekly(m: re.Match[str]) -> tuple[str, date, date]:
    name, weekday = _WEEK_DAYS[m["day"]]
    return (name, *_week(int(m["y"]), int(m["n"]), weekday))


def _biweekly(m: re.Match[str]) -> tuple[str, date, date]:
    start, _ = _week(int(m["y"]), 2 * int(m["n"]) - 1, 0)
    return "BiWeekly", start, start + timedelta(days=13)


def _monthly(m: re.Match[str]) -> tuple[str, date, date]:
    if not 1 <= int(m["m"]) <= 12:
        raise InvalidPeriod("no such month")
    return ("Monthly", *_months(int(m["y"]), int(m["m"]), 1))


def _bimonthly(m: re.Match[str]) -> tuple[str, date, date]:
    # yyyyMMB numbers the bi-month, 01 (January-February) to 06 (November-December): DHIS2
    # starts it in month (MM * 2) - 1 and refuses MM outside 1..6.
    number = int(m["m"])
    if not 1 <= number <= 6:
        raise InvalidPeriod("a year has bi-months 01 to 06")
    return ("BiMonthly", *_months(int(m["y"]), 2 * number - 1, 2))


def _quarterly(m: re.Match[str]) -> tuple[str, date, date]:
    first = (-1 if m["kind"] == "Nov" else 1) + 3 * (int(m["n"]) - 1)
    return ("QuarterlyNov" if m["kind"] else "Quarterly", *_months(int(m["y"]), first, 3))


def _sixmonthly(m: re.Match[str]) -> tuple[str, date, date]:
    first = _SIX_MONTH_FIRST[m["kind"]] - (12 if m["kind"] == "Nov" else 0) + 6 * (int(m["n"]) - 1)
    return ("SixMonthly" + m["kind"], *_months(int(m["y"]), first, 6))


def _yearly(m: re.Match[str]) -> tuple[str, date, date]:
    return ("Yearly", *_months(int(m["y"]), 1, 12))


def _financial(m: re.Match[str]) -> tuple[str, date, date]:
    year = int(m["y"]) - (1 if m["kind"] == "Nov" else 0)
    return (_FINANCIAL_NAMES[m["kind"]], *_months(year, _FINANCIAL_MONTHS[m["kind"]], 12))


_FORMATS = (
    (r"(?P<y>\d{4})-?(?P<m>\d{2})-?(?P<d>\d{2})", _daily),
    (r"(?P<y>\d{4})(?P<day>|Wed|Thu|Sat|Sun)W(?P<n>[1-9]\d?)", _weekly),
    (r"(?P<y>\d{4})BiW(?P<n>[1-9]\d?)", _biweekly),
    (r"(?P<y>\d{4})-?(?P<m>\d{2})", _monthly),
    (r"(?P<y>\d{4})(?P<m>\d{2})B", _bimonthly),
    (r"(?P<y>\d{4})(?P<kind>|Nov)Q(?P<n>[1-4])", _quarterly),
    (r"(?P<y>\d{4})(?P<kind>|April|Nov)S(?P<n>[12])", _sixmonthly),
    (r"(?P<y>\d{4})", _yearly),
    (r"(?P<y>\d{4})(?P<kind>April|July|Sep|Oct|Nov)", _financial),
)
_COMPILED = tuple((re.compile(pattern), build) for pattern, build in _FORMATS)


def read_period(text: str) -> Period:
    """The period ``text`` names; ``InvalidPeriod`` for anything DHIS2 would refuse."""
    for pattern, build in _COMPILED:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        if "-" in text and text.count("-") != (2 if build is _daily else 1):
            raise InvalidPeriod(f"not a period: {text!r}")  # 2024-0101 is neither form
        try:
            period_type, start, end = build(match)
        except (ValueError, InvalidPeriod) as exc:  # impossible dates and week numbers
            raise InvalidPeriod(f"not a period: {text!r}") from exc
        return Period(text, period_type, start, end)
    raise InvalidPeriod(f"not a period: {text!r}")


def _identifier(period_type: str, day: date) -> str:
    if period_type == "Daily":
        return f"{day:%Y%m%d}"
    for prefix, (name, weekday) in _WEEK_DAYS.items():
        if name == period_type:
            start = day - timedelta(days=(day.weekday() - weekday) % 7)
            year = (start + timedelta(days=3)).year
            return f"{year}{prefix}W{(start - _first_week_start(year, weekday)).days // 7 + 1}"
    if period_type == "BiWeekly":
        year, week, _ = day.isocalendar()
        return f"{year}BiW{(week + 1) // 2}"
    if period_type == "Monthly":
        return f"{day:%Y%m}"
    if period_type == "BiMonthly":
        return f"{day.year}{(day.month + 1) // 2:02d}B"
    if period_type == "Yearly":
        return str(day.year)
    for letter, family, length in (("Q", "Quarterly", 3), ("S", "SixMonthly", 6)):
        kind = period_type.removeprefix(family)
        if period_type.startswith(family) and kind in _SIX_MONTH_FIRST:
            first = _SIX_MONTH_FIRST[kind]
            year = day.year + (1 if kind == "Nov" and day.month >= first else 0)
            year -= 1 if kind == "April" and day.month < first else 0
            return f"{year}{kind}{letter}{(day.month - first) % 12 // length + 1}"
    for kind, name in _FINANCIAL_NAMES.items():
        if name == period_type:
            first = _FINANCIAL_MONTHS[kind]
            start_year = day.year if day.month >= first else day.year - 1
            return f"{start_year + (1 if kind == 'Nov' else 0)}{kind}"
    raise InvalidPeriod(f"unknown period type: {period_type!r}")


def period_containing(period_type: str, day: date) -> Period:
    """The period of ``period_type`` that holds ``day``."""
    period = read_period(_identifier(period_type, day))
    if not period.start <= day <= period.end:
        raise InvalidPeriod(f"no {period_type} period holds {day}")  # an arithmetic slip, not input
    return period
