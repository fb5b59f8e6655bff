"""Parsing source answers into FHIR-ready values, with errors that name the field.

Source apps send nearly everything as text (``"48.5"``, ``"yes"``, ``"2025-05-13"``); each
function here accepts the forms the shipped sources use and raises ``MappingError`` with the
source path and a (truncated) quote of the value for anything else. Nothing is guessed:
``"48,5"`` is an error, not 48.5 or 485.
"""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from gateway.jsonio import DecimalLiteral, number_of
from gateway.mapping.errors import MappingError, quote

__all__ = [
    "blank",
    "fail",
    "from_epoch",
    "to_epoch_ms",
    "human_name",
    "position",
    "to_boolean",
    "to_date",
    "to_datetime",
    "to_decimal",
    "to_integer",
    "to_text",
]


_TRUE = frozenset({"yes", "true", "y", "1"})
_FALSE = frozenset({"no", "false", "n", "0"})
_INT_RE = re.compile(r"^[+-]?\d{1,18}$")
_LONG_INT_RE = re.compile(r"^[+-]?\d{19,}$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
#: The texts that are JSON number literals as they stand (no sign, point or zero JSON refuses).
_JSON_NUMBER_RE = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")
#: "11,4": a decimal comma, as spreadsheets write numbers in French, Portuguese, Spanish...
_DECIMAL_COMMA_RE = re.compile(r"^[+-]?\d+,(\d+)$")
_PARTIAL_DATE_RE = re.compile(r"^\d{4}(?:-(?:0[1-9]|1[0-2]))?$")
#: Year, month and day without the zeros (2025-8-3): what some apps and spreadsheets write; the
#: order is ISO's, so it reads one way only.
_UNPADDED_DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_ISO_START_RE = re.compile(r"^\d{4}-\d{2}")
_FHIR_DATETIME_RE = re.compile(
    r"^\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)"
    r"(?:\.\d{1,9})?(?:Z|[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00))$"
)
_EPOCH_MIN, _EPOCH_MAX = -62135596800, 253402300799  # 0001-01-01 .. 9999-12-31
#: 1e11: as milliseconds 1973-03-03, as seconds the year 5138.
_MS_FLOOR = 100_000_000_000


def blank(value: Any) -> bool:
    """None, or a string that is empty or all spaces: an unanswered question."""
    return value is None or (type(value) is str and not value.strip())


def fail(path: str, value: Any, what: str) -> MappingError:
    """The error for a value that is not ``what``."""
    return MappingError(path, f"{quote(value)} is not {what}", code="value")


def to_text(value: Any, path: str) -> str:
    """A scalar as text (``true``/``false`` for booleans, no ``.0`` on whole numbers)."""
    vtype = type(value)
    if vtype is str:
        return value  # type: ignore[no-any-return]
    if vtype is bool:
        return "true" if value else "false"
    if vtype is int:
        return str(value)
    if vtype is float or isinstance(value, Decimal | DecimalLiteral):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    raise fail(path, value, "a text value")


#: The largest whole number ``integer`` gives (18 digits, as ``_INT_RE`` reads from text): larger
#: ones do not fit the 64 bits JSON writers and FHIR servers take (a float past them, or a long int
#: from the backfill's parser, would fail only when the resource is written).
_MAX_WHOLE = 10**18 - 1
_WHOLE_IN_RANGE = "a whole number of at most 18 digits"


def to_integer(value: Any, path: str) -> int:
    """A whole number from an int, a numeric text or an integral float."""
    vtype = type(value)
    if vtype is int:
        whole: int = value
    elif vtype is str and _INT_RE.match(value.strip()):
        return int(value)
    elif isinstance(value, float | Decimal) and math.isfinite(value) and float(value).is_integer():
        whole = int(value)
    elif vtype is str and _LONG_INT_RE.match(value.strip()):
        raise fail(path, value, _WHOLE_IN_RANGE)
    else:
        raise fail(path, value, "a whole number")
    if -_MAX_WHOLE <= whole <= _MAX_WHOLE:
        return whole
    raise fail(path, value, _WHOLE_IN_RANGE)


def to_decimal(value: Any, path: str) -> float | int:
    """A JSON number; whole numbers written without a point stay integers ("118" → 118); a decimal
    comma is read as a point ("11,4" → 11.4) unless three digits follow it ("1,234": refused)."""
    vtype = type(value)
    if vtype is int:
        if -_MAX_WHOLE <= value <= _MAX_WHOLE:
            return value  # type: ignore[no-any-return]
        number = float(value) if abs(value) < 10**308 else math.inf  # a long int from the backfill's parser
    elif vtype is DecimalLiteral:
        return value  # type: ignore[no-any-return]  # a source's 5.40 stays 5.40 in the resource
    elif vtype is float or isinstance(value, Decimal):
        number = float(value)
    elif vtype is str and _DECIMAL_RE.match(value.strip()):
        text = value.strip()
        if _INT_RE.match(text):
            return int(text)
        if _JSON_NUMBER_RE.match(text) and math.isfinite(float(text)):
            return number_of(text)  # "71.20" keeps its precision in the resource, as FHIR decimals do
        number = float(text)
    elif vtype is str and (comma := _DECIMAL_COMMA_RE.match(value.strip())):
        if len(comma.group(1)) == 3:  # "1,234": a thousands separator just as well
            raise MappingError(
                path, f"{quote(value)} is ambiguous: a decimal comma or a thousands separator", code="value"
            )
        number = float(value.strip().replace(",", "."))
    else:
        raise fail(path, value, "a number")
    if not math.isfinite(number):
        raise fail(path, value, "a finite number")
    return number


def to_boolean(value: Any, path: str) -> bool:
    """yes/no, true/false, y/n, 1/0 (any case) → bool."""
    vtype = type(value)
    if vtype is bool:
        return value  # type: ignore[no-any-return]
    if vtype is int and value in (0, 1):
        return bool(value)
    if vtype is str:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise fail(path, value, "yes/no or true/false")


_DATE = "a date (YYYY-MM-DD)"
_DATETIME = "an ISO 8601 date-time (YYYY-MM-DDThh:mm:ss, with a zone or taken as UTC)"


def to_date(value: Any, path: str) -> str:
    """An ISO date (or the date part of a date-time); partial dates (YYYY, YYYY-MM) allowed."""
    if type(value) is not str:
        raise fail(path, value, _DATE + _epoch_hint(value))
    text = value.strip()
    if _PARTIAL_DATE_RE.match(text):
        return text
    unpadded = _UNPADDED_DATE_RE.match(text)
    if unpadded is not None and len(text) < 10:
        try:
            return date(*map(int, unpadded.groups())).isoformat()
        except ValueError:
            raise fail(path, value, _DATE) from None
    try:
        if len(text) == 10:
            return date.fromisoformat(text).isoformat()
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise fail(path, value, _DATE) from None
    if len(text) >= 10 and text[:10] == parsed.date().isoformat():
        return text[:10]
    return parsed.date().isoformat()


#: ``date('excel')``: spreadsheet serial day numbers count from 1899-12-30 (Excel's 1900 system).
EXCEL_FORMAT = "excel"
_EXCEL_EPOCH = date(1899, 12, 30)
_DATE_PARTS = {"dd": ("%d", r"(?P<d>\d{1,2})"), "mm": ("%m", r"(?P<m>\d{1,2})"), "yyyy": ("%Y", r"(?P<y>\d{4})")}
_FORMAT_TOKEN_RE = re.compile(r"yyyy|dd|mm")


def date_pattern(fmt: str) -> re.Pattern[str] | None:
    """The pattern reading dates written as ``fmt`` (``dd/mm/yyyy``, ``mm-dd-yyyy``, ``yyyy.mm.dd``:
    each of dd, mm and yyyy once, between separators), ``None`` for ``excel``; ``ValueError`` says
    what is wrong with any other format."""
    if fmt == EXCEL_FORMAT:
        return None
    tokens = _FORMAT_TOKEN_RE.findall(fmt)
    if sorted(tokens) != ["dd", "mm", "yyyy"]:
        raise ValueError(f"date format {fmt!r} must hold dd, mm and yyyy once each (e.g. 'dd/mm/yyyy'), or be 'excel'")
    pieces = _FORMAT_TOKEN_RE.split(fmt)
    if any(not piece.strip() or any(ch.isalnum() for ch in piece) for piece in pieces[1:-1]) or pieces[0] or pieces[-1]:
        raise ValueError(f"date format {fmt!r}: separate dd, mm and yyyy by a sign such as / - . (e.g. 'dd/mm/yyyy')")
    regex = "".join(re.escape(piece) + (_DATE_PARTS[token][1] if token else "")
                    for piece, token in zip(pieces, [*tokens, ""], strict=True))
    return re.compile(f"^{regex}$")


def to_date_as(value: Any, path: str, fmt: str, pattern: re.Pattern[str] | None) -> str:
    """An ISO date from a date written as ``fmt`` (see ``date_pattern``) or as a spreadsheet serial
    day number (``excel``); an ISO date (YYYY-MM-DD...) is read as ``date`` reads it."""
    if type(value) is str and _ISO_START_RE.match(value.strip()):
        return to_date(value, path)
    if pattern is None:
        return _excel_date(value, path)
    if type(value) is not str:
        raise fail(path, value, f"a date written {fmt}")
    found = pattern.match(value.strip())
    if found is None:
        raise fail(path, value, f"a date written {fmt}")
    try:
        return date(int(found["y"]), int(found["m"]), int(found["d"])).isoformat()
    except ValueError:
        raise fail(path, value, f"a date written {fmt} (no such day)") from None


def _excel_date(value: Any, path: str) -> str:
    number = _number(value, path, "a spreadsheet date serial number (days since 1899-12-30)")
    # 1 is 1900-01-01 (Excel's phantom 1900-02-29 aside); 2,958,465 is 9999-12-31. A fraction is a time of day.
    if not math.isfinite(number) or not 1 <= number < 2_958_466:
        raise fail(path, value, "a spreadsheet date serial number in range (1 to 2958465)")
    return (_EXCEL_EPOCH + timedelta(days=math.floor(number))).isoformat()


def to_datetime(value: Any, path: str) -> str:
    """A FHIR dateTime; a time without zone is taken as UTC."""
    if type(value) is not str:
        raise fail(path, value, _DATETIME + _epoch_hint(value))
    text = value.strip()
    if len(text) <= 10:
        try:
            return to_date(text, path)
        except MappingError:
            raise fail(path, value, _DATETIME) from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise fail(path, value, _DATETIME) from None
    if parsed.tzinfo is None:
        # Naive times are UTC in the sources we know (Kobo _submission_time, CommCare metadata).
        parsed = parsed.replace(tzinfo=UTC)
        text = text + "Z"
    if _FHIR_DATETIME_RE.match(text):
        return text
    return _format_instant(parsed)


def _epoch_hint(value: Any) -> str:
    """For a number where a date was expected: the converters that read one."""
    if type(value) in (int, float, DecimalLiteral):
        return "; a time in milliseconds or seconds since 1970 reads with | epoch_ms or | epoch_s"
    return ""


def _format_instant(moment: datetime) -> str:
    timespec = "milliseconds" if moment.microsecond % 1000 == 0 else "microseconds"
    if moment.microsecond == 0:
        timespec = "seconds"
    text = moment.isoformat(timespec=timespec)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _number(value: Any, path: str, what: str) -> float:
    """A number given as one, or as decimal text; else a mapping error saying ``what`` was expected."""
    vtype = type(value)
    if vtype is str and _DECIMAL_RE.match(value.strip()):
        return float(value)
    if vtype is int or vtype is float or isinstance(value, Decimal | DecimalLiteral):
        return float(value)
    raise fail(path, value, what)


def from_epoch(value: Any, path: str, scale: int) -> str:
    """A date-time from seconds (``scale`` 1) or milliseconds (1000) since 1970."""
    number = _number(value, path, "a timestamp number")
    # Seconds and milliseconds since 1970 differ a thousandfold: each read as the other lands in
    # January 1970 or after the year 5000, never on a date a CHW app records.
    if scale == 1000 and 0 <= number < _MS_FLOOR:
        raise fail(path, value, "milliseconds since 1970 (it reads as a moment of 1973 or before: seconds? use"
                                " epoch_s)")
    if scale == 1 and number >= _MS_FLOOR:
        raise fail(path, value, "seconds since 1970 (it reads as a moment after the year 5000: milliseconds? use"
                                " epoch_ms)")
    seconds = number / scale
    if not math.isfinite(seconds) or not _EPOCH_MIN <= seconds <= _EPOCH_MAX:
        raise fail(path, value, "a timestamp in range")
    return _format_instant(datetime.fromtimestamp(round(seconds, 3), tz=UTC))


def to_epoch_ms(value: Any, path: str) -> int:
    """Milliseconds since 1970 from an ISO date-time (no zone: UTC); the inverse of ``from_epoch``."""
    return round(epoch_seconds(value, path) * 1000)


def epoch_seconds(value: Any, path: str) -> float:
    """Seconds since 1970 (to the microsecond) from an ISO date or date-time (no zone: UTC; a
    partial date: its first moment)."""
    text = to_datetime(value, path)
    if len(text) <= 10:  # a (partial) date: its first moment
        text += "-01-01"[len(text) - 4 :] + "T00:00:00Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


#: Words that belong to the name part after them: family-name particles ("van der Berg",
#: "dos Santos", "bin Ali") and Haitian Creole "Ti" ("little"), part of a given name ("Ti Jozèf").
NAME_PARTICLES = frozenset(
    {"al", "bin", "binti", "da", "das", "de", "del", "della", "der", "di", "do", "dos", "du",
     "el", "ibn", "la", "le", "ten", "ter", "van", "von", "ti"}
)
NAME_ORDERS = ("given_first", "family_first", "text_only")


def _name_parts(words: list[str]) -> list[str]:
    """Join each particle with the word after it: ["Ti", "Jozèf"] → ["Ti Jozèf"]."""
    parts: list[str] = []
    pending: list[str] = []
    for word in words:
        pending.append(word)
        if word.lower() not in NAME_PARTICLES:
            parts.append(" ".join(pending))
            pending = []
    if pending:
        parts.append(" ".join(pending))
    return parts


def human_name(value: Any, path: str, order: str = "given_first") -> dict[str, Any]:
    """A HumanName from a full name. ``given_first`` (default): the last part is the family
    name; ``family_first``: the first part is ("Uwimana Claudine"); ``text_only``: only
    ``text``. A particle joins the word after it ("van der Berg", "Ti Jozèf"). Whatever the
    order, a name written "Family, Given" (registers, HL7 v2 habits) says which part is which."""
    words = to_text(value, path).split()
    name: dict[str, Any] = {"text": " ".join(words)}
    if order == "text_only":
        return name
    family, comma, given = " ".join(words).partition(",")
    if comma and family.strip() and "," not in given:
        name["family"] = family.strip()
        if given.strip():
            name["given"] = _name_parts(given.split())
        return name
    parts = _name_parts(words)
    if len(parts) == 1:
        name["given"] = parts
    elif order == "family_first":
        name["family"] = parts[0]
        name["given"] = parts[1:]
    else:
        name["family"] = parts[-1]
        name["given"] = parts[:-1]
    return name


#: Marks a birth date worked out from an age (on ``Patient._birthDate``). R4 has no core
#: extension for this; national guides define their own, so it is a local URL.
ESTIMATED_DATE_EXTENSION = "urn:chw-gateway:extension:birth-date-estimated"
AGE_UNITS = ("years", "months", "weeks", "days")


def birth_date_from_age(on: Any, age: Any, unit: str, path: str) -> str:
    """The estimated birth date of someone ``age`` ``unit`` old on the date ``on``.

    A year or month step from 29 February (or the 31st) lands on the month's last day."""
    day = to_date(on, path)
    if len(day) != 10:
        raise fail(path, on, "a full date to count the age back from")
    reference = date.fromisoformat(day)
    amount = to_decimal(age, path)
    if amount < 0 or amount > 150 * 366:
        raise fail(path, age, "an age")
    if unit in ("weeks", "days"):
        return (reference - timedelta(days=int(amount * (7 if unit == "weeks" else 1)))).isoformat()
    months = int(amount * 12) if unit == "years" else int(amount)
    year, month = divmod(reference.year * 12 + reference.month - 1 - months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(reference.day, last)).isoformat()


def position(value: Any, path: str) -> dict[str, float]:
    """Location.position from "lat lon [alt acc]", a GeoJSON Point or {latitude, longitude}."""
    lat: Any
    lon: Any
    alt: Any = None
    if type(value) is str:
        what = "a 'lat lon [alt acc]' geopoint"
        parts = value.split()
        if len(parts) < 2:
            raise fail(path, value, what)
        lat, lon = parts[0], parts[1]
        alt = parts[2] if len(parts) > 2 else None
    elif type(value) is dict and value.get("type") == "Point":
        what = "a GeoJSON Point"
        coordinates = value.get("coordinates")
        if type(coordinates) is not list or len(coordinates) < 2:
            raise fail(path, value, what)
        lon, lat = coordinates[0], coordinates[1]  # GeoJSON is lon-lat
        alt = coordinates[2] if len(coordinates) > 2 else None
    elif type(value) is dict and "latitude" in value and "longitude" in value:
        what = "a geopoint"
        lat, lon, alt = value["latitude"], value["longitude"], value.get("altitude")
    else:
        raise fail(path, value, "a geopoint")
    try:
        position = {"longitude": to_decimal(lon, path), "latitude": to_decimal(lat, path)}
        altitude = None if blank(alt) else to_decimal(alt, path)
    except MappingError:
        # The whole value, not the piece that failed: "'a' is not a number" for "not a gps" named nothing sent.
        raise fail(path, value, what) from None
    if not (-90 <= position["latitude"] <= 90 and -180 <= position["longitude"] <= 180):
        raise fail(path, value, "a geopoint on Earth")
    if altitude is not None:
        position["altitude"] = altitude
    return position
