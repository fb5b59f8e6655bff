"""Hypothesis strategies for batch/transaction Bundles and JSON Patch documents.

Most entries are well-formed (a method with a URL that fits it, a valid resource whose
references point at other entries, the fixture patient or a conditional reference), so
whole transactions succeed often enough to exercise ordering, ``urn:uuid`` rewriting,
``ifNoneExist`` and conditional updates; the others carry one hostile part.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.robustness.bodies import (
    Draw,
    Json,
    etags,
    if_none_exists,
    json_leaf,
    json_value,
    mutate,
    resources,
)
from tests.robustness.seeds import FUZZ_TYPES, KNOWN_OBSERVATION_ID, KNOWN_PATIENT_ID, KNOWN_SYSTEM, seed

BAD_METHODS: list[Any] = ["PATCH", "HEAD", "post", "TRACE", None, 1, {"method": "GET"}, ["GET"], True]
IDS = ["fuzz-a", "fuzz-b", "fuzz-c", KNOWN_PATIENT_ID, KNOWN_OBSERVATION_ID]
KNOWN_REFS = [f"Patient?identifier={KNOWN_SYSTEM}|k1", f"Patient/{KNOWN_PATIENT_ID}"]
BAD_REFS = [
    "Patient?identifier=none|x", "Patient?", "Foo?x=1", "Patient?bogus=1", "Patient?birthdate=2024-13",
    "urn:uuid:ffffffff-0000-0000-0000-000000000000", "Patient/missing", "#contained", "urn:oid:1.2",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class BundleShape:
    """A drawn Bundle and what the test needs to know about it."""

    body: Json
    kind: Any
    entries: int


def _patch_binary(ops: Json) -> dict[str, Any]:
    data = base64.b64encode(json.dumps(ops).encode()).decode()
    return {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data}


JSON_PATCHES: list[Json] = [
    [{"op": "replace", "path": "/gender", "value": "male"}],
    [{"op": "test", "path": "/gender", "value": "other"}], [{"op": "remove", "path": "/nothing"}],
    [{"op": "replace", "path": "/id", "value": "other"}],
    [{"op": "add", "path": "/name/99", "value": {"family": "x"}}],
    [{"op": "move", "from": "/name", "path": "/name/0"}],
    [{"op": "copy", "from": "/identifier/0", "path": "/identifier/-"}], [{"op": "bogus"}], [{"path": "/x"}],
    [{"op": "add", "path": "", "value": {"resourceType": "Patient"}}],
    [{"op": "add", "path": "/birthDate", "value": "not-a-date"}],
    [{"op": "replace", "path": "/active", "value": "true"}], [{"op": 1, "path": 2}],
    [{"op": "add", "path": "/name/0/given/-", "value": "x"}, {"op": "remove", "path": "/telecom"}],
    [["op", "add"]], [None], {"op": "add"}, [], "add",
]  # fmt: skip


@st.composite
def json_patches(draw: Draw) -> Json:
    """A JSON Patch document: from a list of tricky ones, or random operations."""
    pointers = ["/gender", "/name/0/family", "/name/-", "/name/0", "/identifier/5", "/", "", "/~1", "/~2",
                "/active", "/meta/versionId", "gender", "/name/00", "/birthDate"]
    values = st.one_of(st.sampled_from(["male", "1990-01-01", True, {"family": "x"}]), json_value)
    op = st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"]),
         "path": st.sampled_from(pointers)},
        optional={"value": values, "from": st.sampled_from(["/name", "/gender", "/x", ""])},
    )  # fmt: skip
    return draw(st.one_of(st.sampled_from(JSON_PATCHES), st.lists(op, max_size=4)))


@st.composite
def fhirpath_patches(draw: Draw) -> Json:
    """A FHIRPath Patch (a Parameters resource): plausible and broken operations, paths and values."""
    paths = ["Patient", "Patient.name", "Patient.name[0]", "Patient.name[0].given[1]", "Patient.name.family",
             "Patient.telecom.where(system = 'phone')", "Patient.birthDate", "Patient.active", "Patient.id",
             "Patient.contact", "Patient.deceased", "Patient.identifier", "Patient..x", "name", "", "Patient.name[99]",
             "Patient.extension('http://x.org/e')", "Patient.name.select(%context)", "Patient.descendants()",
             "Observation.value", "Patient.name.trace('x')"]  # fmt: skip
    values = st.one_of(
        st.sampled_from([{"valueString": "x"}, {"valueCode": "male"}, {"valueBoolean": True},
                         {"valueDate": "1990-01-01"}, {"valueHumanName": {"family": "Otieno"}}, {"valueInteger": 3},
                         {"valueString": ""},
                         {"part": [{"name": "name", "valueHumanName": {"family": "M"}}]}, {"part": []},
                         {"part": [{"name": "nope", "valueString": "x"}]}, {"valueQuantity": {"value": "x"}}]),
        json_value.map(lambda v: {"valueString": v}),
    )  # fmt: skip
    integers = st.one_of(st.integers(-2, 4), st.just(2**40), st.sampled_from(["1", None, 1.5]))

    def part(name: str, key: str, value: Any) -> dict[str, Any]:
        return {"name": name, key: value}

    @st.composite
    def well_formed(draw: Draw) -> Json:
        """An operation with the parts its type needs (it may still not fit the resource)."""
        kind = draw(st.sampled_from(["add", "insert", "delete", "replace", "move"]))
        parts: list[Any] = [part("type", "valueCode", kind), part("path", "valueString", draw(st.sampled_from(paths)))]
        if kind == "add":
            parts.append(part("name", "valueString", draw(st.sampled_from(
                ["identifier", "gender", "given", "contact", "deceased", "telecom", "nope"]))))  # fmt: skip
        if kind in ("add", "insert", "replace"):
            parts.append({"name": "value", **draw(values)})
        if kind == "insert":
            parts.append(part("index", "valueInteger", draw(st.integers(0, 3))))
        if kind == "move":
            parts += [part("source", "valueInteger", draw(st.integers(0, 2))),
                      part("destination", "valueInteger", draw(st.integers(0, 2)))]
        return {"name": "operation", "part": parts}

    @st.composite
    def anything(draw: Draw) -> Json:
        """Parts drawn at random: missing, repeated, of the wrong type, unknown."""
        parts: list[Any] = [{"name": "type", "valueCode": draw(st.sampled_from(
            ["add", "insert", "delete", "replace", "move", "upsert"]))}]  # fmt: skip
        if draw(st.integers(0, 9)):
            parts.append({"name": "path", "valueString": draw(st.sampled_from(paths))})
        if draw(st.booleans()):
            parts.append({"name": "name", "valueString": draw(st.sampled_from(["identifier", "given", "nope", ""]))})
        if draw(st.booleans()):
            parts.append({"name": "value", **draw(values)})
        for name in ("index", "source", "destination"):
            if draw(st.integers(0, 2)) == 0:
                parts.append({"name": name, "valueInteger": draw(integers)})
        if draw(st.integers(0, 9)) == 0:
            parts.append(draw(json_value))
        return {"name": draw(st.sampled_from(["operation"] * 9 + ["op"])), "part": parts}

    operation = st.one_of(well_formed(), well_formed(), well_formed(), anything())
    body: Json = {"resourceType": "Parameters", "parameter": draw(st.lists(operation, min_size=1, max_size=3))}
    return body


def _good_request(draw: Draw, rtype: str, full_url: str) -> dict[str, Any]:
    """An entry whose request fits its method (references are set later)."""
    method = str(draw(st.sampled_from(["POST", "POST", "POST", "PUT", "PUT", "GET", "DELETE"])))
    rid = str(draw(st.sampled_from(IDS)))
    conditional = f"{rtype}?identifier={KNOWN_SYSTEM}|{draw(st.sampled_from(['k1', 'k2', 'nobody']))}"
    url = {
        "POST": rtype,
        "PUT": draw(st.sampled_from([f"{rtype}/{rid}", conditional])),
        "GET": draw(
            st.sampled_from([f"{rtype}/{rid}", f"{rtype}?_count=2", conditional, f"{rtype}/{rid}/_history/1"])
        ),
        "DELETE": draw(st.sampled_from([f"{rtype}/{rid}", conditional])),
    }[method]
    request: dict[str, Any] = {"method": method, "url": url}
    entry: dict[str, Any] = {"fullUrl": full_url, "request": request}
    if method == "POST" and draw(st.integers(0, 2)) == 0:
        request["ifNoneExist"] = draw(
            st.sampled_from(
                [f"identifier={KNOWN_SYSTEM}|k1", f"identifier={KNOWN_SYSTEM}|k2", "identifier=none|x"]
            )
        )
    if method in ("POST", "PUT"):
        resource = seed(rtype)
        if method == "PUT" and "?" not in url:
            resource["id"] = rid
            if draw(st.integers(0, 4)) == 0:
                request["ifMatch"] = draw(st.sampled_from(['W/"1"', 'W/"2"']))
        if rtype == "Patient":
            resource["identifier"] = [{"system": KNOWN_SYSTEM, "value": draw(st.sampled_from(["k2", "k3"]))}]
        entry["resource"] = resource
    return entry


def _bad_entry(draw: Draw, base: str, rtype: str, full_urls: list[str]) -> dict[str, Any]:
    """An entry with at least one hostile part."""
    method = draw(st.sampled_from([*BAD_METHODS, "POST", "PUT", "DELETE", "GET"]))
    rid = draw(st.sampled_from([*IDS, "a_b!", "x" * 65]))
    url = draw(st.sampled_from([
        rtype, f"{rtype}/{rid}", f"{rtype}?identifier=none|x", f"{base}/{rtype}/{rid}",
        f"http://other.example/fhir/{rtype}/1", f"{rtype}/{rid}/_history/99999999999999999999",
        f"{rtype}/{rid}/_history/\u0661", f"/{rtype}", f"{rtype}/", "",
        "urn:uuid:00000000-0000-0000-0000-000000000001", f"{rtype}/$everything", "metadata",
        f"{rtype}?_count=\u00b2", f"{rtype}?birthdate=0001-01-01T00:00%2B01:00",
        f"{rtype}?_offset=99999999999999999999", f"{rtype}?bogus=1", f"{rtype}?",
        f"{rtype}/{rid}?_format=json", "Foo", "Bundle", 5,
    ]))  # fmt: skip
    request: dict[str, Any] = {"method": method, "url": url}
    if draw(st.integers(0, 3)) == 0:
        request["ifNoneExist"] = draw(st.one_of(if_none_exists, json_leaf))
    if draw(st.integers(0, 3)) == 0:
        request["ifMatch"] = draw(st.one_of(etags, json_leaf))
    entry: dict[str, Any] = {"request": request}
    kind = draw(st.sampled_from(["seed", "mutated", "patch", "none", "other"]))
    if kind in ("seed", "mutated"):
        entry["resource"] = draw(resources(rtype if rtype in FUZZ_TYPES else None, mutated=kind == "mutated"))
    elif kind == "patch":
        entry["resource"] = _patch_binary(draw(json_patches()))
    elif kind == "other":
        entry["resource"] = draw(json_value)
    full_url = draw(
        st.one_of(
            st.sampled_from(full_urls),
            st.none(),
            st.sampled_from([f"{base}/{rtype}/{rid}", "garbage", ""]),
            json_leaf,
        )
    )
    if full_url is not None:
        entry["fullUrl"] = full_url
    if draw(st.integers(0, 4)) == 0:
        request.pop(draw(st.sampled_from(["method", "url"])))
    if draw(st.integers(0, 6)) == 0:
        entry["request"] = draw(json_leaf)
    return entry


def _link(draw: Draw, entries: list[dict[str, Any]], targets: list[str], good: list[bool]) -> None:
    """Point each entry's subject/patient at another entry, the fixture patient, or something broken."""
    for entry, is_good in zip(entries, good, strict=True):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        pool = [*targets, *KNOWN_REFS] if is_good else [*targets, *KNOWN_REFS, *BAD_REFS]
        for field in ("subject", "patient"):
            if field in resource:
                resource[field] = {"reference": draw(st.sampled_from(pool))}


