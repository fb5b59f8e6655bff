"""DHIS2 metadata query language: ``fields=`` selection, ``filter=`` and paging.

Supported subset (DHIS2 docs ``metadata.md``): field names, nested ``name[sub,fields]``,
``*``/``:all``/``:owner``, ``:identifiable``, ``:nameable``, exclusion ``!name`` and the
transformers ``~rename(x)``, ``~size``, ``~isEmpty``, ``~pluck(field)``. A reference
(``{"id": …}``) asked for with more than ``id`` is expanded to the referenced object, as
DHIS2 does. Filters: ``prop:op:value`` with dotted properties and the common operators;
several filters are ANDed unless ``rootJunction=OR``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dhis2_sandbox.errors import SandboxError

__all__ = ["FieldSpec", "FilterError", "apply_fields", "matches_filters", "parse_fields", "parse_filter"]

JsonObject = dict[str, Any]
Resolver = Callable[[str], JsonObject | None]

_IDENTIFIABLE = ("id", "name", "code", "displayName", "created", "lastUpdated")
_NAMEABLE = (*_IDENTIFIABLE, "shortName", "displayShortName", "description")


class FilterError(SandboxError):
    """A ``fields`` or ``filter`` expression DHIS2 would reject."""


@dataclass
class FieldSpec:
    """One selected property, with its sub-selection and transformers."""

    name: str
    children: list[FieldSpec] | None = None
    transformers: list[tuple[str, str | None]] = field(default_factory=list)
    exclude: bool = False


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
            if depth < 0:
                raise FilterError(f"unbalanced brackets in fields: {text!r}")
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise FilterError(f"unbalanced brackets in fields: {text!r}")
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


_TRANSFORMER = re.compile(r"~(\w+)(?:\(([^)]*)\))?")


def parse_fields(text: str) -> list[FieldSpec]:
    """Parse a ``fields`` expression into specs."""
    specs: list[FieldSpec] = []
    for part in _split_top(text):
        exclude = part.startswith("!")
        part = part.lstrip("!")
        children: list[FieldSpec] | None = None
        bracket = part.find("[")
        transformers: list[tuple[str, str | None]] = []
        if bracket >= 0:
            close = part.rfind("]")
            children = parse_fields(part[bracket + 1 : close])
            tail = part[close + 1 :]
            part = part[:bracket]
        else:
            tilde = part.find("~")
            tail = part[tilde:] if tilde >= 0 else ""
            part = part[:tilde] if tilde >= 0 else part
        transformers = [(m.group(1), m.group(2)) for m in _TRANSFORMER.finditer(tail)]
        specs.append(FieldSpec(part.strip(), children, transformers, exclude))
    return specs


def _expand_presets(specs: Sequence[FieldSpec], obj: Mapping[str, Any]) -> list[FieldSpec]:
    selected: dict[str, FieldSpec] = {}
    for spec in specs:
        if spec.exclude:
            continue
        if spec.name in ("*", ":all", ":owner"):
            names: Sequence[str] = list(obj.keys())
        elif spec.name == ":identifiable":
            names = _IDENTIFIABLE
        elif spec.name == ":nameable":
            names = _NAMEABLE
        else:
            selected[spec.name] = spec
            continue
        for name in names:
            selected.setdefault(name, FieldSpec(name))
    for spec in specs:
        if spec.exclude:
            selected.pop(spec.name, None)
    return list(selected.values())


def _transform(value: Any, transformers: list[tuple[str, str | None]], name: str) -> tuple[str, Any]:
    for transformer, arg in transformers:
        if transformer == "rename" and arg:
            name = arg
        elif transformer == "size":
            value = len(value) if isinstance(value, list | str | dict) else 0
        elif transformer == "isEmpty":
            value = not value
        elif transformer == "isNotEmpty":
            value = bool(value)
        elif transformer == "pluck":
            key = arg or "id"
            value = [item.get(key) for item in value] if isinstance(value, list) else value
        else:
            raise FilterError(f"unsupported field transformer: {transformer}")
    return name, value


def _select(value: Any, children: list[FieldSpec], resolve: Resolver) -> Any:
    if isinstance(value, list):
        return [_select(item, children, resolve) for item in value]
    if not isinstance(value, Mapping):
        return value
    wanted = {spec.name for spec in children if not spec.exclude}
    if "id" in value and wanted - {"id"} and set(value.keys()) <= {"id"}:
        full = resolve(str(value["id"]))
        if full is not None:
            value = full
    return apply_fields(value, children, resolve)


def apply_fields(obj: Mapping[str, Any], specs: Sequence[FieldSpec], resolve: Resolver) -> JsonObject:
    """Project ``obj`` onto ``specs``; missing properties are omitted, as DHIS2 omits nulls."""
    out: JsonObject = {}
    for spec in _expand_presets(specs, obj):
        if spec.name in obj:
            value = obj[spec.name]
        elif spec.name == "displayName" and "name" in obj:
            value = obj["name"]
        elif spec.name == "displayShortName" and "shortName" in obj:
            value = obj["shortName"]
        else:
            continue
        if spec.children is not None:
            value = _select(value, spec.children, resolve)
        name, value = _transform(value, spec.transformers, spec.name)
        out[name] = value
    return out


@dataclass(frozen=True)
class _Filter:
    path: list[str]
    op: str
    value: str


def parse_filter(text: str) -> _Filter:
    """Parse one ``prop:op[:value]`` filter."""
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise FilterError(f"invalid filter: {text!r}")
    value = parts[2] if len(parts) == 3 else ""
    return _Filter(parts[0].split("."), parts[1], value)


def _values_at(obj: Any, path: list[str], resolve: Resolver) -> list[Any]:
    if not path:
        return [obj]
    if isinstance(obj, list):
        return [found for item in obj for found in _values_at(item, path, resolve)]
    if not isinstance(obj, Mapping):
        return []
    head, rest = path[0], path[1:]
    if head not in obj:
        if set(obj.keys()) <= {"id"} and "id" in obj:
            full = resolve(str(obj["id"]))
            return _values_at(full, path, resolve) if full is not None else []
        return []
    return _values_at(obj[head], rest, resolve)


def _like(pattern: str, value: str, anchored_start: bool, anchored_end: bool) -> bool:
    if anchored_start and anchored_end:
        return value == pattern
    if anchored_start:
        return value.startswith(pattern)
    if anchored_end:
        return value.endswith(pattern)
    return pattern in value


def _order(op: str, left: Any, right: Any) -> bool:
    return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op] is True


def _compare(op: str, found: Any, wanted: str) -> bool:
    text = "" if found is None else str(found).lower() if isinstance(found, bool) else str(found)
    if op in ("eq", "!eq", "ne", "neq"):
        equal = text == wanted
        return equal if op == "eq" else not equal
    if op == "ieq":
        return text.lower() == wanted.lower()
    if op in ("like", "!like", "ilike", "!ilike", "$like", "like$", "$ilike", "ilike$"):
        fold = "i" in op
        hit = _like(
            wanted.lower() if fold else wanted,
            text.lower() if fold else text,
            op.startswith("$"),
            op.endswith("$"),
        )
        return not hit if op.startswith("!") else hit
    if op in ("in", "!in"):
        choices = [item.strip() for item in wanted.strip("[]").split(",")]
        return (text in choices) == (op == "in")
    if op in ("gt", "ge", "lt", "le"):
        try:
            return _order(op, float(text), float(wanted))
        except ValueError:
            return _order(op, text, wanted)
    raise FilterError(f"unsupported filter operator: {op}")


def _matches(obj: JsonObject, flt: _Filter, resolve: Resolver) -> bool:
    found = _values_at(obj, flt.path, resolve)
    if flt.op == "null":
        return not found or all(item is None for item in found)
    if flt.op == "!null":
        return any(item is not None for item in found)
    if flt.op == "empty":
        return not found or all(item in (None, [], "") for item in found)
    if flt.op in ("!eq", "ne", "neq", "!like", "!ilike", "!in"):
        return all(_compare(flt.op, item, flt.value) for item in found)
    return any(_compare(flt.op, item, flt.value) for item in found)


def matches_filters(
    obj: JsonObject, filters: Sequence[str], resolve: Resolver, *, any_of: bool = False
) -> bool:
    """True when ``obj`` passes the filters (all of them, or any with ``rootJunction=OR``)."""
    if not filters:
        return True
    results = (_matches(obj, parse_filter(text), resolve) for text in filters)
    return any(results) if any_of else all(results)
