"""Validation compiled once per resource *shape*.

A resource's shape is its structure without its values: keys and nesting, array lengths,
the JSON type of every leaf, and the ``resourceType`` of every resource in it. Everything
the validator checks apart from individual primitive values depends on the shape alone:
unknown properties, arrays versus single values, required elements and choice exclusivity
(``check_strict``), and every rule of the R4B models. Community-care mappings produce a
few dozen shapes over and over, so the full check runs once per shape and leaves a
``ShapePlan``: the models' verdict and one value check per leaf, in walk order. A resource
of a known shape then costs one walk that collects its leaves and one check per leaf,
instead of a strict walk plus an R4B model build (~0.2 ms a resource).

The verdict never depends on which resources came before (a cache must not change
answers):

* the strict part of a plan exists only for a shape whose structure passed, and its
  value checks are exactly the checks ``check_strict`` applies to those leaves, so
  ``plan.values_ok(values)`` is ``check_strict(resource) == []``;
* the models judge a *canonical* instance: the resource with every primitive replaced by
  one fixed valid value of its FHIR type (``CANONICAL``). Their verdict is therefore a
  function of the shape alone. Values are judged by the R4 rules of ``check_strict``, not
  by R4B's own patterns, which are not R4's (R4B's string pattern refuses a U+00A0
  that R4 allows, its time type a leap second).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.fhir.strict import KIND_COMPLEX, KIND_RESOURCE, ComplexType, StrictChecker
from gateway.jsonio import DecimalLiteral

__all__ = ["CANONICAL", "ShapeCache", "ShapePlan", "canonical_instance", "flatten", "leaf_checks"]

# Structure tokens are ints and keys are strings, so a token sequence reads back one way only.
_OPEN, _CLOSE, _LIST_OPEN, _LIST_CLOSE = 0, 1, 2, 3
_LEAF = {str: 4, bool: 5, int: 6, float: 7, DecimalLiteral: 7, type(None): 8}  # a literal is a JSON number
_OTHER = 9

#: One valid value per R4 primitive type: what the models see in place of the real values.
CANONICAL: dict[str, Any] = {
    "base64Binary": "AAAA",
    "boolean": True,
    "canonical": "http://example.org/x",
    "code": "x",
    "date": "2020-01-01",
    "dateTime": "2020-01-01",
    "decimal": 1,
    "id": "x",
    "instant": "2020-01-01T00:00:00Z",
    "integer": 1,
    "markdown": "x",
    "oid": "urn:oid:1.2",
    "positiveInt": 1,
    "string": "x",
    "time": "00:00:00",
    "unsignedInt": 1,
    "uri": "http://example.org/x",
    "url": "http://example.org/x",
    "uuid": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>',
}

Check = Callable[[Any], bool]


def flatten(resource: dict[str, Any]) -> tuple[tuple[Any, ...], list[Any]]:
    """The shape of a resource as a hashable token tuple, and its leaf values in walk order."""
    tokens: list[Any] = []
    values: list[Any] = []
    _flat_object(resource, tokens, values)
    return tuple(tokens), values


def _flat_object(node: dict[str, Any], tokens: list[Any], values: list[Any]) -> None:
    tokens.append(_OPEN)
    for key, value in node.items():
        tokens.append(key)
        vtype = type(value)
        if vtype is dict:
            _flat_object(value, tokens, values)
        elif vtype is list:
            _flat_list(value, tokens, values)
        elif key == "resourceType":
            # Part of the shape: it picks the type every other key is checked against.
            tokens.append(value if vtype is str else _OTHER)
        else:
            tokens.append(_LEAF.get(vtype, _OTHER))
            values.append(value)
    tokens.append(_CLOSE)


def _flat_list(items: list[Any], tokens: list[Any], values: list[Any]) -> None:
    tokens.append(_LIST_OPEN)
    for item in items:
        itype = type(item)
        if itype is dict:
            _flat_object(item, tokens, values)
        elif itype is list:
            _flat_list(item, tokens, values)
        else:
            tokens.append(_LEAF.get(itype, _OTHER))
            values.append(item)
    tokens.append(_LIST_CLOSE)


def _is_none(value: Any) -> bool:
    return value is None


def leaf_checks(checker: StrictChecker, resource: dict[str, Any]) -> list[Check]:
    """The value check of every leaf ``flatten`` collects, in the same order.

    Only for a resource ``check_strict`` accepted: the walk trusts its structure.
    """
    out: list[Check] = []
    _checks_object(checker, resource, checker.type_named(resource["resourceType"]), out)
    return out


def _checks_object(checker: StrictChecker, node: dict[str, Any], ctype: ComplexType, out: list[Check]) -> None:
    for key, value in node.items():
        if key == "resourceType":
            continue
        prop = ctype.props.get(key)
        if prop is None:  # a primitive's ``_x``: an Element, or an array of them (or nulls)
            element = checker.element_type
            for item in value if type(value) is list else (value,):
                if item is None:
                    out.append(_is_none)
                else:
                    _checks_object(checker, item, element, out)
            continue
        kind, arg, is_array = prop[0], prop[1], prop[2]
        for item in value if is_array else (value,):
            if kind == KIND_COMPLEX:
                _checks_object(checker, item, arg, out)
            elif kind == KIND_RESOURCE:
                _checks_object(checker, item, checker.type_named(item["resourceType"]), out)
            elif item is None:
                out.append(_is_none)
            else:
                out.append(checker.value_check(kind, arg))


def canonical_instance(checker: StrictChecker, resource: dict[str, Any]) -> dict[str, Any]:
    """The resource as the models see it: ``_x`` keys dropped, primitives made canonical.

    Depends on the shape alone (keys, nesting, types from the element table). The R4B
    models refuse legal primitive extensions on an extension's value
    (``Extension._valueString``); ``check_strict`` has already validated every ``_x``.
    """
    return _canonical_object(checker, resource, checker.type_named(resource["resourceType"]))


def _canonical_object(checker: StrictChecker, node: dict[str, Any], ctype: ComplexType) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "resourceType":
            out[key] = value
            continue
        prop = ctype.props.get(key)
        if prop is None:
            # ``_x``: FHIR counts a primitive that has only extensions as present, so the
            # models see a value where the JSON has none (json.html#primitive).
            bare = ctype.props.get(key[1:])
            if bare is not None and key[1:] not in node:
                items = [CANONICAL[bare[4]]] * len(value) if bare[2] and type(value) is list else CANONICAL[bare[4]]
                out[key[1:]] = items
            continue
        kind, arg, is_array, type_name = prop[0], prop[1], prop[2], prop[4]
        if is_array:
            out[key] = [_canonical_value(checker, item, kind, arg, type_name) for item in value]
        else:
            out[key] = _canonical_value(checker, value, kind, arg, type_name)
    return out


def _canonical_value(checker: StrictChecker, value: Any, kind: int, arg: Any, type_name: str) -> Any:
    if kind == KIND_COMPLEX:
        return _canonical_object(checker, value, arg)
    if kind == KIND_RESOURCE:
        return _canonical_object(checker, value, checker.type_named(value["resourceType"]))
    return None if value is None else CANONICAL[type_name]


@dataclass(frozen=True, slots=True)
class ShapePlan:
    """What is known about every resource of one shape.

    ``model_error`` is None when the models accept the shape, else the exception they
    raised on its canonical instance (re-raised for every resource of the shape).
    """

    checks: tuple[Check, ...]
    model_error: Exception | None
    #: The shape's ``gateway.fhir.invariants.InvariantPlan`` (None: invariants not checked).
    invariants: Any = None
    #: Where the shape holds restricted References (``gateway.fhir.reference_targets.reference_sites``;
    #: None: walk each resource instead).
    references: Any = None

    def values_ok(self, values: list[Any]) -> bool:
        """Whether every leaf value passes its strict check."""
        for check, value in zip(self.checks, values, strict=True):
            if not check(value):
                return False
        return True


class ShapeCache:
    """A bounded map from shape to plan; the oldest entry goes first when it is full."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._plans: dict[tuple[Any, ...], ShapePlan] = {}
        self._lock = threading.Lock()

    def get(self, shape: tuple[Any, ...]) -> ShapePlan | None:
        """The plan of a shape seen before, or None."""
        return self._plans.get(shape)

    def put(self, shape: tuple[Any, ...], plan: ShapePlan) -> None:
        """Remember a plan."""
        with self._lock:
            if len(self._plans) >= self._size:
                del self._plans[next(iter(self._plans))]
            self._plans[shape] = plan

    def __len__(self) -> int:
        return len(self._plans)

    def plans(self) -> list[ShapePlan]:
        """The plans held now."""
        return list(self._plans.values())

    def clear(self) -> None:
        """Forget every plan."""
        with self._lock:
            self._plans.clear()