@st.composite
def bundles(draw: Draw, base: str) -> BundleShape:
    """A batch or transaction Bundle (mostly), with entries that refer to each other."""
    kind = draw(st.sampled_from(["transaction"] * 4 + ["batch"] * 2 + ["collection", "searchset", None, 7]))
    count = draw(st.integers(0, 5))
    full_urls = [
        f"urn:uuid:{u}"
        for u in draw(st.lists(st.uuids(), min_size=count + 1, max_size=count + 1, unique=True))
    ]
    good = [draw(st.integers(0, 5)) > 0 for _ in range(count)]
    entries = []
    for index, is_good in enumerate(good):
        rtype = draw(st.sampled_from(FUZZ_TYPES))
        if is_good:
            entries.append(_good_request(draw, rtype, full_urls[index]))
        else:
            entries.append(_bad_entry(draw, base, draw(st.sampled_from([rtype, "Foo", ""])), full_urls))
    targets = [str(e["fullUrl"]) for e in entries
               if isinstance(e.get("request"), dict) and e["request"].get("method") in ("POST", "PUT")
               and isinstance(e.get("fullUrl"), str)]  # fmt: skip
    _link(draw, entries, targets, good)
    for entry, is_good in zip(entries, good, strict=True):
        if not is_good and isinstance(entry.get("resource"), dict) and draw(st.booleans()):
            entry["resource"] = draw(mutate(entry["resource"], max_mutations=1))
    body: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "entry": entries}
    if kind is None:
        del body["type"]
    shape = draw(st.sampled_from(["ok"] * 12 + ["entry-object", "entry-items", "no-entry", "not-bundle"]))
    if shape == "entry-object":
        body["entry"] = {"request": {"method": "GET", "url": "Patient"}}
    elif shape == "entry-items":
        body["entry"] = [*entries, draw(json_leaf)]
    elif shape == "no-entry":
        del body["entry"]
    elif shape == "not-bundle":
        body["resourceType"] = draw(st.sampled_from(["Patient", "Parameters", "bundle"]))
    sent = body.get("entry")
    return BundleShape(body, kind, len(sent) if isinstance(sent, list) else 0)
