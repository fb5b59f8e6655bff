"""Hypothesis strategies for hostile request parts: JSON values, mutated resources, bodies, headers, paths.

Everything drawn here (and in ``queries``/``bundles``) is deterministic under
``derandomize=True``: no ``uuid4()`` or clock reads happen while drawing, so a failing
example replays exactly. Strategies lean towards nearly-valid input (one thing wrong),
which reaches deeper into the gateway than noise does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from tests.robustness.seeds import (
    ALL_TYPES,
    FUZZ_TYPES,
    KNOWN_OBSERVATION_ID,
    KNOWN_PATIENT_ID,
    KNOWN_SYSTEM,
    seed,
)

Json = Any
Draw = Callable[..., Any]

# -- JSON values ---------------------------------------------------------------------------

NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\x7f", "\u200b", "\u202e", "\ufeff", "Zoë", "ﬁ", "²", "١٩٨٠", "\U0001f600",
    "\ud800", "\udfff", "\\", '"', "'", "%", "%00", "%ff", "\n", "\r\n", "\t", "<script>", "' OR 1=1 --",
    "1980-13-01", "2024-02-30", "2024-02-29T24:00:00Z", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00", "0000", "10000-01-01", "2024-03-01T10:00:00+99:99", "1e400", "-0", "NaN",
    "true", "null", "a" * 65, "urn:uuid:00000000-0000-0000-0000-000000000000", "Patient?identifier=x|y",
    "Patient/", "#", "#x", "http://", "Patient/../Observation/x", f"Patient/{KNOWN_PATIENT_ID}/_history/1",
    'W/"1"',
]  # fmt: skip

weird_text = st.one_of(
    st.sampled_from(NASTY_STRINGS),
    st.text(max_size=20),
    st.text(alphabet=st.characters(codec="utf-8", min_codepoint=0, max_codepoint=0x2FFFF), max_size=12),
)
huge_text = st.integers(1_000, 200_000).map(lambda n: "x" * n)
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**63, -(2**63) - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.1]),
)
json_leaf = st.one_of(st.none(), st.booleans(), numbers, weird_text)
json_value: st.SearchStrategy[Json] = st.recursive(
    json_leaf,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(weird_text, children, max_size=3),
    max_leaves=8,
)


def _nest(depth: int, as_list: bool) -> Json:
    value: Json = "deep"
    for _ in range(depth):
        value = [value] if as_list else {"x": value}
    return value


# Deeper than the gateway's JSON depth limit (64), shallow enough for the mutators' own recursion.
deep_value = st.builds(_nest, st.integers(10, 150), st.booleans())
# st.builds, not st.just: a shared empty container would later be mutated into itself.
wild_value = st.one_of(
    json_value, deep_value, huge_text, st.builds(list), st.builds(dict), st.builds(lambda: [None])
)


# -- mutated resources ---------------------------------------------------------------------


def _slots(node: Json, out: list[tuple[Json, Any]]) -> list[tuple[Json, Any]]:
    """Every (container, key-or-index) in a JSON tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((node, key))
            _slots(value, out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((node, index))
            _slots(value, out)
    return out


def _containers(node: Json, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            _containers(value, out)
    elif isinstance(node, list):
        for value in node:
            _containers(value, out)
    return out


MUTATIONS = ("replace", "delete", "add", "wrap", "unwrap", "type", "id", "stringify")
NEW_KEYS = [
    "foo", "_birthDate", "_active", "id", "meta", "resourceType", "contained", "extension",
    "modifierExtension", "text", "_name", "deceasedBoolean", "deceasedDateTime", "", "_", "__proto__",
]  # fmt: skip


@st.composite
def mutate(draw: Draw, doc: Json, max_mutations: int = 3) -> Json:
    """Apply up to ``max_mutations`` random edits to ``doc`` (in place) and return it."""
    for _ in range(draw(st.integers(1, max_mutations))):
        op = draw(st.sampled_from(MUTATIONS))
        slots = _slots(doc, [])
        if op == "add" or not slots:
            target = draw(st.sampled_from(_containers(doc, []) or [{}]))
            key = draw(st.one_of(st.sampled_from(NEW_KEYS), weird_text))
            target[key] = draw(wild_value)
            continue
        container, key = draw(st.sampled_from(slots))
        if op == "replace":
            container[key] = draw(wild_value)
        elif op == "delete":
            del container[key]
        elif op == "wrap":
            container[key] = [container[key]]
        elif op == "unwrap":
            value = container[key]
            container[key] = value[0] if isinstance(value, list) and value else None
        elif op == "stringify":
            container[key] = json.dumps(container[key])
        elif op == "type" and isinstance(doc, dict):
            doc["resourceType"] = draw(st.one_of(st.sampled_from(ALL_TYPES), weird_text, json_leaf))
        elif op == "id" and isinstance(doc, dict):
            doc["id"] = draw(st.one_of(weird_text, json_leaf, st.just(KNOWN_PATIENT_ID)))
    return doc


@st.composite
def resources(draw: Draw, rtype: str | None = None, mutated: bool | None = None) -> dict[str, Any]:
    """A seed resource, mutated unless ``mutated`` is False (random when None)."""
    chosen = rtype or draw(st.sampled_from(FUZZ_TYPES))
    doc = seed(chosen)
    if mutated if mutated is not None else draw(st.booleans()):
        doc = draw(mutate(doc))
    result: dict[str, Any] = doc
    return result


# -- raw bodies ----------------------------------------------------------------------------

BAD_BYTES = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80", b"\x00"]
BYTE_EDITS = (
    "invalid-utf8", "truncate", "bom", "trailing", "nan", "dupkey", "utf16", "latin1", "empty", "comment",
    "top-level",
)  # fmt: skip


def dumps(value: Json, ensure_ascii: bool = False) -> bytes:
    """JSON text of ``value`` as UTF-8; lone surrogates pass through as the bytes a sloppy client sends."""
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


@st.composite
def encoded(draw: Draw, value: Json) -> bytes:
    """``value`` as a request body, sometimes damaged at the byte level."""
    data = dumps(value, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 3)):  # three bodies in four are intact
        return data
    edit = draw(st.sampled_from(BYTE_EDITS))
    at = draw(st.integers(0, len(data)))
    if edit == "invalid-utf8":
        return data[:at] + bytes(draw(st.sampled_from(BAD_BYTES))) + data[at:]
    if edit == "truncate":
        return data[:at]
    if edit == "bom":
        return b"\xef\xbb\xbf" + data
    if edit == "trailing":
        return data + bytes(draw(st.sampled_from([b" x", b"}", b"\x00", b",", b"\n{}"])))
    if edit == "nan":
        return data.replace(b"true", b"NaN", 1).replace(b"72.5", b"Infinity", 1)
    if edit == "dupkey":
        return data.replace(b"{", b'{"resourceType": "Patient", "id": "dup", ', 1)
    if edit == "utf16":
        return json.dumps(value).encode("utf-16")
    if edit == "latin1":
        return json.dumps(value, ensure_ascii=False).encode("latin-1", "replace")
    if edit == "comment":
        return b"/* c */" + data
    if edit == "top-level":
        return bytes(draw(st.sampled_from([b"[]", b"null", b"1", b'"Patient"', b"[{}]", b"{}", b"true"])))
    return bytes(draw(st.sampled_from([b"", b" ", b"\n", b"\x00"])))


# -- headers -------------------------------------------------------------------------------

# What HTTP/1.1 lets a header value hold (visible ASCII, space, obs-text); anything else the
# client library refuses to send, so it can never reach the gateway.
_HEADER_CHARS = st.characters(
    codec="latin-1", min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"
)

JSON_TYPES = [
    "application/fhir+json", "application/json", "application/json+fhir",
    "application/fhir+json; charset=utf-8", "application/fhir+json;fhirVersion=4.0",
    "APPLICATION/FHIR+JSON", "application/json; charset=latin-1",
]  # fmt: skip
OTHER_TYPES = [
    "text/plain", "application/xml", "application/fhir+xml", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json-patch+json", "", ";", "*/*", "garbage",
    "application/", "text/html; charset=\xff",
]  # fmt: skip
content_types = st.one_of(
    st.sampled_from(JSON_TYPES),
    st.sampled_from(JSON_TYPES),
    st.sampled_from(JSON_TYPES),
    st.sampled_from(OTHER_TYPES),
)
accepts = st.sampled_from(
    [
        "application/fhir+json", "application/json", "*/*", "application/fhir+xml", "application/xml",
        "text/html", "application/fhir+json;q=0.1, application/xml;q=0.9", "", ",", "application/*",
        "image/png", "application/json+fhir", "garbage;;;q=x",
    ]  # fmt: skip
)
prefers = st.sampled_from(
    [
        "return=minimal", "return=representation", "return=OperationOutcome", "return=presentation",
        "handling=strict", "handling=lenient", "return=minimal, handling=strict", "respond-async", "=",
        ";;", 'return="minimal"', "return", "RETURN=MINIMAL", "wait=10",
    ]  # fmt: skip
)
etags = st.one_of(
    st.sampled_from(
        [
            'W/"1"', 'W/"2"', '"1"', "1", 'W/"999999"', 'W/"99999999999999999999999"', "*", "", 'W/""',
            "W/", 'W/"-1"', 'W/"1.0"', 'W/"\xb2"', 'W/"\u0661"', "garbage", 'W/"1", W/"2"',
        ]  # fmt: skip
    ),
    st.text(alphabet=_HEADER_CHARS, max_size=12),
)
if_none_exists = st.sampled_from(
    [
        f"identifier={KNOWN_SYSTEM}|k1", f"identifier={KNOWN_SYSTEM}|nobody", "identifier=", "bogus=1", "",
        "_id=" + KNOWN_PATIENT_ID, "birthdate=notadate", "family:sounds-like=x", "?", "&&&", "_count=2",
        "identifier=%ff", "name=\xe9", "_has:Observation:patient:code=29463-7",
    ]  # fmt: skip
)
header_text = st.text(alphabet=_HEADER_CHARS, max_size=30)


