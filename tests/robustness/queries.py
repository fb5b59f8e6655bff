"""Hypothesis strategies for search query strings: parameters, modifiers, prefixes, chains and encodings.

Most drawn parameters are real ones for the type with a value of the parameter's own kind
(a date for a date parameter), so searches get past the parser and run SQL; the rest are
chains, ``_has``, result parameters and junk, sent with strict, loose or broken
percent-encoding and occasional raw separators.
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import strategies as st

from gateway.search.registry import default_registry
from tests.robustness.bodies import Draw, weird_text
from tests.robustness.seeds import FUZZ_TYPES, KNOWN_PATIENT_ID, KNOWN_SYSTEM, reference_params, search_params

PREFIXES = ["", "", "", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap", "xx", "EQ", "g"]
MODIFIERS = {
    "token": ["", "", "", ":not", ":missing", ":text", ":in", ":of-type"],
    "uri": ["", "", ":missing", ":below", ":above"],
    "string": ["", "", "", ":exact", ":contains", ":missing", ":text"],
    "date": ["", "", "", ":missing", ":exact"],
    "reference": ["", "", "", ":missing", ":Patient", ":Observation", ":Foo", ":identifier", ":Group"],
    "number": ["", "", ":missing", ":not"],
    "quantity": ["", "", ":missing", ":not"],
}
JUNK_MODIFIERS = [":iterate", ":sounds-like", ":", "::", ":MISSING"]
DATES = [
    "1980", "1980-05", "1980-05-17", "1980-05-17T10:00", "1980-05-17T10:00:00Z",
    "2024-03-01T10:00:00+01:00", "2024-03-01T10:00:00.123456789Z", "0001-01-01T00:00+01:00",
    "9999-12-31T23:59:59-01:00", "0000", "0001", "9999", "9999-12", "2024-13", "2024-02-30",
    "1980-05-17T25:00", "1980-05-17T10:00:00+14:00", "1980-05-17T10:00:00-12:00",
    "1980-05-17T10:00:00+99:59", "1980-05-17 10:00", "١٩٨٠", "1980\n", "now",
    "2024-03-01T10:00:00.1234567890123456789012345678901234567890Z",
]  # fmt: skip
NUMBERS = [
    "0", "1", "-1", "72.5", ".5", "5.", "1e3", "1e400", "-1e400", "1e-400", "NaN", "inf", "1_000", "٣", "²",
    "99999999999999999999999", "72.5|http://unitsofmeasure.org|kg", "72.5||kg", "|", "1|2|3|4",
]  # fmt: skip
TOKENS = [
    "female", f"{KNOWN_SYSTEM}|k1", f"{KNOWN_SYSTEM}|", "|k1", "|", "||", "a|b|c",
    "http://loinc.org|29463-7", "final", "29463-7",
]  # fmt: skip
REFERENCES = [
    f"Patient/{KNOWN_PATIENT_ID}", KNOWN_PATIENT_ID, "Patient/", "/", "Patient/x/_history/1",
    "http://example.org/fhir/Patient/x", "urn:uuid:00000000-0000-0000-0000-000000000000", "Foo/1", "a_b!",
    "Patient/" + "a" * 70, f"{KNOWN_SYSTEM}|k1",
]  # fmt: skip
COUNTS = [
    "0", "1", "2", "5", "1000", "100000", "-1", "1.5", " 5", "²", "١٢", "99999999999999999999999",
    "9223372036854775807", "9223372036854775808", "abc", "0x10", "+5", "9" * 5000,
]  # fmt: skip
SORTS = [
    "birthdate", "-birthdate", "family,-birthdate", "_id", "-_id", "_lastUpdated", "-_lastUpdated", ",",
    "-", "--birthdate", "birthdate:desc", "date", "-date", "subject", "value-quantity", "code", "name,name",
    "bogus", "_score", "-family,gender,_id",
]  # fmt: skip
INCLUDES = [
    "Observation:subject", "Observation:subject:Patient", "Observation:patient", "*", "Observation:*", "::",
    ":", "Patient:link:Patient", "Patient:general-practitioner", "Encounter:subject",
    "Observation:subject:Foo", "Foo:bar", "Patient", "Immunization:patient", "Condition:subject",
]  # fmt: skip
RESULT_VALUES = {
    "_count": COUNTS,
    "_offset": COUNTS,
    "_snapshot": COUNTS,
    "_sort": SORTS,
    "_include": INCLUDES,
    "_revinclude": INCLUDES,
    "_include:iterate": INCLUDES,
    "_revinclude:iterate": INCLUDES,
    "_summary": ["true", "false", "count", "text", "data", "TRUE", "", "bogus"],
    "_elements": [
        "name", "name,gender", "id", "meta", "resourceType", ",", "name.family", "*", "foo", "subject",
    ],  # fmt: skip
    "_total": ["none", "estimate", "accurate", "", "all"],
    "_format": ["json", "application/fhir+json", "xml", "text/html", ""],
    "_id": [KNOWN_PATIENT_ID, f"{KNOWN_PATIENT_ID},x", "a_b!", ",", "x" * 65, ""],
    "_lastUpdated": [
        f"{p}{d}" for p in ("", "gt", "le", "ap", "ne") for d in ("2020", "0001-01-01T00:00+01:00")
    ],
}
RESULT_KEYS = [
    *RESULT_VALUES, "_tag", "_profile", "_security", "_text", "_content", "_list", "_query", "_filter",
    "_type", "_has", "_sort:desc", "_totalMethod", "_since", "_pretty", "_contained",
]  # fmt: skip


def _typed_value(draw: Draw, ptype: str, modifier: str) -> str:
    if modifier in (":missing", ":MISSING"):
        return str(draw(st.sampled_from(["true", "false", "TRUE", "", "1"])))
    if ptype == "date":
        return str(draw(st.sampled_from(PREFIXES))) + str(
            draw(
                st.one_of(
                    st.sampled_from(DATES),
                    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
                    st.dates().map(str),
                )
            )
        )
    if ptype in ("number", "quantity"):
        return str(draw(st.sampled_from(PREFIXES))) + str(
            draw(st.one_of(st.sampled_from(NUMBERS), st.floats().map(repr), st.integers().map(str)))
        )
    if ptype in ("token", "uri"):
        return ",".join(
            draw(st.lists(st.one_of(st.sampled_from(TOKENS), weird_text), min_size=1, max_size=3))
        )
    if ptype == "reference":
        return ",".join(draw(st.lists(st.sampled_from(REFERENCES), min_size=1, max_size=3)))
    return str(draw(st.one_of(st.sampled_from(["Zo", "zoë", "ana", "a\\,b", "\\", "a\\", "%"]), weird_text)))


@st.composite
def search_pair(draw: Draw, rtype: str) -> tuple[str, str]:
    """One ``(name, value)``: mostly a real parameter with a value of its kind."""
    kind = draw(st.sampled_from(["param"] * 6 + ["chain", "has", "result", "result", "junk"]))
    params = default_registry().params(rtype)
    if kind == "param" and params:
        code = str(draw(st.sampled_from(sorted(params))))
        ptype = params[code].type
        usual = MODIFIERS.get(ptype, [""])
        modifier = str(
            draw(st.sampled_from(JUNK_MODIFIERS) if draw(st.integers(0, 7)) == 0 else st.sampled_from(usual))
        )
        return code + modifier, _typed_value(draw, ptype, modifier)
    if kind == "chain":
        head = str(draw(st.sampled_from(reference_params(rtype) or ["subject"])))
        target = str(draw(st.sampled_from(["", ":Patient", ":Observation", ":Foo", ":Group"])))
        inner_type = target[1:] or "Patient"
        inner = str(draw(st.sampled_from(search_params(inner_type) or ["name", "x"])))
        tail = str(draw(st.sampled_from(["", "", ".name", ".family", ":exact", ":missing", ".subject.name"])))
        inner_param = default_registry().get(inner_type, inner)
        value = _typed_value(draw, inner_param.type if inner_param else "string", tail)
        return f"{head}{target}.{inner}{tail}", value
    if kind == "has":
        source = str(draw(st.sampled_from(["Observation", "Encounter", "Condition", "Foo", ""])))
        known = source in FUZZ_TYPES
        ref = str(
            draw(st.sampled_from([*(reference_params(source) if known else []), "patient", "bogus", ""]))
        )
        inner = str(draw(st.sampled_from([*(search_params(source) if known else []), "x", ""])))
        extra = str(draw(st.sampled_from(["", "", ":missing", ":not", ":extra", ":_has:Patient:link:name"])))
        inner_param = default_registry().get(source, inner)
        value = _typed_value(draw, inner_param.type if inner_param else "string", extra)
        return f"_has:{source}:{ref}:{inner}{extra}", value
    if kind == "result":
        key = str(draw(st.sampled_from(RESULT_KEYS)))
        values = RESULT_VALUES.get(key)
        return key, str(draw(st.sampled_from(values))) if values else str(draw(weird_text))
    return str(draw(weird_text)), str(draw(weird_text))


def _encode(text: str, style: str) -> str:
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate goes out as invalid UTF-8
    if style == "strict":
        return quote(data, safe="")
    if style == "loose":
        return quote(data, safe=",|:/$@!*'()")
    return quote(data, safe="%+,|:/$@!*'()=;")  # "raw": lets broken escapes and separators through


RAW_JUNK = [
    "%", "%zz", "%ff", "%c3%28", "%ed%a0%80", "%00", "+", "&", "&&", "=", "==", ";", "%2", "%%", "%u00e9",
]  # fmt: skip


@st.composite
def search_queries(draw: Draw, rtype: str | None = None) -> tuple[str, bytes]:
    """``(resource type, query string bytes)`` for a search, with hostile encodings mixed in."""
    chosen = rtype or draw(st.sampled_from(FUZZ_TYPES))
    pairs = draw(st.lists(search_pair(chosen), max_size=5))
    if pairs and draw(st.integers(0, 4)) == 0:
        pairs.append(draw(st.sampled_from(pairs)))  # a repeated parameter
    parts: list[str] = []
    for key, value in pairs:
        style = draw(st.sampled_from(["strict", "loose", "loose", "loose", "raw"]))
        parts.append(f"{_encode(key, style)}={_encode(value, style)}")
        if draw(st.integers(0, 14)) == 0:
            parts.append(draw(st.sampled_from(RAW_JUNK)))
    return chosen, "&".join(parts).encode("ascii")
