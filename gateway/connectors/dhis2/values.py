"""DHIS2 value types: the checks DHIS2 applies to a value, and conversion of FHIR values.

Every DHIS2 value travels as a JSON string. The checks below are the ones dhis2-core applies
to event data values, tracked-entity attribute values and aggregate data values
(``ValidationUtils.dataValueIsValid``; failure keys as in ``E1302``/``E7619`` messages).
Blank values skip the type check, as in DHIS2 (a null value means "delete" in tracker).

The connector runs the same checks before sending, so a value DHIS2 would reject is reported
against the FHIR resource before any request is made; the sandbox uses them to reject.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from urllib.parse import urlparse

from gateway.errors import ConnectorError

__all__ = [
    "MAX_ATTRIBUTE_LENGTH",
    "MAX_VALUE_LENGTH",
    "ValueConversionError",
    "ValueType",
    "check_value",
    "normalize_boolean",
    "to_dhis2_value",
]

MAX_ATTRIBUTE_LENGTH = 1200  # tracker attribute values (E1077)
MAX_VALUE_LENGTH = 50_000  # any value (value_length_greater_than_max_length)
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1


class ValueType(StrEnum):
    """DHIS2 ``valueType`` of a data element or tracked-entity attribute."""

    TEXT = "TEXT"
    LONG_TEXT = "LONG_TEXT"
    MULTI_TEXT = "MULTI_TEXT"
    LETTER = "LETTER"
    PHONE_NUMBER = "PHONE_NUMBER"
    EMAIL = "EMAIL"
    BOOLEAN = "BOOLEAN"
    TRUE_ONLY = "TRUE_ONLY"
    DATE = "DATE"
    DATETIME = "DATETIME"
    TIME = "TIME"
    NUMBER = "NUMBER"
    UNIT_INTERVAL = "UNIT_INTERVAL"
    PERCENTAGE = "PERCENTAGE"
    INTEGER = "INTEGER"
    INTEGER_POSITIVE = "INTEGER_POSITIVE"
    INTEGER_NEGATIVE = "INTEGER_NEGATIVE"
    INTEGER_ZERO_OR_POSITIVE = "INTEGER_ZERO_OR_POSITIVE"
    TRACKER_ASSOCIATE = "TRACKER_ASSOCIATE"
    USERNAME = "USERNAME"
    COORDINATE = "COORDINATE"
    ORGANISATION_UNIT = "ORGANISATION_UNIT"
    REFERENCE = "REFERENCE"
    AGE = "AGE"
    URL = "URL"
    FILE_RESOURCE = "FILE_RESOURCE"
    IMAGE = "IMAGE"
    GEOJSON = "GEOJSON"

    @property
    def is_numeric(self) -> bool:
        """True for the number and integer families."""
        return self in _NUMERIC

    @property
    def is_integer(self) -> bool:
        """True for the integer family."""
        return self in _INTEGER


_INTEGER = frozenset(
    {
        ValueType.INTEGER,
        ValueType.INTEGER_POSITIVE,
        ValueType.INTEGER_NEGATIVE,
        ValueType.INTEGER_ZERO_OR_POSITIVE,
        ValueType.PERCENTAGE,
    }
)
_NUMERIC = _INTEGER | {ValueType.NUMBER, ValueType.UNIT_INTERVAL}

_NUMBER = re.compile(r"^(-?0|-?[1-9]\d*)(\.\d+)?\Z", re.ASCII)
_INTEGER_RE = re.compile(r"^(0|-?[1-9]\d*)\Z", re.ASCII)
_POSITIVE = re.compile(r"^[1-9]\d*\Z", re.ASCII)
_ZERO_OR_POSITIVE = re.compile(r"^(0|[1-9]\d*)\Z", re.ASCII)
_NEGATIVE = re.compile(r"^-[1-9]\d*\Z", re.ASCII)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}\Z", re.ASCII)
_DATETIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?\Z"
)
_TIME = re.compile(r"^([01]?\d|2[0-3]):[0-5]\d\Z", re.ASCII)
_LETTER = re.compile(r"^[^\W\d_]$")
_PHONE = re.compile(r"^[0-9+()#.\s/ext-]{6,50}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_COORDINATE = re.compile(r"^\[\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\]\Z", re.ASCII)
_BOOLEAN_ALIASES = {"true": "true", "false": "false", "1": "true", "0": "false", "t": "true", "f": "false"}


class ValueConversionError(ConnectorError):
    """A FHIR value cannot become a valid DHIS2 value of the requested type."""

    def __init__(self, value_type: ValueType, key: str) -> None:
        super().__init__(f"{value_type.value}: {key}")
        self.value_type = value_type
        self.key = key  # DHIS2's failure key, e.g. ``value_not_numeric``


def _valid_date(text: str) -> bool:
    if not _DATE.match(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _valid_datetime(text: str) -> bool:
    match = _DATETIME.match(text)
    if match is None:
        return False
    if not _valid_date(match.group(1)):
        return False
    hour, minute, second = int(match.group(2)), int(match.group(3)), int(match.group(4) or 0)
    return hour < 24 and minute < 60 and second < 60


def _int_in_range(text: str) -> bool:
    return _INT_MIN <= int(text) <= _INT_MAX


def _check_number(value: str, value_type: ValueType) -> str | None:
    if value_type is ValueType.NUMBER:
        if len(value) >= 250 or not _NUMBER.match(value) or not math.isfinite(float(value)):
            return "value_not_numeric"
        return None
    if value_type is ValueType.UNIT_INTERVAL:
        if not _NUMBER.match(value) or not 0 <= float(value) <= 1:
            return "value_not_unit_interval"
        return None
    if value_type is ValueType.PERCENTAGE:
        if not _INTEGER_RE.match(value) or not 0 <= int(value) <= 100:
            return "value_not_percentage"
        return None
    rules = {
        ValueType.INTEGER: (_INTEGER_RE, "value_not_integer"),
        ValueType.INTEGER_POSITIVE: (_POSITIVE, "value_not_positive_integer"),
        ValueType.INTEGER_NEGATIVE: (_NEGATIVE, "value_not_negative_integer"),
        ValueType.INTEGER_ZERO_OR_POSITIVE: (_ZERO_OR_POSITIVE, "value_not_zero_or_positive_integer"),
    }
    pattern, key = rules[value_type]
    if not pattern.match(value) or not _int_in_range(value):
        return key
    return None


def _check_coordinate(value: str) -> str | None:
    match = _COORDINATE.match(value)
    if match is None:
        return "value_not_coordinate"
    lng, lat = float(match.group(1)), float(match.group(2))
    if not (-180 <= lng <= 180 and -90 <= lat <= 90):
        return "value_not_coordinate"
    return None


def _check_url(value: str) -> str | None:
    try:
        parsed = urlparse(value)
    except ValueError:  # an unclosed IPv6 bracket
        return "value_not_url"
    if parsed.scheme not in ("http", "https", "ftp") or not parsed.netloc:
        return "value_not_url"
    return None


_SIMPLE_CHECKS: dict[ValueType, tuple[Callable[[str], bool], str]] = {
    ValueType.BOOLEAN: (lambda v: v.lower() in ("true", "false"), "value_not_bool"),
    ValueType.TRUE_ONLY: (lambda v: v.lower() == "true", "value_not_true_only"),
    ValueType.DATE: (_valid_date, "value_not_valid_date"),
    # Tracker checks AGE as a date-time while the docs describe a date of birth; accept both.
    ValueType.AGE: (lambda v: _valid_date(v) or _valid_datetime(v), "value_not_valid_date"),
    ValueType.DATETIME: (_valid_datetime, "value_not_valid_datetime"),
    ValueType.TIME: (lambda v: bool(_TIME.match(v)), "value_not_valid_time"),
    ValueType.LETTER: (lambda v: bool(_LETTER.match(v)), "value_not_valid_letter"),
    ValueType.PHONE_NUMBER: (lambda v: bool(_PHONE.match(v)), "value_not_valid_phone_number"),
    ValueType.EMAIL: (lambda v: bool(_EMAIL.match(v)), "value_not_valid_email"),
    ValueType.COORDINATE: (lambda v: _check_coordinate(v) is None, "value_not_coordinate"),
    ValueType.URL: (lambda v: _check_url(v) is None, "value_not_url"),
}


def check_value(value: str | None, value_type: ValueType | str) -> str | None:
    """DHIS2's failure key for ``value`` under ``value_type``, or None when it is valid."""
    vtype = ValueType(value_type)
    if value is None or value.strip() == "":
        return None
    if len(value) > MAX_VALUE_LENGTH:
        return "value_length_greater_than_max_length"
    if vtype.is_numeric:
        return _check_number(value, vtype)
    rule = _SIMPLE_CHECKS.get(vtype)
    if rule is None:
        return None  # free text, references and file UIDs have no format of their own
    predicate, key = rule
    return None if predicate(value) else key


