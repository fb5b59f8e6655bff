"""Search parameter expressions compiled to plain dictionary walks.

The R4 search parameters are FHIRPath expressions, but nearly all of them use a tiny
subset: dotted paths, unions, ``as``/``ofType`` on choice elements,
``where(resolve() is Type)`` on references and ``where(field='literal')``. Evaluating
those with a general FHIRPath engine on every write costs far more than the write
itself, so this module compiles that subset into small step lists once, at start-up.
Expressions outside the subset compile to ``None`` and their parameters are simply not
offered (the CapabilityStatement only lists what compiled).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

from gateway.r4 import load_table

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_AS_SUFFIX = re.compile(rf"^(?P<path>.+?)\s+as\s+(?P<type>{_NAME})$")
_FUNC = re.compile(rf"^(?P<fn>as|ofType)\((?P<type>{_NAME})\)$")
_RESOLVE_IS = re.compile(rf"^where\(resolve\(\)\s+is\s+(?P<type>{_NAME})\)$")
_WHERE_EQ = re.compile(rf"^where\((?P<field>{_NAME})\s*=\s*'(?P<value>[^']*)'\)$")

Value = Any
Step = Callable[[list[Value]], list[Value]]


@dataclass(frozen=True, slots=True)
class CompiledPath:
    """A compiled expression: ``values(resource)`` returns the raw JSON values it selects.

    ``heads`` names, for each part, the resource key it starts from: a plain key
    (``subject``, ``valueQuantity``), or a choice element's base name with a trailing ``[x]``
    (``effective[x]``). A resource without any of them gives nothing, so extraction can skip
    the expression without running it.
    """

    source: str
    parts: tuple[tuple[Step, ...], ...]
    heads: tuple[str, ...] = ()
    #: Each part's own text, outer brackets off: two parts of the same text select the same values.
    texts: tuple[str, ...] = ()

    def values(self, resource: dict[str, Any]) -> list[Value]:
        """Evaluate against a resource's JSON."""
        out: list[Value] = []
        for steps in self.parts:
            current: list[Value] = [resource]
            for step in steps:
                current = step(current)
                if not current:
                    break
            out.extend(current)
        return out


def compile_expression(expression: str, base: str) -> CompiledPath | None:
    """Compile the parts of ``expression`` that apply to resource type ``base``."""
    parts: list[tuple[Step, ...]] = []
    heads: list[str] = []
    texts: list[str] = []
    for part in _split_top(expression, "|"):
        steps = _compile_part(part.strip(), base)
        if steps is _NOT_THIS_TYPE:
            continue
        if steps is None:
            return None
        assert isinstance(steps, tuple)
        parts.append(steps)
        heads.append(_head(part.strip()))
        texts.append(_bare(part.strip()))
    if not parts:
        return None
    return CompiledPath(expression, tuple(parts), tuple(heads), tuple(texts))


def _bare(part: str) -> str:
    """``(Observation.value as Quantity)`` → ``Observation.value as Quantity``."""
    while part.startswith("(") and _closing(part, 0) == len(part) - 1:
        part = part[1:-1].strip()
    return part


def _unwrap(part: str) -> tuple[str, str | None]:
    """``((X.value) as Quantity)`` → ``("X.value", "Quantity")``: outer brackets and an ``as`` suffix off."""
    while part.startswith("(") and _closing(part, 0) == len(part) - 1:
        part = part[1:-1].strip()
    as_type: str | None = None
    match = _AS_SUFFIX.match(part)
    if match and "(" not in match.group("type"):
        part, as_type = match.group("path").strip(), match.group("type")
        while part.startswith("(") and _closing(part, 0) == len(part) - 1:
            part = part[1:-1].strip()
    return part, as_type


def _head(part: str) -> str:
    """The resource key an expression part starts from (see ``CompiledPath.heads``); "" if unknown."""
    part, as_type = _unwrap(part)
    segments = [segment.strip() for segment in _split_top(part, ".")]
    if len(segments) < 2 or not re.fullmatch(_NAME, segments[1]):
        return ""
    name = segments[1]
    fn = _FUNC.match(segments[2]) if len(segments) > 2 else None
    choice_type = fn.group("type") if fn else as_type if len(segments) == 2 else None
    if choice_type:
        return name + choice_type[0].upper() + choice_type[1:]
    return f"{name}[x]" if name in choice_elements() else name


_NOT_THIS_TYPE = object()


