"""DHIS2 value types as the sandbox judges them, written from DHIS2's documented rules.

Source: shared/dhis2 README §7 (dhis2-core ``ValidationUtils.dataValueIsValid``, ``MathUtils``,
the tracker ``AttributeValidator``) and §5 for UIDs. Written apart from the gateway's
connector on purpose: the sandbox is the judge of what the connector sends, so the two must
not share a mistake. Failure keys are the ones DHIS2 quotes in E1302/E1007/E7619 messages.
Blank values are not type-checked (in tracker ``null`` deletes a value).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from urllib.parse import urlsplit

__all__ = ["MAX_ATTRIBUTE_LENGTH", "is_uid", "normalise_boolean", "value_problem"]

MAX_ATTRIBUTE_LENGTH = 1200  # tracker attribute values, E1077
_MAX_LENGTH = 50_000  # any value
_INT32 = range(-(2**31), 2**31)

_UID = re.compile(r"[a-zA-Z][a-zA-Z0-9]{10}")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_WHOLE = re.compile(r"0|-?[1-9][0-9]*")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MOMENT = re.compile(
    r"(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})[T ](?P<h>[0-9]{2}):(?P<m>[0-9]{2})"
    r"(:(?P<s>[0-9]{2})(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)
_CLOCK = re.compile(r"([0-9]|[01][0-9]|2[0-3]):[0-5][0-9]")
_PHONE = re.compile(r"[0-9+()#.\s/ext-]{6,50}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_POINT = re.compile(r"\[\s*(?P<lng>-?[0-9]+(\.[0-9]+)?)\s*,\s*(?P<lat>-?[0-9]+(\.[0-9]+)?)\s*\]")
_TRUTHS = {"true": "true", "t": "true", "1": "true", "false": "false", "f": "false", "0": "false"}


def is_uid(text: object) -> bool:
    """True for an 11-character DHIS2 UID: a letter, then ten letters or digits."""
    return isinstance(text, str) and _UID.fullmatch(text) is not None


def _is_day(text: str) -> bool:
    if not _DAY.fullmatch(text):
        return False
    try:
        date(int(text[:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return False
    return True


def _is_moment(text: str) -> bool:
    found = _MOMENT.fullmatch(text)
    if found is None or not _is_day(found["day"]):
        return False
    try:
        datetime(2000, 1, 1, int(found["h"]), int(found["m"]), int(found["s"] or 0))
    except ValueError:
        return False
    return True


def _is_number(text: str) -> bool:
    return len(text) < 250 and _DECIMAL.fullmatch(text) is not None and math.isfinite(float(text))


def _whole(text: str, low: int | None = None, high: int | None = None) -> bool:
    if _WHOLE.fullmatch(text) is None or int(text) not in _INT32:
        return False
    number = int(text)
    return (low is None or number >= low) and (high is None or number <= high)


def _is_point(text: str) -> bool:
    found = _POINT.fullmatch(text)
    return found is not None and abs(float(found["lng"])) <= 180 and abs(float(found["lat"])) <= 90


def _is_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https", "ftp") and bool(parts.netloc)


# value type → (accepts, failure key); types not listed accept any text.
_RULES: dict[str, tuple[Callable[[str], bool], str]] = {
    "NUMBER": (_is_number, "value_not_numeric"),
    "UNIT_INTERVAL": (lambda v: _is_number(v) and 0 <= float(v) <= 1, "value_not_unit_interval"),
    "PERCENTAGE": (lambda v: _whole(v, 0, 100), "value_not_percentage"),
    "INTEGER": (_whole, "value_not_integer"),
    "INTEGER_POSITIVE": (lambda v: not v.startswith("-") and _whole(v, 1), "value_not_positive_integer"),
    "INTEGER_NEGATIVE": (lambda v: _whole(v, None, -1), "value_not_negative_integer"),
    "INTEGER_ZERO_OR_POSITIVE": (lambda v: _whole(v, 0), "value_not_zero_or_positive_integer"),
    "BOOLEAN": (lambda v: v.lower() in ("true", "false"), "value_not_bool"),
    "TRUE_ONLY": (lambda v: v.lower() == "true", "value_not_true_only"),
    "DATE": (_is_day, "value_not_valid_date"),
    # Tracker checks AGE as a date-time; the docs call it a date of birth. Both pass.
    "AGE": (lambda v: _is_day(v) or _is_moment(v), "value_not_valid_date"),
    "DATETIME": (_is_moment, "value_not_valid_datetime"),
    "TIME": (lambda v: _CLOCK.fullmatch(v) is not None, "value_not_valid_time"),
    "LETTER": (lambda v: len(v) == 1 and v.isalpha(), "value_not_valid_letter"),
    "PHONE_NUMBER": (lambda v: _PHONE.fullmatch(v) is not None, "value_not_valid_phone_number"),
    "EMAIL": (lambda v: _EMAIL.fullmatch(v) is not None, "value_not_valid_email"),
    "COORDINATE": (_is_point, "value_not_coordinate"),
    "URL": (_is_url, "value_not_url"),
}


def value_problem(value: str | None, value_type: str) -> str | None:
    """DHIS2's failure key for ``value`` as a ``value_type``, or None when DHIS2 accepts it."""
    if value is None or not value.strip():
        return None
    if len(value) > _MAX_LENGTH:
        return "value_length_greater_than_max_length"
    rule = _RULES.get(value_type)
    if rule is None:
        return None
    accepts, key = rule
    return None if accepts(value) else key


def normalise_boolean(value: str, value_type: str) -> str:
    """The spelling aggregate import stores for a boolean (``1``, ``t``, ``True`` → ``true``)."""
    if value_type not in ("BOOLEAN", "TRUE_ONLY"):
        return value
    return _TRUTHS.get(value.strip().lower(), value)