def normalize_boolean(value: str, value_type: ValueType | str) -> str:
    """The boolean spelling aggregate import stores (``1``/``t``/``True`` → ``true``)."""
    vtype = ValueType(value_type)
    if vtype not in (ValueType.BOOLEAN, ValueType.TRUE_ONLY):
        return value
    return _BOOLEAN_ALIASES.get(value.strip().lower(), value)


def _decimal_text(number: Decimal) -> str:
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _number_text(value: object, vtype: ValueType) -> str:
    if isinstance(value, bool):
        raise ValueConversionError(vtype, "value_not_numeric")
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise ValueConversionError(vtype, "value_not_numeric") from exc
    if not number.is_finite():
        raise ValueConversionError(vtype, "value_not_numeric")
    if vtype.is_integer:
        if number != number.to_integral_value():
            raise ValueConversionError(vtype, _integer_key(vtype))
        number = number.to_integral_value()
    return _decimal_text(number)


def _integer_key(vtype: ValueType) -> str:
    return {
        ValueType.INTEGER: "value_not_integer",
        ValueType.INTEGER_POSITIVE: "value_not_positive_integer",
        ValueType.INTEGER_NEGATIVE: "value_not_negative_integer",
        ValueType.INTEGER_ZERO_OR_POSITIVE: "value_not_zero_or_positive_integer",
        ValueType.PERCENTAGE: "value_not_percentage",
    }[vtype]