def header_bytes(value: str) -> bytes:
    """A header value as the latin-1 bytes HTTP carries (no edge whitespace: clients cannot send it)."""
    return value.strip().encode("latin-1", "replace")


@st.composite
def fhir_headers(draw: Draw) -> list[tuple[bytes, bytes]]:
    """A random mix of the headers FHIR interactions look at."""
    pool: dict[str, st.SearchStrategy[str]] = {
        "If-Match": etags,
        "If-None-Match": etags,
        "If-None-Exist": if_none_exists,
        "If-Modified-Since": st.sampled_from(["Tue, 01 Jan 2030 00:00:00 GMT", "garbage", ""]),
        "Prefer": prefers,
        "Accept": accepts,
        "Content-Type": content_types,
        "X-Forwarded-Host": st.sampled_from(["example.org", "", "a b", "x:99999"]),
        "X-Forwarded-Proto": st.sampled_from(["https", "gopher", ""]),
        "Accept-Charset": st.sampled_from(["utf-8", "latin-1", "*"]),
        "X-Junk": header_text,
    }
    chosen = draw(st.lists(st.sampled_from(sorted(pool)), unique=True, max_size=3))
    return [(name.encode(), header_bytes(draw(pool[name]))) for name in chosen]


# -- paths ---------------------------------------------------------------------------------

TYPE_SEGMENTS = [
    "Patient", "Observation", "Encounter", "Foo", "patient", "Bundle", "Binary", "metadata", "_history", "",
    "%50atient",
]  # fmt: skip
SEGMENTS = [
    "Patient", "Observation", "Foo", "patient", "metadata", "_history", "_search", "$everything",
    "$validate", "_history", "1", "0", "99999999999999999999", "%D9%A1", "%C2%B2", "a_b!", "x" * 65,
    KNOWN_PATIENT_ID, KNOWN_OBSERVATION_ID, "%2F", "%00", "%ff", "..", ".", "%2e%2e", "~", "*", "-", "",
    "fhir", "Patient;x=1", "%20",
]  # fmt: skip
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "PROPFIND"]


@st.composite
def paths(draw: Draw) -> bytes:
    """A raw path under ``[base]`` built from FHIR-ish and hostile segments."""
    first = draw(st.sampled_from(TYPE_SEGMENTS))
    segments = [first, *draw(st.lists(st.sampled_from(SEGMENTS), max_size=4))]
    path = "/" + "/".join(segments)
    return path.encode("ascii")
