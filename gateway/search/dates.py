"""FHIR date, dateTime and instant values as half-open ranges of epoch seconds.

FHIR compares dates as ranges implied by their precision: ``2013`` is the whole year,
``2013-05-17T10:00:00Z`` the whole second. Both stored values and search values become
``(low, high)`` with ``low`` inclusive and ``high`` exclusive, in UTC. Values without a
time zone (dates, and the rare dateTime without an offset) are taken as UTC.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime
from functools import lru_cache

from gateway.errors import RequestError

# An open-ended period ends "never"; a large finite number keeps SQL comparisons simple.
FAR_FUTURE = 1.0e12
FAR_PAST = -1.0e12

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))?)?)?)?\Z",  # FHIR's offsets: -14:00 to +14:00
    re.ASCII,  # "١٩٨٠" is not a FHIR year, and "$" would let a trailing newline through
)


class DateFormatError(RequestError):
    """A value is not a FHIR date, dateTime or instant."""


@lru_cache(maxsize=8192)  # index extraction meets the same few dates again and again
def date_range(value: str) -> tuple[float, float]:
    """Return the ``[low, high)`` epoch-second range a FHIR date/dateTime/instant covers."""
    match = _DATE_RE.match(value)
    if match is None:
        raise DateFormatError(f"not a FHIR date/dateTime: {value!r}")
    g = match.groupdict()
    try:
        # Ends are counted in days, not as the next year's start: 9999 has no next year.
        year = int(g["y"])
        if g["m"] is None:
            low = _epoch(year, 1, 1)
            return low, low + (366.0 if calendar.isleap(year) else 365.0) * 86400.0
        month = int(g["m"])
        if g["d"] is None:
            low = _epoch(year, month, 1)
            return low, low + calendar.monthrange(year, month)[1] * 86400.0
        day = int(g["d"])
        if not 1 <= day <= calendar.monthrange(year, month)[1]:
            # timegm would roll 2020-02-30 over into March instead of refusing it, as datetime does.
            raise ValueError(f"day {day} is out of range for month {month}")
        if g["H"] is None:
            low = _epoch(year, month, day)
            return low, low + 86400.0
        hour, minute = int(g["H"]), int(g["M"])
        second = int(g["S"]) if g["S"] is not None else 0
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise DateFormatError(f"not a valid date: {value!r}") from exc
    low = stamp.timestamp()
    tz = g["tz"]
    if tz and tz != "Z":
        # In seconds, not datetime arithmetic: an offset may push 0001-01-01 or 9999-12-31 past
        # what datetime can hold, and those are still valid FHIR values.
        sign = 1 if tz[0] == "+" else -1
        low -= sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if g["S"] is None:
        return low, low + 60.0
    if g["f"]:
        digits = g["f"][1:]
        low += float("0." + digits)
        return low, low + 10.0 ** -len(digits)
    return low, low + 1.0


def _epoch(year: int, month: int, day: int) -> float:
    return float(calendar.timegm((year, month, day, 0, 0, 0)))


def format_instant(epoch: float) -> str:
    """Format epoch seconds as a FHIR instant with milliseconds, in UTC."""
    if epoch < 0:
        return _slow_instant(epoch)
    # Every write stamps lastUpdated (and its Provenance and AuditEvent their times): the
    # seconds' text is shared, the microseconds rounded as ``datetime.fromtimestamp`` does.
    fraction, whole = math.modf(epoch)
    micros = round(fraction * 1e6)
    second = int(whole)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    return f"{_second_text(second)}{micros // 1000:03d}Z"


def _slow_instant(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def from_epoch(epoch: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch, UTC)