def _date_text(value: object, vtype: ValueType) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    text = str(value).strip()
    # FHIR date/dateTime: the calendar date is the first ten characters as written;
    # partial dates (year or year-month) cannot become a DHIS2 date.
    if len(text) >= 10 and _valid_date(text[:10]):
        return text[:10]
    raise ValueConversionError(vtype, "value_not_valid_date")


def _datetime_text(value: object, vtype: ValueType) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(timespec="milliseconds")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00.000"
    text = str(value).strip()
    if _valid_date(text):
        return f"{text}T00:00:00.000"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueConversionError(vtype, "value_not_valid_datetime") from exc
    # The wall-clock time where the record was made is kept; DHIS2 DATETIME values are local.
    return parsed.replace(tzinfo=None).isoformat(timespec="milliseconds")


def to_dhis2_value(value: object, value_type: ValueType | str) -> str:
    """Convert a FHIR/Python value to the string DHIS2 expects, then check it as DHIS2 would."""
    vtype = ValueType(value_type)
    if value is None:
        raise ValueConversionError(vtype, "value_missing")
    if vtype in (ValueType.BOOLEAN, ValueType.TRUE_ONLY):
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = normalize_boolean(str(value), vtype)
    elif vtype.is_numeric:
        text = _number_text(value, vtype)
    elif vtype in (ValueType.DATE, ValueType.AGE):
        text = _date_text(value, vtype)
    elif vtype is ValueType.DATETIME:
        text = _datetime_text(value, vtype)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    key = check_value(text, vtype)
    if key is not None:
        raise ValueConversionError(vtype, key)
    return text
