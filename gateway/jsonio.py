"""JSON in and out that keeps FHIR decimal literals: ``5.40`` is read back as ``5.40``, not ``5.4``.

FHIR R4 decimals keep their precision, so what a client wrote is what it reads. orjson parses a
number into a float, which forgets trailing zeros, exponents and digits past the seventeenth.
``loads`` therefore looks at the raw bytes first: nearly every document has only numbers a float
gives back unchanged, and is parsed by orjson alone. A document with a number a float would
rewrite is parsed again with the standard library, and those numbers become ``DecimalLiteral``
(a float that remembers its text), so arithmetic, comparisons and search indexes see the value
while ``dumps`` writes the text. Every dump of something that may hold a client's value must go
through ``dumps``: orjson refuses a float subclass without our ``default``. (Integers stay
integers; ``-0`` is the one integer literal written differently, as ``0``.)
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

__all__ = ["DecimalLiteral", "JSONDecodeError", "dumps", "loads", "may_need_literals", "number_of"]

JSONDecodeError = orjson.JSONDecodeError

#: RFC 8259's number grammar: what a ``DecimalLiteral`` may hold, since ``dumps`` writes it verbatim.
_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class DecimalLiteral(float):
    """A JSON number a float would not write back as it came: its value, and its literal text."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> DecimalLiteral:
        """The number ``text`` (a JSON number literal), remembering ``text``."""
        if _LITERAL.fullmatch(text) is None:
            raise ValueError(f"not a JSON number literal: {text[:40]!r}")
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[DecimalLiteral], tuple[str]]:
        return (DecimalLiteral, (self.text,))  # copies and pickles keep the literal

    def __deepcopy__(self, memo: dict[int, Any]) -> DecimalLiteral:
        return self  # immutable, like a float


# The scan runs over a translation of the bytes that keeps only what tells numbers apart
# (digits, point, exponent, the punctuation around values) and drops whitespace, so that a
# number value is ``:`` then ``#`` or ``0``: two literal prefixes the regex engine finds fast.
# Strings become runs of ``x`` that never follow ``:`` (their quote is an ``x``), so dates and
# ids inside them do not look like numbers. Translated:
#   ``0`` -> ``0``; other digits, ``-`` and ``+`` -> ``#``; ``.`` -> ``.``; ``e``/``E`` -> ``e``;
#   ``:``, ``,`` and ``[`` (what precedes a value) -> ``:``; ``]`` and ``}`` -> ``}``; else ``x``.
_KEPT = {**dict.fromkeys(b"123456789-+", ord("#")), ord("0"): ord("0"), ord("."): ord("."), ord("e"): ord("e"),
         ord("E"): ord("e"), ord(":"): ord(":"), ord(","): ord(":"), ord("["): ord(":"), ord("]"): ord("}"),
         ord("}"): ord("}")}
_TABLE = bytes(_KEPT.get(byte, ord("x")) for byte in range(256))
_WHITESPACE = b" \t\r\n"

# After a number's first character, what makes orjson write its float differently:
#   - a fraction of two or more digits ending in 0 (5.40; 1.0 is written back as 1.0),
#   - five or more zeros right after the point (orjson writes 1e-6 for 0.000001),
#   - an exponent (1.50E2), or
#   - seventeen or more characters (a double is certain of 15 digits; integers past 64 bits).
# A false alarm only costs the slower parse; a miss would lose a literal, so this errs wide
# (the tests fuzz it against orjson's own output).
_AFTER_FIRST = rb"[0#]*(?:\.(?:[0#]+0[:}]|00000)|(?:\.[0#]+)?e)|[0#.]{16}"
_RISKY = (re.compile(rb":#(?:" + _AFTER_FIRST + rb")"), re.compile(rb":0(?:" + _AFTER_FIRST + rb")"))


def may_need_literals(data: bytes) -> bool:
    """Whether ``data`` may hold a number literal a float would not give back unchanged."""
    shape = data.translate(_TABLE, _WHITESPACE)
    if shape[:1] in (b"#", b"0"):
        return True  # a bare number as the whole document
    return any(pattern.search(shape) is not None for pattern in _RISKY)


def number_of(text: str) -> float | DecimalLiteral:
    """The float of a JSON number literal, or a ``DecimalLiteral`` where a float would write it otherwise."""
    value = float(text)
    return value if orjson.dumps(value) == text.encode() else DecimalLiteral(text)


def _integer(text: str) -> int | DecimalLiteral:
    value = int(text)
    # orjson writes integers of up to 64 bits; a longer one keeps its digits as a literal.
    return value if -(2**63) <= value < 2**64 else DecimalLiteral(text)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON as orjson does (same errors), keeping number literals a float would rewrite."""
    value = orjson.loads(data)  # validates: the second parse below only ever sees valid JSON
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if not may_need_literals(raw):
        return value
    try:
        return json.loads(raw, parse_float=number_of, parse_int=_integer)
    except RecursionError:
        # Deeper than the standard parser recurses (orjson allows 1024 levels; every endpoint
        # refuses far less): such a document keeps orjson's floats rather than failing here.
        return value


def _default(value: object) -> orjson.Fragment:
    if isinstance(value, DecimalLiteral):
        return orjson.Fragment(value.text)
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")


def dumps(value: Any, option: int | None = None) -> bytes:
    """Serialize with orjson, writing each ``DecimalLiteral`` as its literal text."""
    return orjson.dumps(value, default=_default, option=option)