def _compile_part(part: str, base: str) -> tuple[Step, ...] | object | None:
    part, as_type = _unwrap(part)
    segments = _split_top(part, ".")
    if not segments or segments[0] not in (base, "Resource", "DomainResource"):
        return _NOT_THIS_TYPE
    steps: list[Step] = []
    pending: str | None = None  # a field step not yet emitted (an as/ofType may refine it)
    for segment in segments[1:]:
        segment = segment.strip()
        fn = _FUNC.match(segment)
        if fn:
            if pending is None:
                return None
            steps.append(_field(pending, fn.group("type")))
            pending = None
            continue
        if pending is not None:
            steps.append(_field(pending, None))
            pending = None
        if re.fullmatch(_NAME, segment):
            pending = segment
            continue
        resolve = _RESOLVE_IS.match(segment)
        if resolve:
            steps.append(_reference_type(resolve.group("type")))
            continue
        where = _WHERE_EQ.match(segment)
        if where:
            steps.append(_where_eq(where.group("field"), where.group("value")))
            continue
        return None
    if pending is not None:
        steps.append(_field(pending, as_type))
    elif as_type is not None:
        return None
    if not steps:
        return None
    return tuple(steps)


def _field(name: str, choice_type: str | None) -> Step:
    key = name + choice_type[0].upper() + choice_type[1:] if choice_type else None
    if key is None and name not in choice_elements():
        return _plain_field(name)

    def step(values: list[Value]) -> list[Value]:
        out: list[Value] = []
        for value in values:
            if not isinstance(value, dict):
                continue
            if key is not None:
                found = value.get(key)
            elif name in value:
                found = value[name]
            else:
                found = _choice_value(value, name)
            if found is None:
                continue
            if isinstance(found, list):
                out.extend(found)
            else:
                out.append(found)
        return out

    return step


def _plain_field(name: str) -> Step:
    def step(values: list[Value]) -> list[Value]:
        out: list[Value] = []
        for value in values:
            if isinstance(value, dict):
                found = value.get(name)
                if found is not None:
                    if isinstance(found, list):
                        out.extend(found)
                    else:
                        out.append(found)
        return out

    step.plain_key = name  # type: ignore[attr-defined]  # lets extraction read the first key directly
    return step


def plain_key(step: Step) -> str | None:
    """The key a plain field step reads (``_plain_field``), None for any other step."""
    return getattr(step, "plain_key", None)


@cache
def choice_elements() -> frozenset[str]:
    """Names of the R4 choice elements (``value[x]``, ``effective[x]``, …) of any type."""
    types = load_table("r4-elements.json")["types"]
    return frozenset(name for spec in types.values() for name in spec.get("c", ()))


def _choice_value(obj: dict[str, Any], name: str) -> Value:
    # A choice element `value[x]` is serialised as e.g. `valueQuantity`.
    cut = len(name)
    for key, found in obj.items():
        if len(key) > cut and key.startswith(name) and key[cut].isupper():
            return found
    return None


def _reference_type(rtype: str) -> Step:
    def step(values: list[Value]) -> list[Value]:
        return [v for v in values if isinstance(v, dict) and reference_type(v) == rtype]

    return step


def _where_eq(field: str, literal: str) -> Step:
    def step(values: list[Value]) -> list[Value]:
        return [v for v in values if isinstance(v, dict) and v.get(field) == literal]

    return step


def reference_type(ref: dict[str, Any]) -> str | None:
    """The resource type a Reference points at, when it can be told without resolving."""
    explicit = ref.get("type")
    if isinstance(explicit, str):
        return explicit
    target = ref.get("reference")
    if not isinstance(target, str):
        return None
    parsed = split_reference(target)
    return parsed[0] if parsed else None


@lru_cache(maxsize=8192)  # a record's resources point at the same few others
def split_reference(target: str) -> tuple[str, str] | None:
    """``Patient/1``, ``http://x/fhir/Patient/1`` or ``…/Patient/1/_history/2`` → ``(Patient, 1)``."""
    if target.startswith(("#", "urn:")):
        return None
    pieces = target.split("?", 1)[0].rstrip("/").split("/")
    if len(pieces) >= 4 and pieces[-2] == "_history":
        pieces = pieces[:-2]
    if len(pieces) >= 2 and pieces[-2][:1].isupper() and pieces[-2].isalpha() and pieces[-1]:
        return pieces[-2], pieces[-1]
    return None


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses and quotes."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out


def _closing(text: str, open_at: int) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return -1


def flatten(values: Iterable[Value]) -> list[Value]:
    """Flatten one level of nested lists (from multi-valued steps)."""
    out: list[Value] = []
    for value in values:
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out
