"""The smallest resource of any R4 type the gateway accepts, built from its element table.

Tests that pick resource types at random (the permission matrix) need a valid body for
types nobody wrote a fixture for. The mandatory elements come from the gateway's R4
element table (``gateway/r4/data/r4-elements.json``, the official R4 JSON schema); the
R4B models check a few more (``Task.status``, a choice like ``Immunization.occurrence[x]``),
so the body is offered to ``validate_resource`` and whatever it names as missing is filled
in, a few rounds at most.
"""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import gateway.r4
from gateway.errors import FhirError
from gateway.fhir import validate_resource

_XHTML = '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'
_PRIMITIVES: dict[str, Any] = {
    "boolean": True, "integer": 1, "positiveInt": 1, "unsignedInt": 0, "decimal": 1, "date": "2024-01-01",
    "dateTime": "2024-01-01", "instant": "2024-01-01T00:00:00Z", "time": "10:00:00", "uri": "urn:x",
    "url": "http://example.org", "canonical": "http://example.org/c", "oid": "urn:oid:1.2", "id": "x",
    "uuid": "urn:uuid:00000000-0000-4000-8000-000000000000", "base64Binary": "eA==", "xhtml": _XHTML,
}  # fmt: skip
_COMPLEX: dict[str, dict[str, Any]] = {
    "Reference": {"display": "x"}, "CodeableConcept": {"text": "x"}, "Coding": {"code": "x"},
    "Identifier": {"value": "x"}, "Period": {"start": "2024-01-01"}, "Quantity": {"value": 1},
    "Narrative": {"status": "generated", "div": _XHTML},
}  # fmt: skip
_INDEX = re.compile(r"\[\d+\]$")
_ROUNDS = 8


class NoMinimalResource(LookupError):
    """The builder could not satisfy the validator for this type (e.g. ``Evidence``: R4 and R4B differ)."""


@cache
def _table() -> dict[str, Any]:
    path = Path(gateway.r4.__file__).parent / "data" / "r4-elements.json"
    table: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return table


@cache
def _bindings() -> dict[str, Any]:
    path = Path(gateway.r4.__file__).parent / "data" / "r4-bindings.json"
    bindings: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return bindings


def _element_value(tname: str, name: str, spec: str) -> Any:
    """A value for element ``name`` of ``tname``: the first code of its required value set, if it has one."""
    url = _bindings()["elements"].get(tname, {}).get(name)
    codes = _bindings()["valueSets"].get(url) if url else None
    if codes and spec.removesuffix("[]") in _table()["primitives"]:
        return [codes[0]] if spec.endswith("[]") else codes[0]
    return _value(spec)


def _choice_names(tname: str, group: str) -> list[str]:
    props = _table()["types"][tname]["p"]
    return [p for p in props if p.startswith(group) and p[len(group):][:1].isupper()]


def _value(spec: str) -> Any:
    many = spec.endswith("[]")
    tname = spec.removesuffix("[]")
    value: Any
    if tname.startswith("#"):
        value = sorted(_table()["enums"][int(tname[1:])])[0]
    elif tname in _table()["primitives"]:
        value = _PRIMITIVES.get(tname, "x")
    else:
        value = copy.deepcopy(_COMPLEX.get(tname, {}))
        if not value:
            _fill_required(value, tname)
        if not value:  # FHIR JSON has no empty objects: give it any one primitive element
            props = _table()["types"][tname]["p"]
            name = next(p for p, s in sorted(props.items()) if p not in ("id", "extension", "modifierExtension")
                        and (s in _table()["primitives"] or s.startswith("#")))  # fmt: skip
            value[name] = _value(props[name])
    return [value] if many else value


def _fill_required(node: dict[str, Any], tname: str) -> None:
    entry = _table()["types"][tname]
    for prop in entry.get("r", ()):
        name = prop if prop in entry["p"] else _choice_names(tname, prop)[0]
        node[name] = _element_value(tname, name, entry["p"][name])


def _fill_missing(body: dict[str, Any], expression: str) -> bool:
    """Fill the element an issue's expression names as missing; True if something was added."""
    rtype = body["resourceType"]
    path = [_INDEX.sub("", step) for step in expression.split(".")[1:]]
    if not path:  # the model wants one of a choice group (``occurrence[x]``)
        added = False
        for group in _table()["types"][rtype].get("c", ()):
            names = _choice_names(rtype, group)
            if not any(n in body for n in names):
                body[names[0]] = _value(_table()["types"][rtype]["p"][names[0]])
                added = True
        return added
    node: Any = body
    tname = rtype
    for step in path[:-1]:
        tname = _table()["types"][tname]["p"][step].removesuffix("[]")
        node = node[step][0] if isinstance(node[step], list) else node[step]
    spec = _table()["types"][tname]["p"].get(path[-1])
    if spec is None or path[-1] in node:
        return False
    node[path[-1]] = _element_value(tname, path[-1], spec)
    return True


@cache
def _minimal(rtype: str) -> str:
    body: dict[str, Any] = {"resourceType": rtype}
    _fill_required(body, rtype)
    for _ in range(_ROUNDS):
        try:
            validate_resource(copy.deepcopy(body))
        except FhirError as exc:
            added = [_fill_missing(body, expr) for i in exc.issues() for expr in i.get("expression") or []]
            if not any(added):
                raise NoMinimalResource(f"{rtype}: {exc}") from exc
            continue
        return json.dumps(body)
    raise NoMinimalResource(f"{rtype}: still invalid after {_ROUNDS} rounds")


def minimal_resource(rtype: str) -> dict[str, Any]:
    """A fresh copy of the smallest valid ``rtype`` (``NoMinimalResource`` if none could be built)."""
    body: dict[str, Any] = json.loads(_minimal(rtype))
    return body


def reference_elements(rtype: str) -> list[str]:
    """``rtype``'s single ``Reference`` elements among ``subject``, ``patient`` and ``for``."""
    props = _table()["types"][rtype]["p"]
    return [name for name in ("subject", "patient", "for") if props.get(name) == "Reference"]
